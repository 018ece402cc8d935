//! The portable microkernel in pure Cranelift IR: a 5×8 tile of C in ten `f32x4`
//! accumulators, for hosts without AVX2/FMA (or targets other than x86-64).
//!
//! Same calling convention and packed layouts as [`super::avx2`], with 5 packed rows
//! of A and 8 packed columns of B: `fn(a_panel, b_panel, c, ldc_bytes, kc, flags,
//! bias)`. Per k step: two `f32x4` loads of B and, for each accumulator, a splat of
//! a scalar load of A and one `fma(a, b, acc)`.
//!
//! The IR is shaped for Cranelift 0.135's x64 lowering, whose `fma` is
//! `vfmadd213`/`vfmadd132`: the result overwrites a multiplicand, never the
//! accumulator (no `vfmadd231`), so each result lands in a new register.
//! - Every fma gets its own splat, which dies there and lends the result its
//!   register. A shared splat is copied before its first fma, and the lowering
//!   folds a load into `vbroadcastss` only when the load, the splat and everything
//!   downstream have one use each.
//! - The k loop is two blocks that hand each other the accumulators as block
//!   arguments, one k step each, so an accumulator alternates between registers
//!   instead of being copied back at the back edge (see `build`).
//! - The panel loads are pure for the e-graph (`panel_flags`), which then puts
//!   each next to its use; otherwise it schedules them at the top of the block and
//!   folds none.
//!
//! The loop is then, per two k steps, 20 `vbroadcastss` from memory, 4 `vmovups`,
//! 20 `vfmadd213ps`, 3 `add`, a test-and-branch and a jump: no copies and no spills,
//! at `opt_level` speed and none alike, in 13 of the 16 xmm registers. The first
//! version (one splat per row, k unrolled by two in one block, accumulators in
//! variables) had per two k steps 8 `vmovss` and 8 register `vbroadcastss`, 18
//! register copies and 10 stack moves.
//!
//! Measured on one core of a Sapphire Rapids Xeon (2 vCPUs shared with other
//! work, so every figure is a median of runs interleaved with the peak in one
//! session), GFLOP/s per CPU-second against the 128-bit FMA peak
//! (`shared/bench/peak.c` line (b), twelve accumulators, 38-39 GFLOP/s):
//! - 1024³ sgemm through `define_gemm` with the schedule's blocking, 12 rounds in
//!   the quietest session: the 4×8 tile 25.7 (0.67), this 5×8 tile 29.8 (0.78,
//!   best rounds 0.83-0.97), a 3×12 tile 28.4 (0.74). In busier sessions the 5×8
//!   tile stays ahead, 0.62-0.68 against the 4×8 tile's 0.59-0.64.
//! - The microkernel alone on L1-resident panels (kc 512): 5×8 33.8-35.8
//!   (0.88-0.93), 4×8 29-31 (0.75-0.8).
//!
//! The 4×8 tile's eight accumulators were its only independent fma chains (the
//! numeric contract fixes each element's fma order); at ~4.6 cycles per fma and
//! two FMA ports the peak needs 9-10, and eight bare chains reach only 0.79-0.87
//! of it. This tile has ten. Larger tiles do not fit: 6×8 and 4×12 (twelve
//! accumulators) spill one accumulator in the loop with regalloc2 0.15, and 3×12
//! (nine chains, three B vectors) is spill-free but slower. What is left is the
//! front end: each fma needs a fresh register for the multiplicand it overwrites,
//! so the loop issues ~2.45 instructions per fma (~4.9 per cycle at the peak),
//! which makes it more sensitive than the peak loop to a busy sibling core.

use super::flags;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{
    types, BlockArg, Endianness, Function, InstBuilder, MemFlagsData, Value,
};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};

/// Rows of the tile.
pub const MR: usize = 5;
/// Columns of the tile (two `f32x4`). The code takes up to three vectors per row
/// (a 3×12 tile was measured, see the module comment).
pub const NR: usize = 8;
/// `f32x4` vectors per row of the tile.
const NV: usize = NR / 4;
/// Accumulators: one per vector of the tile.
const ACC: usize = MR * NV;

/// Packed panels and C tiles are only 4-byte aligned; the caller guarantees bounds.
fn data_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// The packed panels are not written while the kernel runs, so their loads may be
/// pure for the e-graph: it then places each load next to its use, where `splat`
/// folds it into `vbroadcastss` (a left-in-place load is scheduled at the top of the
/// block, and nothing folds).
fn panel_flags() -> MemFlagsData {
    data_flags().with_readonly().with_can_move()
}

