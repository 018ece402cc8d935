//! `Graph`: a typed tensor dataflow graph over `petgraph::StableDiGraph`.
//!
//! Nodes hold an op and its result type; an edge `a -> b` with weight `i` says that
//! `a` is operand `i` of `b`. Every builder method checks the op's typing rule, so a
//! graph built through this API is well typed by construction.

use crate::error::IrError;
use crate::op::{BinaryOp, CmpOp, Op, ReduceOp, UnaryOp};
use crate::types::{check_size, DType, Shape, TensorType};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, NodeIndexable};
use petgraph::Direction;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

/// Which graph a node id belongs to: every `Graph::new` draws a fresh one, so an id
/// handed to another graph is recognised as foreign instead of naming whatever node
/// has the same index there. A clone keeps its original's identity (its ids name the
/// same nodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GraphId(u64);

impl GraphId {
    fn fresh() -> GraphId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        GraphId(NEXT.fetch_add(1, AtomicOrdering::Relaxed))
    }
}

/// A node of a graph. Ids are stable: removing nodes never renumbers the others.
/// Ordering and hashing follow the node's index within its graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    index: NodeIndex,
    graph: GraphId,
}

impl NodeId {
    /// The node's index within its graph (dense after printing, stable under removal).
    pub fn index(self) -> usize {
        self.index.index()
    }

    /// The graph the id belongs to.
    pub fn graph(self) -> GraphId {
        self.graph
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.index.index())
    }
}

/// One op and the type of the value it produces.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub ty: TensorType,
}

