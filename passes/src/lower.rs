//! Lowering: a verified tensor graph becomes a kernel-IR program, one kernel per
//! computing node (or fused chain of them), in the graph's topological order.
//!
//! Assumes a graph that passes `verify`. Guarantees a program that passes
//! `Program::check`: every input and parameter keeps a buffer of its own (used or not),
//! outputs and updates are bound to the buffers holding their values, and nothing
//! but live nodes (those outputs and updates depend on) is computed.
//!
//! - `reshape` computes nothing: its value is its operand's buffer, read with the new
//!   shape (buffers are contiguous and row-major). `broadcast` and `transpose` are
//!   copies whose loads use zero or permuted strides.
//! - A constant has no buffer: consumers read it as an inline `Const`. Only a constant
//!   that is itself an output or an update value is filled into a buffer.
//! - Extent-1 axes get no loop, and adjacent axes that every access walks
//!   contiguously are merged, so an elementwise op on a whole tensor is one loop.
//! - Every loop is serial with step 1 and every value a scalar: lowering decides
//!   what is computed, the schedule step (`schedule`) decides how, for a target.
//! - Reductions whose innermost input axis is reduced accumulate in a local (the
//!   reduced loops innermost); otherwise the output is initialised and accumulated
//!   in place, so the kept innermost axis is contiguous (and vectorisable).
//!   `reduce_mean` divides at the end.
//! - `matmul` is the plain dot product per element (`r = 0; r = fma(A, B, r)` over
//!   k, then `C = r`), the f32 fma chain that defines its value; the kernel records
//!   the matmul (`KernelOp::Matmul`) so a schedule can call a packed routine instead.
//! - `conv` and `conv_filter_grad` without padding (the GPU's expansion leaves them
//!   so) are a contraction (`contraction.rs`): the same fma chain per element, over a
//!   strided view of the input, recorded as `KernelOp::Contraction` for the GPU's
//!   tiled kernel (an implicit GEMM); `conv_input_grad` is a contraction summed over
//!   the taps.
//! - `gather` is one kernel over its result whose element is an `Expr::Gather` of
//!   the params buffer at the position an index load gives (0 out of range);
//!   `scatter_add` is a zero-fill kernel, then a kernel over the updates whose
//!   `Stmt::ScatterAdd` adds each to the position its index gives (dropped out of
//!   range), in row-major order of the updates as the interpreter adds them.
//! - An output that reads a parameter which an update replaces is copied, so it still
//!   shows the value the run started from.
//! - Fusion: an elementwise op, broadcast or transpose whose value is read exactly
//!   once, by an elementwise op or a transpose (or, for a broadcast or transpose, by a
//!   broadcast), and that is no output or update, gets no kernel and no buffer: its
//!   expression is computed inside its reader's loop, its reads re-indexed through the
//!   reader's strides (`fusable`, `Lowering::expand`). Each element is still
//!   computed once, with the same operations in the same order, so values do not
//!   change. The kernel is named after the ops in it (`fused.add.relu`). A value read
//!   twice keeps its buffer: recomputing it would cost more than the pass it saves.
//!
//! ```text
//! %2 = add %0, %1 : f32[2,3]         kernel k0 fused.add.relu {
//! %3 = relu %2 : f32[2,3]     ==>      for i0 in 0..6 {
//!                                        b2[i0] = relu(add(b0[i0], b1[i0]))
//! ```

use crate::expand::{padded, ConvForm};
use kiln_ir::kernel::{
    BufferId, Expr, Index, Indirect, Kernel, KernelOp, LocalId, LoopKind, MatmulOp, Output,
    Program, Scalar, Stmt, Storage, Update, VType, VarId,
};
use kiln_ir::op::matrix_dims;
use kiln_ir::scalar;
use kiln_ir::types::strides;
use kiln_ir::{verify, BinaryOp, CmpOp, DType, Graph, IrError, NodeId, Op, ReduceOp, TensorType};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use thiserror::Error;

mod contraction;

/// Why a graph cannot be lowered.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum LowerError {
    /// The graph does not verify (the caller's mistake, or a bug in an earlier pass).
    #[error("the graph is invalid: {0}")]
    Invalid(#[from] IrError),
    /// A tensor has more elements than a kernel loop may count (the user's mistake).
    #[error("{node} of type {ty} has more than {max} elements, the most a kernel addresses")]
    TooLarge {
        node: String,
        ty: TensorType,
        max: usize,
    },
}

/// The largest tensor a kernel loop can count over (loop indices are also i32 values).
const MAX_ELEMENTS: usize = kiln_ir::types::MAX_ELEMENTS;

/// Lowers `graph` to a kernel program, convolutions as im2col and matmuls (the CPU's
/// form).
pub fn lower(graph: &Graph) -> Result<Program, LowerError> {
    lower_with(graph, ConvForm::Im2col)
}

/// Lowers `graph` to a kernel program; the convolution and pooling ops no pipeline
/// step expanded are expanded in `form` first (`ConvForm::Implicit` leaves the
/// convolutions that lower to contractions, the implicit GEMM).
pub fn lower_with(graph: &Graph, form: ConvForm) -> Result<Program, LowerError> {
    verify(graph)?;
    let expanded;
    let graph = if crate::expand::needed(graph, form) {
        expanded = crate::expand::run(graph, form)?;
        &expanded
    } else {
        graph
    };
    for id in graph.node_ids() {
        let ty = graph.ty(id);
        // Intermediate index arithmetic stays far from i64 overflow below this size.
        if ty
            .shape
            .iter()
            .try_fold(1usize, |n, &e| n.checked_mul(e))
            .is_none()
            || ty.num_elements() > MAX_ELEMENTS
        {
            return Err(LowerError::TooLarge {
                node: format!("{id} ({})", graph.op(id).mnemonic()),
                ty: ty.clone(),
                max: MAX_ELEMENTS,
            });
        }
    }
    let mut lowering = Lowering {
        graph,
        program: Program::new(graph.name.clone()),
        values: BTreeMap::new(),
        fusable: BTreeSet::new(),
        folded: BTreeSet::new(),
        fused: Vec::new(),
    };
    lowering.run();
    Ok(lowering.program)
}

/// Where a node's value lives.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    /// Every element is this constant; no buffer.
    Const(Scalar),
    Buffer(BufferId),
    /// Computed inside its one consumer's kernel: an index into `Lowering::fused`.
    Fused(usize),
}

/// A node fused into its consumer: the expression of one element, not yet placed in
/// a kernel.
struct Fused {
    /// The op's mnemonic, for the name of the kernel it ends up in.
    name: String,
    ty: TensorType,
    /// What `body` reads, with strides over `ty`'s shape.
    sources: Vec<Source>,
    body: Body,
}

/// An element's value from the values of its sources at that element.
type Body = Rc<dyn Fn(Vec<Expr>) -> Expr>;

/// How a kernel's element expression combines its reads (after fused values were
/// expanded into the reads they make).
enum Tree {
    /// The read at this position of the kernel's sources.
    Read(usize),
    Apply(Body, Vec<Tree>),
}

impl Tree {
    fn eval(self, reads: &mut [Option<Expr>]) -> Expr {
        match self {
            Tree::Read(position) => reads[position]
                .take()
                .expect("each read is used by exactly one leaf of the tree"),
            Tree::Apply(body, children) => body(
                children
                    .into_iter()
                    .map(|child| child.eval(reads))
                    .collect(),
            ),
        }
    }
}

struct Lowering<'g> {
    graph: &'g Graph,
    program: Program,
    values: BTreeMap<NodeId, Value>,
    /// Nodes computed in their consumer's kernel instead of a buffer (see [`fusable`]).
    fusable: BTreeSet<NodeId>,
    /// Concatenations and slices copied in place by the concatenation that reads
    /// them (see [`folded_into_concats`]): they get no buffer of their own.
    folded: BTreeSet<NodeId>,
    fused: Vec<Fused>,
}

/// Fresh loop variables and locals for one kernel.
#[derive(Default)]
struct KernelBuilder {
    next_var: u32,
    locals: Vec<VType>,
}

impl KernelBuilder {
    fn var(&mut self) -> VarId {
        self.next_var += 1;
        VarId(self.next_var - 1)
    }

