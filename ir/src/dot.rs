//! Graphviz export: `dot -Tsvg` draws the graph with the numbering of `text::print`.

use crate::graph::{Graph, NodeId};
use crate::op::Op;
use crate::text::print_order;
use std::collections::HashMap;
use std::fmt::Write;

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The graph in Graphviz's DOT language. Inputs are green, parameters orange,
/// constants grey; outputs and updates are extra nodes fed by their value.
pub fn to_dot(graph: &Graph) -> String {
    let order = print_order(graph);
    let number: HashMap<NodeId, usize> = order
        .iter()
        .enumerate()
        .map(|(index, &id)| (id, index))
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&graph.name));
    let _ = writeln!(out, "  node [shape=box, fontname=\"monospace\"];");
    for &id in &order {
        let node = graph.node(id);
        let (detail, style) = match &node.op {
            Op::Input { name } => (
                format!(" \\\"{}\\\"", escape(name)),
                ", style=filled, fillcolor=\"#c8e6c9\"",
            ),
            Op::Parameter { name } => (
                format!(" \\\"{}\\\"", escape(name)),
                ", style=filled, fillcolor=\"#ffe0b2\"",
            ),
            Op::Constant { value } => (
                format!(" {value:?}"),
                ", style=filled, fillcolor=\"#eeeeee\"",
            ),
            _ => (String::new(), ""),
        };
        let _ = writeln!(
            out,
            "  n{} [label=\"%{} = {}{}\\n{}\"{}];",
            number[&id],
            number[&id],
            node.op.mnemonic(),
            detail,
            node.ty,
            style
        );
    }
    for &id in &order {
        let operands = graph.operands(id);
        for (position, operand) in operands.iter().enumerate() {
            let label = if operands.len() > 1 {
                format!(" [label=\"{position}\"]")
            } else {
                String::new()
            };
            let _ = writeln!(out, "  n{} -> n{}{};", number[operand], number[&id], label);
        }
    }
    for (index, (name, id)) in graph.outputs().iter().enumerate() {
        let _ = writeln!(
            out,
            "  out{index} [label=\"output \\\"{}\\\"\", shape=ellipse];\n  n{} -> out{index};",
            escape(name),
            number[id]
        );
    }
    for (index, (param, value)) in graph.updates().iter().enumerate() {
        let name = graph.leaf_name(*param).expect("updates target parameters");
        let _ = writeln!(
            out,
            "  upd{index} [label=\"update \\\"{}\\\"\", shape=ellipse];\n  n{} -> upd{index};\n  upd{index} -> n{} [style=dashed];",
            escape(name),
            number[value],
            number[param]
        );
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::parse;

    #[test]
    fn dot_shows_nodes_operands_outputs_and_updates() {
        let graph = parse(
            "graph g {\n  %0 = input \"x\" : f32[2]\n  %1 = param \"w\" : f32[2]\n  %2 = mul %0, %1 : f32[2]\n  output \"y\" = %2\n  update \"w\" = %2\n}",
        )
        .unwrap();
        let expected = r##"digraph "g" {
  node [shape=box, fontname="monospace"];
  n0 [label="%0 = input \"x\"\nf32[2]", style=filled, fillcolor="#c8e6c9"];
  n1 [label="%1 = param \"w\"\nf32[2]", style=filled, fillcolor="#ffe0b2"];
  n2 [label="%2 = mul\nf32[2]"];
  n0 -> n2 [label="0"];
  n1 -> n2 [label="1"];
  out0 [label="output \"y\"", shape=ellipse];
  n2 -> out0;
  upd0 [label="update \"w\"", shape=ellipse];
  n2 -> upd0;
  upd0 -> n1 [style=dashed];
}
"##;
        assert_eq!(to_dot(&graph), expected);
    }
}
