//! The memory plan of a run: every input and scratch buffer of a program gets an
//! offset in one arena, and buffers that are never live at the same time share bytes.
//!
//! [`plan`] is a pure function of a checked [`Program`]. It assumes what
//! `Program::check` proves (buffer ids exist, each parameter is updated at most once,
//! an update's value has its parameter's length) and guarantees:
//!
//! - every arena buffer starts at a multiple of [`ALIGNMENT`] and ends within
//!   [`ArenaPlan::arena_bytes`];
//! - two arena buffers whose live intervals intersect do not overlap in bytes;
//! - a parameter update is applied in place (its value buffer *is* the parameter's
//!   storage) only when no launch after the first write of the value reads the old
//!   parameter, see [`UpdateStep::InPlace`].
//!
//! Liveness is counted in launch steps: step `k` is kernel `k`, and step
//! `kernels.len()` stands for the end of the run, when outputs are read and updates
//! copied. Intervals are closed, so a buffer that a kernel reads and one that the same
//! kernel writes are live at the same step and never share bytes (kernels read and
//! write in any order within a launch). Inputs are copied in before step 0, so they
//! are live from step 0 to their last reader.
//!
//! Offsets are assigned by "greedy by size" (TFLite's arena planner, Pisarchyk & Lee,
//! "Efficient Memory Management for Deep Neural Net Inference", 2020): buffers in
//! decreasing size, each put into the smallest gap between the buffers already placed
//! that are live at the same time and that it fits, or after the last of them. Large
//! buffers go first because they are the hardest to fit; it is near optimal on the
//! chains and diamonds that lowered graphs are, and `O(n^2)` in the buffer count.
//!
//! ```text
//! k0: b2 = exp(b0)       b0 input [0,1]  @0      (each buffer 64 bytes)
//! k1: b3 = add(b2, b0)   b2 temp  [0,1]  @64
//! k2: b4 = mul(b3, b3)   b3 temp  [1,2]  @128
//! output "y" = b4        b4 temp  [2,3]  @0      arena 192 bytes, unplanned 256
//! ```

use kiln_ir::kernel::{
    loop_trips, Accesses, BufferId, Expr, Index, Indirect, Kernel, Matmul, Program, Routine, Slice,
    Stmt, Storage, VarId,
};
use kiln_ir::DType;
use std::collections::{BTreeSet, HashMap};

/// Every arena buffer starts at a multiple of this many bytes, so that aligned vector
/// loads (up to AVX-512) can later be used on any buffer.
pub const ALIGNMENT: usize = 64;

/// Bytes of one element of `dtype` in a buffer. The one place the planner learns
/// element sizes, so a narrower dtype only has to change `DType::size_bytes`.
pub fn element_bytes(dtype: DType) -> usize {
    dtype.size_bytes()
}

/// Closed range of launch steps `first..=last` during which a buffer holds a value
/// that is still needed (step `kernels.len()` is the end of the run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    pub first: usize,
    pub last: usize,
}

impl Interval {
    /// Whether some step is in both intervals.
    pub fn overlaps(self, other: Interval) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Where a buffer's elements are during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A parameter: its own allocation, kept across runs.
    Param,
    /// The value of an in-place update: the storage of parameter buffer `param`.
    InPlace { param: BufferId },
    /// An input or scratch buffer at byte `offset` of the arena.
    Arena { offset: usize },
}

/// The plan of one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferPlan {
    pub placement: Placement,
    /// Exact size in bytes (elements times [`element_bytes`]; saturated).
    pub bytes: usize,
    /// When the buffer is live, for arena buffers.
    pub live: Option<Interval>,
}

/// How one parameter takes its new value, in the program's update order. An update
/// whose value is the parameter's own buffer needs no step and has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateStep {
    /// The kernels write the new value straight into the parameter's storage
    /// (`value` is placed there): nothing is left to do after the run. Chosen when
    /// `value` is scratch that only this update and kernels read, no kernel after the
    /// first one writing `value` reads the parameter, and that first writer reads the
    /// parameter only element by element in its one store to `value`.
    InPlace { param: BufferId, value: BufferId },
    /// The value is an arena buffer (input or scratch), live to the end of the run:
    /// copy it into the parameter after the run.
    Copy { param: BufferId, value: BufferId },
    /// The value is another parameter, which may itself be updated: copy it aside
    /// before any parameter changes.
    Staged { param: BufferId, value: BufferId },
}

