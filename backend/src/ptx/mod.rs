//! The PTX emitter: kernel-IR programs as PTX text for NVIDIA GPUs, written by kiln
//! itself (no CUDA toolkit, LLVM or NVRTC), following a [`GpuSchedule`].

use crate::BackendError;
use kiln_ir::kernel::{BufferId, Program};
use kiln_ir::{GpuSchedule, GpuTarget};

/// A program's kernels as one PTX module, and how to launch each.
#[derive(Clone, Debug, PartialEq)]
pub struct PtxModule {
    pub target: GpuTarget,
    /// The module's text: `.version`, `.target sm_XX`, `.address_size 64`, then one
    /// `.visible .entry` per kernel.
    pub text: String,
    /// One entry per kernel of the program, in launch order.
    pub entries: Vec<PtxEntry>,
}

/// One `.entry` of a module and its launch configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxEntry {
    /// The index of the kernel in the program.
    pub kernel: usize,
    /// The entry's symbol (`k3_add`).
    pub name: String,
    /// Blocks along x, y, z.
    pub grid: [u32; 3],
    /// Threads per block along x (y and z are 1).
    pub block: u32,
    /// Dynamic shared memory in bytes (0: the kernel declares its own).
    pub shared_bytes: u32,
    /// The entry's parameters, in order: each the device address (`.u64`) of the
    /// start of this buffer, which holds `program.buffer(id).len()` elements.
    pub buffers: Vec<BufferId>,
}

/// Writes `program` (checked, not scheduled for a CPU: no vector, parallel or call
/// statements except what the GPU schedule understands) as PTX for `schedule`'s
/// target.
pub fn emit(program: &Program, schedule: &GpuSchedule) -> Result<PtxModule, BackendError> {
    let _ = (program, schedule);
    Err(BackendError::Unsupported {
        kernel: String::new(),
        message: "PTX emission is being written".into(),
    })
}
