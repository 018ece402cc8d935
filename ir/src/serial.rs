//! The JSON form of a graph (serde), for tools and for storing a graph beside its
//! weights.
//!
//! ```json
//! {
//!   "name": "g",
//!   "nodes": [
//!     { "op": { "Input": { "name": "x" } }, "ty": { "dtype": "F32", "shape": [2] }, "operands": [] },
//!     { "op": { "Constant": { "value": "nan" } }, "ty": { "dtype": "F32", "shape": [2] }, "operands": [] },
//!     { "op": { "Binary": "Add" }, "ty": { "dtype": "F32", "shape": [2] }, "operands": [0, 1] }
//!   ],
//!   "outputs": [ { "name": "y", "value": 2 } ],
//!   "updates": []
//! }
//! ```
//!
//! Nodes are listed in [`print_order`] (so `%n` of the text form is node `n` here) and
//! name their operands by position in that list. Ops use serde's derived form of
//! [`Op`], except that a constant's value is a string in the text IR's float syntax:
//! JSON numbers have no NaN or infinity. Reading rebuilds the graph through the
//! checked builder, so a malformed document is an error naming the node or binding at
//! fault, never a panic.

use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::Op;
use crate::text::{float_literal, numbering};
use crate::types::TensorType;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// A JSON document that is not a valid graph. Always the document's fault.
#[derive(Debug, Error)]
pub enum SerialError {
    /// The text is not JSON, or lacks a field of the document (or has an unknown one).
    #[error("invalid graph document: {0}")]
    Json(#[from] serde_json::Error),
    /// Node `index` (its position in `nodes`) cannot be built.
    #[error("node {index}: {message}")]
    Node { index: usize, message: String },
    /// An output binding names no node or repeats an output name.
    #[error("output {name:?}: {message}")]
    Output { name: String, message: String },
    /// An update names no parameter, names no node, or has a value of the wrong type.
    #[error("update of {param:?}: {message}")]
    Update { param: String, message: String },
    /// A frozen name that names no parameter.
    #[error("frozen {0:?}: no parameter has that name")]
    Frozen(String),
}

/// The whole document as read. Unknown fields are rejected so that a misspelt key
/// is an error instead of a silently dropped part of the graph.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    name: String,
    nodes: Vec<NodeDoc>,
    #[serde(default)]
    outputs: Vec<OutputDoc>,
    #[serde(default)]
    updates: Vec<UpdateDoc>,
    /// The names of the frozen parameters.
    #[serde(default)]
    frozen: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeDoc {
    /// Kept as a JSON value so that an unknown or malformed op is reported with the
    /// node's index, and so that constants can carry their value as text.
    op: Value,
    ty: TensorType,
    #[serde(default)]
    operands: Vec<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputDoc {
    name: String,
    value: usize,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateDoc {
    param: String,
    value: usize,
}

/// The document as written: borrows the graph's ops, and serializes them directly
/// (not through `serde_json::Value`) so that fields keep their declaration order
/// whatever features serde_json is built with.
#[derive(Serialize)]
struct DocumentOut<'a> {
    name: &'a str,
    nodes: Vec<NodeOut<'a>>,
    outputs: Vec<OutputDoc>,
    updates: Vec<UpdateDoc>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    frozen: Vec<&'a str>,
}

#[derive(Serialize)]
struct NodeOut<'a> {
    op: OpOut<'a>,
    ty: &'a TensorType,
    operands: Vec<usize>,
}

/// An op in the document: serde's derived form of `Op`, except for constants.
enum OpOut<'a> {
    Constant(ConstantOut),
    Other(&'a Op),
}

/// Serializes as `{"Constant": {"value": "<float literal>"}}`, the shape of
/// `Op::Constant` with the value as text, because JSON numbers have no NaN or infinity.
#[derive(Serialize)]
enum ConstantOut {
    Constant { value: String },
}

impl Serialize for OpOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            OpOut::Constant(constant) => constant.serialize(serializer),
            OpOut::Other(op) => op.serialize(serializer),
        }
    }
}

