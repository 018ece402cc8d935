//! The x86-64 FMA microkernel generator shared by [`super::avx2`] (6×16 in `ymm`)
//! and [`super::avx512`] (12×32 in `zmm`): one instruction sequence, parameterised by
//! the vector register type, emitted with iced-x86's `CodeAssembler` (Cranelift's
//! x86-64 backend has no 256- or 512-bit vectors, see DESIGN.md "Performance model").
//!
//! Calling convention (System V), shared with the [`super::f32x4`] fallback:
//! `fn(a_panel: rdi, b_panel: rsi, c: rdx, ldc_bytes: rcx, kc: r8, flags: r9, bias: [rsp+8])`.
//! `a_panel` holds `kc` columns of MR packed rows (`a_panel[p*MR + r]`), `b_panel` `kc`
//! rows of NR packed columns (`b_panel[p*NR + c]`), NR being two vectors of floats.
//! The tile `c` is MR rows of NR floats, `ldc_bytes` apart; `bias` holds NR floats.
//! See [`super::flags`] for the flag bits. An edge variant (a [`TileShape`] smaller
//! than the tile) takes the same arguments and panels but reads and writes only its
//! rows and columns of `c`.
//!
//! Per k step: two loads of the B row, then per row one `vbroadcastss` of A and two
//! `vfmadd231ps acc, b, a`, which is `fma(a, b, acc)` with one rounding, so each
//! accumulator lane follows the scalar fma chain in increasing k. The 12-row `zmm`
//! tile keeps 24 accumulators (the 6-row `ymm` one 12): enough independent chains
//! for the FMA latency on two ports, and half the B loads per FMA of a 6-row tile.
//! k is unrolled by 4 with a remainder loop. The broadcasts alternate between two
//! registers so that consecutive rows do not wait on one another.

use super::{flags, TileShape};
use crate::BackendError;
use iced_x86::code_asm::asm_traits::{
    CodeAsmVaddps, CodeAsmVbroadcastss, CodeAsmVfmadd231ps, CodeAsmVmaxps, CodeAsmVmovaps,
    CodeAsmVmovups,
};
use iced_x86::code_asm::*;

/// How far the kernel unrolls k.
const UNROLL: i32 = 4;

/// The 128-bit halves of the sixteen vector registers, in the order of
/// [`assemble`]'s `vectors`. A VEX-encoded write to an `xmm` register clears the
/// register's upper bits up to the widest one (`zmm` included), so one `vxorps` on
/// them zeroes a `ymm` or a `zmm` with an AVX-only encoding.
const HALVES: [AsmRegisterXmm; 16] = [
    xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14,
    xmm15,
];

/// The 256-bit registers, for [`assemble`].
pub(super) const YMM: [AsmRegisterYmm; 16] = [
    ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13, ymm14,
    ymm15,
];

/// The thirty-two 512-bit registers, for [`assemble`]: AVX-512 doubles the
/// register file, which is what lets the 512-bit tile be twice as tall.
pub(super) const ZMM: [AsmRegisterZmm; 32] = [
    zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13, zmm14,
    zmm15, zmm16, zmm17, zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26, zmm27,
    zmm28, zmm29, zmm30, zmm31,
];

/// Turns an assembler error into the backend's, naming the kernel `what`; the
/// sequence is fixed, so an error here is a kiln bug.
pub(super) fn error(what: &'static str) -> impl Fn(IcedError) -> BackendError {
    move |err| BackendError::Cranelift {
        what: format!("the {what} gemm microkernel"),
        message: err.to_string(),
    }
}

/// Whether a tile of `mr` rows fits the generator with `registers` vector
/// registers: the C row bases and the registers of [`assemble`].
pub(super) const fn fits(mr: usize, registers: usize) -> bool {
    mr <= 3 * C_BASES.len() && 4 + 2 * mr <= registers
}

/// Base registers of the C rows, three rows each: `rdx`, then `r10 = rdx + 3*rcx`,
/// `r11 = rdx + 6*rcx` and `rax = rdx + 9*rcx` (set by [`c_bases`]).
const C_BASES: [AsmRegister64; 4] = [rdx, r10, r11, rax];

/// Points the C row bases after `rdx` at rows 3, 6, 9 (as many as `mr` rows use).
/// `r11` is the k loop's counter and `rax` is free outside the loop, so this runs
/// before the loop (to load C) and again after it (to store C).
fn c_bases(asm: &mut CodeAssembler, mr: usize) -> Result<(), IcedError> {
    for (index, &base) in C_BASES.iter().enumerate().skip(1) {
        if 3 * index >= mr {
            break;
        }
        asm.lea(base, ptr(C_BASES[index - 1] + rcx * 2))?;
        asm.add(base, rcx)?;
    }
    Ok(())
}

