//! kiln-backend: code generation for kernel-IR programs (Cranelift for the CPU) and
//! the runtime that owns buffers, checks arguments and launches kernels.
//!
//! [`compile`] turns a checked [`kiln_ir::kernel::Program`] into an [`Executable`]:
//! every kernel becomes one native function `extern "C" fn(*const *mut u8)` that
//! receives the table of buffer base pointers, JIT-compiled for the host. With the
//! `cuda` feature, [`cuda::CudaExecutable`] runs a program's PTX ([`ptx`]) on an
//! NVIDIA GPU; both executables implement [`Runtime`].

pub mod arena;
pub mod cpu;
pub mod cuda;
pub mod math;
pub mod pool;
pub mod ptx;
pub mod runtime;
pub mod signature;

pub use cpu::{CompileOptions, OptLevel};
pub use cuda::CudaError;
pub use runtime::{Arg, CompileStats, Executable, RuntimeError};
pub use signature::{Runtime, Signature};

use kiln_ir::kernel::{KernelError, Program};
use thiserror::Error;

/// Why a program could not be compiled.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BackendError {
    /// The program breaks the kernel IR's rules (a kiln bug in the pass that built it).
    #[error("invalid kernel program (a kiln bug): {0}")]
    Invalid(#[from] KernelError),
    /// The program uses a construct this code generator cannot emit (a kiln bug in the
    /// scheduling of the program).
    #[error("kernel {kernel}: {message}")]
    Unsupported { kernel: String, message: String },
    /// The threads of the executable's pool could not be started (the environment's
    /// limit, or `threads` was 0).
    #[error("cannot start the executable's threads: {0}")]
    Threads(String),
    /// Cranelift cannot target this machine.
    #[error("the host cpu is not supported: {0}")]
    Host(String),
    /// Cranelift rejected a function or could not link the module (a kiln bug).
    #[error("cranelift failed on {what}: {message}")]
    Cranelift { what: String, message: String },
    /// The parameter buffers (allocated at compile time) could not be had: the
    /// environment's limit, not a kiln bug.
    #[error(transparent)]
    OutOfMemory(#[from] kiln_ir::OutOfMemory),
    /// The GPU could not be used or a driver call failed while loading a program (see
    /// `CudaError` for whose mistake).
    #[error(transparent)]
    Cuda(#[from] CudaError),
}

/// Compiles `program` for the host with the default options (`opt_level=speed`).
pub fn compile(program: &Program) -> Result<Executable, BackendError> {
    compile_with(program, &CompileOptions::default())
}

/// Compiles `program` for the host with explicit options (optimisation level,
/// disassembly for tests and debugging).
pub fn compile_with(
    program: &Program,
    options: &CompileOptions,
) -> Result<Executable, BackendError> {
    Executable::new(program, options)
}
