//! The AVX-512F microkernel: 12×32 tile of C in twenty-four `zmm` accumulators (two
//! per row of 32 floats, in zmm4..zmm27: AVX-512's 32 registers), EVEX-encoded. The instruction sequence, calling convention and
//! numeric argument are [`super::x86_kernel`]'s, shared with the 256-bit kernel; every
//! instruction it emits is AVX-512F or plain AVX (the zeroing `vxorps xmm` and the
//! final `vzeroupper`; `prefetcht1` is SSE), so no other AVX-512 subset is needed.

use super::x86_kernel;
use crate::BackendError;

/// Rows of the tile.
pub const MR: usize = 12;
/// Columns of the tile (two `zmm` of 16 floats).
pub const NR: usize = 32;

const _: () = assert!(x86_kernel::fits(MR, x86_kernel::ZMM.len()));

/// The microkernel's machine code (position independent, no relocations).
pub fn microkernel_bytes() -> Result<Vec<u8>, BackendError> {
    x86_kernel::assemble(&x86_kernel::ZMM, MR, NR).map_err(x86_kernel::error("avx512"))
}