    fn local(&mut self, dtype: DType) -> LocalId {
        self.locals.push(VType::scalar(dtype));
        LocalId(self.locals.len() as u32 - 1)
    }

    fn finish(self, name: &str, body: Vec<Stmt>) -> Kernel {
        Kernel {
            name: name.to_string(),
            locals: self.locals,
            body,
            op: None,
        }
    }
}

/// What a map nest reads at each point of its iteration space.
#[derive(Clone)]
enum Source {
    /// A value read with these per-axis strides (in elements).
    Operand(Value, Vec<i64>),
    /// The loop counter of one axis, as i32.
    AxisIndex(usize),
    /// An element number, as i32: the position walked with these per-axis strides
    /// (a `random` op's row-major counter, re-indexed like a read when it is fused).
    Counter(Vec<i64>),
}

/// The loops of a nest after dropping extent-1 axes and merging contiguous ones.
struct Nest {
    loops: Vec<(VarId, usize)>,
    /// One index per access, in the order the accesses were given.
    indices: Vec<Index>,
}

fn as_i64(value: usize) -> i64 {
    i64::try_from(value).expect("sizes were checked against MAX_ELEMENTS")
}

fn row_major(shape: &[usize]) -> Vec<i64> {
    strides(shape).into_iter().map(as_i64).collect()
}

/// Builds the loops over `shape` that `accesses` (per-axis strides) walk. Axes of
/// extent 1 contribute nothing and get no loop; an axis merges into the one outside
/// it when every access steps over the inner axis exactly as one step of the outer.
fn nest(kernel: &mut KernelBuilder, shape: &[usize], accesses: &[Vec<i64>]) -> Nest {
    let mut extents: Vec<usize> = Vec::new();
    let mut merged: Vec<Vec<i64>> = vec![Vec::new(); accesses.len()];
    for (axis, &extent) in shape.iter().enumerate() {
        if extent == 1 {
            continue;
        }
        let mergeable = !extents.is_empty()
            && accesses.iter().zip(&merged).all(|(access, strides)| {
                strides.last().copied() == Some(access[axis] * as_i64(extent))
            });
        if mergeable {
            *extents.last_mut().expect("checked non-empty") *= extent;
            for (access, strides) in accesses.iter().zip(merged.iter_mut()) {
                *strides.last_mut().expect("one stride per merged axis") = access[axis];
            }
        } else {
            extents.push(extent);
            for (access, strides) in accesses.iter().zip(merged.iter_mut()) {
                strides.push(access[axis]);
            }
        }
    }
    let loops: Vec<(VarId, usize)> = extents
        .into_iter()
        .map(|extent| (kernel.var(), extent))
        .collect();
    let indices = merged
        .iter()
        .map(|strides| Index::new(loops.iter().zip(strides).map(|(&(var, _), &s)| (var, s)), 0))
        .collect();
    Nest { loops, indices }
}

/// Wraps `body` in serial `loops` (outermost first).
fn wrap(loops: &[(VarId, usize)], mut body: Vec<Stmt>) -> Vec<Stmt> {
    for &(var, extent) in loops.iter().rev() {
        body = vec![Stmt::for_range(var, extent, LoopKind::Serial, body)];
    }
    body
}

fn read(value: Value, index: Index) -> Expr {
    match value {
        Value::Const(scalar) => Expr::Const(scalar),
        Value::Buffer(buffer) => Expr::load(buffer, index),
        Value::Fused(_) => unreachable!("fused values are expanded or materialised first"),
    }
}

/// Which axis of a tensor of `shape` each axis of a nest over `nest_shape` walks, when
/// the nest reads the tensor with `strides`: `None` for an axis the read does not move
/// along (stride 0). `None` overall when some stride is not one axis's row-major
/// stride (the read does not walk the tensor's axes one to one), so that an
/// expression over the tensor's axes cannot be re-indexed by the nest's.
fn axis_map(strides: &[i64], nest_shape: &[usize], shape: &[usize]) -> Option<Vec<Option<usize>>> {
    let tensor_strides = row_major(shape);
    let mut used = vec![false; shape.len()];
    let mut map = Vec::with_capacity(strides.len());
    for (&stride, &extent) in strides.iter().zip(nest_shape) {
        if stride == 0 || extent == 1 {
            map.push(None);
            continue;
        }
        let axis = (0..shape.len())
            .find(|&axis| !used[axis] && shape[axis] == extent && tensor_strides[axis] == stride)?;
        used[axis] = true;
        map.push(Some(axis));
    }
    Some(map)
}

/// Each live node's readers among the live nodes, and the nodes that are outputs or
/// parameter updates (which keep a buffer of their own).
fn readers_and_pinned(
    graph: &Graph,
    live: &BTreeSet<NodeId>,
) -> (HashMap<NodeId, Vec<NodeId>>, BTreeSet<NodeId>) {
    let mut readers: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    for &user in live {
        for operand in graph.operands(user) {
            readers.entry(operand).or_default().push(user);
        }
    }
    let pinned = graph
        .outputs()
        .iter()
        .map(|&(_, id)| id)
        .chain(graph.updates().iter().map(|&(_, value)| value))
        .collect();
    (readers, pinned)
}

/// The nodes that lowering computes inside their consumer's kernel: an elementwise
/// op, random sample, iota, broadcast or transpose that is not an output or update, whose value is read
/// exactly once, by an elementwise op or a transpose (which read each element once,
/// so nothing is recomputed), or — for a broadcast or transpose — by a broadcast.
/// Fusing saves a kernel launch, a pass over memory, and the buffer.
fn fusable(graph: &Graph, live: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    let is_map = |op: &Op| {
        matches!(
            op,
            Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Cast { .. }
        )
    };
    let is_move = |op: &Op| matches!(op, Op::Broadcast { .. } | Op::Transpose { .. });
    let (reads, pinned) = readers_and_pinned(graph, live);
    live.iter()
        .copied()
        .filter(|id| {
            let op = graph.op(*id);
            let users = reads.get(id).map_or(&[][..], Vec::as_slice);
            let [user] = users else { return false };
            let user_op = graph.op(*user);
            (is_map(op) || is_move(op) || matches!(op, Op::Random { .. } | Op::Iota { .. }))
                && !pinned.contains(id)
                && (is_map(user_op)
                    || matches!(user_op, Op::Transpose { .. })
                    || (is_move(op) && matches!(user_op, Op::Broadcast { .. })))
        })
        .collect()
}

/// How `gather(params, indices, axis, batch_dims)` walks its operands over its
/// result's axes `[p.., i.., s..]` (params' leading `axis` axes, the indices' own,
/// params' trailing ones), with per-axis strides in elements.
struct GatherLayout {
    /// The result's shape (a scatter_add's updates).
    shape: Vec<usize>,
    /// Params' strides, 0 on the indices' own axes: with `at * stride` added, the
    /// element read.
    params_strides: Vec<i64>,
    /// The indices' strides: the batch axes among `p..`, then `i..`.
    index_strides: Vec<i64>,
    /// Params' stride and extent along `axis`.
    stride: i64,
    extent: usize,
}

impl GatherLayout {
    fn new(params: &[usize], indices: &[usize], axis: usize, batch_dims: usize) -> GatherLayout {
        let (p_strides, i_strides) = (row_major(params), row_major(indices));
        let own = indices.len() - batch_dims;
        let mut params_strides = p_strides[..axis].to_vec();
        params_strides.extend(std::iter::repeat_n(0, own));
        params_strides.extend_from_slice(&p_strides[axis + 1..]);
        let mut index_strides = i_strides[..batch_dims].to_vec();
        index_strides.extend(std::iter::repeat_n(0, axis - batch_dims));
        index_strides.extend_from_slice(&i_strides[batch_dims..]);
        index_strides.extend(std::iter::repeat_n(0, params.len() - axis - 1));
        GatherLayout {
            shape: kiln_ir::op::gather_shape(params, indices, axis, batch_dims),
            params_strides,
            index_strides,
            stride: p_strides[axis],
            extent: params[axis],
        }
    }
}

/// A gathered element at one point of a [`GatherLayout`] nest, not yet tied to the
/// buffer it picks from.
struct Picked {
    /// The params index without the gathered axis's term.
    index: Index,
    at: Expr,
    stride: i64,
    extent: u32,
}