/// Bytes of packed A per k step.
const A_STEP: i64 = (MR * 4) as i64;
/// Bytes of packed B per k step.
const B_STEP: i64 = (NR * 4) as i64;

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

    let acc: Vec<Variable> = (0..ACC).map(|_| b.declare_var(vec)).collect();
    let even_head = b.create_block();
    let odd_head = b.create_block();
    let even_body = b.create_block();
    let loop_exit = b.create_block();
    let done = b.create_block();
    for _ in 0..ACC {
        b.append_block_param(even_head, vec);
        b.append_block_param(odd_head, vec);
    }
    for _ in 0..3 {
        b.append_block_param(even_head, ptr);
        b.append_block_param(odd_head, ptr);
    }

    // The k loop is two blocks, each doing one k step and jumping to the other
    // with its results, so that the register allocator can let each accumulator
    // alternate between two registers instead of copying it back at the end of
    // every iteration (an fma's result never lands in its accumulator's register,
    // see the module comment). The odd block takes the accumulators in reverse
    // order: each block elaborates its fmas in the order of the next block's
    // parameters, and alternating that order lets the registers the fmas free
    // be reused in a cycle. An odd kc starts with the odd step, from cursors one
    // step before the panels. Each head gets its own starting values (loaded or
    // zeroed in its own block): a value passed to both would make the allocator
    // give both heads the same registers.
    let odd = b.ins().band_imm_s(kc, 1);
    let accumulate = b.ins().band_imm_s(flag_word, flags::ACCUMULATE);
    let even_start = b.create_block();
    let odd_start = b.create_block();
    b.ins().brif(odd, odd_start, &[], even_start, &[]);
    for (start_block, head) in [(even_start, even_head), (odd_start, odd_head)] {
        b.switch_to_block(start_block);
        let cursors = if head == even_head {
            [a_panel, b_panel, kc]
        } else {
            [
                b.ins().iadd_imm_s(a_panel, -A_STEP),
                b.ins().iadd_imm_s(b_panel, -B_STEP),
                b.ins().iadd_imm_s(kc, 1),
            ]
        };
        let load_block = b.create_block();
        let zero_block = b.create_block();
        b.ins().brif(accumulate, load_block, &[], zero_block, &[]);
        let order = |values: Vec<Value>| {
            if head == even_head {
                values
            } else {
                values.into_iter().rev().collect()
            }
        };

        b.switch_to_block(load_block);
        let rows = row_pointers(&mut b, c, ldc);
        let mut loaded = Vec::with_capacity(ACC);
        for row in &rows {
            for part in 0..NV {
                let offset = (part * 16) as i32;
                loaded.push(b.ins().load(vec, data_flags(), *row, offset));
            }
        }
        b.ins().jump(head, &loop_args(&cursors, &order(loaded)));

        b.switch_to_block(zero_block);
        let zero_scalar = b.ins().f32const(0.0);
        let zero = b.ins().splat(vec, zero_scalar);
        b.ins().jump(head, &loop_args(&cursors, &[zero; ACC]));
    }

    // The even head has `left` k steps to do, always an even number, and the even
    // body does the first at the cursors. The odd block then has `left - 1` to
    // do, never zero, so it needs no test: it does the step after the cursors
    // and advances them by two. The loop thus always leaves from the even head
    // (a second exit would pass both heads' accumulators to the epilogue, and
    // the allocator would again give both heads the same registers).
    b.switch_to_block(even_head);
    let state = b.block_params(even_head).to_vec();
    let (even_acc, cursors) = state.split_at(ACC);
    let (even_acc, a_now, b_now, left) = (even_acc.to_vec(), cursors[0], cursors[1], cursors[2]);
    b.ins().brif(left, even_body, &[], loop_exit, &[]);

    b.switch_to_block(even_body);
    let new = k_step(&mut b, &even_acc, a_now, b_now, 0, true);
    let reversed: Vec<Value> = new.into_iter().rev().collect();
    b.ins()
        .jump(odd_head, &loop_args(&[a_now, b_now, left], &reversed));

    b.switch_to_block(odd_head);
    let state = b.block_params(odd_head).to_vec();
    let (odd_acc, cursors) = state.split_at(ACC);
    let (a_now, b_now, left) = (cursors[0], cursors[1], cursors[2]);
    let odd_acc: Vec<Value> = odd_acc.iter().rev().copied().collect();
    let new = k_step(&mut b, &odd_acc, a_now, b_now, 1, false);
    let a_next = b.ins().iadd_imm_s(a_now, 2 * A_STEP);
    let b_next = b.ins().iadd_imm_s(b_now, 2 * B_STEP);
    let left_next = b.ins().iadd_imm_s(left, -2);
    b.ins()
        .jump(even_head, &loop_args(&[a_next, b_next, left_next], &new));

    b.switch_to_block(loop_exit);
    for (var, value) in acc.iter().zip(even_acc) {
        b.def_var(*var, value);
    }
    b.ins().jump(done, &[]);

    b.switch_to_block(done);
    let bias_block = b.create_block();
    let relu_check = b.create_block();
    let relu_block = b.create_block();
    let store_block = b.create_block();
    let add_bias = b.ins().band_imm_s(flag_word, flags::ADD_BIAS);
    b.ins().brif(add_bias, bias_block, &[], relu_check, &[]);

    b.switch_to_block(bias_block);
    let bias_parts: Vec<Value> = (0..NV)
        .map(|part| b.ins().load(vec, data_flags(), bias, (part * 16) as i32))
        .collect();
    for (index, var) in acc.iter().enumerate() {
        let old = b.use_var(*var);
        // acc + bias, the operand order of the scalar `chain + bias[j]`.
        let new = b.ins().fadd(old, bias_parts[index % NV]);
        b.def_var(*var, new);
    }
    b.ins().jump(relu_check, &[]);

    b.switch_to_block(relu_check);
    let relu = b.ins().band_imm_s(flag_word, flags::RELU);
    b.ins().brif(relu, relu_block, &[], store_block, &[]);

    b.switch_to_block(relu_block);
    let zero_scalar = b.ins().f32const(0.0);
    let zero = b.ins().splat(vec, zero_scalar);
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
    let rows = row_pointers(&mut b, c, ldc);
    for row in 0..MR {
        for part in 0..NV {
            let value: Value = b.use_var(acc[NV * row + part]);
            b.ins()
                .store(data_flags(), value, rows[row], (part * 16) as i32);
        }
    }
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(config);
}

