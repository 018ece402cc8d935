//! Matmul scheduling: a kernel that lowering marked as a matmul
//! (`KernelOp::Matmul`) calls the packed, register-blocked matmul routine instead of
//! running its dot-product loop nest.
//!
//! The routine (`Routine::Matmul`) packs panels of A and B into a workspace and
//! runs a microkernel on register tiles, BLIS-style; it keeps the loop nest's value
//! bit for bit (each C element is the fma chain over k from +0, in order). This step
//! picks, for the target:
//!
//! - the microkernel: 512-bit AVX-512F 12x32, else 256-bit AVX2/FMA 6x16 when the
//!   target has it, else the portable `f32x4` one;
//! - the cache blocking: a kc×nr micro-panel of B fills at most two thirds of L1 (k
//!   split into equal blocks), an mc×kc panel of A half of L2, a kc×nc panel of B half of
//!   this thread's share of L3;
//! - threads: with more than one, C is split into one block per thread in a parallel
//!   loop, each task with its own workspace: by columns (a multiple of the tile's
//!   columns) when C has fewer rows than columns, else by rows, so that the tasks
//!   repeat the packing of the smaller operand; a product under [`PARALLEL_FLOPS`]
//!   is not split (waking threads costs more than it saves). Batched matmuls run
//!   their batches one after the other.
//!
//! ```text
//! kernel k0 matmul {                 ==>   kernel k0 matmul {
//!   for i0 in 0..128 {                       for i0 in 0..2 parallel {
//!     for i1 in 0..512 { ... fma ... }         call matmul.nn.avx2 m=128 n=512 k=784 ... cols=256*i0 (b0[0; 100352], ...)
//! ```

use kiln_ir::kernel::{
    BufferId, Epilogue, Index, Kernel, KernelOp, LoopKind, Matmul, MatmulOp, MicroKernel, Program,
    Routine, Slice, Split, Stmt, Storage, VarId,
};
use kiln_ir::{Target, TensorType};

/// Products below this many multiply-adds run on one thread.
pub const PARALLEL_FLOPS: usize = 1 << 18;

/// Replaces the loop nest of every matmul kernel by calls of the matmul routine.
pub fn run(program: &Program, target: &Target) -> Program {
    let mut program = program.clone();
    for position in 0..program.kernels.len() {
        if let Some(op) = program.kernels[position].op.clone() {
            // A contraction (an implicit GEMM) keeps its loop nest on the CPU.
            let Some(body) = schedule(&mut program, &op, target) else {
                continue;
            };
            let kernel: &mut Kernel = &mut program.kernels[position];
            kernel.body = body;
            kernel.locals.clear();
        }
    }
    program
}

/// The microkernel and cache blocking for `target`.
pub fn blocking(
    target: &Target,
    m: usize,
    n: usize,
    k: usize,
) -> (MicroKernel, usize, usize, usize) {
    let kernel = if target.avx512f {
        MicroKernel::Avx512F12x32
    } else if target.avx2_fma {
        MicroKernel::Avx2Fma6x16
    } else {
        MicroKernel::F32x4
    };
    let probe = Matmul {
        m,
        n,
        k,
        trans_a: false,
        trans_b: false,
        split: Split::All,
        kernel,
        mc: 1,
        kc: 1,
        nc: 1,
        epilogue: Epilogue::default(),
    };
    let (mr, nr) = probe.tile();
    let f32_bytes = 4;
    // The B micro-panel in two thirds of L1 (the A micro-panel streams past it):
    // measured on a 48 KiB L1 against half of it, kc 256 instead of 192 gained 2-4%
    // for the 12x32 tile (fewer KC blocks, so C is loaded and stored fewer times);
    // the 6x16 tile was flat from 256 to 512.
    let kc = (target.l1d_bytes * 2 / 3 / (nr * f32_bytes)).clamp(64, 384);
    // Equal KC blocks (784 as 4 x 196, not 4 x 192 + 16): every block loads and
    // stores each tile of C, so a short last block costs that for few products.
    let kc = k.div_ceil(k.div_ceil(kc).max(1)).max(1);
    let mc = ((target.l2_bytes / 2 / (kc * f32_bytes)) / mr * mr).clamp(mr, 64 * mr);
    let l3_share = target.l3_bytes / target.threads.max(1);
    let nc = ((l3_share / 2 / (kc * f32_bytes)) / nr * nr).clamp(nr, 4096);
    (kernel, mc, kc, nc)
}

