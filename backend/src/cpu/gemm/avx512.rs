//! The AVX-512F microkernel: 12×32 tile of C in twenty-four `zmm` accumulators (two
//! per row of 32 floats, in zmm4..zmm27: AVX-512's 32 registers), EVEX-encoded. The
//! instruction sequence, calling convention and numeric argument are
//! [`super::x86_kernel`]'s, shared with the 256-bit kernel; every instruction it emits
//! is AVX-512F (the `k1`-masked loads and stores of an edge of columns and the
//! `kmovw` that sets the mask included) or plain AVX (the zeroing `vxorps xmm` and the
//! final `vzeroupper`; `prefetcht1` is SSE), so no other AVX-512 subset is needed.

use super::{x86_kernel, TileShape};
use crate::BackendError;

/// Rows of the tile.
pub const MR: usize = 12;
/// Columns of the tile (two `zmm` of 16 floats).
pub const NR: usize = 32;

const _: () = assert!(x86_kernel::fits(MR, x86_kernel::ZMM.len()));

/// The machine code (position independent, no relocations) of the kernel for
/// `shape`, the full MR×NR tile or an edge of it (see `x86_kernel::assemble`);
/// `None` for an edge shape this kernel has no code for.
pub fn microkernel_bytes(shape: TileShape) -> Result<Option<Vec<u8>>, BackendError> {
    x86_kernel::assemble(&x86_kernel::ZMM, MR, NR, shape).map_err(x86_kernel::error("avx512"))
}
