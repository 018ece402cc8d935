//! The GPU schedule: how each kernel of a lowered program runs on an NVIDIA GPU
//! ([`kiln_ir::GpuSchedule`]), decided from its loop nests.
//!
//! - A matmul kernel (`KernelOp::Matmul`, after [`super::epilogue`] has fused its
//!   bias, relu or descent step) runs as a tiled kernel: square tiles of C per block
//!   of 256 threads (32, 64 or 128 on a side, 2×2, 4×4 or 8×8 per thread: the
//!   largest that still gives every multiprocessor a block, [`matmul_launch`]),
//!   16-deep panels of A and B through shared memory.
//!   So does a contraction (`KernelOp::Contraction`: a convolution or its filter
//!   gradient as an implicit GEMM), its panels gathered through its strides.
//! - Otherwise the kernel's leading perfect nest of loops is split between threads
//!   as deep as it is *independent* ([`independent`]): every combination of the
//!   loop variables becomes one thread's work, and the rest of the body (a
//!   reduction's inner loop, a softmax row's passes) runs serially in that thread,
//!   in the order the loop nest gives, so every element keeps its value bit for bit.
//! - A reduction whose operator is exact in any order (a max, an i32 sum, a bool
//!   or: `kiln_ir::gpu::Reduction`) over at least [`REDUCE_ELEMENTS`] elements per
//!   output is shared by a block: the threads fold strided shares, warp shuffles and
//!   shared memory combine them. Sums of f32 keep the loop nest's order (a thread per
//!   output, or one thread), because kiln defines a sum's order and a tree would
//!   change its bits.
//! - A kernel with no independent loop (a scatter-add, a running value carried
//!   between iterations, or nothing to split) runs on a single thread.
//!
//! Blocks have 256 threads; a grid-stride loop hands out the work, with at most
//! 16 blocks per multiprocessor so that a huge tensor does not make a huge grid.
//!
//! ```text
//! kernel k1 reduce_sum {                     k1: threads depth=1 block=256 grid=1
//!   for i0 in 0..10 {                        (one thread per row i0; each sums its
//!     r0 = 0.0                                row in order, as the loop nest)
//!     for i1 in 0..64 { r0 = add(r0, b0[64*i0 + i1]) }
//!     b1[i0] = r0
//! ```

use kiln_ir::gpu::{leading_nest, reduction_of};
use kiln_ir::kernel::VarId;
use kiln_ir::kernel::{BufferId, Expr, Index, Indirect, Kernel, KernelOp, LocalId, Program, Stmt};
use kiln_ir::{GpuSchedule, GpuTarget, Launch};
use std::collections::{BTreeMap, BTreeSet};

/// Threads per block of an elementwise or reduction kernel.
pub const BLOCK: u32 = 256;
/// At most this many blocks per multiprocessor in a grid-stride loop.
pub const BLOCKS_PER_SM: u32 = 16;

/// A reduction whose order does not matter is shared by a block when each output
/// folds at least this many elements; shorter ones run a thread per output.
pub const REDUCE_ELEMENTS: usize = 64;

/// The tiling of a matmul or contraction of `batches` problems of `rows`×`columns`
/// on `target`: the largest tile (of `Launch::MATMUL_PARTS`) whose grid still gives
/// every multiprocessor a block, since a bigger tile loads each element for more
/// fmas (a `16p`-square tile does `256p²` fmas per `32p` elements loaded at each
/// step); and when even the smallest tile leaves multiprocessors idle, the smallest,
/// so a small product is spread over as many blocks as it can be.
pub fn matmul_launch(batches: usize, rows: usize, columns: usize, target: &GpuTarget) -> Launch {
    let blocks = |part: u32| {
        let tile = 16 * part as usize;
        batches * rows.div_ceil(tile) * columns.div_ceil(tile)
    };
    let fills = |part: &&u32| blocks(**part) >= target.multiprocessors as usize;
    let parts = Launch::MATMUL_PARTS;
    let part = parts.iter().rev().find(fills).unwrap_or(&parts[0]);
    Launch::matmul(*part)
}