impl Picked {
    fn indirect(&self, buffer: BufferId) -> Indirect {
        Indirect {
            buffer,
            index: self.index.clone(),
            at: Box::new(self.at.clone()),
            stride: self.stride,
            extent: self.extent,
        }
    }
}

/// The concatenations and slices that their reading concatenation copies in place:
/// a concatenation whose only reader is a concatenation along the same axis (so a
/// chain `concat(concat(a, b), c)` fills one buffer, each part copied once, instead
/// of copying the growing prefix again at every link: quadratic in the parts, as an
/// im2col of many taps is), and a slice whose only reader is a concatenation (copied
/// straight from its operand). Neither may be an output or an update.
fn folded_into_concats(graph: &Graph, live: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    let (readers, pinned) = readers_and_pinned(graph, live);
    live.iter()
        .copied()
        .filter(|id| {
            let Some([reader]) = readers.get(id).map(Vec::as_slice) else {
                return false;
            };
            let Op::Concat { axis: outer } = graph.op(*reader) else {
                return false;
            };
            !pinned.contains(id)
                && match graph.op(*id) {
                    Op::Concat { axis } => axis == outer,
                    Op::Slice { .. } => true,
                    _ => false,
                }
        })
        .collect()
}

/// The identity of a reduction and its accumulation step.
fn reduce_init(op: ReduceOp, dtype: DType) -> Scalar {
    match (op, dtype) {
        (ReduceOp::Sum | ReduceOp::Mean, DType::F32) => Scalar::F32(0.0),
        (ReduceOp::Sum | ReduceOp::Mean, _) => Scalar::I32(0),
        (ReduceOp::Max, DType::F32) => Scalar::F32(f32::NEG_INFINITY),
        (ReduceOp::Max, DType::I32) => Scalar::I32(i32::MIN),
        (ReduceOp::Max, DType::Bool) => Scalar::Bool(false),
    }
}

fn reduce_step(op: ReduceOp, acc: Expr, x: Expr) -> Expr {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => Expr::binary(BinaryOp::Add, acc, x),
        ReduceOp::Max => Expr::binary(BinaryOp::Max, acc, x),
    }
}