/// Where every buffer of a program lives and how its updates are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaPlan {
    /// Indexed by `BufferId`.
    pub buffers: Vec<BufferPlan>,
    pub updates: Vec<UpdateStep>,
    /// Size of the arena: the end of the highest placed buffer, a multiple of
    /// [`ALIGNMENT`] (`usize::MAX` if the sizes overflow, which no allocation meets).
    pub arena_bytes: usize,
    /// What the input and scratch buffers would take with one aligned allocation
    /// each and no reuse (in-place update values counted too): the baseline that
    /// `arena_bytes` is measured against.
    pub unplanned_bytes: usize,
}

impl ArenaPlan {
    /// The number of updates applied in place.
    pub fn in_place_updates(&self) -> usize {
        self.updates
            .iter()
            .filter(|step| matches!(step, UpdateStep::InPlace { .. }))
            .count()
    }
}

fn aligned(bytes: usize) -> usize {
    bytes.div_ceil(ALIGNMENT).saturating_mul(ALIGNMENT)
}

/// Plans the arena and the updates of `program`, which must pass `Program::check`.
pub fn plan(program: &Program) -> ArenaPlan {
    let access: Vec<Accesses> = program.kernels.iter().map(Kernel::accesses).collect();
    let end = program.kernels.len();
    let updates = plan_updates(program, &access);
    let mut in_place: HashMap<BufferId, BufferId> = HashMap::new();
    // Buffers read after the last kernel: outputs, and update values that are copied.
    let mut read_at_end: BTreeSet<BufferId> = program.outputs.iter().map(|o| o.buffer).collect();
    for step in &updates {
        match *step {
            UpdateStep::InPlace { param, value } => {
                in_place.insert(value, param);
            }
            UpdateStep::Copy { value, .. } | UpdateStep::Staged { value, .. } => {
                read_at_end.insert(value);
            }
        }
    }

    let mut first_touch: Vec<Option<usize>> = vec![None; program.buffers.len()];
    let mut last_touch: Vec<Option<usize>> = vec![None; program.buffers.len()];
    for (step, kernel) in access.iter().enumerate() {
        for &buffer in kernel.reads.union(&kernel.writes) {
            first_touch[buffer.0].get_or_insert(step);
            last_touch[buffer.0] = Some(step);
        }
    }

    let mut buffers = Vec::with_capacity(program.buffers.len());
    let mut unplanned_bytes = 0usize;
    for (index, buffer) in program.buffers.iter().enumerate() {
        let id = BufferId(index);
        let bytes = buffer.len().saturating_mul(element_bytes(buffer.ty.dtype));
        let (placement, live) = match buffer.storage {
            Storage::Param(_) => (Placement::Param, None),
            Storage::Input(_) | Storage::Temp => {
                unplanned_bytes = unplanned_bytes.saturating_add(aligned(bytes));
                // Inputs are written before the first kernel; a scratch buffer no
                // kernel touches still gets a place (its first step, or 0).
                let first = match buffer.storage {
                    Storage::Input(_) => 0,
                    _ => first_touch[index].unwrap_or(0),
                };
                let last = if read_at_end.contains(&id) {
                    end
                } else {
                    last_touch[index].unwrap_or(first).max(first)
                };
                let live = Some(Interval { first, last });
                match in_place.get(&id) {
                    Some(&param) => (Placement::InPlace { param }, live),
                    // The offset is filled in below.
                    None => (Placement::Arena { offset: 0 }, live),
                }
            }
        };
        buffers.push(BufferPlan {
            placement,
            bytes,
            live,
        });
    }
    let arena_bytes = assign_offsets(&mut buffers);
    ArenaPlan {
        buffers,
        updates,
        arena_bytes,
        unplanned_bytes,
    }
}

