//! Running kernel programs on NVIDIA GPUs through the CUDA driver API: a
//! [`CudaDevice`] (a context on one GPU) and a [`CudaExecutable`] that loads a
//! program's PTX module ([`crate::ptx`]) and runs it with the same API and argument
//! checks as the CPU's [`crate::Executable`] (both implement [`crate::Runtime`]).
//!
//! The driver (`libcuda.so`) is loaded when a device is opened, not linked: kiln
//! built with the `cuda` feature still starts on a machine without a GPU and reports
//! [`CudaError::DriverMissing`] there. [`CudaError`] exists without the feature so
//! that the error types are the same in every build.

#[cfg(feature = "cuda")]
mod driver;
#[cfg(feature = "cuda")]
mod executable;

#[cfg(feature = "cuda")]
pub use driver::CudaDevice;
#[cfg(feature = "cuda")]
pub use executable::CudaExecutable;

use thiserror::Error;

/// Why the GPU could not be used or a driver call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CudaError {
    /// The driver library could not be loaded: this machine has no NVIDIA driver (the
    /// environment, not the caller's mistake or a kiln bug).
    #[error("the CUDA driver (libcuda.so) is not present on this machine")]
    DriverMissing,
    /// The driver sees no device with this ordinal (the caller's mistake, or a machine
    /// without a GPU).
    #[error("no CUDA device {ordinal}: the driver sees {count} device(s)")]
    NoDevice { ordinal: usize, count: usize },
    /// The GPU is older than the architectures kiln writes PTX for.
    #[error(
        "CUDA device {ordinal} ({name}) has compute capability {major}.{minor}; kiln writes \
         PTX for sm_80 and later"
    )]
    Unsupported {
        ordinal: usize,
        name: String,
        major: u32,
        minor: u32,
    },
    /// A driver call failed: `call` is the driver function, `name` and `code` its
    /// `CUresult` (`CUDA_ERROR_OUT_OF_MEMORY`, 2). A failed `cuModuleLoadData` is
    /// PTX the driver rejects (a kiln bug in the emitter); an error at
    /// `cuCtxSynchronize` is a kernel that failed while running.
    #[error("CUDA driver call {call} failed: {name} (error {code})")]
    Driver {
        call: &'static str,
        name: String,
        code: u32,
    },
    /// The driver refused to compile the PTX module (cuModuleLoadDataEx): a kiln bug
    /// in the emitter; `log` is the driver's error log.
    #[error("the CUDA driver rejected the PTX module (a kiln bug): {name} (error {code}): {log}")]
    PtxRejected {
        name: String,
        code: u32,
        log: String,
    },
    /// The PTX module does not fit the program: an entry names a kernel or buffer the
    /// program does not have, or the module targets a newer GPU than this one (a kiln
    /// bug in whoever built the module, or the wrong module for the device).
    #[error("the PTX module does not fit: {0}")]
    Module(String),
    /// A buffer's place in device memory is not inside its allocation (a kiln bug in
    /// the runtime's memory plan).
    #[error("device memory misplaced (a kiln bug): {0}")]
    Placement(String),
}