/// C row `row` of the tile: `[base + {0,1,2}*rcx]` with the base of [`C_BASES`]
/// for its group of three, so no row needs a multiply.
fn c_row(row: usize) -> AsmMemoryOperand {
    let base = C_BASES[row / 3];
    match row % 3 {
        0 => ptr(base),
        1 => ptr(base + rcx),
        _ => ptr(base + rcx * 2),
    }
}

/// A vector register type the generator can use: [`YMM`] or [`ZMM`].
pub(super) trait Vector: Copy {
    /// Whether edge columns may be opmask-masked: true for `zmm` (AVX-512F), false
    /// for `ymm`, where `{k1}` would need AVX-512VL, which the AVX2 kernel must not.
    const MASKABLE: bool;
    /// The register with the `{k1}{z}` decoration: a load that zeroes the lanes
    /// outside the mask and does not fault on them.
    fn k1_zeroing(self) -> Self;
}

impl Vector for AsmRegisterYmm {
    const MASKABLE: bool = false;
    fn k1_zeroing(self) -> Self {
        self.k1().z()
    }
}

impl Vector for AsmRegisterZmm {
    const MASKABLE: bool = true;
    fn k1_zeroing(self) -> Self {
        self.k1().z()
    }
}

/// The kernel's machine code (position independent, no relocations) for the first
/// `shape.rows` rows and `shape.cols` columns of a tile of `mr` rows (at most 12) and
/// `nr` columns, two vectors of `nr / 2` floats: the A and B panels keep the full
/// tile's layout (strides `mr` and `nr`), and only the shape's part of C is read and
/// written, so the driver calls an edge shape directly on C. A shape of at most half
/// the columns uses one vector a row; columns that are not a whole number of vectors
/// are masked with `k1` (AVX-512F). `None` when the shape needs a mask that
/// `vectors` cannot take (the AVX2 kernel: the driver then uses its scratch tile).
///
/// `vectors` ([`YMM`] or [`ZMM`]) are registers of one width: the B row in `0, 1`,
/// the A broadcasts in `2, 3`, and the accumulators from 4 on (row `r`, vector `v` in
/// `4 + r * vectors_per_row + v`), so every register the AVX zeroing idiom must reach
/// is among the first sixteen. The callers check at compile time that the full tile
/// fits ([`fits`]); an edge shape uses fewer registers.
pub(super) fn assemble<R: Vector>(
    vectors: &[R],
    mr: usize,
    nr: usize,
    shape: TileShape,
) -> Result<Option<Vec<u8>>, IcedError>
where
    CodeAssembler: CodeAsmVmovups<R, AsmMemoryOperand>
        + CodeAsmVmovups<AsmMemoryOperand, R>
        + CodeAsmVmovaps<R, R>
        + CodeAsmVbroadcastss<R, AsmMemoryOperand>
        + CodeAsmVfmadd231ps<R, R, R>
        + CodeAsmVaddps<R, R, R>
        + CodeAsmVmaxps<R, R, R>,
{
    let TileShape { rows, cols } = shape;
    let lanes = nr / 2;
    let per_row = cols.div_ceil(lanes).clamp(1, 2);
    // Lanes of the row's last vector that belong to C.
    let tail = cols - (per_row - 1) * lanes;
    let masked = tail < lanes;
    if masked && !R::MASKABLE {
        return Ok(None);
    }
    // Byte offset of a row's second vector.
    let high = (lanes * 4) as i32;
    let b = [vectors[0], vectors[1]];
    let broadcast = [vectors[2], vectors[3]];
    let acc = &vectors[4..4 + per_row * rows];
    // The width of the register sets the size of every vector memory access.
    let k_step = |asm: &mut CodeAssembler, step: i32| -> Result<(), IcedError> {
        let b_offset = step * (nr as i32) * 4;
        for (v, &b) in b.iter().enumerate().take(per_row) {
            asm.vmovups(b, ptr(rsi) + (b_offset + v as i32 * high))?;
        }
        for row in 0..rows {
            let a = broadcast[row % 2];
            let a_offset = (step * mr as i32 + row as i32) * 4;
            asm.vbroadcastss(a, dword_ptr(rdi + a_offset))?;
            for (v, &b) in b.iter().enumerate().take(per_row) {
                asm.vfmadd231ps(acc[per_row * row + v], b, a)?;
            }
        }
        Ok(())
    };
    // Whether vector `v` of a row is the masked one.
    let is_masked = |v: usize| masked && v + 1 == per_row;

    let mut asm = CodeAssembler::new(64)?;
    let mut zero_init = asm.create_label();
    let mut k_loops = asm.create_label();
    let mut unrolled = asm.create_label();
    let mut remainder = asm.create_label();
    let mut remainder_loop = asm.create_label();
    let mut epilogue = asm.create_label();
    let mut no_bias = asm.create_label();
    let mut store = asm.create_label();

    if masked {
        // Lanes 0..tail of the last vector (rax is free until `c_bases`).
        asm.mov(eax, (1u32 << tail) - 1)?;
        asm.kmovw(k1, eax)?;
    }
    asm.test(r9, flags::ACCUMULATE as i32)?;
    asm.jz(zero_init)?;
    c_bases(&mut asm, rows)?;
    for row in 0..rows {
        for v in 0..per_row {
            let reg = acc[per_row * row + v];
            let reg = if is_masked(v) { reg.k1_zeroing() } else { reg };
            asm.vmovups(reg, c_row(row) + v as i32 * high)?;
        }
    }
    asm.jmp(k_loops)?;
    asm.set_label(&mut zero_init)?;
    // +0.0 in every lane: the chain's starting value. The AVX idiom reaches the
    // first sixteen registers; the rest copy one of them (AVX-512F's `vmovaps`).
    for (index, &reg) in acc.iter().enumerate() {
        match HALVES.get(4 + index) {
            Some(&half) => asm.vxorps(half, half, half)?,
            None => asm.vmovaps(reg, acc[0])?,
        }
    }

    asm.set_label(&mut k_loops)?;
    // rax walks the C rows below the tile, one per unrolled step: the driver's next
    // tiles in its row loop. Their C (loaded when accumulating, stored in any case)
    // is otherwise fetched from L3 with the kernel stalled; into L2 only, since rows
    // a power of two apart share few L1 sets and would evict the B micro-panel. A
    // shape of fewer rows is the last tile of its column: nothing below to fetch.
    let prefetch = rows == mr;
    if prefetch {
        asm.imul_3(rax, rcx, mr as i32)?;
        asm.add(rax, rdx)?;
    }
    asm.mov(r11, r8)?;
    asm.shr(r11, 2)?;
    asm.jz(remainder)?;
    asm.set_label(&mut unrolled)?;
    for step in 0..UNROLL {
        k_step(&mut asm, step)?;
        if step == 0 && prefetch {
            for line in (0..cols * 4).step_by(64) {
                asm.prefetcht1(byte_ptr(rax + line as i32))?;
            }
        }
    }
    if prefetch {
        asm.add(rax, rcx)?;
    }
    asm.add(rdi, UNROLL * (mr * 4) as i32)?;
    asm.add(rsi, UNROLL * (nr * 4) as i32)?;
    asm.dec(r11)?;
    asm.jnz(unrolled)?;

    asm.set_label(&mut remainder)?;
    asm.mov(r11, r8)?;
    asm.and(r11, UNROLL - 1)?;
    asm.jz(epilogue)?;
    asm.set_label(&mut remainder_loop)?;
    k_step(&mut asm, 0)?;
    asm.add(rdi, (mr * 4) as i32)?;
    asm.add(rsi, (nr * 4) as i32)?;
    asm.dec(r11)?;
    asm.jnz(remainder_loop)?;

    asm.set_label(&mut epilogue)?;
    asm.test(r9, flags::ADD_BIAS as i32)?;
    asm.jz(no_bias)?;
    // The bias pointer, the seventh argument; `kc` in r8 is no longer needed. The
    // bias is zero padded to whole tiles, so no load needs a mask.
    asm.mov(r8, qword_ptr(rsp + 8))?;
    for (v, &b) in b.iter().enumerate().take(per_row) {
        asm.vmovups(b, ptr(r8) + v as i32 * high)?;
    }
    for row in 0..rows {
        for (v, &b) in b.iter().enumerate().take(per_row) {
            // acc + bias, the operand order of the scalar `chain + bias[j]`.
            let reg = acc[per_row * row + v];
            asm.vaddps(reg, reg, b)?;
        }
    }
    asm.set_label(&mut no_bias)?;
    asm.test(r9, flags::RELU as i32)?;
    asm.jz(store)?;
    // `vmaxps x, x, 0` gives the second operand when x is NaN and when both are
    // zeros, so it is exactly kiln's relu `x > 0 ? x : +0`.
    asm.vxorps(HALVES[0], HALVES[0], HALVES[0])?;
    for &reg in acc {
        asm.vmaxps(reg, reg, b[0])?;
    }

    asm.set_label(&mut store)?;
    // The loop used r11 as its counter.
    c_bases(&mut asm, rows)?;
    for row in 0..rows {
        for v in 0..per_row {
            let to = c_row(row) + v as i32 * high;
            let to = if is_masked(v) { to.k1() } else { to };
            asm.vmovups(to, acc[per_row * row + v])?;
        }
    }
    // Leaving dirty upper halves would slow the caller's 128-bit SSE code.
    asm.vzeroupper()?;
    asm.ret()?;
    asm.assemble(0).map(Some)
}
