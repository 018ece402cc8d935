//! JSON form of a graph (serde): for tools and for storing graphs beside weights.
//!
//! Nodes are listed in `text::print_order`, each naming its operands by position in
//! that list, so a document always has its operands before their users. Constant
//! values are strings in the text IR's float syntax, because JSON has no NaN or
//! infinity. Reading a document rebuilds the graph through the checked builder, so a
//! malformed one is an error naming the node, never a panic.

use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::Op;
use crate::text::{float_literal, print_order};
use crate::types::TensorType;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use thiserror::Error;

/// A JSON document that is not a valid graph (the user's file).
#[derive(Debug, Error)]
pub enum SerialError {
    #[error("invalid json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("node {index}: {message}")]
    Node { index: usize, message: String },
    #[error("{0}")]
    Graph(IrError),
}

#[derive(Serialize, Deserialize)]
struct Document {
    name: String,
    nodes: Vec<NodeDoc>,
    outputs: Vec<Binding>,
    updates: Vec<Binding>,
}

#[derive(Serialize, Deserialize)]
struct NodeDoc {
    op: OpDoc,
    ty: TensorType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    operands: Vec<usize>,
}

/// `Op` with the constant's value as text, so NaN and infinities survive JSON.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum OpDoc {
    Constant { constant: String },
    Op(Op),
}

#[derive(Serialize, Deserialize)]
struct Binding {
    name: String,
    value: usize,
}

/// The graph as pretty-printed JSON; the same graph always gives the same text.
pub fn to_json(graph: &Graph) -> String {
    let order = print_order(graph);
    let position: HashMap<NodeId, usize> = order
        .iter()
        .enumerate()
        .map(|(index, &id)| (id, index))
        .collect();
    let nodes = order
        .iter()
        .map(|&id| {
            let node = graph.node(id);
            let op = match node.op {
                Op::Constant { value } => OpDoc::Constant {
                    constant: float_literal(value),
                },
                ref op => OpDoc::Op(op.clone()),
            };
            NodeDoc {
                op,
                ty: node.ty.clone(),
                operands: graph.operands(id).iter().map(|o| position[o]).collect(),
            }
        })
        .collect();
    let binding = |name: &str, id: &NodeId| Binding {
        name: name.to_string(),
        value: position[id],
    };
    let document = Document {
        name: graph.name.clone(),
        nodes,
        outputs: graph
            .outputs()
            .iter()
            .map(|(name, id)| binding(name, id))
            .collect(),
        updates: graph
            .updates()
            .iter()
            .map(|(param, value)| {
                binding(
                    graph.leaf_name(*param).expect("updates target parameters"),
                    value,
                )
            })
            .collect(),
    };
    serde_json::to_string_pretty(&document).expect("a document of plain data serializes")
}

/// Reads a graph from JSON written by `to_json` (or by hand), checking every node.
pub fn from_json(src: &str) -> Result<Graph, SerialError> {
    let document: Document = serde_json::from_str(src)?;
    let mut graph = Graph::new(document.name);
    let mut ids: Vec<NodeId> = Vec::with_capacity(document.nodes.len());
    for (index, node) in document.nodes.into_iter().enumerate() {
        let node_error = |message: String| SerialError::Node { index, message };
        let mut operands = Vec::with_capacity(node.operands.len());
        for operand in node.operands {
            let id = ids.get(operand).copied().ok_or_else(|| {
                node_error(format!(
                    "operand {operand} does not name an earlier node (there are {index} before it)"
                ))
            })?;
            operands.push(id);
        }
        let op = match node.op {
            OpDoc::Constant { constant } => Op::Constant {
                value: parse_float(&constant)
                    .ok_or_else(|| node_error(format!("{constant:?} is not a number")))?,
            },
            OpDoc::Op(op) => op,
        };
        let id = graph
            .add_typed(op, &operands, node.ty)
            .map_err(|err| node_error(err.to_string()))?;
        ids.push(id);
    }
    let lookup = |value: usize, what: &str| {
        ids.get(value).copied().ok_or_else(|| SerialError::Node {
            index: value,
            message: format!("{what} names a node that does not exist"),
        })
    };
    for binding in document.outputs {
        let id = lookup(binding.value, &format!("output {:?}", binding.name))?;
        graph
            .set_output(&binding.name, id)
            .map_err(SerialError::Graph)?;
    }
    for binding in document.updates {
        let value = lookup(binding.value, &format!("update {:?}", binding.name))?;
        let param = graph.param_by_name(&binding.name).ok_or_else(|| {
            SerialError::Graph(IrError::BadUpdate {
                target: binding.name.clone(),
                message: "no parameter has that name".to_string(),
            })
        })?;
        graph.set_update(param, value).map_err(SerialError::Graph)?;
    }
    Ok(graph)
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::{parse, print};

    const SRC: &str = "graph g {
  %0 = input \"x\" : f32[2,3]
  %1 = param \"w\" : f32[3,2]
  %2 = matmul %0, %1 : f32[2,2]
  %3 = const nan : f32[3,2]
  %4 = const -inf : f32[2,2]
  %5 = max %2, %4 : f32[2,2]
  %6 = reduce_sum %5 axes=[1] : f32[2,1]
  %7 = max %1, %3 : f32[3,2]
  output \"y\" = %6
  update \"w\" = %7
}
";

    #[test]
    fn json_round_trips_through_the_text_form() {
        let graph = parse(SRC).unwrap();
        let json = to_json(&graph);
        assert_eq!(print(&from_json(&json).unwrap()), SRC);
        assert!(json.contains("\"constant\": \"nan\""), "{json}");
        assert_eq!(to_json(&from_json(&json).unwrap()), json);
    }

    #[test]
    fn malformed_documents_are_errors_naming_the_node() {
        let forward = r#"{"name": "g", "nodes": [
            {"op": "Select", "ty": {"dtype": "F32", "shape": [2]}, "operands": [1, 2, 3]}
        ], "outputs": [], "updates": []}"#;
        let err = from_json(forward).unwrap_err().to_string();
        assert_eq!(
            err,
            "node 0: operand 1 does not name an earlier node (there are 0 before it)"
        );
        let ill_typed = r#"{"name": "g", "nodes": [
            {"op": {"Input": {"name": "x"}}, "ty": {"dtype": "F32", "shape": [2]}},
            {"op": {"Unary": "Exp"}, "ty": {"dtype": "F32", "shape": [3]}, "operands": [0]}
        ], "outputs": [{"name": "y", "value": 1}], "updates": []}"#;
        let err = from_json(ill_typed).unwrap_err().to_string();
        assert_eq!(
            err,
            "node 1: exp: declared type f32[3] but the operands give f32[2]"
        );
        let bad_output =
            r#"{"name": "g", "nodes": [], "outputs": [{"name": "y", "value": 4}], "updates": []}"#;
        let err = from_json(bad_output).unwrap_err().to_string();
        assert_eq!(err, "node 4: output \"y\" names a node that does not exist");
        assert!(matches!(from_json("{"), Err(SerialError::Json(_))));
    }
}
