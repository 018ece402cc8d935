//! A graph with 10 000 inputs goes through every stage that handles names: built,
//! printed and parsed, written to JSON and read back, interpreted, compiled and run
//! with its arguments matched by name. Each stage is linear (or n log n) in the
//! inputs; with the earlier scans per name this size took minutes. 30 000 inputs
//! take about 8 s in a debug build, so the test uses 10 000 and
//! `benches/compile_large.rs` times 30 000 in release.

use kiln::ir::serial::{from_json, to_json};
use kiln::ir::{evaluate, text, Feeds, Graph, Precision, Tensor, TensorType};
use kiln::Arg;

const INPUTS: usize = 10_000;

fn name(i: usize) -> String {
    format!("x{i}")
}

/// Inputs `x0..x9999 : f32[2]`; every input is also output `y<i>`; `sum` adds the
/// first, middle and last input, and `scaled` is the last times one.
fn many_inputs() -> Graph {
    let mut graph = Graph::new("many_inputs");
    let ids: Vec<_> = (0..INPUTS)
        .map(|i| graph.input(&name(i), TensorType::f32([2])).unwrap())
        .collect();
    for (i, &id) in ids.iter().enumerate() {
        graph.set_output(&format!("y{i}"), id).unwrap();
    }
    let first_two = graph.add_(ids[0], ids[INPUTS / 2]).unwrap();
    let sum = graph.add_(first_two, ids[INPUTS - 1]).unwrap();
    graph.set_output("sum", sum).unwrap();
    let one = graph.constant(1.0, TensorType::f32([2])).unwrap();
    let scaled = graph.mul(ids[INPUTS - 1], one).unwrap();
    graph.set_output("scaled", scaled).unwrap();
    graph
}

/// Input `i` holds `[i, -i / 2]`.
fn value(i: usize) -> [f32; 2] {
    [i as f32, -(i as f32) / 2.0]
}

#[test]
fn ten_thousand_inputs_round_trip_and_run() {
    let graph = many_inputs();
    assert_eq!(graph.inputs().len(), INPUTS);
    assert_eq!(
        graph.input_by_name(&name(INPUTS - 1)),
        Some(graph.inputs()[INPUTS - 1])
    );

    let printed = text::print(&graph);
    let parsed = text::parse(&printed).unwrap();
    assert_eq!(text::print(&parsed), printed);
    let json = to_json(&graph);
    let read = from_json(&json).unwrap();
    assert_eq!(text::print(&read), printed);

    let values: Vec<[f32; 2]> = (0..INPUTS).map(value).collect();
    let feeds: Feeds = (0..INPUTS)
        .map(|i| {
            let data = values[i].iter().map(|&v| f64::from(v)).collect();
            (name(i), Tensor::new(TensorType::f32([2]), data).unwrap())
        })
        .collect();
    let evaluation = evaluate(&parsed, &feeds, Precision::F32).unwrap();
    assert_eq!(evaluation.outputs["y1235"].data(), [1235.0, -617.5]);

    let mut exe = kiln::compile(&graph).unwrap();
    let names: Vec<String> = (0..INPUTS).map(name).collect();
    // Arguments in reverse order: matching is by name, not position.
    let args: Vec<(&str, Arg<'_>)> = (0..INPUTS)
        .rev()
        .map(|i| (names[i].as_str(), Arg::F32(&values[i])))
        .collect();
    exe.run(&args).unwrap();
    for i in 0..INPUTS {
        assert_eq!(exe.output_f32(&format!("y{i}")).unwrap(), value(i), "y{i}");
    }
    let (first, middle, last) = (value(0), value(INPUTS / 2), value(INPUTS - 1));
    let sum = [
        first[0] + middle[0] + last[0],
        first[1] + middle[1] + last[1],
    ];
    assert_eq!(exe.output_f32("sum").unwrap(), sum);
    assert_eq!(exe.output_f32("scaled").unwrap(), last);
    assert_eq!(evaluation.outputs["sum"].to_f32(), sum);

    // The e-graph removed the `* 1`; the report shows every step and its note.
    let report = exe.report.to_string();
    assert!(report.contains("egraph: saturated"), "{report}");
    for step in ["egraph ", "dce ", "verify ", "lower ", "codegen ", "total "] {
        assert!(report.contains(step), "{step} missing from: {report}");
    }

    let (outputs, updated) = exe.run_feeds(&feeds).unwrap();
    assert!(updated.is_empty());
    assert_eq!(outputs.len(), INPUTS + 2);
    assert_eq!(outputs["y9999"].to_f32(), last);
    assert_eq!(outputs["sum"].to_f32(), sum);
}
