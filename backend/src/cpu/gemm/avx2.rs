//! The AVX2/FMA microkernel: 6×16 tile of C in twelve `ymm` accumulators, emitted as
//! machine code with iced-x86's `CodeAssembler` (Cranelift's x86-64 backend has no
//! 256-bit vectors, see DESIGN.md "Performance model").
//!
//! Calling convention (System V), shared with the [`super::f32x4`] fallback:
//! `fn(a_panel: rdi, b_panel: rsi, c: rdx, ldc_bytes: rcx, kc: r8, flags: r9, bias: [rsp+8])`.
//! `a_panel` holds `kc` columns of 6 packed rows (`a_panel[p*6 + r]`), `b_panel` `kc`
//! rows of 16 packed columns (`b_panel[p*16 + c]`). The tile `c` is 6 rows of 16
//! floats, `ldc_bytes` apart. See [`super::flags`] for the flag bits.
//!
//! Per k step: two loads of the B row, six `vbroadcastss` of A, twelve
//! `vfmadd231ps acc, b, a`, which is `fma(a, b, acc)` with one rounding, so each
//! accumulator lane follows the scalar fma chain in increasing k. k is unrolled by 4
//! with a remainder loop. The broadcasts alternate between two registers so that
//! consecutive rows do not wait on one another.

use super::flags;
use crate::BackendError;
use iced_x86::code_asm::*;

/// Rows of the tile.
pub const MR: usize = 6;
/// Columns of the tile (two `ymm` of 8 floats).
pub const NR: usize = 16;

/// How far the kernel unrolls k.
const UNROLL: i32 = 4;

/// The microkernel's machine code (position independent, no relocations).
pub fn microkernel_bytes() -> Result<Vec<u8>, BackendError> {
    assemble().map_err(|err| BackendError::Cranelift {
        what: "the avx2 gemm microkernel".to_string(),
        message: err.to_string(),
    })
}

fn assemble() -> Result<Vec<u8>, IcedError> {
    let acc = [
        ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11,
    ];
    let (b_lo, b_hi) = (ymm12, ymm13);
    let broadcast = [ymm14, ymm15];
    let mut asm = CodeAssembler::new(64)?;
    let mut zero_init = asm.create_label();
    let mut k_loops = asm.create_label();
    let mut unrolled = asm.create_label();
    let mut remainder = asm.create_label();
    let mut remainder_loop = asm.create_label();
    let mut epilogue = asm.create_label();
    let mut no_bias = asm.create_label();
    let mut store = asm.create_label();

    // r10 = c + 3 * ldc, so rows 0..3 are [rdx + {0,1,2}*rcx] and rows 3..6
    // [r10 + {0,1,2}*rcx].
    asm.lea(r10, ptr(rcx + rcx * 2))?;
    asm.add(r10, rdx)?;
    asm.mov(rax, qword_ptr(rsp + 8))?;

    asm.test(r9, flags::ACCUMULATE as i32)?;
    asm.jz(zero_init)?;
    for row in 0..MR {
        let (lo, hi) = (acc[2 * row], acc[2 * row + 1]);
        let (base, times) = if row < 3 { (rdx, row) } else { (r10, row - 3) };
        match times {
            0 => {
                asm.vmovups(lo, ymmword_ptr(base))?;
                asm.vmovups(hi, ymmword_ptr(base + 32))?;
            }
            1 => {
                asm.vmovups(lo, ymmword_ptr(base + rcx))?;
                asm.vmovups(hi, ymmword_ptr(base + rcx + 32))?;
            }
            _ => {
                asm.vmovups(lo, ymmword_ptr(base + rcx * 2))?;
                asm.vmovups(hi, ymmword_ptr(base + rcx * 2 + 32))?;
            }
        }
    }
    asm.jmp(k_loops)?;
    asm.set_label(&mut zero_init)?;
    // +0.0 in every lane: the chain's starting value.
    for reg in acc {
        asm.vxorps(reg, reg, reg)?;
    }

    asm.set_label(&mut k_loops)?;
    asm.mov(r11, r8)?;
    asm.shr(r11, 2)?;
    asm.jz(remainder)?;
    asm.set_label(&mut unrolled)?;
    for step in 0..UNROLL {
        k_step(&mut asm, step, &acc, b_lo, b_hi, broadcast)?;
    }
    asm.add(rdi, (UNROLL as usize * MR * 4) as i32)?;
    asm.add(rsi, (UNROLL as usize * NR * 4) as i32)?;
    asm.dec(r11)?;
    asm.jnz(unrolled)?;

    asm.set_label(&mut remainder)?;
    asm.mov(r11, r8)?;
    asm.and(r11, UNROLL - 1)?;
    asm.jz(epilogue)?;
    asm.set_label(&mut remainder_loop)?;
    k_step(&mut asm, 0, &acc, b_lo, b_hi, broadcast)?;
    asm.add(rdi, (MR * 4) as i32)?;
    asm.add(rsi, (NR * 4) as i32)?;
    asm.dec(r11)?;
    asm.jnz(remainder_loop)?;

    asm.set_label(&mut epilogue)?;
    asm.test(r9, flags::ADD_BIAS as i32)?;
    asm.jz(no_bias)?;
    asm.vmovups(b_lo, ymmword_ptr(rax))?;
    asm.vmovups(b_hi, ymmword_ptr(rax + 32))?;
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
    asm.vxorps(b_lo, b_lo, b_lo)?;
    for reg in acc {
        asm.vmaxps(reg, reg, b_lo)?;
    }

    asm.set_label(&mut store)?;
    for row in 0..MR {
        let (lo, hi) = (acc[2 * row], acc[2 * row + 1]);
        let (base, times) = if row < 3 { (rdx, row) } else { (r10, row - 3) };
        match times {
            0 => {
                asm.vmovups(ymmword_ptr(base), lo)?;
                asm.vmovups(ymmword_ptr(base + 32), hi)?;
            }
            1 => {
                asm.vmovups(ymmword_ptr(base + rcx), lo)?;
                asm.vmovups(ymmword_ptr(base + rcx + 32), hi)?;
            }
            _ => {
                asm.vmovups(ymmword_ptr(base + rcx * 2), lo)?;
                asm.vmovups(ymmword_ptr(base + rcx * 2 + 32), hi)?;
            }
        }
    }
    // Leaving dirty upper halves would slow the caller's 128-bit SSE code.
    asm.vzeroupper()?;
    asm.ret()?;
    asm.assemble(0)
}

/// One k step at offset `step` from the current panel pointers.
fn k_step(
    asm: &mut CodeAssembler,
    step: i32,
    acc: &[AsmRegisterYmm; 12],
    b_lo: AsmRegisterYmm,
    b_hi: AsmRegisterYmm,
    broadcast: [AsmRegisterYmm; 2],
) -> Result<(), IcedError> {
    let b_offset = step * (NR as i32) * 4;
    asm.vmovups(b_lo, ymmword_ptr(rsi + b_offset))?;
    asm.vmovups(b_hi, ymmword_ptr(rsi + b_offset + 32))?;
    for row in 0..MR {
        let a = broadcast[row % 2];
        let a_offset = (step * MR as i32 + row as i32) * 4;
        asm.vbroadcastss(a, dword_ptr(rdi + a_offset))?;
        asm.vfmadd231ps(acc[2 * row], b_lo, a)?;
        asm.vfmadd231ps(acc[2 * row + 1], b_hi, a)?;
    }
    Ok(())
}