impl<'a> OpOut<'a> {
    fn new(op: &'a Op) -> OpOut<'a> {
        match op {
            Op::Constant { value } => OpOut::Constant(ConstantOut::Constant {
                value: float_literal(*value),
            }),
            op => OpOut::Other(op),
        }
    }
}

/// The op of a node document. A constant's value may be a string (as written by
/// `to_json`) or, for hand-written documents, a plain JSON number.
fn op_from_json(value: Value) -> Result<Op, String> {
    if let Some(constant) = value.get("Constant") {
        let fields = constant
            .as_object()
            .filter(|fields| fields.len() == 1)
            .and_then(|fields| fields.get("value"))
            .ok_or_else(|| {
                format!("constant {constant} must be an object with the single field \"value\"")
            })?;
        let parsed = match fields {
            Value::String(text) => parse_float(text),
            Value::Number(number) => number.as_f64(),
            _ => None,
        };
        return parsed.map(|value| Op::Constant { value }).ok_or_else(|| {
            format!("constant value {fields} is not a number: expected a number or a string such as \"1.5\", \"-inf\" or \"nan\"")
        });
    }
    serde_json::from_value(value).map_err(|err| format!("invalid op: {err}"))
}

/// An f64 field of an op written as a float literal (`"1.5"`, `"-inf"`, `"nan"`) and
/// read from such a string or a plain JSON number: `#[serde(with = ...)]`.
pub(crate) mod float_text {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&crate::text::float_literal(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Number(number) => number
                .as_f64()
                .ok_or_else(|| de::Error::custom("a number out of f64's range")),
            serde_json::Value::String(text) => super::parse_float(&text).ok_or_else(|| {
                de::Error::custom(format!(
                    "{text:?} is not a float literal such as \"1.5\", \"-inf\" or \"nan\""
                ))
            }),
            other => Err(de::Error::custom(format!(
                "{other} is not a number or a float literal"
            ))),
        }
    }
}

/// The inverse of `float_literal`: decimal numbers, `inf`, `-inf` and `nan`.
fn parse_float(text: &str) -> Option<f64> {
    match text {
        "nan" => Some(f64::NAN),
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        // Rust's parser would also take "infinity" or "NaN"; the document format does
        // not, so that there is one spelling of each value.
        _ if text
            .chars()
            .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            None
        }
        _ => text.parse().ok(),
    }
}

/// The graph as pretty-printed JSON. The same graph always gives the same text.
pub fn to_json(graph: &Graph) -> String {
    let (order, position) = numbering(graph);
    let nodes = order
        .iter()
        .map(|&id| {
            let node = graph.node(id);
            NodeOut {
                op: OpOut::new(&node.op),
                ty: &node.ty,
                operands: graph
                    .operands(id)
                    .iter()
                    .map(|operand| position[operand])
                    .collect(),
            }
        })
        .collect();
    let outputs = graph
        .outputs()
        .iter()
        .map(|(name, id)| OutputDoc {
            name: name.clone(),
            value: position[id],
        })
        .collect();
    let updates = graph
        .updates()
        .iter()
        .map(|(param, value)| UpdateDoc {
            param: graph
                .leaf_name(*param)
                .expect("updates target parameters")
                .to_string(),
            value: position[value],
        })
        .collect();
    let frozen = graph
        .params()
        .iter()
        .filter(|&&param| graph.is_frozen(param))
        .map(|&param| graph.leaf_name(param).expect("parameters are named"))
        .collect();
    let document = DocumentOut {
        name: &graph.name,
        nodes,
        outputs,
        updates,
        frozen,
    };
    let mut text = serde_json::to_string_pretty(&document)
        .expect("constants are strings, so the document has no floats");
    text.push('\n');
    text
}

