//! The AVX2/FMA microkernel: 6×16 tile of C in twelve `ymm` accumulators (two per
//! row of 16 floats). The instruction sequence, calling convention and numeric
//! argument are [`super::x86_kernel`]'s, shared with the 512-bit kernel.

use super::{x86_kernel, TileShape};
use crate::BackendError;

/// Rows of the tile.
pub const MR: usize = 6;
/// Columns of the tile (two `ymm` of 8 floats).
pub const NR: usize = 16;

const _: () = assert!(x86_kernel::fits(MR, x86_kernel::YMM.len()));

/// The machine code (position independent, no relocations) of the kernel for
/// `shape`, the full MR×NR tile or an edge of it (see `x86_kernel::assemble`);
/// `None` for an edge shape this kernel has no code for.
pub fn microkernel_bytes(shape: TileShape) -> Result<Option<Vec<u8>>, BackendError> {
    x86_kernel::assemble(&x86_kernel::YMM, MR, NR, shape).map_err(x86_kernel::error("avx2"))
}
