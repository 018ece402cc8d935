//! The portable microkernel in pure Cranelift IR: a 4×8 tile of C in eight `f32x4`
//! accumulators, for hosts without AVX2/FMA (or targets other than x86-64).
//!
//! Same calling convention and packed layouts as [`super::avx2`], with 4 packed rows
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
//! The loop is then, per two k steps, 16 `vbroadcastss` from memory, 4 `vmovups`,
//! 16 `vfmadd213ps`, 3 `lea`, a test-and-branch and a jump: no copies and no spills,
//! at `opt_level` speed and none alike. The previous version (one splat per row, k
//! unrolled by two in one block, accumulators in variables) had per two k steps 8
//! `vmovss` and 8 register `vbroadcastss`, 18 register copies and 10 stack moves.
//!
//! Measured on one core of a Sapphire Rapids Xeon, 1024³ sgemm through
//! `define_gemm` with the schedule's blocking, GFLOP/s per CPU-second, runs
//! interleaved in one session: previous kernel 20-23, this one 30-31, the 128-bit
//! FMA peak (`shared/bench/peak.c` line (b), twelve accumulators) 40-43, so ~0.75.
//! The loop alone (the same instructions in a standalone asm harness) runs as
//! fast as eight independent chains of bare `vfmadd213ps`, which reach only
//! 0.79-0.87 of that peak: the tile's eight accumulators are the only independent
//! chains (the numeric contract fixes each element's fma order), one chain
//! sustains ~4.8 GFLOP/s there (~4.6 cycles per fma), and the peak needs 9-10.
//! More throughput needs a larger tile; a 6×8 tile built this way (12 accumulators)
//! still spilled one accumulator in the loop with regalloc2 0.15 and was no faster.

use super::flags;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{
    types, BlockArg, Endianness, Function, InstBuilder, MemFlagsData, Value,
};
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

    let acc: Vec<Variable> = (0..MR * 2).map(|_| b.declare_var(vec)).collect();
    let even_head = b.create_block();
    let odd_head = b.create_block();
    let even_body = b.create_block();
    let loop_exit = b.create_block();
    let done = b.create_block();
    for _ in 0..MR * 2 {
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
        let mut loaded = Vec::with_capacity(MR * 2);
        for row in &rows {
            for half in 0..2 {
                loaded.push(b.ins().load(vec, data_flags(), *row, half * 16));
            }
        }
        b.ins().jump(head, &loop_args(&cursors, &order(loaded)));

        b.switch_to_block(zero_block);
        let zero_scalar = b.ins().f32const(0.0);
        let zero = b.ins().splat(vec, zero_scalar);
        b.ins().jump(head, &loop_args(&cursors, &[zero; MR * 2]));
    }

    // The even head has `left` k steps to do, always an even number, and the even
    // body does the first at the cursors. The odd block then has `left - 1` to
    // do, never zero, so it needs no test: it does the step after the cursors
    // and advances them by two. The loop thus always leaves from the even head
    // (a second exit would pass both heads' accumulators to the epilogue, and
    // the allocator would again give both heads the same registers).
    b.switch_to_block(even_head);
    let state = b.block_params(even_head).to_vec();
    let (even_acc, cursors) = state.split_at(MR * 2);
    let (even_acc, a_now, b_now, left) = (even_acc.to_vec(), cursors[0], cursors[1], cursors[2]);
    b.ins().brif(left, even_body, &[], loop_exit, &[]);

    b.switch_to_block(even_body);
    let new = k_step(&mut b, &even_acc, a_now, b_now, 0, true);
    let reversed: Vec<Value> = new.into_iter().rev().collect();
    b.ins()
        .jump(odd_head, &loop_args(&[a_now, b_now, left], &reversed));

    b.switch_to_block(odd_head);
    let state = b.block_params(odd_head).to_vec();
    let (odd_acc, cursors) = state.split_at(MR * 2);
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
    let b_lo = b.ins().load(vec, panel_flags(), b_now, b_offset);
    let b_hi = b.ins().load(vec, panel_flags(), b_now, b_offset + 16);
    let mut new = old.to_vec();
    let order: Vec<usize> = if reverse {
        (0..MR * 2).rev().collect()
    } else {
        (0..MR * 2).collect()
    };
    for index in order {
        let (row, half) = (index / 2, index % 2);
        let a_offset = (step * A_STEP) as i32 + (row * 4) as i32;
        // A splat for each fma: x64's fma overwrites its first multiplicand, so a
        // splat used twice would be copied first, and a load used twice is not
        // folded into `vbroadcastss`. The second load differs from the first in a
        // true `aligned` flag only so that GVN keeps both.
        let flags = if half == 0 {
            panel_flags()
        } else {
            panel_flags().with_aligned()
        };
        let a_scalar = b.ins().load(types::F32, flags, a_now, a_offset);
        let a_splat = b.ins().splat(vec, a_scalar);
        let b_half = if half == 0 { b_lo } else { b_hi };
        new[index] = b.ins().fma(a_splat, b_half, old[index]);
    }
    new
}
