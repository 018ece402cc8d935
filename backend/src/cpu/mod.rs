//! The CPU code generator: kernel IR to Cranelift IR ([`codegen`], written against
//! `cranelift_module::Module` so JIT and AOT objects share it), inline `exp`/`log`
//! ([`math`]), the host ISA and [`target`], the JIT ([`jit`]) and objects ([`aot`]), and the blocked matrix
//! multiplication with its AVX2 microkernel ([`gemm`]).

pub mod aot;
pub mod codegen;
pub mod entry;
pub mod gemm;
pub mod jit;
pub mod math;
pub mod target;

use crate::BackendError;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};

/// Cranelift's optimisation level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OptLevel {
    /// No mid-end optimisation: fastest compile; loop nests already have their
    /// invariant address parts hoisted by the code generator.
    None,
    /// The e-graph mid-end (GVN, LICM, constant folding).
    #[default]
    Speed,
}

impl OptLevel {
    fn setting(self) -> &'static str {
        match self {
            OptLevel::None => "none",
            OptLevel::Speed => "speed",
        }
    }
}

/// How to compile a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileOptions {
    pub opt_level: OptLevel,
    /// Keep each kernel's Cranelift IR and machine-code listing (for tests and
    /// debugging; costs compile time).
    pub disasm: bool,
    /// Threads the executable's parallel loops run on (the pool is made with the
    /// executable). Default: the available cores.
    pub threads: usize,
}

impl Default for CompileOptions {
    fn default() -> CompileOptions {
        CompileOptions {
            opt_level: OptLevel::default(),
            disasm: false,
            threads: crate::pool::available_threads(),
        }
    }
}

/// The target ISA of this machine, with the host's SIMD features (AVX, FMA, ...)
/// enabled so `fma` is one `vfmadd` and not a libcall, for JIT code.
pub fn host_isa(opt_level: OptLevel) -> Result<OwnedTargetIsa, BackendError> {
    isa(opt_level, false)
}

/// The host's ISA for an object file: position-independent code, so that it links
/// into executables and shared libraries alike (the toolchain's default PIE too).
pub fn object_isa(opt_level: OptLevel) -> Result<OwnedTargetIsa, BackendError> {
    isa(opt_level, true)
}

fn isa(opt_level: OptLevel, pic: bool) -> Result<OwnedTargetIsa, BackendError> {
    let setting_error = |err: settings::SetError| BackendError::Host(err.to_string());
    let mut flags = settings::builder();
    flags
        .set("opt_level", opt_level.setting())
        .map_err(setting_error)?;
    // JIT code is placed anywhere in memory and calls libcalls (`fmaf` on a host
    // without FMA) by absolute address, so no PC-relative calls; an object leaves
    // calls and data addresses to the linker.
    flags
        .set("is_pic", if pic { "true" } else { "false" })
        .map_err(setting_error)?;
    flags
        .set("use_colocated_libcalls", "false")
        .map_err(setting_error)?;
    // The verifier is a debugging aid; release builds skip its cost.
    let verify = if cfg!(debug_assertions) {
        "true"
    } else {
        "false"
    };
    flags
        .set("enable_verifier", verify)
        .map_err(setting_error)?;
    let isa = cranelift_native::builder().map_err(|err| BackendError::Host(err.to_string()))?;
    isa.finish(settings::Flags::new(flags))
        .map_err(|err| BackendError::Host(err.to_string()))
}

/// Whether the host has fused multiply-add (then `fma` compiles to `vfmadd`).
pub fn host_has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