/// A launch for every kernel of `program` on `target`.
pub fn plan(program: &Program, target: &GpuTarget) -> GpuSchedule {
    GpuSchedule {
        target: *target,
        launches: program
            .kernels
            .iter()
            .map(|kernel| launch(kernel, target))
            .collect(),
    }
}

fn launch(kernel: &Kernel, target: &GpuTarget) -> Launch {
    let work = match &kernel.op {
        Some(KernelOp::Matmul(mm)) => [mm.batches, mm.m, mm.n, mm.k],
        Some(KernelOp::Contraction(c)) => [c.batches, c.rows(), c.columns(), c.depth()],
        None => [0; 4],
    };
    if work.iter().all(|&extent| extent > 0) {
        let [batches, rows, columns, _] = work;
        return matmul_launch(batches, rows, columns, target);
    }
    let nest = leading_nest(&kernel.body);
    let max_grid = u64::from(target.multiprocessors.max(1) * BLOCKS_PER_SM);
    for depth in (0..=nest.len()).rev() {
        let body = if depth == 0 {
            kernel.body.as_slice()
        } else {
            nest[depth - 1].2
        };
        let Some(reduction) = reduction_of(kernel, body) else {
            continue;
        };
        let vars = &nest[..depth];
        let outputs = vars
            .iter()
            .map(|&(_, trips, _)| trips as u64)
            .product::<u64>();
        if reduction.elements() >= REDUCE_ELEMENTS && outputs > 0 && independent(vars, body) {
            return Launch::Reduce {
                depth,
                block: BLOCK,
                grid: outputs.min(max_grid) as u32,
            };
        }
    }
    for depth in (1..=nest.len()).rev() {
        let (vars, body) = (&nest[..depth], nest[depth - 1].2);
        if !independent(vars, body) {
            continue;
        }
        let iterations = vars
            .iter()
            .map(|&(_, trips, _)| trips as u64)
            .product::<u64>();
        if iterations < 2 {
            break;
        }
        let lanes = if vectorizable(vars, body) { 4 } else { 1 };
        let threads = iterations / u64::from(lanes);
        let grid = threads.div_ceil(u64::from(BLOCK)).min(max_grid) as u32;
        return Launch::Threads {
            depth,
            lanes,
            block: BLOCK,
            grid,
        };
    }
    Launch::Single
}

/// Whether each thread may take four consecutive iterations of the innermost thread
/// loop as vectors: the body is stores only; every index runs along that loop with
/// stride 1 (or 0 for a load) from an element that is a multiple of 4 for every
/// value of the loops (so 16-byte aligned: buffers start so); the loop's trips are
/// a multiple of 4; no buffer the body writes is read or gathered (a vector load
/// would come before the stores of the lanes before it).
fn vectorizable(vars: &[(VarId, usize, &[Stmt])], body: &[Stmt]) -> bool {
    let Some(&(inner, trips, _)) = vars.last() else {
        return false;
    };
    let aligned = |index: &Index| {
        index.offset % 4 == 0
            && index
                .terms
                .iter()
                .all(|&(var, stride)| var == inner || stride % 4 == 0)
    };
    let mut written = BTreeSet::new();
    let mut ok = trips % 4 == 0 && trips > 0;
    for stmt in body {
        match stmt {
            Stmt::Store { buffer, index, .. } => {
                ok &= index.stride_of(inner) == 1 && aligned(index);
                written.insert(*buffer);
            }
            _ => ok = false,
        }
    }
    for stmt in body {
        stmt.visit_exprs(&mut |expr| match expr {
            Expr::Load { buffer, index, .. } => {
                let stride = index.stride_of(inner);
                ok &= !written.contains(buffer) && (stride == 0 || (stride == 1 && aligned(index)));
            }
            Expr::Gather(_) => ok = false,
            _ => {}
        });
    }
    ok
}