/// Reads a graph from its JSON form. Nodes must come after their operands; every node
/// is type-checked as it is added.
pub fn from_json(src: &str) -> Result<Graph, SerialError> {
    let document: Document = serde_json::from_str(src)?;
    let n_nodes = document.nodes.len();
    let mut graph = Graph::new(document.name);
    let mut ids: Vec<NodeId> = Vec::with_capacity(n_nodes);
    for (index, node) in document.nodes.into_iter().enumerate() {
        let bad = |message: String| SerialError::Node { index, message };
        let op = op_from_json(node.op).map_err(bad)?;
        let mut operands = Vec::with_capacity(node.operands.len());
        for (position, &operand) in node.operands.iter().enumerate() {
            let id = ids.get(operand).copied().ok_or_else(|| {
                bad(if operand == index {
                    format!("operand {position} is the node itself")
                } else if operand < n_nodes {
                    format!("operand {position} is node {operand}, which comes later: operands must be listed before their users")
                } else {
                    format!("operand {position} is node {operand}, but the document has {n_nodes} nodes")
                })
            })?;
            operands.push(id);
        }
        // The builder types leaves from the declared type alone and would drop operands.
        if op.is_leaf() && !operands.is_empty() {
            return Err(bad(format!(
                "{}: expected 0 operands, found {}",
                op.mnemonic(),
                operands.len()
            )));
        }
        let id = graph
            .add_typed(op, &operands, node.ty)
            .map_err(|err: IrError| bad(err.to_string()))?;
        ids.push(id);
    }
    for output in document.outputs {
        let bad = |message: String| SerialError::Output {
            name: output.name.clone(),
            message,
        };
        let value = ids.get(output.value).copied().ok_or_else(|| {
            bad(format!(
                "value is node {}, but the document has {n_nodes} nodes",
                output.value
            ))
        })?;
        graph
            .set_output(&output.name, value)
            .map_err(|err| bad(err.to_string()))?;
    }
    for update in document.updates {
        let bad = |message: String| SerialError::Update {
            param: update.param.clone(),
            message,
        };
        let param = graph
            .param_by_name(&update.param)
            .ok_or_else(|| bad("no parameter has that name".to_string()))?;
        let value = ids.get(update.value).copied().ok_or_else(|| {
            bad(format!(
                "value is node {}, but the document has {n_nodes} nodes",
                update.value
            ))
        })?;
        graph
            .set_update(param, value)
            .map_err(|err| bad(err.to_string()))?;
    }
    for name in document.frozen {
        let param = graph
            .param_by_name(&name)
            .ok_or_else(|| SerialError::Frozen(name.clone()))?;
        graph.freeze(param).map_err(|err| SerialError::Update {
            param: name,
            message: err.to_string(),
        })?;
    }
    Ok(graph)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::{parse, print};

    const SMALL: &str = "graph g {
  %0 = input \"x\" : f32[2]
  %1 = param \"w\" : f32[2]
  %2 = const nan : f32[2]
  %3 = add %0, %2 : f32[2]
  %4 = reduce_sum %3 axes=[0] : f32[1]
  output \"y\" = %4
  update \"w\" = %3
}
";

    #[test]
    fn json_of_a_small_graph_is_exact() {
        let graph = parse(SMALL).unwrap();
        let expected = r#"{
  "name": "g",
  "nodes": [
    {
      "op": {
        "Input": {
          "name": "x"
        }
      },
      "ty": {
        "dtype": "F32",
        "shape": [
          2
        ]
      },
      "operands": []
    },
    {
      "op": {
        "Parameter": {
          "name": "w"
        }
      },
      "ty": {
        "dtype": "F32",
        "shape": [
          2
        ]
      },
      "operands": []
    },
    {
      "op": {
        "Constant": {
          "value": "nan"
        }
      },
      "ty": {
        "dtype": "F32",
        "shape": [
          2
        ]
      },
      "operands": []
    },
    {
      "op": {
        "Binary": "Add"
      },
      "ty": {
        "dtype": "F32",
        "shape": [
          2
        ]
      },
      "operands": [
        0,
        2
      ]
    },
    {
      "op": {
        "Reduce": {
          "op": "Sum",
          "axes": [
            0
          ]
        }
      },
      "ty": {
        "dtype": "F32",
        "shape": [
          1
        ]
      },
      "operands": [
        3
      ]
    }
  ],
  "outputs": [
    {
      "name": "y",
      "value": 4
    }
  ],
  "updates": [
    {
      "param": "w",
      "value": 3
    }
  ]
}
"#;
        assert_eq!(to_json(&graph), expected);
        assert_eq!(print(&from_json(expected).unwrap()), SMALL);
    }

    #[test]
    fn special_constants_round_trip_bit_for_bit() {
        let values = [
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            5e-324,
            f64::MAX,
            -1e-300,
            0.1,
            f64::from(f32::MAX),
        ];
        let read_back = |value: f64| {
            let mut graph = Graph::new("c");
            let id = graph.constant(value, TensorType::f32([1])).unwrap();
            graph.set_output("c", id).unwrap();
            let back = from_json(&to_json(&graph)).unwrap();
            match back.op(back.output_by_name("c").unwrap()) {
                Op::Constant { value } => *value,
                other => panic!("expected a constant, found {other:?}"),
            }
        };
        for value in values {
            assert_eq!(read_back(value).to_bits(), value.to_bits(), "{value}");
        }
        assert!(read_back(f64::NAN).is_nan());
    }

    #[test]
    fn hand_written_numeric_constants_are_accepted() {
        let src = r#"{"name": "c", "nodes": [
            {"op": {"Constant": {"value": -2.5}}, "ty": {"dtype": "F32", "shape": []}},
            {"op": {"Constant": {"value": 3}}, "ty": {"dtype": "I32", "shape": [2]}}
        ], "outputs": [{"name": "a", "value": 0}, {"name": "b", "value": 1}]}"#;
        let graph = from_json(src).unwrap();
        assert_eq!(
            print(&graph),
            "graph c {\n  %0 = const -2.5 : f32[]\n  %1 = const 3.0 : i32[2]\n  output \"a\" = %0\n  output \"b\" = %1\n}\n"
        );
    }

    #[test]
    fn float_text_has_one_spelling_per_value() {
        assert_eq!(parse_float("-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_float("1e-7"), Some(1e-7));
        assert_eq!(parse_float("-2.5E3"), Some(-2500.0));
        assert!(parse_float("nan").is_some_and(f64::is_nan));
        assert_eq!(parse_float("infinity"), None);
        assert_eq!(parse_float("NaN"), None);
        assert_eq!(parse_float("1.5x"), None);
        assert_eq!(parse_float(""), None);
    }

    /// A document whose first node is the f32[2] input "x", followed by `nodes`, with
    /// `tail` (outputs, updates) after the node list.
    fn document(nodes: &str, tail: &str) -> String {
        format!(
            r#"{{"name": "g", "nodes": [
                {{"op": {{"Input": {{"name": "x"}}}}, "ty": {{"dtype": "F32", "shape": [2]}}}}
                {nodes}
            ]{tail}}}"#
        )
    }

    #[test]
    fn malformed_documents_name_the_node_or_binding_at_fault() {
        let f32_2 = r#""ty": {"dtype": "F32", "shape": [2]}"#;
        let cases = [
            (
                document(&format!(r#", {{"op": {{"Unary": "Neg"}}, {f32_2}, "operands": [5]}}"#), ""),
                "node 1: operand 0 is node 5, but the document has 2 nodes".to_string(),
            ),
            (
                document(
                    &format!(r#", {{"op": {{"Unary": "Neg"}}, {f32_2}, "operands": [2]}}, {{"op": {{"Unary": "Exp"}}, {f32_2}, "operands": [0]}}"#),
                    "",
                ),
                "node 1: operand 0 is node 2, which comes later: operands must be listed before their users".to_string(),
            ),
            (
                document(&format!(r#", {{"op": {{"Unary": "Neg"}}, {f32_2}, "operands": [1]}}"#), ""),
                "node 1: operand 0 is the node itself".to_string(),
            ),
            (
                document(
                    r#", {"op": {"Unary": "Neg"}, "ty": {"dtype": "F32", "shape": [3]}, "operands": [0]}"#,
                    "",
                ),
                "node 1: neg: declared type f32[3] but the operands give f32[2]".to_string(),
            ),
            (
                document(&format!(r#", {{"op": {{"Binary": "Add"}}, {f32_2}, "operands": [0]}}"#), ""),
                "node 1: add: expected 2 operands, found 1".to_string(),
            ),
            (
                document(&format!(r#", {{"op": {{"Constant": {{"value": "1.0"}}}}, {f32_2}, "operands": [0]}}"#), ""),
                "node 1: const: expected 0 operands, found 1".to_string(),
            ),
            (
                document(&format!(r#", {{"op": {{"Frob": null}}, {f32_2}, "operands": [0]}}"#), ""),
                "node 1: invalid op: unknown variant `Frob`".to_string(),
            ),
            (
                document(&format!(r#", {{"op": {{"Constant": {{"value": "lots"}}}}, {f32_2}}}"#), ""),
                "node 1: constant value \"lots\" is not a number".to_string(),
            ),
            (
                document(&format!(r#", {{"op": {{"Constant": {{"value": 1, "extra": 2}}}}, {f32_2}}}"#), ""),
                "node 1: constant {\"extra\":2,\"value\":1} must be an object with the single field \"value\"".to_string(),
            ),
            (
                document(r#", {"op": {"Constant": {"value": "1.5"}}, "ty": {"dtype": "I32", "shape": [2]}}"#, ""),
                "node 1: const: 1.5 is not a valid i32 value".to_string(),
            ),
            (
                document(&format!(r#", {{"op": {{"Input": {{"name": "x"}}}}, {f32_2}}}"#), ""),
                "node 1: input name \"x\" is used twice".to_string(),
            ),
            (
                document(
                    r#", {"op": {"Input": {"name": "big"}}, "ty": {"dtype": "F32", "shape": [4294967296, 4294967296]}}"#,
                    "",
                ),
                "node 1: input: shape [4294967296, 4294967296] has more than 2147483647 elements, the most a tensor may have".to_string(),
            ),
            (
                document(
                    r#", {"op": {"Parameter": {"name": "w"}}, "ty": {"dtype": "F32", "shape": [100000, 100000]}}"#,
                    "",
                ),
                "node 1: param: shape [100000, 100000] has more than 2147483647 elements, the most a tensor may have".to_string(),
            ),
            (
                document(
                    r#", {"op": {"Reshape": {"shape": [9223372036854775809, 2]}}, "ty": {"dtype": "F32", "shape": [9223372036854775809, 2]}, "operands": [0]}"#,
                    "",
                ),
                "node 1: reshape: shape [9223372036854775809, 2] has more than 2147483647 elements, the most a tensor may have".to_string(),
            ),
            (
                document("", r#", "outputs": [{"name": "y", "value": 1}]"#),
                "output \"y\": value is node 1, but the document has 1 nodes".to_string(),
            ),
            (
                document("", r#", "outputs": [{"name": "y", "value": 0}, {"name": "y", "value": 0}]"#),
                "output \"y\": output name \"y\" is used twice".to_string(),
            ),
            (
                document("", r#", "updates": [{"param": "w", "value": 0}]"#),
                "update of \"w\": no parameter has that name".to_string(),
            ),
            (
                document(
                    r#", {"op": {"Parameter": {"name": "w"}}, "ty": {"dtype": "F32", "shape": [3]}}"#,
                    r#", "updates": [{"param": "w", "value": 0}]"#,
                ),
                "update of \"w\": update of w: value type f32[2] differs from parameter type f32[3]".to_string(),
            ),
            (
                document("", r#", "outputs": [{"name": "y", "value": -1}]"#),
                "invalid graph document: invalid value: integer `-1`".to_string(),
            ),
            (
                document("", r#", "output": []"#),
                "invalid graph document: unknown field `output`".to_string(),
            ),
            (
                "{\"name\": \"g\"".to_string(),
                "invalid graph document: EOF while parsing".to_string(),
            ),
            (
                "\"just text\"".to_string(),
                "invalid graph document: invalid type: string \"just text\", expected struct Document".to_string(),
            ),
        ];
        for (src, expected) in cases {
            let message = from_json(&src).unwrap_err().to_string();
            assert!(
                message.starts_with(&expected),
                "{src}\ngave: {message}\nexpected: {expected}"
            );
        }
    }
}
