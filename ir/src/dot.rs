//! Graphviz export of a graph, for looking at it: `dot -Tsvg graph.dot > graph.svg`.
//!
//! Each IR node is a DOT node labelled with its text-IR number, mnemonic, attributes
//! and type (`%3 reduce_sum axes=[1]` over `f32[32,1]`); the numbers are those of
//! [`crate::text::print`], so the picture and the text dump can be read side by side.
//! Kinds of node are told apart by shape and colour:
//!
//! | node      | shape           | fill        |
//! | --------- | --------------- | ----------- |
//! | input     | `invhouse`      | lightblue   |
//! | parameter | `box3d`         | khaki       |
//! | constant  | rounded `box`   | lightgrey   |
//! | other op  | `ellipse`       | none        |
//! | output    | `doubleoctagon` | palegreen   |
//! | update    | `cds`           | lightsalmon |
//!
//! Operand edges carry the operand position when the op takes more than one operand.
//! An output is an extra node fed by its value; an update is an extra node fed by the
//! new value, with a dashed edge to the parameter it overwrites (that edge does not
//! constrain the layout, since it points backwards in time).

use crate::graph::Graph;
use crate::op::Op;
use crate::text::{float_literal, list, numbering, quote};
use std::fmt::Write;

/// Escapes text for a DOT double-quoted string. Backslashes are escaped too, since DOT
/// gives `\N`, `\G`, `\l` and friends a meaning in labels.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => {}
            c => escaped.push(c),
        }
    }
    escaped
}

/// The first label line after `%n mnemonic`: the leaf's name or value, or the op's
/// attributes as the text IR writes them.
fn details(op: &Op) -> String {
    match op {
        Op::Input { name } | Op::Parameter { name } => format!(" {}", quote(name)),
        Op::Constant { value } => format!(" {}", float_literal(*value)),
        Op::Reduce { axes, .. } => format!(" axes={}", list(axes)),
        Op::Transpose { perm } => format!(" perm={}", list(perm)),
        Op::OneHot { depth } => format!(" depth={depth}"),
        Op::Random { stream, .. } => format!(" stream={stream}"),
        Op::Iota { axis, .. } => format!(" axis={axis}"),
        Op::Conv(spec) | Op::ConvInputGrad { spec, .. } | Op::ConvFilterGrad { spec, .. } => {
            crate::text::conv_attributes(spec)
        }
        Op::Pool { spec, .. } | Op::PoolGrad { spec, .. } => crate::text::pool_attributes(spec),
        Op::Gather { axis, batch_dims } => format!(" axis={axis} batch_dims={batch_dims}"),
        Op::ScatterAdd {
            axis,
            batch_dims,
            extent,
        } => format!(" axis={axis} batch_dims={batch_dims} extent={extent}"),
        _ => String::new(),
    }
}

/// The DOT attributes that set a node's kind apart.
fn style(op: &Op) -> &'static str {
    match op {
        Op::Input { .. } => "shape=invhouse, style=filled, fillcolor=lightblue",
        Op::Parameter { .. } => "shape=box3d, style=filled, fillcolor=khaki",
        Op::Constant { .. } => "shape=box, style=\"rounded,filled\", fillcolor=lightgrey",
        _ => "shape=ellipse",
    }
}