/// How a single matmul `call` splits over `threads` as tasks numbered by `var`: the
/// split and the number of tasks, or `None` to run on one thread (batches, small products,
/// or both axes shorter than two tiles). Splitting rows makes every task pack all of
/// B (k×n), splitting columns all of A (m×k): the shorter of m and n is kept whole.
fn split(call: &Matmul, batches: usize, threads: usize, var: VarId) -> Option<(Split, usize)> {
    let (m, n, k) = (call.m, call.n, call.k);
    let (mr, nr) = call.tile();
    let work = m.saturating_mul(n).saturating_mul(k);
    if batches != 1 || threads < 2 || work < PARALLEL_FLOPS {
        return None;
    }
    let by_rows = |m: usize| {
        let rows = m.div_ceil(threads).div_ceil(mr) * mr;
        (false, rows, m.div_ceil(rows))
    };
    let by_cols = |n: usize| {
        let cols = n.div_ceil(threads).div_ceil(nr) * nr;
        (true, cols, n.div_ceil(cols))
    };
    let (cols, size, count) = match (m >= 2 * mr, n >= 2 * nr) {
        (true, true) if m < n => by_cols(n),
        (true, _) => by_rows(m),
        (false, true) => by_cols(n),
        (false, false) => return None,
    };
    let split = if cols {
        Split::Cols { var, cols: size }
    } else {
        Split::Rows { var, rows: size }
    };
    Some((split, count))
}

/// The routine calls of a matmul kernel's `op`; `None` for other ops.
fn schedule(program: &mut Program, op: &KernelOp, target: &Target) -> Option<Vec<Stmt>> {
    let &KernelOp::Matmul(MatmulOp {
        a,
        b,
        c,
        batches,
        m,
        n,
        k,
        trans_a,
        trans_b,
        bias,
        relu,
        update,
    }) = op
    else {
        return None;
    };
    let (kernel, mc, kc, nc) = blocking(target, m, n, k);
    let mut call = Matmul {
        m,
        n,
        k,
        trans_a,
        trans_b,
        split: Split::All,
        kernel,
        mc,
        kc,
        nc,
        epilogue: Epilogue {
            bias: bias.is_some(),
            relu,
            update: update.map(|(_, scale)| scale),
        },
    };
    // Loop variables of the scheduled kernel are fresh: the old body is dropped.
    let var = VarId(0);
    let tasks = split(&call, batches, target.threads.max(1), var);
    let ws_len = call.workspace_len();
    let ws_tasks = tasks.map_or(1, |(_, count)| count);
    let workspace = program.add_buffer(TensorType::f32([ws_tasks * ws_len]), Storage::Temp);
    let slice = |buffer: BufferId, offset: Index, len: usize| Slice {
        buffer,
        offset,
        len,
    };
    let whole = |buffer: BufferId, len: usize| slice(buffer, Index::constant(0), len);
    // The epilogue's bias and parameter, for every call (only a single batch has them).
    let extra: Vec<Slice> = bias
        .map(|bias| whole(bias, n))
        .into_iter()
        .chain(update.map(|(param, _)| whole(param, m * n)))
        .collect();
    let body = match tasks {
        Some((split, count)) if count > 1 => {
            call.split = split;
            let args = [
                whole(a, m * k),
                whole(b, k * n),
                whole(c, m * n),
                slice(workspace, Index::new([(var, ws_len as i64)], 0), ws_len),
            ]
            .into_iter()
            .chain(extra.iter().cloned())
            .collect();
            vec![Stmt::for_range(
                var,
                count,
                LoopKind::Parallel,
                vec![Stmt::Call {
                    routine: Routine::Matmul(call),
                    args,
                }],
            )]
        }
        _ if batches > 1 => {
            let per = |rows: usize, cols: usize| Index::new([(var, (rows * cols) as i64)], 0);
            let args = [
                slice(a, per(m, k), m * k),
                slice(b, per(k, n), k * n),
                slice(c, per(m, n), m * n),
                whole(workspace, ws_len),
            ]
            .into_iter()
            .chain(extra.iter().cloned())
            .collect();
            vec![Stmt::for_range(
                var,
                batches,
                LoopKind::Serial,
                vec![Stmt::Call {
                    routine: Routine::Matmul(call),
                    args,
                }],
            )]
        }
        _ => vec![Stmt::Call {
            routine: Routine::Matmul(call),
            args: [
                whole(a, m * k),
                whole(b, k * n),
                whole(c, m * n),
                whole(workspace, ws_len),
            ]
            .into_iter()
            .chain(extra.iter().cloned())
            .collect(),
        }],
    };
    Some(body)
}
