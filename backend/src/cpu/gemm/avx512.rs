//! The AVX-512F microkernel: 6×32 tile of C in twelve `zmm` accumulators (two per
//! row of 32 floats), EVEX-encoded. The instruction sequence, calling convention and
//! numeric argument are [`super::x86_kernel`]'s, shared with the 256-bit kernel; every
//! instruction it emits is AVX-512F or plain AVX (the zeroing `vxorps xmm` and the
//! final `vzeroupper`), so no other AVX-512 subset is needed.

use super::x86_kernel;
use crate::BackendError;

/// Rows of the tile.
pub const MR: usize = x86_kernel::MR;
/// Columns of the tile (two `zmm` of 16 floats).
pub const NR: usize = 32;

/// The microkernel's machine code (position independent, no relocations).
pub fn microkernel_bytes() -> Result<Vec<u8>, BackendError> {
    x86_kernel::assemble(x86_kernel::ZMM, NR).map_err(x86_kernel::error("avx512"))
}