/// The graph as a Graphviz `digraph`. The same graph always gives the same text.
pub fn to_dot(graph: &Graph) -> String {
    let (order, number) = numbering(graph);
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&graph.name));
    out.push_str("  node [fontname=\"monospace\"];\n");
    for &id in &order {
        let node = graph.node(id);
        let label = format!(
            "%{} {}{}\n{}",
            number[&id],
            node.op.mnemonic(),
            details(&node.op),
            node.ty
        );
        let _ = writeln!(
            out,
            "  n{} [label=\"{}\", {}];",
            number[&id],
            escape(&label),
            style(&node.op)
        );
    }
    for &id in &order {
        let operands = graph.operands(id);
        let show_position = graph.op(id).arity() > 1;
        for (position, operand) in operands.iter().enumerate() {
            let _ = write!(out, "  n{} -> n{}", number[operand], number[&id]);
            if show_position {
                let _ = write!(out, " [label=\"{position}\"]");
            }
            out.push_str(";\n");
        }
    }
    for (index, (name, value)) in graph.outputs().iter().enumerate() {
        let label = format!("output {}", quote(name));
        let _ = writeln!(
            out,
            "  output{index} [label=\"{}\", shape=doubleoctagon, style=filled, fillcolor=palegreen];",
            escape(&label)
        );
        let _ = writeln!(out, "  n{} -> output{index};", number[value]);
    }
    for (index, (param, value)) in graph.updates().iter().enumerate() {
        let name = graph.leaf_name(*param).expect("updates target parameters");
        let label = format!("update {}", quote(name));
        let _ = writeln!(
            out,
            "  update{index} [label=\"{}\", shape=cds, style=filled, fillcolor=lightsalmon];",
            escape(&label)
        );
        let _ = writeln!(out, "  n{} -> update{index};", number[value]);
        let _ = writeln!(
            out,
            "  update{index} -> n{} [style=dashed, constraint=false];",
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
    fn small_graph_gives_the_expected_dot_text() {
        let graph = parse(
            "graph \"my \\\"net\\\"\" {
  %0 = input \"x\" : f32[2]
  %1 = param \"w\\\\b\" : f32[2]
  %2 = const -inf : f32[2]
  %3 = max %0, %2 : f32[2]
  output \"y\" = %3
  update \"w\\\\b\" = %3
}",
        )
        .unwrap();
        let expected = r#"digraph "my \"net\"" {
  node [fontname="monospace"];
  n0 [label="%0 input \"x\"\nf32[2]", shape=invhouse, style=filled, fillcolor=lightblue];
  n1 [label="%1 param \"w\\\\b\"\nf32[2]", shape=box3d, style=filled, fillcolor=khaki];
  n2 [label="%2 const -inf\nf32[2]", shape=box, style="rounded,filled", fillcolor=lightgrey];
  n3 [label="%3 max\nf32[2]", shape=ellipse];
  n0 -> n3 [label="0"];
  n2 -> n3 [label="1"];
  output0 [label="output \"y\"", shape=doubleoctagon, style=filled, fillcolor=palegreen];
  n3 -> output0;
  update0 [label="update \"w\\\\b\"", shape=cds, style=filled, fillcolor=lightsalmon];
  n3 -> update0;
  update0 -> n1 [style=dashed, constraint=false];
}
"#;
        assert_eq!(to_dot(&graph), expected);
    }

    #[test]
    fn single_operand_edges_are_unlabelled_and_attributes_are_shown() {
        let graph = parse(
            "graph g {
  %0 = input \"x\" : f32[2,3]
  %1 = reduce_sum %0 axes=[1] : f32[2,1]
  %2 = transpose %1 perm=[1,0] : f32[1,2]
  %3 = mul %2, %2 : f32[1,2]
  output \"a\" = %3
  output \"b\" = %0
}",
        )
        .unwrap();
        let dot = to_dot(&graph);
        assert!(dot.contains("  n0 -> n1;\n"), "{dot}");
        assert!(dot.contains("  n1 -> n2;\n"), "{dot}");
        assert!(dot.contains("%1 reduce_sum axes=[1]\\nf32[2,1]"), "{dot}");
        assert!(dot.contains("%2 transpose perm=[1,0]\\nf32[1,2]"), "{dot}");
        // Using one value twice gives two edges, told apart by position.
        assert!(
            dot.contains("  n2 -> n3 [label=\"0\"];\n  n2 -> n3 [label=\"1\"];\n"),
            "{dot}"
        );
        assert!(dot.contains("  n3 -> output0;\n  output1 ["), "{dot}");
        assert!(dot.contains("  n0 -> output1;\n"), "{dot}");
        assert_eq!(dot, to_dot(&graph.clone()));
    }
}
