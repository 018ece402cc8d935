//! Conversion between `Graph` and the e-graph: every graph node becomes one e-node
//! (so sharing is kept), and extraction rebuilds a graph through the checked builder
//! with the same signature, outputs and updates.

use crate::egraph::extract::Extraction;
use crate::egraph::language::{to_op, Dims, Float, KilnEGraph, KilnLang, Type};
use egg::{Id, Symbol};
use kiln_ir::{Graph, IrError, NodeId, Op};
use std::collections::HashMap;

/// Adds every node of `graph` to `egraph`; returns the class of each node.
pub fn to_egraph(graph: &Graph, egraph: &mut KilnEGraph) -> HashMap<NodeId, Id> {
    let mut class_of: HashMap<NodeId, Id> = HashMap::new();
    for id in graph.topo_order() {
        let node = graph.node(id);
        let operands: Vec<Id> = graph.operands(id).iter().map(|o| class_of[o]).collect();
        let leaf = |egraph: &mut KilnEGraph, node: KilnLang| egraph.add(node);
        let ty = leaf(egraph, KilnLang::Type(Type(node.ty.clone())));
        let unary = |x: &[Id]| x[0];
        let pair = |x: &[Id]| [x[0], x[1]];
        let enode = match &node.op {
            Op::Input { name } => {
                KilnLang::Input([leaf(egraph, KilnLang::Name(Symbol::from(name))), ty])
            }
            Op::Parameter { name } => {
                KilnLang::Param([leaf(egraph, KilnLang::Name(Symbol::from(name))), ty])
            }
            Op::Constant { value } => {
                KilnLang::Const([leaf(egraph, KilnLang::Float(Float::new(*value))), ty])
            }
            Op::Unary(op) => {
                let x = unary(&operands);
                match op {
                    kiln_ir::UnaryOp::Neg => KilnLang::Neg(x),
                    kiln_ir::UnaryOp::Exp => KilnLang::Exp(x),
                    kiln_ir::UnaryOp::Log => KilnLang::Log(x),
                    kiln_ir::UnaryOp::Relu => KilnLang::Relu(x),
                }
            }
            Op::Binary(op) => {
                let ab = pair(&operands);
                match op {
                    kiln_ir::BinaryOp::Add => KilnLang::Add(ab),
                    kiln_ir::BinaryOp::Sub => KilnLang::Sub(ab),
                    kiln_ir::BinaryOp::Mul => KilnLang::Mul(ab),
                    kiln_ir::BinaryOp::Div => KilnLang::Div(ab),
                    kiln_ir::BinaryOp::Max => KilnLang::Max(ab),
                }
            }
            Op::Compare(op) => {
                let ab = pair(&operands);
                match op {
                    kiln_ir::CmpOp::Eq => KilnLang::CmpEq(ab),
                    kiln_ir::CmpOp::Ne => KilnLang::CmpNe(ab),
                    kiln_ir::CmpOp::Lt => KilnLang::CmpLt(ab),
                    kiln_ir::CmpOp::Le => KilnLang::CmpLe(ab),
                    kiln_ir::CmpOp::Gt => KilnLang::CmpGt(ab),
                    kiln_ir::CmpOp::Ge => KilnLang::CmpGe(ab),
                }
            }
            Op::Select => KilnLang::Select([operands[0], operands[1], operands[2]]),
            Op::Cast { .. } => KilnLang::Cast([unary(&operands), ty]),
            Op::Broadcast { .. } => KilnLang::Broadcast([unary(&operands), ty]),
            Op::Reshape { .. } => KilnLang::Reshape([unary(&operands), ty]),
            Op::Reduce { op, axes } => {
                let axes = leaf(egraph, KilnLang::Dims(Dims(axes.clone())));
                let x = unary(&operands);
                match op {
                    kiln_ir::ReduceOp::Sum => KilnLang::ReduceSum([x, axes]),
                    kiln_ir::ReduceOp::Max => KilnLang::ReduceMax([x, axes]),
                    kiln_ir::ReduceOp::Mean => KilnLang::ReduceMean([x, axes]),
                }
            }
            Op::Transpose { perm } => {
                let perm = leaf(egraph, KilnLang::Dims(Dims(perm.clone())));
                KilnLang::Transpose([unary(&operands), perm])
            }
            Op::MatMul {
                transpose_a,
                transpose_b,
            } => {
                let ab = pair(&operands);
                match (transpose_a, transpose_b) {
                    (false, false) => KilnLang::MatMul(ab),
                    (true, false) => KilnLang::MatMulTN(ab),
                    (false, true) => KilnLang::MatMulNT(ab),
                    (true, true) => KilnLang::MatMulTT(ab),
                }
            }
            Op::OneHot { depth } => {
                let depth = i64::try_from(*depth).expect("depths fit in i64");
                KilnLang::OneHot([unary(&operands), leaf(egraph, KilnLang::Num(depth))])
            }
        };
        class_of.insert(id, egraph.add(enode));
    }
    class_of
}