/// Greedy by size: sets the offset of every arena buffer and returns the arena size.
fn assign_offsets(buffers: &mut [BufferPlan]) -> usize {
    let mut order: Vec<(usize, usize, Interval)> = buffers
        .iter()
        .enumerate()
        .filter_map(|(index, plan)| match (plan.placement, plan.live) {
            // An empty buffer is never accessed: offset 0 needs no room.
            (Placement::Arena { .. }, Some(live)) if plan.bytes > 0 => {
                Some((index, aligned(plan.bytes), live))
            }
            _ => None,
        })
        .collect();
    // Largest first; ties by first use, then by id, so the plan is deterministic.
    order.sort_by_key(|&(index, size, live)| (std::cmp::Reverse(size), live.first, index));
    // `(offset, size, live)` of the buffers placed so far.
    let mut placed: Vec<(usize, usize, Interval)> = Vec::with_capacity(order.len());
    let mut arena_bytes = 0usize;
    for (index, size, live) in order {
        let mut neighbours: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&(_, _, other)| other.overlaps(live))
            .map(|&(offset, size, _)| (offset, size))
            .collect();
        neighbours.sort_unstable();
        // Best fit: the smallest gap between live neighbours that holds the buffer.
        let mut best: Option<(usize, usize)> = None;
        let mut gap_start = 0usize;
        for (offset, other_size) in neighbours {
            if offset > gap_start {
                let gap = offset - gap_start;
                if gap >= size && best.is_none_or(|(best_gap, _)| gap < best_gap) {
                    best = Some((gap, gap_start));
                }
            }
            gap_start = gap_start.max(offset.saturating_add(other_size));
        }
        let offset = best.map_or(gap_start, |(_, offset)| offset);
        buffers[index].placement = Placement::Arena { offset };
        arena_bytes = arena_bytes.max(offset.saturating_add(size));
        placed.push((offset, size, live));
    }
    arena_bytes
}

/// Decides how each update is applied (see [`UpdateStep`]).
fn plan_updates(program: &Program, access: &[Accesses]) -> Vec<UpdateStep> {
    // Looked up once per update, so indexed: scans would be quadratic in the number
    // of parameters.
    let params: HashMap<&str, BufferId> = program.params().into_iter().collect();
    let shown: BTreeSet<BufferId> = program.outputs.iter().map(|o| o.buffer).collect();
    let mut value_uses: HashMap<BufferId, usize> = HashMap::new();
    for update in &program.updates {
        *value_uses.entry(update.value).or_insert(0) += 1;
    }
    let mut steps = Vec::with_capacity(program.updates.len());
    for update in &program.updates {
        let param = *params
            .get(update.param.as_str())
            .expect("Program::check resolved every update target");
        let value = update.value;
        if param == value {
            continue;
        }
        steps.push(match program.buffer(value).storage {
            Storage::Param(_) => UpdateStep::Staged { param, value },
            Storage::Input(_) => UpdateStep::Copy { param, value },
            Storage::Temp => {
                let sole = value_uses[&value] == 1 && !shown.contains(&value);
                if sole && can_write_in_place(program, access, &value_uses, param, value) {
                    UpdateStep::InPlace { param, value }
                } else {
                    UpdateStep::Copy { param, value }
                }
            }
        });
    }
    steps
}

/// Whether scratch buffer `value` can live in parameter `param`'s storage: from the
/// first kernel that writes `value` on, nothing may need the parameter's old value.
fn can_write_in_place(
    program: &Program,
    access: &[Accesses],
    value_uses: &HashMap<BufferId, usize>,
    param: BufferId,
    value: BufferId,
) -> bool {
    // Read after the run: an output showing the parameter, or another update
    // taking the parameter's (old) value.
    if program.outputs.iter().any(|o| o.buffer == param) || value_uses.contains_key(&param) {
        return false;
    }
    // Kernels never store to parameters in lowered programs; one that did would
    // make the two storages' contents a matter of launch order.
    if access.iter().any(|kernel| kernel.writes.contains(&param)) {
        return false;
    }
    let Some(writer) = access.iter().position(|k| k.writes.contains(&value)) else {
        return false;
    };
    if access[writer + 1..]
        .iter()
        .any(|kernel| kernel.reads.contains(&param))
    {
        return false;
    }
    !access[writer].reads.contains(&param)
        || reads_param_only_where_it_writes(&program.kernels[writer], param, value)
}

