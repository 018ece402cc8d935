//! The x86-64 FMA microkernel generator shared by [`super::avx2`] (6×16 in `ymm`)
//! and [`super::avx512`] (6×32 in `zmm`): one instruction sequence, parameterised by
//! the vector register type, emitted with iced-x86's `CodeAssembler` (Cranelift's
//! x86-64 backend has no 256- or 512-bit vectors, see DESIGN.md "Performance model").
//!
//! Calling convention (System V), shared with the [`super::f32x4`] fallback:
//! `fn(a_panel: rdi, b_panel: rsi, c: rdx, ldc_bytes: rcx, kc: r8, flags: r9, bias: [rsp+8])`.
//! `a_panel` holds `kc` columns of 6 packed rows (`a_panel[p*6 + r]`), `b_panel` `kc`
//! rows of NR packed columns (`b_panel[p*NR + c]`), NR being two vectors of floats.
//! The tile `c` is 6 rows of NR floats, `ldc_bytes` apart; `bias` holds NR floats.
//! See [`super::flags`] for the flag bits.
//!
//! Per k step: two loads of the B row, six `vbroadcastss` of A, twelve
//! `vfmadd231ps acc, b, a`, which is `fma(a, b, acc)` with one rounding, so each
//! accumulator lane follows the scalar fma chain in increasing k. k is unrolled by 4
//! with a remainder loop. The broadcasts alternate between two registers so that
//! consecutive rows do not wait on one another.

use super::flags;
use crate::BackendError;
use iced_x86::code_asm::asm_traits::{
    CodeAsmVaddps, CodeAsmVbroadcastss, CodeAsmVfmadd231ps, CodeAsmVmaxps, CodeAsmVmovups,
};
use iced_x86::code_asm::*;

/// Rows of the tile (both widths).
pub const MR: usize = 6;

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

/// The first sixteen 512-bit registers, for [`assemble`]: the 6-row tile needs no
/// more, and the AVX zeroing idiom reaches only these.
pub(super) const ZMM: [AsmRegisterZmm; 16] = [
    zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13, zmm14,
    zmm15,
];

/// Turns an assembler error into the backend's, naming the kernel `what`; the
/// sequence is fixed, so an error here is a kiln bug.
pub(super) fn error(what: &'static str) -> impl Fn(IcedError) -> BackendError {
    move |err| BackendError::Cranelift {
        what: format!("the {what} gemm microkernel"),
        message: err.to_string(),
    }
}

/// C row `row` of the tile: rows 0..3 are `[rdx + {0,1,2}*rcx]`, rows 3..6
/// `[r10 + {0,1,2}*rcx]` with `r10 = rdx + 3*rcx`, so no row needs a multiply.
fn c_row(row: usize) -> AsmMemoryOperand {
    let base = if row < 3 { rdx } else { r10 };
    match row % 3 {
        0 => ptr(base),
        1 => ptr(base + rcx),
        _ => ptr(base + rcx * 2),
    }
}