/// Whether the iterations of the nest `vars` (each `(var, trips, body)`, the last
/// one's body being `body`) may run in any order and at once: no scatter-add or
/// call; every local read after an assignment in the same iteration; every written
/// buffer's elements split into disjoint regions, one per iteration (its stores'
/// indices have the same coefficients on the nest's variables, injective over the
/// nest with gaps wider than what the inner loops add); and every read of a written
/// buffer inside the reading iteration's own region (no gather from it).
pub fn independent(vars: &[(VarId, usize, &[Stmt])], body: &[Stmt]) -> bool {
    let outer: BTreeMap<VarId, usize> = vars.iter().map(|&(v, n, _)| (v, n)).collect();
    let mut inner = BTreeMap::new();
    let mut ok = true;
    for stmt in body {
        stmt.visit(&mut |stmt| match stmt {
            Stmt::Loop {
                var,
                start,
                end,
                step,
                ..
            } => {
                let last = if end > start {
                    start + (end - start - 1) / step * step
                } else {
                    *start
                };
                inner.insert(*var, (*start as i64, last as i64));
            }
            Stmt::Call { .. } | Stmt::ScatterAdd { .. } => ok = false,
            Stmt::Store { .. } | Stmt::Assign { .. } => {}
        });
    }
    if !ok || !locals_assigned_first(body, &mut BTreeSet::new()) {
        return false;
    }
    let mut regions: BTreeMap<BufferId, Region> = BTreeMap::new();
    for stmt in body {
        stmt.visit(&mut |stmt| {
            if let Stmt::Store { buffer, index, .. } = stmt {
                let (coefficients, span) = split(index, &outer, &inner);
                match regions.get_mut(buffer) {
                    Some(region) if region.coefficients == coefficients => {
                        region.span = (region.span.0.min(span.0), region.span.1.max(span.1));
                    }
                    Some(_) => ok = false,
                    None => {
                        regions.insert(*buffer, Region { coefficients, span });
                    }
                }
            }
        });
    }
    if !ok || !regions.values().all(|region| region.disjoint(vars)) {
        return false;
    }
    for stmt in body {
        stmt.visit_exprs(&mut |expr| match expr {
            Expr::Load { buffer, index, .. } => {
                if let Some(region) = regions.get(buffer) {
                    let (coefficients, span) = split(index, &outer, &inner);
                    ok &= coefficients == region.coefficients
                        && span.0 >= region.span.0
                        && span.1 <= region.span.1;
                }
            }
            Expr::Gather(Indirect { buffer, .. }) => ok &= !regions.contains_key(buffer),
            _ => {}
        });
    }
    ok
}

/// The elements one iteration of the nest writes in a buffer: `sum(c_v * v)` plus
/// an offset in `span` (inclusive).
struct Region {
    coefficients: Vec<(VarId, i64)>,
    span: (i64, i64),
}

impl Region {
    /// Whether different iterations' spans never meet: with the coefficients sorted,
    /// each is wider than everything the smaller ones and the span can add.
    fn disjoint(&self, vars: &[(VarId, usize, &[Stmt])]) -> bool {
        let mut steps = Vec::new();
        for &(var, trips, _) in vars {
            let c = self
                .coefficients
                .iter()
                .find(|(v, _)| *v == var)
                .map_or(0, |&(_, c)| c);
            if trips > 1 {
                steps.push((c, trips as i64));
            }
        }
        steps.sort_unstable();
        let mut reach = self.span.1 - self.span.0;
        for (c, trips) in steps {
            if c <= reach {
                return false;
            }
            reach = reach.saturating_add(c.saturating_mul(trips - 1));
        }
        true
    }
}