/// Whether `kernel` stores to `value` in exactly one statement, that store writes each
/// element at most once, and every load of `param` in the kernel is in that store's
/// value at the same index. Then each element of `param` is read just before the same
/// element of `value` overwrites it, and never after, so the two may share storage.
/// (The code generator hoists only loads that do not depend on the innermost loop's
/// variable; such a load's index equals a store index that does not either, which
/// the injectivity test refuses for loops of more than one iteration.)
fn reads_param_only_where_it_writes(kernel: &Kernel, param: BufferId, value: BufferId) -> bool {
    let mut stores = 0;
    let mut safe = true;
    let mut scope: Vec<(VarId, usize, usize)> = Vec::new();
    walk_stmts(&kernel.body, &mut scope, &mut |stmt, scope| match stmt {
        Stmt::Store {
            buffer,
            index,
            value: expr,
        } if *buffer == value => {
            stores += 1;
            safe &= loads_only_at(expr, param, index) && is_injective(index, scope);
        }
        Stmt::Store { value: expr, .. } | Stmt::Assign { value: expr, .. } => {
            safe &= !loads_buffer(expr, param);
        }
        // Adding into either buffer is no element-by-element overwrite.
        Stmt::ScatterAdd {
            target,
            value: expr,
        } => {
            safe &= target.buffer != param
                && target.buffer != value
                && !loads_buffer(expr, param)
                && !loads_buffer(&target.at, param);
        }
        // A matmul whose update epilogue reads `param` and writes `value` element
        // by element (the routine reads each element of the parameter just before
        // it writes the same element of C, and never after) is that one store.
        Stmt::Call {
            routine: Routine::Matmul(matmul),
            args,
        } if steps_in_place(matmul, args, param, value) => stores += 1,
        // Any other routine's order of reads and writes is its own: never share
        // storage.
        Stmt::Call { args, .. } => {
            safe &= args
                .iter()
                .all(|slice| slice.buffer != param && slice.buffer != value);
        }
        Stmt::Loop { .. } => {}
    });
    safe && stores == 1
}

/// Whether a matmul call writes C = `value` from the parameter `param` of its update
/// epilogue at the same elements (equal slices), and passes neither otherwise.
fn steps_in_place(matmul: &Matmul, args: &[Slice], param: BufferId, value: BufferId) -> bool {
    let (Some(c), Some(from)) = (args.get(2), args.last()) else {
        return false;
    };
    let last = args.len() - 1;
    matmul.epilogue.update.is_some()
        && c.buffer == value
        && from.buffer == param
        && c.offset == from.offset
        && c.len == from.len
        && args.iter().enumerate().all(|(at, slice)| {
            at == 2 || at == last || (slice.buffer != param && slice.buffer != value)
        })
}

/// The loops around a statement, `(var, trips, step)`, outermost first.
type Scope = [(VarId, usize, usize)];

/// Calls `f` on every statement with the loops around it.
fn walk_stmts(
    stmts: &[Stmt],
    scope: &mut Vec<(VarId, usize, usize)>,
    f: &mut dyn FnMut(&Stmt, &Scope),
) {
    for stmt in stmts {
        f(stmt, scope);
        if let Stmt::Loop {
            var,
            start,
            end,
            step,
            body,
            ..
        } = stmt
        {
            let trips = loop_trips(*start, *end, *step);
            scope.push((*var, trips, *step));
            walk_stmts(body, scope, f);
            scope.pop();
        }
    }
}

fn loads_buffer(expr: &Expr, target: BufferId) -> bool {
    let mut found = false;
    expr.visit(&mut |expr| {
        found |= matches!(
            expr,
            Expr::Load { buffer, .. } | Expr::Gather(Indirect { buffer, .. }) if *buffer == target
        );
    });
    found
}

/// Whether every load of `target` in `expr` is at exactly `at`.
fn loads_only_at(expr: &Expr, target: BufferId, at: &Index) -> bool {
    let mut only = true;
    expr.visit(&mut |expr| {
        match expr {
            Expr::Load { buffer, index, .. } => only &= *buffer != target || index == at,
            // A gathered element may be any element.
            Expr::Gather(Indirect { buffer, .. }) => only &= *buffer != target,
            _ => {}
        }
    });
    only
}