/// Rebuilds a graph from the extraction: the original's inputs and parameters (same
/// names, types, order), then whatever the outputs and updates need.
pub fn from_egraph(
    original: &Graph,
    egraph: &KilnEGraph,
    class_of: &HashMap<NodeId, Id>,
    extraction: &Extraction,
) -> Result<Graph, IrError> {
    let mut graph = Graph::new(original.name.clone());
    let mut built: HashMap<Id, NodeId> = HashMap::new();
    for &id in original.inputs() {
        let name = original.leaf_name(id).expect("inputs are named");
        graph.input(name, original.ty(id).clone())?;
    }
    for &id in original.params() {
        let name = original.leaf_name(id).expect("parameters are named");
        graph.parameter(name, original.ty(id).clone())?;
    }
    let mut builder = Builder {
        egraph,
        extraction,
        graph: &mut graph,
        built: &mut built,
    };
    let mut outputs = Vec::new();
    for (name, id) in original.outputs() {
        outputs.push((name.clone(), builder.build(class_of[id])?));
    }
    let mut updates = Vec::new();
    for (param, value) in original.updates() {
        updates.push((*param, builder.build(class_of[value])?));
    }
    for (name, id) in outputs {
        graph.set_output(&name, id)?;
    }
    for (param, value) in updates {
        let name = original
            .leaf_name(param)
            .expect("updates target parameters");
        let param = graph
            .param_by_name(name)
            .expect("parameters were declared first");
        graph.set_update(param, value)?;
    }
    Ok(graph)
}

struct Builder<'a> {
    egraph: &'a KilnEGraph,
    extraction: &'a Extraction,
    graph: &'a mut Graph,
    built: &'a mut HashMap<Id, NodeId>,
}

impl Builder<'_> {
    fn build(&mut self, class: Id) -> Result<NodeId, IrError> {
        let class = self.egraph.find(class);
        if let Some(&id) = self.built.get(&class) {
            return Ok(id);
        }
        let node = &self.extraction.choice[&class];
        let (op, operands, declared) =
            to_op(self.egraph, node).expect("value classes choose value nodes");
        let id = match op {
            Op::Input { name } => self.graph.input_by_name(&name).expect("declared first"),
            Op::Parameter { name } => self.graph.param_by_name(&name).expect("declared first"),
            Op::Constant { value } => self
                .graph
                .constant(value, declared.expect("constants carry their type"))?,
            op => {
                let mut operand_ids = Vec::with_capacity(operands.len());
                for operand in operands {
                    operand_ids.push(self.build(operand)?);
                }
                self.graph.add(op, &operand_ids)?
            }
        };
        debug_assert_eq!(
            Some(self.graph.ty(id)),
            self.egraph[class].data.ty.as_ref(),
            "extraction keeps every class's type"
        );
        self.built.insert(class, id);
        Ok(id)
    }
}
