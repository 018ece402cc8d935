//! DAG-aware extraction: picks one e-node per class so that the resulting graph,
//! counting every shared node once, is as cheap as a greedy search finds.
//!
//! egg's `Extractor` sums the costs of children as trees, so a value used twice is
//! paid twice and extraction can prefer a worse DAG than the input. Here a class's
//! cost is the set of classes its best node reaches, each paid once; iterating to a
//! fixpoint keeps the best node per class (ties keep the first found, in class-id
//! order, so the result is deterministic).

use crate::egraph::language::{to_op, KilnEGraph, KilnLang};
use egg::Id;
use kiln_ir::op::matrix_dims;
use kiln_ir::{Op, TensorType};
use std::collections::{BTreeMap, HashMap};

/// The cost of one op producing a value of type `ty` from operands of `operand_types`:
/// about the elements it touches, and at least 1.
pub fn op_cost(op: &Op, ty: &TensorType, operand_types: &[&TensorType]) -> f64 {
    let elements = ty.num_elements() as f64;
    1.0 + match op {
        Op::Input { .. } | Op::Parameter { .. } | Op::Constant { .. } => 0.0,
        // A reshape is a view of the same buffer.
        Op::Reshape { .. } => 0.0,
        Op::Reduce { .. } => operand_types[0].num_elements() as f64,
        Op::MatMul { transpose_a, .. } => {
            let (_, k) = matrix_dims(&operand_types[0].shape, *transpose_a);
            elements * k as f64
        }
        _ => elements,
    }
}

/// The cost of a graph under `op_cost`, every node counted once.
pub fn graph_cost(graph: &kiln_ir::Graph) -> f64 {
    graph
        .node_ids()
        .into_iter()
        .map(|id| {
            let operands = graph.operands(id);
            let types: Vec<&TensorType> = operands.iter().map(|&o| graph.ty(o)).collect();
            op_cost(graph.op(id), graph.ty(id), &types)
        })
        .sum()
}

/// The chosen node of every class that has a finite cost.
pub struct Extraction {
    pub choice: HashMap<Id, KilnLang>,
}

fn node_cost(egraph: &KilnEGraph, class: Id, node: &KilnLang) -> Option<(f64, Vec<Id>)> {
    let (op, operands, _) = to_op(egraph, node)?;
    let ty = egraph[class].data.ty.as_ref()?;
    let types: Vec<&TensorType> = operands
        .iter()
        .map(|&id| egraph[id].data.ty.as_ref().expect("operands are values"))
        .collect();
    Some((op_cost(&op, ty, &types), operands))
}

/// Runs the greedy DAG extraction over all value classes.
pub fn extract(egraph: &KilnEGraph) -> Extraction {
    let mut classes: Vec<Id> = egraph
        .classes()
        .filter(|class| class.data.ty.is_some())
        .map(|class| class.id)
        .collect();
    classes.sort();
    // class -> (total, reached classes with their own cost, chosen node)
    let mut best: HashMap<Id, (f64, BTreeMap<Id, f64>, KilnLang)> = HashMap::new();
    loop {
        let mut changed = false;
        for &class in &classes {
            for node in &egraph[class].nodes {
                let Some((own, operands)) = node_cost(egraph, class, node) else {
                    continue;
                };
                let mut reached = BTreeMap::new();
                let mut complete = true;
                for operand in operands {
                    let operand = egraph.find(operand);
                    match best.get(&operand) {
                        Some((_, set, _)) => reached.extend(set.iter().map(|(&k, &v)| (k, v))),
                        None => {
                            complete = false;
                            break;
                        }
                    }
                }
                // A node that reaches its own class would make a cycle.
                if !complete || reached.contains_key(&class) {
                    continue;
                }
                reached.insert(class, own);
                let total: f64 = reached.values().sum();
                let better = match best.get(&class) {
                    None => true,
                    Some((current, _, _)) => total < current - 1e-9 * current.abs().max(1.0),
                };
                if better {
                    best.insert(class, (total, reached, node.clone()));
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    Extraction {
        choice: best
            .into_iter()
            .map(|(class, (_, _, node))| (class, node))
            .collect(),
    }
}