/// The kernel's machine code (position independent, no relocations) for a tile of
/// `nr` columns, two vectors of `nr / 2` floats. `vectors` ([`YMM`] or [`ZMM`]) are
/// the sixteen registers `0..16` of one width: accumulators `0..12` (row `r` in `2r,
/// 2r+1`), the B row in `12, 13`, the A broadcasts in `14, 15`.
pub(super) fn assemble<R: Copy>(vectors: [R; 16], nr: usize) -> Result<Vec<u8>, IcedError>
where
    CodeAssembler: CodeAsmVmovups<R, AsmMemoryOperand>
        + CodeAsmVmovups<AsmMemoryOperand, R>
        + CodeAsmVbroadcastss<R, AsmMemoryOperand>
        + CodeAsmVfmadd231ps<R, R, R>
        + CodeAsmVaddps<R, R, R>
        + CodeAsmVmaxps<R, R, R>,
{
    // Byte offset of a row's second vector.
    let high = (nr / 2 * 4) as i32;
    let acc: [R; 12] = std::array::from_fn(|index| vectors[index]);
    let (b_lo, b_hi) = (vectors[12], vectors[13]);
    let broadcast = [vectors[14], vectors[15]];
    // The width of the register sets the size of every vector memory access.
    let k_step = |asm: &mut CodeAssembler, step: i32| -> Result<(), IcedError> {
        let b_offset = step * (nr as i32) * 4;
        asm.vmovups(b_lo, ptr(rsi) + b_offset)?;
        asm.vmovups(b_hi, ptr(rsi) + (b_offset + high))?;
        for row in 0..MR {
            let a = broadcast[row % 2];
            let a_offset = (step * MR as i32 + row as i32) * 4;
            asm.vbroadcastss(a, dword_ptr(rdi + a_offset))?;
            asm.vfmadd231ps(acc[2 * row], b_lo, a)?;
            asm.vfmadd231ps(acc[2 * row + 1], b_hi, a)?;
        }
        Ok(())
    };

    let mut asm = CodeAssembler::new(64)?;
    let mut zero_init = asm.create_label();
    let mut k_loops = asm.create_label();
    let mut unrolled = asm.create_label();
    let mut remainder = asm.create_label();
    let mut remainder_loop = asm.create_label();
    let mut epilogue = asm.create_label();
    let mut no_bias = asm.create_label();
    let mut store = asm.create_label();

    asm.lea(r10, ptr(rcx + rcx * 2))?;
    asm.add(r10, rdx)?;
    asm.mov(rax, qword_ptr(rsp + 8))?;

    asm.test(r9, flags::ACCUMULATE as i32)?;
    asm.jz(zero_init)?;
    for row in 0..MR {
        asm.vmovups(acc[2 * row], c_row(row))?;
        asm.vmovups(acc[2 * row + 1], c_row(row) + high)?;
    }
    asm.jmp(k_loops)?;
    asm.set_label(&mut zero_init)?;
    // +0.0 in every lane: the chain's starting value.
    for half in &HALVES[..12] {
        asm.vxorps(*half, *half, *half)?;
    }

    asm.set_label(&mut k_loops)?;
    asm.mov(r11, r8)?;
    asm.shr(r11, 2)?;
    asm.jz(remainder)?;
    asm.set_label(&mut unrolled)?;
    for step in 0..UNROLL {
        k_step(&mut asm, step)?;
    }
    asm.add(rdi, UNROLL * (MR * 4) as i32)?;
    asm.add(rsi, UNROLL * (nr * 4) as i32)?;
    asm.dec(r11)?;
    asm.jnz(unrolled)?;

    asm.set_label(&mut remainder)?;
    asm.mov(r11, r8)?;
    asm.and(r11, UNROLL - 1)?;
    asm.jz(epilogue)?;
    asm.set_label(&mut remainder_loop)?;
    k_step(&mut asm, 0)?;
    asm.add(rdi, (MR * 4) as i32)?;
    asm.add(rsi, (nr * 4) as i32)?;
    asm.dec(r11)?;
    asm.jnz(remainder_loop)?;

    asm.set_label(&mut epilogue)?;
    asm.test(r9, flags::ADD_BIAS as i32)?;
    asm.jz(no_bias)?;
    asm.vmovups(b_lo, ptr(rax))?;
    asm.vmovups(b_hi, ptr(rax) + high)?;
    for row in 0..MR {
        // acc + bias, the operand order of the scalar `chain + bias[j]`.
        asm.vaddps(acc[2 * row], acc[2 * row], b_lo)?;
        asm.vaddps(acc[2 * row + 1], acc[2 * row + 1], b_hi)?;
    }
    asm.set_label(&mut no_bias)?;
    asm.test(r9, flags::RELU as i32)?;
    asm.jz(store)?;
    // `vmaxps x, x, 0` gives the second operand when x is NaN and when both are
    // zeros, so it is exactly kiln's relu `x > 0 ? x : +0`.
    asm.vxorps(HALVES[12], HALVES[12], HALVES[12])?;
    for reg in acc {
        asm.vmaxps(reg, reg, b_lo)?;
    }

    asm.set_label(&mut store)?;
    for row in 0..MR {
        asm.vmovups(c_row(row), acc[2 * row])?;
        asm.vmovups(c_row(row) + high, acc[2 * row + 1])?;
    }
    // Leaving dirty upper halves would slow the caller's 128-bit SSE code.
    asm.vzeroupper()?;
    asm.ret()?;
    asm.assemble(0)
}