impl Lowering<'_> {
    fn run(&mut self) {
        let graph = self.graph;
        for &id in graph.inputs().iter().chain(graph.params()) {
            let name = graph
                .leaf_name(id)
                .expect("inputs and parameters have names");
            let storage = match graph.op(id) {
                Op::Input { .. } => Storage::Input(name.to_string()),
                _ => Storage::Param(name.to_string()),
            };
            let buffer = self.program.add_buffer(graph.ty(id).clone(), storage);
            self.values.insert(id, Value::Buffer(buffer));
        }
        let live = self.live_nodes();
        self.fusable = fusable(graph, &live);
        self.folded = folded_into_concats(graph, &live);
        for id in graph.topo_order() {
            if live.contains(&id) && !self.values.contains_key(&id) && !self.folded.contains(&id) {
                let value = self.node(id);
                self.values.insert(id, value);
            }
        }
        for (name, id) in graph.outputs() {
            let buffer = self.materialise(*id);
            self.program.outputs.push(Output {
                name: name.clone(),
                buffer,
                ty: graph.ty(*id).clone(),
            });
        }
        for &(param, value) in graph.updates() {
            let buffer = self.materialise(value);
            let name = graph.leaf_name(param).expect("updates target parameters");
            self.program.updates.push(Update {
                param: name.to_string(),
                value: buffer,
            });
        }
        self.protect_outputs_from_updates();
    }

    /// Nodes that an output or update depends on.
    fn live_nodes(&self) -> BTreeSet<NodeId> {
        let graph = self.graph;
        let mut live = BTreeSet::new();
        let mut stack: Vec<NodeId> = graph.outputs().iter().map(|&(_, id)| id).collect();
        stack.extend(graph.updates().iter().map(|&(_, value)| value));
        while let Some(id) = stack.pop() {
            if live.insert(id) {
                stack.extend(graph.operands(id));
            }
        }
        live
    }

    /// The buffer holding `id`'s value, filling one if it is a constant.
    fn materialise(&mut self, id: NodeId) -> BufferId {
        match self.concrete(id) {
            Value::Buffer(buffer) => buffer,
            Value::Const(scalar) => {
                let ty = self.graph.ty(id).clone();
                let out = self.program.add_buffer(ty.clone(), Storage::Temp);
                self.emit_map("fill", &ty.shape, out, Vec::new(), |_| Expr::Const(scalar));
                out
            }
            Value::Fused(_) => unreachable!("concrete values are not fused"),
        }
    }

    /// `id`'s value as a constant or a buffer: a fused value gets its own kernel here
    /// (for readers that need a buffer, such as matmul and reductions).
    fn concrete(&mut self, id: NodeId) -> Value {
        let value = self.value(id);
        let Value::Fused(fused) = value else {
            return value;
        };
        let buffer = self.materialise_fused(fused);
        self.values.insert(id, Value::Buffer(buffer));
        Value::Buffer(buffer)
    }

    /// Emits the kernel computing fused value `fused` into a new buffer.
    fn materialise_fused(&mut self, fused: usize) -> BufferId {
        let Fused {
            name,
            ty,
            sources,
            body,
        } = &self.fused[fused];
        let (name, ty, sources, body) = (name.clone(), ty.clone(), sources.clone(), body.clone());
        let out = self.program.add_buffer(ty.clone(), Storage::Temp);
        self.emit_map(&name, &ty.shape, out, sources, move |reads| body(reads));
        out
    }

    /// An output bound to a parameter's buffer would show the updated value after
    /// the run; give it a copy taken before the updates apply.
    fn protect_outputs_from_updates(&mut self) {
        // Indexed, since every output looks its parameter up: a scan of the updates
        // per output is quadratic in a training step's size.
        let mut update_values: HashMap<String, Vec<BufferId>> = HashMap::new();
        for update in &self.program.updates {
            update_values
                .entry(update.param.clone())
                .or_default()
                .push(update.value);
        }
        for position in 0..self.program.outputs.len() {
            let output = &self.program.outputs[position];
            let replaced = match &self.program.buffer(output.buffer).storage {
                Storage::Param(name) => update_values
                    .get(name)
                    .is_some_and(|values| values.iter().any(|&value| value != output.buffer)),
                _ => false,
            };
            if replaced {
                let (source, ty) = (output.buffer, output.ty.clone());
                let copy = self.program.add_buffer(ty.clone(), Storage::Temp);
                let source_strides = row_major(&ty.shape);
                self.emit_map(
                    "copy",
                    &ty.shape,
                    copy,
                    vec![Source::Operand(Value::Buffer(source), source_strides)],
                    |mut reads| reads.remove(0),
                );
                self.program.outputs[position].buffer = copy;
            }
        }
    }

    fn value(&self, id: NodeId) -> Value {
        *self
            .values
            .get(&id)
            .expect("operands are lowered before their users")
    }

    /// Lowers one live non-leaf (or constant) node and returns where its value is.
    fn node(&mut self, id: NodeId) -> Value {
        let graph = self.graph;
        let node = graph.node(id);
        let operands = graph.operands(id);
        let ty = node.ty.clone();
        let name = node.op.mnemonic();
        match &node.op {
            Op::Input { .. } | Op::Parameter { .. } => {
                unreachable!("inputs and parameters get buffers first")
            }
            Op::Constant { value } => Value::Const(Scalar::from_f64(*value, ty.dtype)),
            Op::Reshape { .. } => self.concrete(operands[0]),
            Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Cast { .. } => {
                let values: Vec<Value> = operands.iter().map(|&o| self.value(o)).collect();
                if let Some(folded) = fold_constant(&node.op, &values, ty.dtype) {
                    return Value::Const(folded);
                }
                let same = row_major(&ty.shape);
                let sources = values
                    .into_iter()
                    .map(|value| Source::Operand(value, same.clone()))
                    .collect();
                let op = node.op.clone();
                let from = graph.ty(operands[0]).dtype;
                self.define(id, name, &ty, sources, move |mut reads| match op.clone() {
                    Op::Unary(unary) => Expr::unary(unary, reads.remove(0)),
                    Op::Binary(binary) => {
                        let a = reads.remove(0);
                        Expr::binary(binary, a, reads.remove(0))
                    }
                    Op::Compare(cmp) => {
                        let a = reads.remove(0);
                        Expr::compare(cmp, a, reads.remove(0))
                    }
                    Op::Select => {
                        let cond = reads.remove(0);
                        let on_true = reads.remove(0);
                        Expr::select(cond, on_true, reads.remove(0))
                    }
                    Op::Cast { to } if to == from => reads.remove(0),
                    Op::Cast { to } => Expr::cast(to, reads.remove(0)),
                    _ => unreachable!("matched elementwise ops above"),
                })
            }
            Op::Broadcast { .. } => {
                let x = graph.ty(operands[0]);
                let read_strides = row_major(&x.shape)
                    .into_iter()
                    .zip(&x.shape)
                    .map(|(stride, &extent)| if extent == 1 { 0 } else { stride })
                    .collect();
                let source = Source::Operand(self.value(operands[0]), read_strides);
                self.copy_like(id, name, &ty, source)
            }
            Op::Transpose { perm } => {
                let x_strides = row_major(&graph.ty(operands[0]).shape);
                let read_strides = perm.iter().map(|&axis| x_strides[axis]).collect();
                let source = Source::Operand(self.value(operands[0]), read_strides);
                self.copy_like(id, name, &ty, source)
            }
            Op::Reduce { op, axes } => {
                let x = graph.ty(operands[0]).clone();
                let value = self.concrete(operands[0]);
                Value::Buffer(self.reduce(name, *op, axes, &x, value, &ty))
            }
            Op::MatMul {
                transpose_a,
                transpose_b,
            } => {
                let (a, b) = (self.concrete(operands[0]), self.concrete(operands[1]));
                let a_ty = graph.ty(operands[0]).clone();
                let b_ty = graph.ty(operands[1]).clone();
                Value::Buffer(self.matmul(
                    name,
                    (a, &a_ty, *transpose_a),
                    (b, &b_ty, *transpose_b),
                    &ty,
                ))
            }
            Op::Slice { .. } | Op::Pad { .. } | Op::Concat { .. } => {
                let op = node.op.clone();
                self.relayout(&op, &operands, &ty)
            }
            Op::Conv(spec) | Op::ConvFilterGrad { spec, .. } if !padded(spec) => {
                let taps = match &node.op {
                    Op::ConvFilterGrad { taps, .. } => Some(taps.clone()),
                    _ => None,
                };
                let x = (self.concrete(operands[0]), graph.ty(operands[0]));
                let other = (self.concrete(operands[1]), graph.ty(operands[1]));
                let spec = spec.clone();
                Value::Buffer(self.conv_contraction(name, &spec, x, other, taps.as_deref(), &ty))
            }
            Op::ConvInputGrad { spec, .. } => {
                let dy = (self.concrete(operands[0]), graph.ty(operands[0]));
                let w = (self.concrete(operands[1]), graph.ty(operands[1]));
                let spec = spec.clone();
                Value::Buffer(self.input_grad_contraction(name, &spec, dy, w, &ty))
            }
            Op::Conv(_) | Op::ConvFilterGrad { .. } | Op::Pool { .. } | Op::PoolGrad { .. } => {
                unreachable!("`lower` expands convolutions and poolings first")
            }
            Op::Iota { axis, .. } => self.define(
                id,
                name,
                &ty,
                vec![Source::AxisIndex(*axis)],
                |mut reads| reads.remove(0),
            ),
            Op::Random { dist, stream, .. } => {
                let seed_strides = vec![0; ty.rank()];
                let sources = vec![
                    Source::Operand(self.concrete(operands[0]), seed_strides),
                    Source::Counter(row_major(&ty.shape)),
                ];
                let (dist, stream) = (*dist, Expr::Const(Scalar::I32(*stream as i32)));
                self.define(id, name, &ty, sources, move |mut reads| {
                    let seed = reads.remove(0);
                    Expr::random(dist, seed, stream.clone(), reads.remove(0))
                })
            }
            Op::OneHot { .. } => {
                let labels = graph.ty(operands[0]);
                let mut label_strides = row_major(&labels.shape);
                label_strides.push(0);
                let sources = vec![
                    Source::Operand(self.concrete(operands[0]), label_strides),
                    Source::AxisIndex(ty.rank() - 1),
                ];
                self.emit_new(name, &ty, sources, |mut reads| {
                    let label = reads.remove(0);
                    let position = reads.remove(0);
                    Expr::select(
                        Expr::compare(CmpOp::Eq, label, position),
                        Expr::Const(Scalar::F32(1.0)),
                        Expr::Const(Scalar::F32(0.0)),
                    )
                })
            }
            Op::Gather { axis, batch_dims } => {
                // The gathered rows are picked by data, so they are read from a buffer
                // (a constant is filled into one).
                let params = self.materialise(operands[0]);
                let indices = self.concrete(operands[1]);
                let layout = GatherLayout::new(
                    &graph.ty(operands[0]).shape,
                    &graph.ty(operands[1]).shape,
                    *axis,
                    *batch_dims,
                );
                let out = self.program.add_buffer(ty.clone(), Storage::Temp);
                self.emit_indirect(name, &layout, indices, |picked, index| Stmt::Store {
                    buffer: out,
                    index: index.clone(),
                    value: Expr::Gather(picked.indirect(params)),
                });
                Value::Buffer(out)
            }
            Op::ScatterAdd {
                axis, batch_dims, ..
            } => {
                let updates = self.concrete(operands[0]);
                let indices = self.concrete(operands[1]);
                let layout =
                    GatherLayout::new(&ty.shape, &graph.ty(operands[1]).shape, *axis, *batch_dims);
                let out = self.program.add_buffer(ty.clone(), Storage::Temp);
                let zero = Scalar::from_f64(0.0, ty.dtype);
                self.emit_map("scatter_add.fill", &ty.shape, out, Vec::new(), move |_| {
                    Expr::Const(zero)
                });
                self.emit_indirect(name, &layout, indices, |picked, index| Stmt::ScatterAdd {
                    target: picked.indirect(out),
                    value: read(updates, index.clone()),
                });
                Value::Buffer(out)
            }
        }
    }

    /// A kernel over every element of a gather's result (equally, of a scatter_add's
    /// updates): `stmt(picked, index)` where `picked` locates the params element it
    /// reads or writes and `index` is the element's own row-major position. Emits
    /// nothing for an empty result.
    fn emit_indirect(
        &mut self,
        name: &str,
        layout: &GatherLayout,
        indices: Value,
        stmt: impl FnOnce(&Picked, &Index) -> Stmt,
    ) {
        if layout.shape.contains(&0) {
            return;
        }
        let mut kernel = KernelBuilder::default();
        let accesses = [
            row_major(&layout.shape),
            layout.params_strides.clone(),
            layout.index_strides.clone(),
        ];
        let mut nest = nest(&mut kernel, &layout.shape, &accesses);
        let at = read(indices, nest.indices.remove(2));
        let picked = Picked {
            index: nest.indices.remove(1),
            at,
            stride: layout.stride,
            // Nonzero extents of a non-empty result multiply to at most its params'
            // element count, which lowering checked.
            extent: u32::try_from(layout.extent).expect("params sizes fit MAX_ELEMENTS"),
        };
        let own = nest.indices.remove(0);
        let body = wrap(&nest.loops, vec![stmt(&picked, &own)]);
        self.program.kernels.push(kernel.finish(name, body));
    }

    /// Copies `src` (read at `src_offset + Σ i·src_strides`) to `out` (written at
    /// `out_offset + Σ i·out_strides`) for every index `i` of `shape`: the kernel of
    /// slices, pads and concatenations, whose reads or writes start inside a buffer.
    #[allow(clippy::too_many_arguments)]
    fn copy_strided(
        &mut self,
        name: &str,
        shape: &[usize],
        out: (BufferId, &[i64], i64),
        src: (Value, &[i64], i64),
    ) {
        if shape.contains(&0) {
            return;
        }
        let (out_buffer, out_strides, out_offset) = out;
        let (src_value, src_strides, src_offset) = src;
        let mut kernel = KernelBuilder::default();
        let accesses = [out_strides.to_vec(), src_strides.to_vec()];
        let mut nest = nest(&mut kernel, shape, &accesses);
        let mut src_index = nest.indices.remove(1);
        let mut out_index = nest.indices.remove(0);
        out_index.offset = out_offset;
        src_index.offset = src_offset;
        let store = Stmt::Store {
            buffer: out_buffer,
            index: out_index,
            value: read(src_value, src_index),
        };
        let stmts = wrap(&nest.loops, vec![store]);
        self.program.kernels.push(kernel.finish(name, stmts));
    }

    /// A slice, pad or concatenation into a new buffer of type `ty`.
    fn relayout(&mut self, op: &Op, operands: &[NodeId], ty: &TensorType) -> Value {
        let name = op.mnemonic();
        let out_strides = row_major(&ty.shape);
        let dot = |index: &[usize], strides: &[i64]| -> i64 {
            index
                .iter()
                .zip(strides)
                .map(|(&i, &s)| as_i64(i) * s)
                .sum()
        };
        match op {
            Op::Slice { starts, steps, .. } => {
                let x = self.concrete(operands[0]);
                if let Value::Const(scalar) = x {
                    return Value::Const(scalar);
                }
                let x_strides = row_major(&self.graph.ty(operands[0]).shape);
                let read_strides: Vec<i64> = steps
                    .iter()
                    .zip(&x_strides)
                    .map(|(&step, &stride)| as_i64(step) * stride)
                    .collect();
                let out = self.program.add_buffer(ty.clone(), Storage::Temp);
                let offset = dot(starts, &x_strides);
                self.copy_strided(
                    name,
                    &ty.shape,
                    (out, &out_strides, 0),
                    (x, &read_strides, offset),
                );
                Value::Buffer(out)
            }
            Op::Pad {
                low,
                interior,
                value,
                ..
            } => {
                let x = self.concrete(operands[0]);
                let fill = Scalar::from_f64(*value, ty.dtype);
                // A splat padded with its own value (the same bits: -0 is not +0) is
                // that splat.
                if let Value::Const(scalar) = x {
                    if scalar.to_bits() == fill.to_bits() && scalar.dtype() == fill.dtype() {
                        return Value::Const(scalar);
                    }
                }
                let out = self.program.add_buffer(ty.clone(), Storage::Temp);
                self.emit_map("pad.fill", &ty.shape, out, Vec::new(), move |_| {
                    Expr::Const(fill)
                });
                let x_shape = self.graph.ty(operands[0]).shape.clone();
                let write_strides: Vec<i64> = interior
                    .iter()
                    .zip(&out_strides)
                    .map(|(&gap, &stride)| (as_i64(gap) + 1) * stride)
                    .collect();
                let offset = dot(low, &out_strides);
                let x_strides = row_major(&x_shape);
                self.copy_strided(
                    name,
                    &x_shape,
                    (out, &write_strides, offset),
                    (x, &x_strides, 0),
                );
                Value::Buffer(out)
            }
            Op::Concat { axis } => {
                let out = self.program.add_buffer(ty.clone(), Storage::Temp);
                let mut start = 0;
                for operand in self.concat_parts(operands) {
                    let shape = self.graph.ty(operand).shape.clone();
                    let offset = as_i64(start) * out_strides[*axis];
                    let source = match self.graph.op(operand) {
                        // A folded slice: its elements straight from its operand.
                        Op::Slice { starts, steps, .. } if self.folded.contains(&operand) => {
                            let x = self.graph.operands(operand)[0];
                            let x_strides = row_major(&self.graph.ty(x).shape);
                            let read_strides: Vec<i64> = steps
                                .iter()
                                .zip(&x_strides)
                                .map(|(&step, &stride)| as_i64(step) * stride)
                                .collect();
                            let at = dot(starts, &x_strides);
                            (self.concrete(x), read_strides, at)
                        }
                        _ => (self.concrete(operand), row_major(&shape), 0),
                    };
                    self.copy_strided(
                        name,
                        &shape,
                        (out, &out_strides, offset),
                        (source.0, &source.1, source.2),
                    );
                    start += shape[*axis];
                }
                Value::Buffer(out)
            }
            _ => unreachable!("relayout is called for slice, pad and concat"),
        }
    }

    /// The parts a concatenation of `operands` copies, in order: its operands, with
    /// each folded concatenation among them replaced by its own parts.
    fn concat_parts(&self, operands: &[NodeId]) -> Vec<NodeId> {
        let mut parts = Vec::new();
        for &operand in operands {
            if self.folded.contains(&operand) && matches!(self.graph.op(operand), Op::Concat { .. })
            {
                parts.extend(self.concat_parts(&self.graph.operands(operand)));
            } else {
                parts.push(operand);
            }
        }
        parts
    }

    /// A movement op: a constant stays a constant, anything else is copied.
    fn copy_like(&mut self, id: NodeId, name: &str, ty: &TensorType, source: Source) -> Value {
        if let Source::Operand(Value::Const(scalar), _) = source {
            return Value::Const(scalar);
        }
        self.define(id, name, ty, vec![source], |mut reads| reads.remove(0))
    }

    /// Node `id`'s value, `body` of `sources` at each element: fused into its consumer
    /// when it is [`fusable`], else computed by its own kernel into a new buffer.
    fn define(
        &mut self,
        id: NodeId,
        name: &str,
        ty: &TensorType,
        sources: Vec<Source>,
        body: impl Fn(Vec<Expr>) -> Expr + 'static,
    ) -> Value {
        if !self.fusable.contains(&id) {
            return self.emit_new(name, ty, sources, body);
        }
        self.fused.push(Fused {
            name: name.to_string(),
            ty: ty.clone(),
            sources,
            body: Rc::new(body),
        });
        Value::Fused(self.fused.len() - 1)
    }

    /// Appends to `leaves` the reads that `source` makes at each element of a nest
    /// over `shape`, expanding fused values into the reads of their own sources, and
    /// returns how the source's value is computed from them. `names` collects the
    /// mnemonics of the expanded ops, innermost first. A fused value whose reads
    /// cannot be re-indexed by the nest is computed into a buffer first.
    fn expand(
        &mut self,
        source: Source,
        shape: &[usize],
        leaves: &mut Vec<Source>,
        names: &mut Vec<String>,
    ) -> Tree {
        let Source::Operand(Value::Fused(fused), strides) = source else {
            leaves.push(source);
            return Tree::Read(leaves.len() - 1);
        };
        let entry = &self.fused[fused];
        let remapped: Option<Vec<Source>> =
            axis_map(&strides, shape, &entry.ty.shape).and_then(|map| {
                entry
                    .sources
                    .iter()
                    .map(|inner| match inner {
                        Source::Operand(value, inner_strides) => Some(Source::Operand(
                            *value,
                            map.iter()
                                .map(|axis| axis.map_or(0, |axis| inner_strides[axis]))
                                .collect(),
                        )),
                        Source::AxisIndex(axis) => map
                            .iter()
                            .position(|&mapped| mapped == Some(*axis))
                            .map(Source::AxisIndex),
                        Source::Counter(inner_strides) => Some(Source::Counter(
                            map.iter()
                                .map(|axis| axis.map_or(0, |axis| inner_strides[axis]))
                                .collect(),
                        )),
                    })
                    .collect()
            });
        match remapped {
            Some(inner) => {
                let (name, body) = (entry.name.clone(), entry.body.clone());
                let children = inner
                    .into_iter()
                    .map(|inner| self.expand(inner, shape, leaves, names))
                    .collect();
                names.push(name);
                Tree::Apply(body, children)
            }
            None => {
                let buffer = self.materialise_fused(fused);
                leaves.push(Source::Operand(Value::Buffer(buffer), strides));
                Tree::Read(leaves.len() - 1)
            }
        }
    }

    /// A map kernel into a fresh temporary buffer of type `ty`.
    fn emit_new(
        &mut self,
        name: &str,
        ty: &TensorType,
        sources: Vec<Source>,
        body: impl FnOnce(Vec<Expr>) -> Expr,
    ) -> Value {
        let out = self.program.add_buffer(ty.clone(), Storage::Temp);
        self.emit_map(name, &ty.shape, out, sources, body);
        Value::Buffer(out)
    }

    /// Appends a kernel that stores `body(reads)` to every element of `out` (row-major
    /// over `shape`), where `reads` are the sources at that element.
    fn emit_map(
        &mut self,
        name: &str,
        shape: &[usize],
        out: BufferId,
        sources: Vec<Source>,
        body: impl FnOnce(Vec<Expr>) -> Expr,
    ) {
        if shape.contains(&0) {
            return;
        }
        let mut sources_read = Vec::new();
        let mut fused_names = Vec::new();
        let trees: Vec<Tree> = sources
            .into_iter()
            .map(|source| self.expand(source, shape, &mut sources_read, &mut fused_names))
            .collect();
        let sources = sources_read;
        let name = if fused_names.is_empty() {
            name.to_string()
        } else {
            format!("fused.{}.{name}", fused_names.join("."))
        };
        let mut kernel = KernelBuilder::default();
        let mut accesses = vec![row_major(shape)];
        for source in &sources {
            accesses.push(match source {
                Source::Operand(_, strides) | Source::Counter(strides) => strides.clone(),
                Source::AxisIndex(axis) => {
                    let mut unit = vec![0; shape.len()];
                    unit[*axis] = 1;
                    unit
                }
            });
        }
        let mut nest = nest(&mut kernel, shape, &accesses);
        let out_index = nest.indices.remove(0);
        let mut reads: Vec<Option<Expr>> = sources
            .into_iter()
            .zip(nest.indices)
            .map(|(source, index)| {
                Some(match source {
                    Source::Operand(value, _) => read(value, index),
                    // The merge rule never folds the counted axis into another, so its index
                    // is exactly its loop variable, or nothing when it has extent 1.
                    Source::AxisIndex(_) => match index.terms.as_slice() {
                        [] => Expr::Const(Scalar::I32(0)),
                        [(var, 1)] => Expr::LoopIndex(*var),
                        _ => unreachable!("an axis index never merges with other axes"),
                    },
                    Source::Counter(_) => Expr::index_value(&index),
                })
            })
            .collect();
        let values = trees
            .into_iter()
            .map(|tree| tree.eval(&mut reads))
            .collect();
        let store = Stmt::Store {
            buffer: out,
            index: out_index,
            value: body(values),
        };
        let stmts = wrap(&nest.loops, vec![store]);
        self.program.kernels.push(kernel.finish(&name, stmts));
    }

    fn reduce(
        &mut self,
        name: &str,
        op: ReduceOp,
        axes: &[usize],
        x: &TensorType,
        value: Value,
        ty: &TensorType,
    ) -> BufferId {
        let out = self.program.add_buffer(ty.clone(), Storage::Temp);
        if ty.num_elements() == 0 {
            return out;
        }
        let init = reduce_init(op, x.dtype);
        let count: usize = axes.iter().map(|&axis| x.shape[axis]).product();
        let finish = |acc: Expr| match op {
            ReduceOp::Mean => {
                Expr::binary(BinaryOp::Div, acc, Expr::Const(Scalar::F32(count as f32)))
            }
            _ => acc,
        };
        let x_strides = row_major(&x.shape);
        let out_strides: Vec<i64> = row_major(&ty.shape)
            .into_iter()
            .enumerate()
            .map(|(axis, stride)| if axes.contains(&axis) { 0 } else { stride })
            .collect();
        let innermost_reduced = x
            .shape
            .iter()
            .rposition(|&extent| extent != 1)
            .is_some_and(|axis| axes.contains(&axis));
        let mut kernel = KernelBuilder::default();
        if innermost_reduced || x.num_elements() == 0 {
            // Kept axes outside, reduced axes inside, accumulating in a local.
            let kept: Vec<usize> = (0..x.rank()).filter(|a| !axes.contains(a)).collect();
            let pick = |axes: &[usize], strides: &[i64]| -> Vec<i64> {
                axes.iter().map(|&axis| strides[axis]).collect()
            };
            let kept_shape: Vec<usize> = kept.iter().map(|&axis| x.shape[axis]).collect();
            let reduced_shape: Vec<usize> = axes.iter().map(|&axis| x.shape[axis]).collect();
            let mut outer = nest(
                &mut kernel,
                &kept_shape,
                &[pick(&kept, &x_strides), pick(&kept, &out_strides)],
            );
            let mut inner = nest(&mut kernel, &reduced_shape, &[pick(axes, &x_strides)]);
            let x_outer = outer.indices.remove(0);
            let out_index = outer.indices.remove(0);
            let x_inner = inner.indices.remove(0);
            let x_index = Index::new(x_outer.terms.iter().chain(&x_inner.terms).copied(), 0);
            let acc = kernel.local(ty.dtype);
            let step = Stmt::Assign {
                local: acc,
                value: reduce_step(op, Expr::Local(acc), read(value, x_index)),
            };
            let mut body = vec![Stmt::Assign {
                local: acc,
                value: Expr::Const(init),
            }];
            body.extend(wrap(&inner.loops, vec![step]));
            body.push(Stmt::Store {
                buffer: out,
                index: out_index,
                value: finish(Expr::Local(acc)),
            });
            let stmts = wrap(&outer.loops, body);
            self.program.kernels.push(kernel.finish(name, stmts));
        } else {
            // Initialise the output, then walk the input in order accumulating in place,
            // so the kept innermost axis is contiguous in both and vectorises.
            let mut init_nest = nest(&mut kernel, &ty.shape, &[row_major(&ty.shape)]);
            let mut stmts = wrap(
                &init_nest.loops,
                vec![Stmt::Store {
                    buffer: out,
                    index: init_nest.indices.remove(0),
                    value: Expr::Const(init),
                }],
            );
            let mut walk = nest(&mut kernel, &x.shape, &[x_strides, out_strides]);
            let x_index = walk.indices.remove(0);
            let out_index = walk.indices.remove(0);
            let step = Stmt::Store {
                buffer: out,
                index: out_index.clone(),
                value: reduce_step(op, Expr::load(out, out_index), read(value, x_index)),
            };
            stmts.extend(wrap(&walk.loops, vec![step]));
            if op == ReduceOp::Mean {
                let mut scale = nest(&mut kernel, &ty.shape, &[row_major(&ty.shape)]);
                let index = scale.indices.remove(0);
                let store = Stmt::Store {
                    buffer: out,
                    index: index.clone(),
                    value: finish(Expr::load(out, index)),
                };
                stmts.extend(wrap(&scale.loops, vec![store]));
            }
            self.program.kernels.push(kernel.finish(name, stmts));
        }
        out
    }

    fn matmul(
        &mut self,
        name: &str,
        (a, a_ty, transpose_a): (Value, &TensorType, bool),
        (b, b_ty, transpose_b): (Value, &TensorType, bool),
        ty: &TensorType,
    ) -> BufferId {
        let out = self.program.add_buffer(ty.clone(), Storage::Temp);
        if ty.num_elements() == 0 {
            return out;
        }
        let rank = a_ty.rank();
        let (m, k) = matrix_dims(&a_ty.shape, transpose_a);
        let (_, n) = matrix_dims(&b_ty.shape, transpose_b);
        let batches: usize = a_ty.shape[..rank - 2].iter().product();
        let (m64, k64, n64) = (as_i64(m), as_i64(k), as_i64(n));
        let mut kernel = KernelBuilder::default();
        // Each axis gets a loop only if it has more than one iteration.
        let mut axis = |extent: usize| (extent > 1).then(|| (kernel.var(), extent));
        let batch = axis(batches);
        let i = axis(m);
        let j = axis(n);
        let p = axis(k);
        let term = |axis: Option<(VarId, usize)>, stride: i64| axis.map(|(var, _)| (var, stride));
        let index = |terms: [Option<(VarId, i64)>; 3]| Index::new(terms.into_iter().flatten(), 0);
        let a_index = index([
            term(batch, m64 * k64),
            term(i, if transpose_a { 1 } else { k64 }),
            term(p, if transpose_a { m64 } else { 1 }),
        ]);
        let b_index = index([
            term(batch, k64 * n64),
            term(p, if transpose_b { 1 } else { n64 }),
            term(j, if transpose_b { k64 } else { 1 }),
        ]);
        let c_index = index([term(batch, m64 * n64), term(i, n64), term(j, 1)]);
        let loops = |axes: &[Option<(VarId, usize)>]| -> Vec<(VarId, usize)> {
            axes.iter().flatten().copied().collect()
        };
        // The plain dot product per element: the f32 fma chain over k from +0.
        let acc = kernel.local(DType::F32);
        let mut row = vec![Stmt::Assign {
            local: acc,
            value: Expr::Const(Scalar::F32(0.0)),
        }];
        if k > 0 {
            row.extend(wrap(
                &loops(&[p]),
                vec![Stmt::Assign {
                    local: acc,
                    value: Expr::fma(read(a, a_index), read(b, b_index), Expr::Local(acc)),
                }],
            ));
        }
        row.push(Stmt::Store {
            buffer: out,
            index: c_index,
            value: Expr::Local(acc),
        });
        let stmts = wrap(&loops(&[batch, i, j]), row);
        let mut kernel = kernel.finish(name, stmts);
        // A constant operand has no buffer; such a (rare) matmul stays a loop nest.
        if let (Value::Buffer(a), Value::Buffer(b)) = (a, b) {
            kernel.op = Some(KernelOp::Matmul(MatmulOp {
                a,
                b,
                c: out,
                batches,
                m,
                n,
                k,
                trans_a: transpose_a,
                trans_b: transpose_b,
                bias: None,
                relu: false,
                update: None,
            }));
        }
        self.program.kernels.push(kernel);
        out
    }
}

