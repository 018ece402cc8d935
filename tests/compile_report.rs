//! The compile report names every step with its time, and a step stopped by a limit
//! (the e-graph's node limit here) says so in the report's one line.

use kiln::compile::compile_with;
use kiln::ir::{Graph, TensorType};
use kiln::passes::egraph::EgraphOptions;
use kiln::passes::pipeline::{self, PipelineOptions};
use kiln::Arg;

/// `y_i = matmul(transpose(a_i), b_i)`: folding each transpose adds an e-node.
fn transposed_matmuls(n: usize) -> Graph {
    let mut graph = Graph::new("folds");
    for i in 0..n {
        let a = graph
            .input(&format!("a{i}"), TensorType::f32([2, 3]))
            .unwrap();
        let b = graph
            .input(&format!("b{i}"), TensorType::f32([2, 4]))
            .unwrap();
        let transposed = graph.transpose(a, &[1, 0]).unwrap();
        let product = graph.matmul(transposed, b).unwrap();
        graph.set_output(&format!("y{i}"), product).unwrap();
    }
    graph
}

#[test]
fn a_node_limit_shows_in_the_compile_report_and_the_result_is_kept() {
    let graph = transposed_matmuls(4);
    let options = PipelineOptions {
        egraph: EgraphOptions {
            node_limit: 0,
            node_growth: 1,
            ..EgraphOptions::default()
        },
        ..PipelineOptions::default()
    };
    let mut exe = compile_with(&graph, pipeline::INFERENCE, &options).unwrap();
    let report = exe.report.to_string();
    assert!(
        report.contains("(egraph: node limit ")
            && report.contains("(partial: kept what was found)"),
        "{report}"
    );
    let names: Vec<&str> = exe.report.steps.iter().map(|step| step.name).collect();
    assert_eq!(names, ["expand", "egraph", "dce"]);
    for part in ["egraph ", "dce ", "verify ", "lower ", "codegen ", "total "] {
        assert!(report.contains(part), "{part} missing from: {report}");
    }
    // Eight inputs, four results and each matmul's packing workspace (its size
    // depends on the host's microkernel): the plan reuses what earlier kernels are
    // done with, and the report shows both figures.
    let (arena, unplanned) = (exe.report.arena_bytes, exe.report.arena_unplanned_bytes);
    assert!(0 < arena && arena < unplanned, "{report}");
    assert!(
        report.ends_with(&format!(
            "; arena {arena} bytes ({unplanned} without reuse)"
        )),
        "{report}"
    );
    // The folds the stopped run found are kept: one matmul kernel per output, no
    // transpose kernels.
    assert_eq!(exe.kernel_count(), 4, "{:?}", exe.kernel_names());
    assert!(exe
        .kernel_names()
        .iter()
        .all(|name| name.starts_with("matmul")));

    // And the result is right: y = a^T b with a = [[1,2,3],[4,5,6]], b = [[1,0,0,0],[0,1,0,0]].
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
    let names: Vec<(String, String)> = (0..4).map(|i| (format!("a{i}"), format!("b{i}"))).collect();
    let args: Vec<(&str, Arg<'_>)> = names
        .iter()
        .flat_map(|(a_name, b_name)| {
            [
                (a_name.as_str(), Arg::F32(&a)),
                (b_name.as_str(), Arg::F32(&b)),
            ]
        })
        .collect();
    exe.run(&args).unwrap();
    let expected = [1.0, 4.0, 0.0, 0.0, 2.0, 5.0, 0.0, 0.0, 3.0, 6.0, 0.0, 0.0];
    for i in 0..4 {
        assert_eq!(exe.output_f32(&format!("y{i}")).unwrap(), expected, "y{i}");
    }
}
