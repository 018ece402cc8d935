//! The portable microkernel in pure Cranelift IR: a 4×8 tile of C in eight `f32x4`
//! accumulators, for hosts without AVX2/FMA (or targets other than x86-64).
//!
//! Same calling convention and packed layouts as [`super::avx2`], with 4 packed rows
//! of A and 8 packed columns of B: `fn(a_panel, b_panel, c, ldc_bytes, kc, flags,
//! bias)`. Per k step: two `f32x4` loads of B, four scalar loads of A splatted, eight
//! `fma(a, b, acc)`; k is unrolled by two. The accumulators are Cranelift variables.
//!
//! Why 4×8 and not 6×8: Cranelift's x64 `fma` ties a multiplicand to the result
//! (`vfmadd213`/`vfmadd132`, never the accumulator-tied `vfmadd231`), so every
//! shared broadcast costs a copy and each result lands in a new register; with
//! twelve accumulators that exceeds the 16 `xmm` registers and spills in the loop
//! (measured), with eight it does not.

use super::flags;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, Endianness, Function, InstBuilder, MemFlagsData, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};

/// Rows of the tile.
pub const MR: usize = 4;
/// Columns of the tile (two `f32x4`).
pub const NR: usize = 8;

/// Packed panels and C tiles are only 4-byte aligned; the caller guarantees bounds.
fn data_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Fills `func` (whose signature is the microkernel's) with the kernel body.
pub fn build(
    func: &mut Function,
    builder_ctx: &mut FunctionBuilderContext,
    config: TargetFrontendConfig,
) {
    let mut b = FunctionBuilder::new(func, builder_ctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (a_panel, b_panel, c, ldc, kc, flag_word, bias) = (
        params[0], params[1], params[2], params[3], params[4], params[5], params[6],
    );
    let ptr = types::I64;
    let vec = types::F32X4;
    let zero_scalar = b.ins().f32const(0.0);
    let zero = b.ins().splat(vec, zero_scalar);

    // Row r of the tile starts at c + r * ldc.
    let mut rows = Vec::with_capacity(MR);
    for row in 0..MR {
        let offset = b.ins().imul_imm_s(ldc, row as i64);
        rows.push(b.ins().iadd(c, offset));
    }

    let acc: Vec<Variable> = (0..MR * 2).map(|_| b.declare_var(vec)).collect();
    // The panel cursors and the k count, defined in the entry block so that they
    // reach the loop from both the loading and the zeroing path.
    let a_ptr = b.declare_var(ptr);
    let b_ptr = b.declare_var(ptr);
    let remaining = b.declare_var(ptr);
    b.def_var(a_ptr, a_panel);
    b.def_var(b_ptr, b_panel);
    b.def_var(remaining, kc);
    let load_block = b.create_block();
    let zero_block = b.create_block();
    let k_header = b.create_block();
    let k_body = b.create_block();
    let epilogue = b.create_block();
    let accumulate = b.ins().band_imm_s(flag_word, flags::ACCUMULATE);
    b.ins().brif(accumulate, load_block, &[], zero_block, &[]);

    b.switch_to_block(load_block);
    for row in 0..MR {
        for half in 0..2 {
            let value = b
                .ins()
                .load(vec, data_flags(), rows[row], (half * 16) as i32);
            b.def_var(acc[2 * row + half], value);
        }
    }
    b.ins().jump(k_header, &[]);

    b.switch_to_block(zero_block);
    for var in &acc {
        b.def_var(*var, zero);
    }
    b.ins().jump(k_header, &[]);

    // Two k steps per iteration while two are left, then at most one more.
    b.switch_to_block(k_header);
    let left = b.use_var(remaining);
    let two_left = b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, left, 2);
    let last_check = b.create_block();
    let last_step = b.create_block();
    b.ins().brif(two_left, k_body, &[], last_check, &[]);

    b.switch_to_block(k_body);
    k_steps(&mut b, &acc, a_ptr, b_ptr, 2);
    let left = b.use_var(remaining);
    let left_next = b.ins().iadd_imm_s(left, -2);
    b.def_var(remaining, left_next);
    b.ins().jump(k_header, &[]);

    b.switch_to_block(last_check);
    let left = b.use_var(remaining);
    b.ins().brif(left, last_step, &[], epilogue, &[]);
    b.switch_to_block(last_step);
    k_steps(&mut b, &acc, a_ptr, b_ptr, 1);
    b.ins().jump(epilogue, &[]);

    b.switch_to_block(epilogue);
    let bias_block = b.create_block();
    let relu_check = b.create_block();
    let relu_block = b.create_block();
    let store_block = b.create_block();
    let add_bias = b.ins().band_imm_s(flag_word, flags::ADD_BIAS);
    b.ins().brif(add_bias, bias_block, &[], relu_check, &[]);

    b.switch_to_block(bias_block);
    let bias_lo = b.ins().load(vec, data_flags(), bias, 0);
    let bias_hi = b.ins().load(vec, data_flags(), bias, 16);
    for (index, var) in acc.iter().enumerate() {
        let old = b.use_var(*var);
        let bias_half = if index % 2 == 0 { bias_lo } else { bias_hi };
        // acc + bias, the operand order of the scalar `chain + bias[j]`.
        let new = b.ins().fadd(old, bias_half);
        b.def_var(*var, new);
    }
    b.ins().jump(relu_check, &[]);

    b.switch_to_block(relu_check);
    let relu = b.ins().band_imm_s(flag_word, flags::RELU);
    b.ins().brif(relu, relu_block, &[], store_block, &[]);

    b.switch_to_block(relu_block);
    for var in &acc {
        let old = b.use_var(*var);
        // kiln's relu is `x > 0 ? x : +0` (NaN and -0 give +0), not `fmax`.
        let positive = b.ins().fcmp(FloatCC::GreaterThan, old, zero);
        let mask = b.ins().bitcast(
            vec,
            MemFlagsData::new().with_endianness(Endianness::Little),
            positive,
        );
        let new = b.ins().bitselect(mask, old, zero);
        b.def_var(*var, new);
    }
    b.ins().jump(store_block, &[]);

    b.switch_to_block(store_block);
    for row in 0..MR {
        for half in 0..2 {
            let value: Value = b.use_var(acc[2 * row + half]);
            b.ins()
                .store(data_flags(), value, rows[row], (half * 16) as i32);
        }
    }
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(config);
}

/// `steps` k steps from the panel cursors, which it advances.
fn k_steps(
    b: &mut FunctionBuilder,
    acc: &[Variable],
    a_ptr: Variable,
    b_ptr: Variable,
    steps: usize,
) {
    let vec = types::F32X4;
    let a_now = b.use_var(a_ptr);
    let b_now = b.use_var(b_ptr);
    for step in 0..steps {
        let b_offset = (step * NR * 4) as i32;
        let b_lo = b.ins().load(vec, data_flags(), b_now, b_offset);
        let b_hi = b.ins().load(vec, data_flags(), b_now, b_offset + 16);
        for row in 0..MR {
            let a_offset = ((step * MR + row) * 4) as i32;
            let a_scalar = b.ins().load(types::F32, data_flags(), a_now, a_offset);
            let a_splat = b.ins().splat(vec, a_scalar);
            for (half, b_half) in [b_lo, b_hi].into_iter().enumerate() {
                let var = acc[2 * row + half];
                let old = b.use_var(var);
                let new = b.ins().fma(a_splat, b_half, old);
                b.def_var(var, new);
            }
        }
    }
    let a_next = b.ins().iadd_imm_s(a_now, (steps * MR * 4) as i64);
    let b_next = b.ins().iadd_imm_s(b_now, (steps * NR * 4) as i64);
    b.def_var(a_ptr, a_next);
    b.def_var(b_ptr, b_next);
}