/// An elementwise op whose operands are all constants is a constant, computed by
/// `kiln_ir::scalar` in the operands' dtype exactly as the kernel would compute it.
fn fold_constant(op: &Op, values: &[Value], dtype: DType) -> Option<Scalar> {
    let scalars: Vec<Scalar> = values
        .iter()
        .map(|value| match value {
            Value::Const(scalar) => Some(*scalar),
            Value::Buffer(_) | Value::Fused(_) => None,
        })
        .collect::<Option<_>>()?;
    let x: Vec<f64> = scalars.iter().map(|&scalar| scalar.to_f64()).collect();
    // Unary, binary and compare operands share one dtype; a select's condition is bool.
    let from = scalars[0].dtype();
    let value = scalar::elementwise(op, from, &x)?;
    Some(Scalar::from_f64(value, dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower_text(graph: &Graph) -> String {
        let program = lower(graph).unwrap();
        program.check().unwrap();
        program.to_string()
    }

    #[test]
    fn an_elementwise_chain_fuses_into_one_loop() {
        let mut g = Graph::new("ew");
        let a = g.input("a", TensorType::f32([2, 3])).unwrap();
        let b = g.input("b", TensorType::f32([2, 3])).unwrap();
        let sum = g.add_(a, b).unwrap();
        let y = g.relu(sum).unwrap();
        g.set_output("y", y).unwrap();
        let expected = r#"program "ew" {
  b0: f32[2,3] input "a"
  b1: f32[2,3] input "b"
  b2: f32[2,3] temp
  output "y" = b2: f32[2,3]

  kernel k0 fused.add.relu {
    for i0 in 0..6 {
      b2[i0] = relu(add(b0[i0], b1[i0]))
    }
  }
}
"#;
        assert_eq!(lower_text(&g), expected);
    }

    #[test]
    fn a_value_read_twice_or_shown_as_an_output_is_not_fused() {
        let mut g = Graph::new("shared");
        let a = g.input("a", TensorType::f32([4])).unwrap();
        let e = g.exp(a).unwrap();
        let twice = g.mul(e, e).unwrap();
        let n = g.neg(a).unwrap();
        let r = g.relu(n).unwrap();
        g.set_output("twice", twice).unwrap();
        g.set_output("n", n).unwrap();
        g.set_output("r", r).unwrap();
        let text = lower_text(&g);
        // exp is computed once, not once per read; neg keeps its buffer for "n".
        assert!(text.contains("b1[i0] = exp(b0[i0])"), "{text}");
        assert!(text.contains("mul(b1[i0], b1[i0])"), "{text}");
        assert!(text.contains("b3[i0] = neg(b0[i0])"), "{text}");
        assert!(text.contains("b4[i0] = relu(b3[i0])"), "{text}");
        assert_eq!(text.matches("  kernel ").count(), 4, "{text}");
    }

    #[test]
    fn broadcast_is_a_zero_stride_and_transpose_permutes_strides() {
        let mut g = Graph::new("moves");
        let bias = g.input("bias", TensorType::f32([1, 5])).unwrap();
        let wide = g.add(Op::Broadcast { shape: vec![3, 5] }, &[bias]).unwrap();
        let turned = g.add(Op::Transpose { perm: vec![1, 0] }, &[wide]).unwrap();
        // An output of its own, so the broadcast gets a kernel and a buffer.
        g.set_output("wide", wide).unwrap();
        g.set_output("t", turned).unwrap();
        let text = lower_text(&g);
        assert!(
            text.contains(
                "    for i0 in 0..3 {\n      for i1 in 0..5 {\n        b1[5*i0 + i1] = b0[i1]\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "    for i0 in 0..5 {\n      for i1 in 0..3 {\n        b2[3*i0 + i1] = b1[i0 + 5*i1]\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn fused_reads_compose_broadcasts_and_transposes() {
        let mut g = Graph::new("compose");
        let x = g.input("x", TensorType::f32([3, 5])).unwrap();
        let bias = g.input("bias", TensorType::f32([1, 5])).unwrap();
        let wide = g.add(Op::Broadcast { shape: vec![3, 5] }, &[bias]).unwrap();
        let sum = g.add_(x, wide).unwrap();
        let turned = g.add(Op::Transpose { perm: vec![1, 0] }, &[sum]).unwrap();
        let y = g.relu(turned).unwrap();
        g.set_output("y", y).unwrap();
        let text = lower_text(&g);
        // One kernel over y's [5, 3]: x read transposed, the bias along y's rows.
        assert!(
            text.contains(
                "    for i0 in 0..5 {\n      for i1 in 0..3 {\n        b2[3*i0 + i1] = relu(add(b0[i0 + 5*i1], b1[i0]))\n"
            ),
            "{text}"
        );
        assert_eq!(text.matches("  kernel ").count(), 1, "{text}");
        assert!(
            text.contains("kernel k0 fused.broadcast.add.transpose.relu"),
            "{text}"
        );
    }

    #[test]
    fn a_fused_value_behind_a_reshape_or_reduce_gets_a_buffer() {
        let mut g = Graph::new("behind");
        let x = g.input("x", TensorType::f32([2, 3])).unwrap();
        let e = g.exp(x).unwrap();
        let flat = g.reshape(e, vec![6]).unwrap();
        let y = g.relu(flat).unwrap();
        let n = g.neg(x).unwrap();
        let s = g
            .add(
                Op::Reduce {
                    op: ReduceOp::Sum,
                    axes: vec![1],
                },
                &[n],
            )
            .unwrap();
        g.set_output("y", y).unwrap();
        g.set_output("s", s).unwrap();
        let text = lower_text(&g);
        assert!(text.contains("= exp(b0[i0])"), "{text}");
        assert!(text.contains("= neg(b0[i0])"), "{text}");
        assert!(!text.contains("fused"), "{text}");
    }

    #[test]
    fn reshape_aliases_and_constants_are_inlined() {
        let mut g = Graph::new("alias");
        let x = g.input("x", TensorType::f32([2, 3])).unwrap();
        let flat = g.reshape(x, vec![6]).unwrap();
        let two = g.constant(2.0, TensorType::f32([6])).unwrap();
        let y = g.mul(flat, two).unwrap();
        g.set_output("flat", flat).unwrap();
        g.set_output("y", y).unwrap();
        g.set_output("two", two).unwrap();
        let text = lower_text(&g);
        assert!(text.contains("output \"flat\" = b0: f32[6]"), "{text}");
        assert!(text.contains("b1[i0] = mul(b0[i0], 2.0)"), "{text}");
        assert!(text.contains("kernel k1 fill"), "{text}");
        assert!(text.contains("b2[i0] = 2.0"), "{text}");
    }

    #[test]
    fn matmul_is_the_plain_fma_chain_and_records_the_op() {
        let mut g = Graph::new("mm");
        let a = g.input("a", TensorType::f32([3, 4])).unwrap();
        let b = g.input("b", TensorType::f32([4, 5])).unwrap();
        let c = g.matmul(a, b).unwrap();
        let bt = g.input("bt", TensorType::f32([2, 5, 4])).unwrap();
        let at = g.input("at", TensorType::f32([2, 4, 3])).unwrap();
        let d = g.matmul_t(at, bt, true, true).unwrap();
        g.set_output("c", c).unwrap();
        g.set_output("d", d).unwrap();
        let text = lower_text(&g);
        let nn = r#"  kernel k0 matmul {
    local r0: f32
    op matmul.nn a=b0 b=b1 c=b4 batches=1 m=3 n=5 k=4
    for i0 in 0..3 {
      for i1 in 0..5 {
        r0 = 0.0
        for i2 in 0..4 {
          r0 = fma(b0[4*i0 + i2], b1[5*i2 + i1], r0)
        }
        b4[5*i0 + i1] = r0
      }
    }
  }
"#;
        let tt = r#"  kernel k1 matmul.tt {
    local r0: f32
    op matmul.tt a=b3 b=b2 c=b5 batches=2 m=3 n=5 k=4
    for i0 in 0..2 {
      for i1 in 0..3 {
        for i2 in 0..5 {
          r0 = 0.0
          for i3 in 0..4 {
            r0 = fma(b3[12*i0 + i1 + 3*i3], b2[20*i0 + i3 + 4*i2], r0)
          }
          b5[15*i0 + 5*i1 + i2] = r0
        }
      }
    }
  }
"#;
        let program = lower(&g).unwrap();
        assert_eq!(
            program.kernels[1].op,
            Some(KernelOp::Matmul(MatmulOp {
                a: BufferId(3),
                b: BufferId(2),
                c: BufferId(5),
                batches: 2,
                m: 3,
                n: 5,
                k: 4,
                trans_a: true,
                trans_b: true,
                bias: None,
                relu: false,
                update: None,
            }))
        );
        assert!(text.contains(nn), "{text}");
        assert!(text.contains(tt), "{text}");
    }

    #[test]
    fn reductions_pick_local_or_in_place_accumulation() {
        let mut g = Graph::new("red");
        let x = g.input("x", TensorType::f32([3, 6])).unwrap();
        let rows = g
            .add(
                Op::Reduce {
                    op: ReduceOp::Max,
                    axes: vec![1],
                },
                &[x],
            )
            .unwrap();
        let cols = g
            .add(
                Op::Reduce {
                    op: ReduceOp::Mean,
                    axes: vec![0],
                },
                &[x],
            )
            .unwrap();
        g.set_output("rows", rows).unwrap();
        g.set_output("cols", cols).unwrap();
        let text = lower_text(&g);
        let by_row = r#"  kernel k0 reduce_max {
    local r0: f32
    for i0 in 0..3 {
      r0 = -inf
      for i1 in 0..6 {
        r0 = max(r0, b0[6*i0 + i1])
      }
      b1[i0] = r0
    }
  }
"#;
        let by_col = r#"  kernel k1 reduce_mean {
    for i0 in 0..6 {
      b2[i0] = 0.0
    }
    for i1 in 0..3 {
      for i2 in 0..6 {
        b2[i2] = add(b2[i2], b0[6*i1 + i2])
      }
    }
    for i3 in 0..6 {
      b2[i3] = div(b2[i3], 3.0)
    }
  }
"#;
        assert!(text.contains(by_row), "{text}");
        assert!(text.contains(by_col), "{text}");
    }

    #[test]
    fn a_chain_of_concatenations_of_slices_fills_one_buffer_copying_each_part_once() {
        let mut g = Graph::new("im2col");
        let x = g.input("x", TensorType::f32([2, 6])).unwrap();
        let parts: Vec<NodeId> = (0..3)
            .map(|k| g.slice(x, &[0, k], &[2, k + 4], &[1, 2]).unwrap())
            .collect();
        let ab = g.concat(parts[0], parts[1], 1).unwrap();
        let abc = g.concat(ab, parts[2], 1).unwrap();
        g.set_output("y", abc).unwrap();
        let program = lower(&g).unwrap();
        // The input, the result, and nothing between: three strided copies.
        assert_eq!(program.buffers.len(), 2, "{program}");
        assert_eq!(program.kernels.len(), 3, "{program}");
        let text = program.to_string();
        assert!(
            text.contains("b1[6*i0 + i1 + 4] = b0[6*i0 + 2*i1 + 2]"),
            "{text}"
        );
        // A slice or an inner concatenation that is also an output keeps its buffer.
        g.set_output("ab", ab).unwrap();
        assert_eq!(lower(&g).unwrap().buffers.len(), 3);
    }

    #[test]
    fn one_hot_compares_labels_with_the_loop_index() {
        let mut g = Graph::new("oh");
        let labels = g.input("labels", TensorType::i32([4])).unwrap();
        let hot = g.one_hot(labels, 5).unwrap();
        g.set_output("hot", hot).unwrap();
        let text = lower_text(&g);
        assert!(
            text.contains(
                "for i1 in 0..5 {\n        b1[5*i0 + i1] = select(cmp.eq(b0[i0], index(i1)), 1.0, 0.0)"
            ),
            "{text}"
        );
    }

    #[test]
    fn gather_picks_by_index_and_scatter_add_fills_then_accumulates() {
        // x[2,3,4] along axis 1 with one batch axis, by ids[2,5]: [2,5,4], element
        // [b, j, s] = x[b, ids[b, j], s]; then back into [2,3,4].
        let mut g = Graph::new("gs");
        let x = g.input("x", TensorType::f32([2, 3, 4])).unwrap();
        let ids = g.input("ids", TensorType::i32([2, 5])).unwrap();
        let y = g.gather(x, ids, 1, 1).unwrap();
        let back = g.scatter_add(y, ids, 1, 1, 3).unwrap();
        g.set_output("back", back).unwrap();
        let expected = r#"program "gs" {
  b0: f32[2,3,4] input "x"
  b1: i32[2,5] input "ids"
  b2: f32[2,5,4] temp
  b3: f32[2,3,4] temp
  output "back" = b3: f32[2,3,4]

  kernel k0 gather {
    for i0 in 0..2 {
      for i1 in 0..5 {
        for i2 in 0..4 {
          b2[20*i0 + 4*i1 + i2] = gather(b0[12*i0 + i2], b1[5*i0 + i1], stride=4, extent=3)
        }
      }
    }
  }

  kernel k1 scatter_add.fill {
    for i0 in 0..24 {
      b3[i0] = 0.0
    }
  }

  kernel k2 scatter_add {
    for i0 in 0..2 {
      for i1 in 0..5 {
        for i2 in 0..4 {
          scatter_add(b3[12*i0 + i2], b1[5*i0 + i1], stride=4, extent=3) += b2[20*i0 + 4*i1 + i2]
        }
      }
    }
  }
}
"#;
        assert_eq!(lower_text(&g), expected);
    }

    #[test]
    fn output_of_an_updated_parameter_is_copied_before_the_update() {
        let mut g = Graph::new("upd");
        let w = g.parameter("w", TensorType::f32([3])).unwrap();
        let one = g.constant_like(1.0, w).unwrap();
        let next = g.add_(w, one).unwrap();
        g.set_update(w, next).unwrap();
        g.set_output("w_before", w).unwrap();
        let program = lower(&g).unwrap();
        program.check().unwrap();
        let output = &program.outputs[0];
        assert_ne!(output.buffer, BufferId(0));
        assert_eq!(program.kernels.last().unwrap().name, "copy");
        assert_eq!(program.updates[0].value, BufferId(1));
    }

    #[test]
    fn dead_nodes_are_not_lowered_but_leaves_keep_buffers() {
        let mut g = Graph::new("dead");
        let x = g.input("x", TensorType::f32([2])).unwrap();
        let unused = g.input("unused", TensorType::f32([2])).unwrap();
        let _dead = g.exp(unused).unwrap();
        let y = g.neg(x).unwrap();
        g.set_output("y", y).unwrap();
        let program = lower(&g).unwrap();
        assert_eq!(program.kernels.len(), 1);
        assert_eq!(
            program.inputs(),
            vec![("x", BufferId(0)), ("unused", BufferId(1))]
        );
    }
}