/// A loop block's arguments: the accumulators, then the cursors (the e-graph
/// elaborates a block in the order of its branch's arguments, and advancing the
/// cursors last lets the add reuse their registers).
fn loop_args(cursors: &[Value], accumulators: &[Value]) -> Vec<BlockArg> {
    accumulators
        .iter()
        .chain(cursors)
        .copied()
        .map(BlockArg::Value)
        .collect()
}

/// Row r of the tile starts at c + r * ldc. Computed where needed rather than once
/// in the entry block, so that the four pointers do not stay live through the loop.
fn row_pointers(b: &mut FunctionBuilder, c: Value, ldc: Value) -> Vec<Value> {
    (0..MR)
        .map(|row| {
            let offset = b.ins().imul_imm_s(ldc, row as i64);
            b.ins().iadd(c, offset)
        })
        .collect()
}

/// The k step `step` after the panel cursors, into the accumulators `old`
/// (row-major, two halves per row); returns the new ones. The fmas are built in
/// row-major order, or its `reverse`, which should be the order of the next block's
/// parameters: the e-graph elaborates in that order, and at `opt_level` none the
/// build order stays, so both levels get the same schedule.
fn k_step(
    b: &mut FunctionBuilder,
    old: &[Value],
    a_now: Value,
    b_now: Value,
    step: i64,
    reverse: bool,
) -> Vec<Value> {
    let vec = types::F32X4;
    let b_offset = (step * B_STEP) as i32;
    let b_parts: Vec<Value> = (0..NV)
        .map(|part| {
            b.ins()
                .load(vec, panel_flags(), b_now, b_offset + (part * 16) as i32)
        })
        .collect();
    let mut new = old.to_vec();
    let order: Vec<usize> = if reverse {
        (0..ACC).rev().collect()
    } else {
        (0..ACC).collect()
    };
    for index in order {
        let (row, part) = (index / NV, index % NV);
        let a_offset = (step * A_STEP) as i32 + (row * 4) as i32;
        // A splat for each fma: x64's fma overwrites its first multiplicand, so a
        // splat used twice would be copied first, and a load used twice is not
        // folded into `vbroadcastss`. The loads of one row differ only in their
        // flags (`aligned`, an explicit little-endian order, both true of the packed
        // panel on x64) so that GVN keeps each.
        let flags = match part {
            0 => panel_flags(),
            1 => panel_flags().with_aligned(),
            _ => panel_flags().with_endianness(Endianness::Little),
        };
        let a_scalar = b.ins().load(types::F32, flags, a_now, a_offset);
        let a_splat = b.ins().splat(vec, a_scalar);
        new[index] = b.ins().fma(a_splat, b_parts[part], old[index]);
    }
    new
}