/// Whether `index` takes a different value for every iteration of the loops in
/// `scope`: every loop of more than one iteration has a term, and, taking terms by
/// increasing stride magnitude, each stride exceeds the span the smaller ones reach
/// (a mixed-radix number, so distinct iterations give distinct elements).
fn is_injective(index: &Index, scope: &Scope) -> bool {
    let mut digits: Vec<(u128, u128)> = Vec::new();
    for &(var, extent, step) in scope {
        if extent <= 1 {
            continue;
        }
        // One trip moves the index by stride * step elements.
        let stride = index.stride_of(var).saturating_mul(step as i64);
        if stride == 0 {
            return false;
        }
        digits.push((u128::from(stride.unsigned_abs()), extent as u128));
    }
    digits.sort_unstable();
    let mut span = 0u128;
    for (stride, extent) in digits {
        if stride <= span {
            return false;
        }
        span = span.saturating_add(stride.saturating_mul(extent - 1));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::kernel::{LoopKind, Output, Update};
    use kiln_ir::{BinaryOp, TensorType};

    /// `dst[i] = op(a[i], b[i])` over `n` elements (`b` omitted for a copy).
    fn map_kernel(name: &str, n: usize, dst: BufferId, a: BufferId, b: Option<BufferId>) -> Kernel {
        let i = VarId(0);
        let at = Index::new([(i, 1)], 0);
        let load_a = Expr::load(a, at.clone());
        let value = match b {
            Some(b) => Expr::binary(BinaryOp::Add, load_a, Expr::load(b, at.clone())),
            None => load_a,
        };
        Kernel {
            name: name.into(),
            op: None,
            locals: Vec::new(),
            body: vec![Stmt::for_range(
                i,
                n,
                LoopKind::Serial,
                vec![Stmt::Store {
                    buffer: dst,
                    index: at,
                    value,
                }],
            )],
        }
    }

    fn temp(program: &mut Program, n: usize) -> BufferId {
        program.add_buffer(TensorType::f32([n]), Storage::Temp)
    }

    fn output(program: &mut Program, name: &str, buffer: BufferId, n: usize) {
        program.outputs.push(Output {
            name: name.into(),
            buffer,
            ty: TensorType::f32([n]),
        });
    }

    fn offset(plan: &ArenaPlan, buffer: BufferId) -> usize {
        match plan.buffers[buffer.0].placement {
            Placement::Arena { offset } => offset,
            other => panic!("{buffer} is not in the arena: {other:?}"),
        }
    }

    /// The example of the module docs.
    #[test]
    fn the_documented_example_reuses_the_first_buffer() {
        let mut program = Program::new("doc");
        let b0 = program.add_buffer(TensorType::f32([16]), Storage::Input("x".into()));
        let b1 = program.add_buffer(TensorType::f32([16]), Storage::Param("w".into()));
        let (b2, b3, b4) = (
            temp(&mut program, 16),
            temp(&mut program, 16),
            temp(&mut program, 16),
        );
        program.kernels.push(map_kernel("exp", 16, b2, b0, None));
        program
            .kernels
            .push(map_kernel("add", 16, b3, b2, Some(b0)));
        program
            .kernels
            .push(map_kernel("mul", 16, b4, b3, Some(b3)));
        output(&mut program, "y", b4, 16);
        program.check().expect("checks");
        let plan = plan(&program);
        let live = |b: BufferId| plan.buffers[b.0].live.map(|l| (l.first, l.last));
        assert_eq!(live(b0), Some((0, 1)));
        assert_eq!(live(b1), None);
        assert_eq!(live(b2), Some((0, 1)));
        assert_eq!(live(b3), Some((1, 2)));
        assert_eq!(live(b4), Some((2, 3)), "an output lives to the end");
        assert_eq!(plan.buffers[b1.0].placement, Placement::Param);
        let offsets: Vec<usize> = [b0, b2, b3, b4].map(|b| offset(&plan, b)).to_vec();
        assert_eq!(offsets, [0, 64, 128, 0]);
        assert_eq!((plan.arena_bytes, plan.unplanned_bytes), (192, 256));
    }

    #[test]
    fn a_chain_reuses_freed_space() {
        // x -> t0 -> t1 -> ... -> t9: only two neighbours are ever live together.
        let mut program = Program::new("chain");
        let n = 1000;
        let mut previous = program.add_buffer(TensorType::f32([n]), Storage::Input("x".into()));
        for step in 0..10 {
            let next = temp(&mut program, n);
            program
                .kernels
                .push(map_kernel(&format!("neg{step}"), n, next, previous, None));
            previous = next;
        }
        output(&mut program, "y", previous, n);
        program.check().expect("checks");
        let plan = plan(&program);
        let each = aligned(n * 4);
        assert_eq!(plan.unplanned_bytes, 11 * each);
        assert_eq!(plan.arena_bytes, 2 * each, "{plan:?}");
        assert_no_conflicts(&plan);
    }

    #[test]
    fn alignment_pads_every_buffer_and_element_size_comes_from_the_dtype() {
        let mut program = Program::new("odd");
        let x = program.add_buffer(TensorType::i32([3]), Storage::Input("x".into()));
        let t = program.add_buffer(TensorType::i32([3]), Storage::Temp);
        let u = program.add_buffer(TensorType::i32([5]), Storage::Temp);
        program.kernels.push(map_kernel("copy", 3, t, x, None));
        program.kernels.push(map_kernel("copy", 3, u, t, None));
        program.outputs.push(Output {
            name: "y".into(),
            buffer: u,
            ty: TensorType::i32([5]),
        });
        program.check().expect("checks");
        let plan = plan(&program);
        assert_eq!(plan.buffers[x.0].bytes, 3 * element_bytes(DType::I32));
        assert_eq!(plan.buffers[u.0].bytes, 20);
        for buffer in [x, t, u] {
            assert_eq!(offset(&plan, buffer) % ALIGNMENT, 0);
        }
        // x and t meet in k0, t and u in k1; x is dead by k1, so u takes its place.
        assert_eq!(offset(&plan, u), offset(&plan, x));
        assert_eq!(plan.arena_bytes, 2 * ALIGNMENT);
    }

    /// `p' = p - g` with `g = x + x`, and an output of `x + p` launched after the
    /// update when `late_read` is set.
    fn sgd_like(late_read: bool) -> (Program, BufferId, BufferId) {
        let n = 8;
        let mut program = Program::new("sgd");
        let x = program.add_buffer(TensorType::f32([n]), Storage::Input("x".into()));
        let p = program.add_buffer(TensorType::f32([n]), Storage::Param("p".into()));
        let g = temp(&mut program, n);
        let new_p = temp(&mut program, n);
        program.kernels.push(map_kernel("grad", n, g, x, Some(x)));
        program
            .kernels
            .push(map_kernel("sub", n, new_p, p, Some(g)));
        if late_read {
            let late = temp(&mut program, n);
            program
                .kernels
                .push(map_kernel("late", n, late, x, Some(p)));
            output(&mut program, "late", late, n);
        }
        program.updates.push(Update {
            param: "p".into(),
            value: new_p,
        });
        program.check().expect("checks");
        (program, p, new_p)
    }

    #[test]
    fn an_update_is_in_place_when_nothing_reads_the_old_parameter_afterwards() {
        let (program, p, new_p) = sgd_like(false);
        let plan = plan(&program);
        assert_eq!(
            plan.updates,
            [UpdateStep::InPlace {
                param: p,
                value: new_p
            }]
        );
        assert_eq!(
            plan.buffers[new_p.0].placement,
            Placement::InPlace { param: p }
        );
        // Only x and g are in the arena, at different offsets (both are live at k0).
        assert_eq!(plan.arena_bytes, 2 * ALIGNMENT);
        assert_no_conflicts(&plan);
    }

    #[test]
    fn an_update_is_copied_when_a_later_kernel_reads_the_old_parameter() {
        let (program, p, new_p) = sgd_like(true);
        let plan = plan(&program);
        assert_eq!(
            plan.updates,
            [UpdateStep::Copy {
                param: p,
                value: new_p
            }]
        );
        // The copied value lives to the end of the run.
        assert_eq!(
            plan.buffers[new_p.0].live,
            Some(Interval { first: 1, last: 3 })
        );
        assert_no_conflicts(&plan);
    }

    #[test]
    fn an_update_whose_value_is_also_an_output_is_copied() {
        let (mut program, p, new_p) = sgd_like(false);
        output(&mut program, "new_p", new_p, 8);
        let plan = plan(&program);
        assert_eq!(
            plan.updates,
            [UpdateStep::Copy {
                param: p,
                value: new_p
            }]
        );
    }

    #[test]
    fn an_update_is_copied_when_its_parameter_is_read_at_the_end() {
        // An output showing the old parameter (lowering copies those, but the plan
        // must not depend on it) and a parameter taking another one's old value.
        let (mut program, p, _) = sgd_like(false);
        output(&mut program, "p", p, 8);
        assert!(matches!(plan(&program).updates[0], UpdateStep::Copy { .. }));

        let (mut program, p, new_p) = sgd_like(false);
        let q = program.add_buffer(TensorType::f32([8]), Storage::Param("q".into()));
        program.updates.push(Update {
            param: "q".into(),
            value: p,
        });
        program.check().expect("checks");
        assert_eq!(
            plan(&program).updates,
            [
                UpdateStep::Copy {
                    param: p,
                    value: new_p
                },
                UpdateStep::Staged { param: q, value: p }
            ]
        );
    }

    #[test]
    fn the_writer_must_read_the_parameter_only_at_the_element_it_writes() {
        // new_p[i] = p[7 - i] + g[i] reads elements it has already overwritten.
        let (mut program, p, _) = sgd_like(false);
        let Stmt::Loop { body, .. } = &mut program.kernels[1].body[0] else {
            panic!("a loop")
        };
        let Stmt::Store { value, .. } = &mut body[0] else {
            panic!("a store")
        };
        *value = Expr::binary(
            BinaryOp::Add,
            Expr::load(p, Index::new([(VarId(0), -1)], 7)),
            Expr::load(BufferId(2), Index::new([(VarId(0), 1)], 0)),
        );
        program.check().expect("checks");
        assert!(matches!(plan(&program).updates[0], UpdateStep::Copy { .. }));
    }

    #[test]
    fn injectivity_needs_every_loop_and_separated_strides() {
        let (i, j) = (VarId(0), VarId(1));
        let scope = [(i, 3, 1), (j, 4, 1)];
        assert!(is_injective(&Index::new([(i, 4), (j, 1)], 0), &scope));
        assert!(is_injective(&Index::new([(i, 1), (j, 3)], 0), &scope));
        assert!(is_injective(&Index::new([(i, -4), (j, 1)], 8), &scope));
        assert!(!is_injective(&Index::new([(i, 3), (j, 1)], 0), &scope));
        assert!(!is_injective(&Index::new([(j, 1)], 0), &scope));
        assert!(is_injective(
            &Index::new([(j, 1)], 0),
            &[(i, 1, 1), (j, 4, 1)]
        ));
        // A step of 4 over a unit stride: elements 0, 4, 8 of a loop of 3 trips.
        assert!(is_injective(&Index::new([(i, 1)], 0), &[(i, 3, 4)]));
        assert!(!is_injective(
            &Index::new([(i, 1), (j, 1)], 0),
            &[(i, 3, 2), (j, 4, 1)]
        ));
    }

    /// Every arena buffer is aligned and inside the arena, and buffers live at the
    /// same step do not share a byte.
    fn assert_no_conflicts(plan: &ArenaPlan) {
        let mut placed = Vec::new();
        for (index, buffer) in plan.buffers.iter().enumerate() {
            if let Placement::Arena { offset } = buffer.placement {
                assert_eq!(offset % ALIGNMENT, 0, "b{index} misaligned");
                assert!(
                    offset + buffer.bytes <= plan.arena_bytes,
                    "b{index} outside"
                );
                let live = buffer.live.expect("arena buffers have intervals");
                placed.push((index, offset, buffer.bytes, live));
            }
        }
        assert_eq!(plan.arena_bytes % ALIGNMENT, 0);
        assert!(plan.arena_bytes <= plan.unplanned_bytes);
        for (position, &(a, a_offset, a_bytes, a_live)) in placed.iter().enumerate() {
            for &(b, b_offset, b_bytes, b_live) in &placed[position + 1..] {
                let disjoint = a_offset + a_bytes <= b_offset || b_offset + b_bytes <= a_offset;
                let empty = a_bytes == 0 || b_bytes == 0;
                assert!(
                    empty || disjoint || !a_live.overlaps(b_live),
                    "b{a} @{a_offset}+{a_bytes} {a_live:?} and b{b} @{b_offset}+{b_bytes} \
                     {b_live:?} overlap"
                );
            }
        }
    }

    /// Checks the plan against the program independently of how it was made: every
    /// kernel's buffers are live at its step, outputs and copied values to the end,
    /// inputs from the start, and an in-place value's parameter is not read after it.
    fn assert_plan_fits_program(program: &Program, plan: &ArenaPlan) {
        assert_no_conflicts(plan);
        let end = program.kernels.len();
        let live_at = |buffer: BufferId, step: usize| match plan.buffers[buffer.0].live {
            Some(live) => live.first <= step && step <= live.last,
            None => true,
        };
        for (step, kernel) in program.kernels.iter().enumerate() {
            for buffer in kernel.buffers() {
                assert!(live_at(buffer, step), "{buffer} used by k{step} is dead");
            }
        }
        for output in &program.outputs {
            assert!(live_at(output.buffer, end), "output {:?}", output.name);
        }
        for (index, buffer) in program.buffers.iter().enumerate() {
            if matches!(buffer.storage, Storage::Input(_)) {
                assert!(live_at(BufferId(index), 0));
            }
        }
        for step in &plan.updates {
            match *step {
                UpdateStep::Copy { value, .. } => assert!(live_at(value, end)),
                UpdateStep::InPlace { param, value } => {
                    let writer = program
                        .kernels
                        .iter()
                        .position(|k| k.accesses().writes.contains(&value))
                        .expect("an in-place value is written");
                    for later in &program.kernels[writer + 1..] {
                        assert!(!later.accesses().reads.contains(&param));
                    }
                }
                UpdateStep::Staged { .. } => {}
            }
        }
    }

    mod random_programs {
        use super::*;
        use kiln_ir::random::{random_graph, with_sum_loss, RandomGraphOptions};
        use kiln_ir::Rng;
        use kiln_passes::optimizer::Optimizer;
        use kiln_passes::pipeline::{self, PipelineOptions, Step};
        use proptest::prelude::*;

        fn lowered(seed: u64, zero_extents: bool) -> Vec<Program> {
            let options = RandomGraphOptions {
                zero_extents,
                ..RandomGraphOptions::default()
            };
            let graph = random_graph(&mut Rng::new(seed), &options);
            let mut programs = vec![kiln_passes::lower::lower(&graph).expect("lowers")];
            // The same graph as a train step, for updates of every kind.
            if let Some(forward) = with_sum_loss(&graph) {
                let options = PipelineOptions {
                    loss: Some("loss".to_string()),
                    optimizer: Some(Optimizer::sgd(0.5).unwrap()),
                    ..PipelineOptions::default()
                };
                let (step, _) = pipeline::run(
                    &forward,
                    &[Step::Autodiff, Step::Optimizer],
                    &options,
                    &mut |_, _| {},
                )
                .expect("a train step builds");
                programs.push(kiln_passes::lower::lower(&step).expect("lowers"));
            }
            programs
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn plans_of_random_programs_never_overlap_live_buffers(
                seed in any::<u64>(),
                zero_extents in any::<bool>(),
            ) {
                for program in lowered(seed, zero_extents) {
                    program.check().expect("lowered programs check");
                    assert_plan_fits_program(&program, &plan(&program));
                }
            }
        }

        #[test]
        fn random_train_steps_update_some_parameters_in_place() {
            let (mut in_place, mut total) = (0, 0);
            for seed in 0..40 {
                for program in lowered(seed, false) {
                    let plan = plan(&program);
                    in_place += plan.in_place_updates();
                    total += plan.updates.len();
                }
            }
            assert!(in_place > 0 && total > in_place, "{in_place} of {total}");
        }
    }
}
