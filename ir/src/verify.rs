//! The verifier: checks the invariants every pass must keep.
//!
//! Run after each pipeline step in tests and debug builds; a failure after a pass is a
//! kiln bug, a failure on a hand-written or parsed graph is the user's mistake.

use crate::error::IrError;
use crate::graph::Graph;
use crate::op::Op;
use std::collections::BTreeSet;

/// Checks that the graph is acyclic, every node has the operand count of its op and
/// the type its typing rule gives, names are unique, and updates target parameters
/// with values of the same type.
pub fn verify(graph: &Graph) -> Result<(), IrError> {
    let order = graph.topo_order();
    // Sets, since every leaf is looked up: `contains` on the lists is quadratic.
    let inputs: BTreeSet<_> = graph.inputs().iter().collect();
    let params: BTreeSet<_> = graph.params().iter().collect();
    if order.len() != graph.node_count() {
        return Err(IrError::Invalid("the graph has a cycle".to_string()));
    }
    for id in graph.node_ids() {
        let node = graph.node(id);
        let operands = graph.operands(id);
        if operands.len() != node.op.arity() {
            return Err(IrError::Invalid(format!(
                "{id} ({}) has {} operands, expected {}",
                node.op.mnemonic(),
                operands.len(),
                node.op.arity()
            )));
        }
        if node.op.is_leaf() {
            let listed = match node.op {
                Op::Input { .. } => inputs.contains(&id),
                Op::Parameter { .. } => params.contains(&id),
                _ => true,
            };
            if !listed {
                return Err(IrError::Invalid(format!(
                    "{id} ({}) is not in the graph's signature",
                    node.op.mnemonic()
                )));
            }
            continue;
        }
        let types: Vec<_> = operands.iter().map(|&operand| graph.ty(operand)).collect();
        let inferred = node.op.infer_type(&types).map_err(|err| {
            IrError::Invalid(format!("{id} ({}) is ill-typed: {err}", node.op.mnemonic()))
        })?;
        if inferred != node.ty {
            return Err(IrError::Invalid(format!(
                "{id} ({}) is annotated {} but its operands give {inferred}",
                node.op.mnemonic(),
                node.ty
            )));
        }
    }
    let mut names = BTreeSet::new();
    for &id in graph.inputs().iter().chain(graph.params()) {
        let name = graph.leaf_name(id).expect("signature nodes are named");
        if !names.insert(name) {
            return Err(IrError::Invalid(format!("name {name:?} is used twice")));
        }
    }
    let mut outputs = BTreeSet::new();
    for (name, _) in graph.outputs() {
        if !outputs.insert(name) {
            return Err(IrError::Invalid(format!("output {name:?} is named twice")));
        }
    }
    let mut targets = BTreeSet::new();
    for &(param, value) in graph.updates() {
        if !matches!(graph.op(param), Op::Parameter { .. }) {
            return Err(IrError::Invalid(format!(
                "update target {param} is not a parameter"
            )));
        }
        if graph.ty(param) != graph.ty(value) {
            return Err(IrError::Invalid(format!(
                "update of {param} has type {}, the parameter {}",
                graph.ty(value),
                graph.ty(param)
            )));
        }
        if !targets.insert(param) {
            return Err(IrError::Invalid(format!("{param} is updated twice")));
        }
    }
    Ok(())
}