/// An index's coefficients on the nest's variables (every one, 0 where absent, in
/// the nest's order) and the range of the rest over the inner loops.
fn split(
    index: &Index,
    outer: &BTreeMap<VarId, usize>,
    inner: &BTreeMap<VarId, (i64, i64)>,
) -> (Vec<(VarId, i64)>, (i64, i64)) {
    let coefficients = outer.keys().map(|&v| (v, index.stride_of(v))).collect();
    let (mut lo, mut hi) = (index.offset, index.offset);
    for &(var, stride) in &index.terms {
        if outer.contains_key(&var) {
            continue;
        }
        let (first, last) = inner.get(&var).copied().unwrap_or((0, 0));
        let (a, b) = (stride * first, stride * last);
        lo += a.min(b);
        hi += a.max(b);
    }
    (coefficients, (lo, hi))
}

/// Whether every local is read only after an assignment earlier in program order in
/// the same iteration (an assignment inside a loop counts only within that loop,
/// which may run no times), so no value passes from one iteration to another.
fn locals_assigned_first(stmts: &[Stmt], assigned: &mut BTreeSet<LocalId>) -> bool {
    let reads_ok = |expr: &Expr, assigned: &BTreeSet<LocalId>| {
        let mut ok = true;
        expr.visit(&mut |e| {
            if let Expr::Local(local) = e {
                ok &= assigned.contains(local);
            }
        });
        ok
    };
    for stmt in stmts {
        let ok = match stmt {
            Stmt::Assign { local, value } => {
                let ok = reads_ok(value, assigned);
                assigned.insert(*local);
                ok
            }
            Stmt::Store { value, .. } => reads_ok(value, assigned),
            Stmt::Loop { body, .. } => locals_assigned_first(body, &mut assigned.clone()),
            Stmt::Call { .. } | Stmt::ScatterAdd { .. } => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::kernel_text;

    /// The launch of the one kernel of a program with input `b0: f32[64]` and
    /// buffer `b1: f32[64]`, whose body is `body`.
    fn launch_of(body: &str) -> Launch {
        let text = format!(
            "program \"p\" {{\n  b0: f32[64] input \"x\"\n  b1: f32[64] temp\n  output \"y\" = b1: f32[64]\n\n  kernel k0 k {{\n    local r0: f32\n{body}\n  }}\n}}\n"
        );
        let program = kernel_text::parse(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
        program.check().unwrap();
        plan(&program, &GpuTarget::sm80()).launches[0].clone()
    }

    fn depth(launch: &Launch) -> usize {
        match launch {
            Launch::Threads { depth, .. } => *depth,
            _ => 0,
        }
    }

    #[test]
    fn matmul_tiles_are_the_largest_that_fill_the_multiprocessors() {
        let part = |batches, rows, columns, target: &GpuTarget| match matmul_launch(
            batches, rows, columns, target,
        ) {
            Launch::Matmul { thread_m, .. } => thread_m,
            other => panic!("{other}"),
        };
        let (a100, h100) = (GpuTarget::sm80(), GpuTarget::sm90());
        // 4096² has 1024 tiles of 128: the biggest tiles.
        assert_eq!(part(1, 4096, 4096, &h100), 8);
        // 1024² has 64 tiles of 128 (too few for 108 or 132 SMs), 256 of 64.
        assert_eq!(part(1, 1024, 1024, &a100), 4);
        assert_eq!(part(1, 1024, 1024, &h100), 4);
        // 1408² has 121 tiles of 128: enough for an A100's 108 SMs, not an H100's 132.
        assert_eq!(part(1, 1408, 1408, &a100), 8);
        assert_eq!(part(1, 1408, 1408, &h100), 4);
        // Batches count: 2 x 1024² fills an A100 with 128 tiles of 128.
        assert_eq!(part(2, 1024, 1024, &a100), 8);
        // A small product gets the smallest tiles, the most blocks it can have.
        assert_eq!(part(1, 64, 128, &h100), 2);
        assert_eq!(part(1, 1, 1, &h100), 2);
    }

    #[test]
    fn elementwise_nests_are_split_as_deep_as_they_go() {
        let launch = launch_of(
            "for i0 in 0..8 {\n for i1 in 0..8 {\n b1[8*i0 + i1] = exp(b0[i1 + 8*i0])\n }\n }",
        );
        assert_eq!(
            launch,
            Launch::Threads {
                depth: 2,
                lanes: 4,
                block: 256,
                grid: 1
            }
        );
        // A transposed store is as independent.
        let launch = launch_of(
            "for i0 in 0..8 {\n for i1 in 0..8 {\n b1[i0 + 8*i1] = b0[8*i0 + i1]\n }\n }",
        );
        assert_eq!(depth(&launch), 2);
    }

    #[test]
    fn a_row_reduction_runs_a_row_per_thread() {
        let launch = launch_of(
            "for i0 in 0..8 {\n r0 = 0.0\n for i1 in 0..8 {\n r0 = add(r0, b0[8*i0 + i1])\n }\n b1[i0] = r0\n }",
        );
        assert_eq!(depth(&launch), 1);
    }

    #[test]
    fn long_reductions_in_any_order_are_shared_by_a_block() {
        // A max over rows of 64: a block per row.
        let launch = launch_of(
            "for i0 in 0..1 {\n r0 = -inf\n for i1 in 0..64 {\n r0 = max(r0, b0[64*i0 + i1])\n }\n b1[i0] = r0\n }",
        );
        assert_eq!(
            launch,
            Launch::Reduce {
                depth: 1,
                block: 256,
                grid: 1
            }
        );
        // The same over the whole input, without an outer loop.
        let launch =
            launch_of("r0 = -inf\nfor i0 in 0..64 {\n r0 = max(r0, b0[i0])\n }\nb1[0] = r0");
        assert_eq!(depth(&launch), 0);
        assert!(
            matches!(launch, Launch::Reduce { depth: 0, .. }),
            "{launch}"
        );
        // An f32 sum keeps its order: one thread.
        let launch =
            launch_of("r0 = 0.0\nfor i0 in 0..64 {\n r0 = add(r0, b0[i0])\n }\nb1[0] = r0");
        assert_eq!(launch, Launch::Single);
        // A max from another start than -inf is not the fold of the elements alone.
        let launch =
            launch_of("r0 = 0.0\nfor i0 in 0..64 {\n r0 = max(r0, b0[i0])\n }\nb1[0] = r0");
        assert_eq!(launch, Launch::Single);
    }

    #[test]
    fn loops_that_share_elements_stay_on_one_thread() {
        // Every iteration adds into the same element.
        let launch = launch_of("for i0 in 0..8 {\n b1[0] = add(b1[0], b0[i0])\n }");
        assert_eq!(launch, Launch::Single);
        // Each iteration reads what the one before wrote.
        let launch = launch_of("for i0 in 0..8 {\n b1[i0 + 1] = add(b1[i0], b0[i0])\n }");
        assert_eq!(launch, Launch::Single);
        // Rows of 8 written at a stride of 4 overlap.
        let launch =
            launch_of("for i0 in 0..4 {\n for i1 in 0..8 {\n b1[4*i0 + i1] = b0[i1]\n }\n }");
        assert_eq!(launch, Launch::Single);
        // Inner rows of 8 at a stride of 8 do not, but the inner loop reads the
        // next row's first element, which another thread writes.
        let launch = launch_of(
            "for i0 in 0..4 {\n for i1 in 0..8 {\n b1[8*i0 + i1] = add(b0[i1], b1[8*i0 + 8])\n }\n }",
        );
        assert_eq!(depth(&launch), 0);
    }

    #[test]
    fn scatters_and_one_iteration_loops_run_on_one_thread() {
        let launch = launch_of("for i0 in 0..1 {\n b1[i0] = b0[i0]\n }");
        assert_eq!(launch, Launch::Single);
        let launch =
            launch_of("r0 = 0.0\nfor i0 in 0..64 {\n r0 = add(r0, b0[i0])\n }\nb1[0] = r0");
        assert_eq!(launch, Launch::Single);
    }
}