/// A tensor graph with named inputs, parameters (persistent state) and outputs, and
/// updates that give each parameter its value after a run (a training step's optimizer).
#[derive(Clone, Debug)]
pub struct Graph {
    pub name: String,
    id: GraphId,
    graph: StableDiGraph<Node, usize>,
    inputs: Vec<NodeId>,
    params: Vec<NodeId>,
    outputs: Vec<(String, NodeId)>,
    updates: Vec<(NodeId, NodeId)>,
    /// Indexes kept in step with the lists above, so that declaring and looking up
    /// by name costs O(log n): with scans, a graph of many inputs or outputs was
    /// quadratic to build, parse and run. Input and parameter names to their nodes
    /// (one namespace), output names to their positions in `outputs`, and updated
    /// parameters to their positions in `updates`.
    leaf_names: BTreeMap<String, NodeId>,
    output_names: BTreeMap<String, usize>,
    updated: BTreeMap<NodeId, usize>,
    /// Parameters that training leaves alone (PyTorch's buffers and
    /// `requires_grad=False`): autodiff gives them no gradient and the optimizer no
    /// update. A frozen parameter may still have an update of the model's own (batch
    /// norm's running statistics).
    frozen: BTreeSet<NodeId>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            id: GraphId::fresh(),
            graph: StableDiGraph::default(),
            inputs: Vec::new(),
            params: Vec::new(),
            outputs: Vec::new(),
            updates: Vec::new(),
            leaf_names: BTreeMap::new(),
            output_names: BTreeMap::new(),
            updated: BTreeMap::new(),
            frozen: BTreeSet::new(),
        }
    }

    /// This graph's identity, carried by every id of its nodes.
    pub fn id(&self) -> GraphId {
        self.id
    }

    fn id_of(&self, index: NodeIndex) -> NodeId {
        NodeId {
            index,
            graph: self.id,
        }
    }

    // ---- reading ---------------------------------------------------------------

    /// The node `id`, or `None` if the id is from another graph or its node was
    /// removed.
    pub fn get(&self, id: NodeId) -> Option<&Node> {
        if id.graph != self.id {
            return None;
        }
        self.graph.node_weight(id.index)
    }

    /// The node `id`.
    ///
    /// # Panics
    ///
    /// Like slice indexing, on an id from another graph or of a removed node; callers
    /// holding ids from users check them first (`get`, `contains`, `try_ty`).
    pub fn node(&self, id: NodeId) -> &Node {
        match self.get(id) {
            Some(node) => node,
            None if id.graph != self.id => panic!(
                "node id {id} is from another graph (graph {:?}, not {:?})",
                id.graph, self.id
            ),
            None => panic!("node id {id} names a node removed from this graph"),
        }
    }

    pub fn op(&self, id: NodeId) -> &Op {
        &self.node(id).op
    }

    /// The type of `id`, or an error if the id is not from this graph: for callers
    /// that hold ids a user handed them.
    pub fn try_ty(&self, id: NodeId) -> Result<&TensorType, IrError> {
        self.check_known(&[id])?;
        Ok(self.ty(id))
    }

    pub fn ty(&self, id: NodeId) -> &TensorType {
        &self.node(id).ty
    }

    /// Whether `id` names a node of this graph (not of another graph, not removed).
    pub fn contains(&self, id: NodeId) -> bool {
        self.get(id).is_some()
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    /// All node ids in increasing index order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .graph
            .node_indices()
            .map(|index| self.id_of(index))
            .collect();
        ids.sort();
        ids
    }

    /// The operands of a node, in operand order. Panics like `node` on a foreign id
    /// (its index could name an unrelated node here).
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        self.node(id);
        let mut edges: Vec<(usize, NodeId)> = self
            .graph
            .edges_directed(id.index, Direction::Incoming)
            .map(|edge| (*edge.weight(), self.id_of(edge.source())))
            .collect();
        edges.sort();
        edges.into_iter().map(|(_, source)| source).collect()
    }

    /// The nodes that use `id` as an operand (each once), in increasing id order.
    /// Panics like `node` on a foreign id.
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        self.node(id);
        let mut users: Vec<NodeId> = self
            .graph
            .neighbors_directed(id.index, Direction::Outgoing)
            .map(|index| self.id_of(index))
            .collect();
        users.sort();
        users.dedup();
        users
    }

    /// Input nodes in declaration order.
    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    /// Parameter nodes in declaration order.
    pub fn params(&self) -> &[NodeId] {
        &self.params
    }

    /// Named outputs in declaration order.
    pub fn outputs(&self) -> &[(String, NodeId)] {
        &self.outputs
    }

    /// `(parameter, new value)` pairs in declaration order.
    pub fn updates(&self) -> &[(NodeId, NodeId)] {
        &self.updates
    }

    /// The name of an input or parameter node.
    pub fn leaf_name(&self, id: NodeId) -> Option<&str> {
        match self.op(id) {
            Op::Input { name } | Op::Parameter { name } => Some(name),
            _ => None,
        }
    }

    pub fn input_by_name(&self, name: &str) -> Option<NodeId> {
        let id = *self.leaf_names.get(name)?;
        matches!(self.op(id), Op::Input { .. }).then_some(id)
    }

    pub fn param_by_name(&self, name: &str) -> Option<NodeId> {
        let id = *self.leaf_names.get(name)?;
        matches!(self.op(id), Op::Parameter { .. }).then_some(id)
    }

    pub fn output_by_name(&self, name: &str) -> Option<NodeId> {
        let position = *self.output_names.get(name)?;
        Some(self.outputs[position].1)
    }

    /// The new value of parameter `param` after a run, if it has an update.
    pub fn update_of(&self, param: NodeId) -> Option<NodeId> {
        let position = *self.updated.get(&param)?;
        Some(self.updates[position].1)
    }

    /// The nodes that results depend on: outputs, update values, and every input and
    /// parameter (they are the graph's signature, used or not).
    pub fn roots(&self) -> Vec<NodeId> {
        let mut roots: Vec<NodeId> = self.outputs.iter().map(|&(_, id)| id).collect();
        roots.extend(self.updates.iter().map(|&(_, value)| value));
        roots.extend(self.inputs.iter().copied());
        roots.extend(self.params.iter().copied());
        roots
    }

    /// A topological order of all nodes that breaks ties by the smallest id, so the
    /// same graph always gives the same order.
    pub fn topo_order(&self) -> Vec<NodeId> {
        let mut pending: Vec<usize> = vec![0; self.graph.node_bound()];
        let mut ready = BinaryHeap::new();
        for index in self.graph.node_indices() {
            let n = self
                .graph
                .edges_directed(index, Direction::Incoming)
                .count();
            pending[index.index()] = n;
            if n == 0 {
                ready.push(Reverse(index));
            }
        }
        let mut order = Vec::with_capacity(self.graph.node_count());
        while let Some(Reverse(index)) = ready.pop() {
            order.push(self.id_of(index));
            for edge in self.graph.edges_directed(index, Direction::Outgoing) {
                let target = edge.target();
                pending[target.index()] -= 1;
                if pending[target.index()] == 0 {
                    ready.push(Reverse(target));
                }
            }
        }
        order
    }

    // ---- building ----------------------------------------------------------------

    fn check_known(&self, ids: &[NodeId]) -> Result<(), IrError> {
        match ids.iter().find(|id| !self.contains(**id)) {
            Some(id) if id.graph != self.id => Err(IrError::ForeignNode(id.index())),
            Some(id) => Err(IrError::UnknownNode(id.index())),
            None => Ok(()),
        }
    }

    fn insert(&mut self, op: Op, ty: TensorType, operands: &[NodeId]) -> NodeId {
        let index = self.graph.add_node(Node { op, ty });
        let id = self.id_of(index);
        for (position, operand) in operands.iter().enumerate() {
            self.graph.add_edge(operand.index, id.index, position);
        }
        id
    }

    /// Adds a node after checking the op's typing rule against its operands. Leaves
    /// (inputs, parameters, constants) have their own methods.
    pub fn add(&mut self, op: Op, operands: &[NodeId]) -> Result<NodeId, IrError> {
        self.check_known(operands)?;
        if op.is_leaf() {
            return Err(IrError::Type {
                op: op.mnemonic(),
                message: "leaves are added with input, parameter or constant".to_string(),
            });
        }
        let types: Vec<&TensorType> = operands.iter().map(|&id| self.ty(id)).collect();
        let ty = op.infer_type(&types)?;
        Ok(self.insert(op, ty, operands))
    }

    /// Adds a node whose type the caller already knows (a parser, a pass copying a
    /// checked graph). The type is still checked against the rule.
    pub fn add_typed(
        &mut self,
        op: Op,
        operands: &[NodeId],
        ty: TensorType,
    ) -> Result<NodeId, IrError> {
        match &op {
            Op::Input { name } => {
                let name = name.clone();
                self.input(&name, ty)
            }
            Op::Parameter { name } => {
                let name = name.clone();
                self.parameter(&name, ty)
            }
            Op::Constant { value } => self.constant(*value, ty),
            _ => {
                let id = self.add(op, operands)?;
                if *self.ty(id) != ty {
                    let inferred = self.ty(id).clone();
                    let op = self.op(id).mnemonic();
                    self.graph.remove_node(id.index);
                    return Err(IrError::Type {
                        op,
                        message: format!("declared type {ty} but the operands give {inferred}"),
                    });
                }
                Ok(id)
            }
        }
    }

    fn check_new_leaf_name(&self, kind: &'static str, name: &str) -> Result<(), IrError> {
        if self.leaf_names.contains_key(name) {
            return Err(IrError::DuplicateName {
                kind,
                name: name.to_string(),
            });
        }
        Ok(())
    }

    pub fn input(&mut self, name: &str, ty: TensorType) -> Result<NodeId, IrError> {
        self.check_new_leaf_name("input", name)?;
        check_size("input", &ty.shape)?;
        let id = self.insert(
            Op::Input {
                name: name.to_string(),
            },
            ty,
            &[],
        );
        self.inputs.push(id);
        self.leaf_names.insert(name.to_string(), id);
        Ok(id)
    }

    pub fn parameter(&mut self, name: &str, ty: TensorType) -> Result<NodeId, IrError> {
        self.check_new_leaf_name("parameter", name)?;
        check_size("param", &ty.shape)?;
        let id = self.insert(
            Op::Parameter {
                name: name.to_string(),
            },
            ty,
            &[],
        );
        self.params.push(id);
        self.leaf_names.insert(name.to_string(), id);
        Ok(id)
    }

    /// A tensor of type `ty` filled with `value`. Integer and bool constants must be
    /// whole numbers (bool: 0 or 1).
    pub fn constant(&mut self, value: f64, ty: TensorType) -> Result<NodeId, IrError> {
        check_size("const", &ty.shape)?;
        let valid = match ty.dtype {
            DType::F32 => true,
            DType::I32 => {
                value.fract() == 0.0 && (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&value)
            }
            DType::Bool => value == 0.0 || value == 1.0,
        };
        if !valid {
            return Err(IrError::BadConstant {
                value,
                dtype: ty.dtype.name(),
            });
        }
        Ok(self.insert(Op::Constant { value }, ty, &[]))
    }

    /// Names `value` as an output. Output names are unique.
    pub fn set_output(&mut self, name: &str, value: NodeId) -> Result<(), IrError> {
        self.check_known(&[value])?;
        if self.output_names.contains_key(name) {
            return Err(IrError::DuplicateName {
                kind: "output",
                name: name.to_string(),
            });
        }
        self.output_names
            .insert(name.to_string(), self.outputs.len());
        self.outputs.push((name.to_string(), value));
        Ok(())
    }

    /// Removes the output called `name`, returning the node it named. Linear in the
    /// number of outputs; [`Graph::retain_outputs`] removes many in one pass.
    pub fn remove_output(&mut self, name: &str) -> Option<NodeId> {
        let position = self.output_names.remove(name)?;
        let (_, id) = self.outputs.remove(position);
        for (later, _) in &self.outputs[position..] {
            *self
                .output_names
                .get_mut(later)
                .expect("every output is indexed") -= 1;
        }
        Some(id)
    }

    /// Keeps the outputs for which `keep(name, value)` holds, in their order.
    pub fn retain_outputs(&mut self, mut keep: impl FnMut(&str, NodeId) -> bool) {
        self.outputs.retain(|(name, value)| keep(name, *value));
        self.output_names = self
            .outputs
            .iter()
            .enumerate()
            .map(|(position, (name, _))| (name.clone(), position))
            .collect();
    }

    /// After a run, parameter `param` takes the value of `value`.
    pub fn set_update(&mut self, param: NodeId, value: NodeId) -> Result<(), IrError> {
        self.check_known(&[param, value])?;
        let target = match self.op(param) {
            Op::Parameter { name } => name.clone(),
            other => {
                return Err(IrError::BadUpdate {
                    target: param.to_string(),
                    message: format!("target ({}) is not a parameter", other.mnemonic()),
                })
            }
        };
        if self.ty(param) != self.ty(value) {
            return Err(IrError::BadUpdate {
                target,
                message: format!(
                    "value type {} differs from parameter type {}",
                    self.ty(value),
                    self.ty(param)
                ),
            });
        }
        if self.updated.contains_key(&param) {
            return Err(IrError::DuplicateName {
                kind: "update",
                name: target,
            });
        }
        self.updated.insert(param, self.updates.len());
        self.updates.push((param, value));
        Ok(())
    }

    /// Marks parameter `param` frozen: not trained (see [`Graph::is_frozen`]).
    /// Freezing a frozen parameter again changes nothing.
    pub fn freeze(&mut self, param: NodeId) -> Result<(), IrError> {
        self.check_known(&[param])?;
        match self.op(param) {
            Op::Parameter { .. } => {
                self.frozen.insert(param);
                Ok(())
            }
            other => Err(IrError::NotAParameter {
                node: param.to_string(),
                op: other.mnemonic(),
            }),
        }
    }

    /// Whether `param` is frozen: training computes no gradient for it and the
    /// optimizer gives it no update.
    pub fn is_frozen(&self, param: NodeId) -> bool {
        self.frozen.contains(&param)
    }

    /// The parameters training updates, in declaration order: every parameter that
    /// is not frozen.
    pub fn trainable_params(&self) -> Vec<NodeId> {
        self.params
            .iter()
            .copied()
            .filter(|param| !self.frozen.contains(param))
            .collect()
    }

    /// Replaces every use of `old` (as an operand, output or update value) by `new`.
    /// Refuses a `new` that depends on `old`: its own use of `old` would become a cycle.
    pub fn replace_uses(&mut self, old: NodeId, new: NodeId) -> Result<(), IrError> {
        self.check_known(&[old, new])?;
        if self.ty(old) != self.ty(new) {
            return Err(IrError::Mismatch {
                op: "replace_uses",
                lhs: self.ty(old).clone(),
                rhs: self.ty(new).clone(),
            });
        }
        if old == new {
            return Ok(());
        }
        if self.depends_on(new, old) {
            return Err(IrError::Invalid(format!(
                "cannot replace the uses of {old} by {new}: {new} depends on {old}, so the graph would get a cycle"
            )));
        }
        let uses: Vec<(petgraph::stable_graph::EdgeIndex, NodeIndex, usize)> = self
            .graph
            .edges_directed(old.index, Direction::Outgoing)
            .map(|edge| (edge.id(), edge.target(), *edge.weight()))
            .collect();
        for (edge, target, position) in uses {
            self.graph.remove_edge(edge);
            self.graph.add_edge(new.index, target, position);
        }
        for (_, value) in self.outputs.iter_mut() {
            if *value == old {
                *value = new;
            }
        }
        for (_, value) in self.updates.iter_mut() {
            if *value == old {
                *value = new;
            }
        }
        Ok(())
    }

    /// Whether `node` reads `ancestor`, directly or through other nodes.
    fn depends_on(&self, node: NodeId, ancestor: NodeId) -> bool {
        let mut seen = vec![false; self.graph.node_bound()];
        let mut stack = vec![node];
        while let Some(id) = stack.pop() {
            if id == ancestor {
                return true;
            }
            if !std::mem::replace(&mut seen[id.index()], true) {
                stack.extend(self.operands(id));
            }
        }
        false
    }

    /// Removes nodes that no output, update, input or parameter depends on.
    pub fn prune(&mut self) {
        let mut live = vec![false; self.graph.node_bound()];
        let mut stack = self.roots();
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut live[id.index()], true) {
                continue;
            }
            stack.extend(self.operands(id));
        }
        for id in self.node_ids() {
            if !live[id.index()] {
                self.graph.remove_node(id.index);
            }
        }
    }

    // ---- shorthands for the op set ---------------------------------------------------

    pub fn unary(&mut self, op: UnaryOp, x: NodeId) -> Result<NodeId, IrError> {
        self.add(Op::Unary(op), &[x])
    }

    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId, IrError> {
        self.add(Op::Binary(op), &[a, b])
    }

    pub fn neg(&mut self, x: NodeId) -> Result<NodeId, IrError> {
        self.unary(UnaryOp::Neg, x)
    }

    pub fn exp(&mut self, x: NodeId) -> Result<NodeId, IrError> {
        self.unary(UnaryOp::Exp, x)
    }

    pub fn log(&mut self, x: NodeId) -> Result<NodeId, IrError> {
        self.unary(UnaryOp::Log, x)
    }

    pub fn relu(&mut self, x: NodeId) -> Result<NodeId, IrError> {
        self.unary(UnaryOp::Relu, x)
    }

    pub fn sqrt(&mut self, x: NodeId) -> Result<NodeId, IrError> {
        self.unary(UnaryOp::Sqrt, x)
    }

    pub fn rsqrt(&mut self, x: NodeId) -> Result<NodeId, IrError> {
        self.unary(UnaryOp::Rsqrt, x)
    }

    pub fn abs(&mut self, x: NodeId) -> Result<NodeId, IrError> {
        self.unary(UnaryOp::Abs, x)
    }

    pub fn sign(&mut self, x: NodeId) -> Result<NodeId, IrError> {
        self.unary(UnaryOp::Sign, x)
    }

    pub fn sigmoid(&mut self, x: NodeId) -> Result<NodeId, IrError> {
        self.unary(UnaryOp::Sigmoid, x)
    }

    pub fn tanh(&mut self, x: NodeId) -> Result<NodeId, IrError> {
        self.unary(UnaryOp::Tanh, x)
    }

    pub fn softplus(&mut self, x: NodeId) -> Result<NodeId, IrError> {
        self.unary(UnaryOp::Softplus, x)
    }

    pub fn expm1(&mut self, x: NodeId) -> Result<NodeId, IrError> {
        self.unary(UnaryOp::Expm1, x)
    }

    pub fn log1p(&mut self, x: NodeId) -> Result<NodeId, IrError> {
        self.unary(UnaryOp::Log1p, x)
    }

    pub fn erf(&mut self, x: NodeId) -> Result<NodeId, IrError> {
        self.unary(UnaryOp::Erf, x)
    }

    pub fn add_(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, IrError> {
        self.binary(BinaryOp::Add, a, b)
    }

    pub fn sub(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, IrError> {
        self.binary(BinaryOp::Sub, a, b)
    }

    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, IrError> {
        self.binary(BinaryOp::Mul, a, b)
    }

    pub fn div(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, IrError> {
        self.binary(BinaryOp::Div, a, b)
    }

    pub fn max(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, IrError> {
        self.binary(BinaryOp::Max, a, b)
    }

    pub fn min(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, IrError> {
        self.binary(BinaryOp::Min, a, b)
    }

    pub fn pow(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, IrError> {
        self.binary(BinaryOp::Pow, a, b)
    }

    pub fn compare(&mut self, op: CmpOp, a: NodeId, b: NodeId) -> Result<NodeId, IrError> {
        self.add(Op::Compare(op), &[a, b])
    }

    pub fn select(
        &mut self,
        cond: NodeId,
        on_true: NodeId,
        on_false: NodeId,
    ) -> Result<NodeId, IrError> {
        self.add(Op::Select, &[cond, on_true, on_false])
    }

    pub fn cast(&mut self, x: NodeId, to: DType) -> Result<NodeId, IrError> {
        self.add(Op::Cast { to }, &[x])
    }

    pub fn broadcast(&mut self, x: NodeId, shape: impl Into<Shape>) -> Result<NodeId, IrError> {
        self.add(
            Op::Broadcast {
                shape: shape.into(),
            },
            &[x],
        )
    }

    pub fn reduce(&mut self, op: ReduceOp, x: NodeId, axes: &[usize]) -> Result<NodeId, IrError> {
        self.add(
            Op::Reduce {
                op,
                axes: axes.to_vec(),
            },
            &[x],
        )
    }

    pub fn reduce_sum(&mut self, x: NodeId, axes: &[usize]) -> Result<NodeId, IrError> {
        self.reduce(ReduceOp::Sum, x, axes)
    }

    pub fn reduce_max(&mut self, x: NodeId, axes: &[usize]) -> Result<NodeId, IrError> {
        self.reduce(ReduceOp::Max, x, axes)
    }

    pub fn reduce_mean(&mut self, x: NodeId, axes: &[usize]) -> Result<NodeId, IrError> {
        self.reduce(ReduceOp::Mean, x, axes)
    }

    pub fn reshape(&mut self, x: NodeId, shape: impl Into<Shape>) -> Result<NodeId, IrError> {
        self.add(
            Op::Reshape {
                shape: shape.into(),
            },
            &[x],
        )
    }

    pub fn transpose(&mut self, x: NodeId, perm: &[usize]) -> Result<NodeId, IrError> {
        self.add(
            Op::Transpose {
                perm: perm.to_vec(),
            },
            &[x],
        )
    }

    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, IrError> {
        self.matmul_t(a, b, false, false)
    }

    pub fn matmul_t(
        &mut self,
        a: NodeId,
        b: NodeId,
        transpose_a: bool,
        transpose_b: bool,
    ) -> Result<NodeId, IrError> {
        self.add(
            Op::MatMul {
                transpose_a,
                transpose_b,
            },
            &[a, b],
        )
    }

    pub fn one_hot(&mut self, labels: NodeId, depth: usize) -> Result<NodeId, IrError> {
        self.add(Op::OneHot { depth }, &[labels])
    }

    /// Elements `starts[i], starts[i] + steps[i], …` below `ends[i]` on each axis.
    pub fn slice(
        &mut self,
        x: NodeId,
        starts: &[usize],
        ends: &[usize],
        steps: &[usize],
    ) -> Result<NodeId, IrError> {
        let op = Op::Slice {
            starts: starts.to_vec(),
            ends: ends.to_vec(),
            steps: steps.to_vec(),
        };
        self.add(op, &[x])
    }

    /// `x` with `low`/`high` elements of `value` around each axis and `interior`
    /// between neighbours.
    pub fn pad(
        &mut self,
        x: NodeId,
        low: &[usize],
        high: &[usize],
        interior: &[usize],
        value: f64,
    ) -> Result<NodeId, IrError> {
        let op = Op::Pad {
            low: low.to_vec(),
            high: high.to_vec(),
            interior: interior.to_vec(),
            value,
        };
        self.add(op, &[x])
    }

    /// `a` then `b` along `axis`.
    pub fn concat(&mut self, a: NodeId, b: NodeId, axis: usize) -> Result<NodeId, IrError> {
        self.add(Op::Concat { axis }, &[a, b])
    }

    /// A sample of `dist` of `shape` from the i32 scalar `seed`, stream `stream` (see
    /// [`Op::Random`]).
    pub fn random(
        &mut self,
        seed: NodeId,
        dist: crate::op::Distribution,
        stream: u32,
        shape: &[usize],
    ) -> Result<NodeId, IrError> {
        let op = Op::Random {
            dist,
            stream,
            shape: shape.to_vec(),
        };
        self.add(op, &[seed])
    }
    /// `params[.., indices[..], ..]` along `axis`, the first `batch_dims` axes shared
    /// by both operands (see [`Op::Gather`]; an index out of range reads 0).
    pub fn gather(
        &mut self,
        params: NodeId,
        indices: NodeId,
        axis: usize,
        batch_dims: usize,
    ) -> Result<NodeId, IrError> {
        self.add(Op::Gather { axis, batch_dims }, &[params, indices])
    }

    /// Zeros with `extent` elements along `axis`, plus each update at the position a
    /// gather by `indices` reads it from (see [`Op::ScatterAdd`]).
    pub fn scatter_add(
        &mut self,
        updates: NodeId,
        indices: NodeId,
        axis: usize,
        batch_dims: usize,
        extent: usize,
    ) -> Result<NodeId, IrError> {
        let op = Op::ScatterAdd {
            axis,
            batch_dims,
            extent,
        };
        self.add(op, &[updates, indices])
    }

    /// A constant with the type of `like` (same dtype and shape).
    pub fn constant_like(&mut self, value: f64, like: NodeId) -> Result<NodeId, IrError> {
        self.check_known(&[like])?;
        let ty = self.ty(like).clone();
        self.constant(value, ty)
    }
}
