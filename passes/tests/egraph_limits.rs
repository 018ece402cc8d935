//! The e-graph pass on graphs larger than its default limits: the limits grow with
//! the input, so a large graph is still simplified; a limit that stops the runner
//! keeps what was found and the report says which limit it was.

use kiln_ir::{text, verify, Graph, NodeId, TensorType};
use kiln_passes::egraph::{self, EgraphOptions};

/// `x -> neg -> neg -> exp -> neg -> neg -> exp ...` with `units` units; each
/// `neg neg` pair is an identity the rules remove.
fn chain_with_double_negations(units: usize) -> Graph {
    let mut graph = Graph::new("chain");
    let mut value = graph.input("x", TensorType::f32([4])).unwrap();
    for _ in 0..units {
        let once = graph.neg(value).unwrap();
        let twice = graph.neg(once).unwrap();
        value = graph.exp(twice).unwrap();
    }
    graph.set_output("y", value).unwrap();
    graph
}

/// `x -> exp -> exp ...`: what the chain above simplifies to.
fn chain_of_exps(units: usize) -> Graph {
    let mut graph = Graph::new("chain");
    let mut value = graph.input("x", TensorType::f32([4])).unwrap();
    for _ in 0..units {
        value = graph.exp(value).unwrap();
    }
    graph.set_output("y", value).unwrap();
    graph
}

#[test]
fn a_graph_above_the_default_node_limit_is_still_simplified() {
    let units = 8_000;
    let before = chain_with_double_negations(units);
    let defaults = EgraphOptions::default();
    assert!(
        before.node_count() > defaults.node_limit,
        "the input ({} nodes) must exceed the default node limit ({})",
        before.node_count(),
        defaults.node_limit
    );
    let (after, report) = egraph::run(&before, &defaults).unwrap();
    verify(&after).unwrap();
    assert_eq!(
        text::print(&after),
        text::print(&chain_of_exps(units)),
        "{report}"
    );
    assert!(report.saturated, "{report}");
    assert!(!report.is_partial());
    assert_eq!(report.nodes_before, 1 + 3 * units);
    assert_eq!(report.nodes_after, 1 + units);
    assert_eq!(report.rules_applied.get("neg-neg"), Some(&units));
    // The limit grew with the input: four times its e-nodes (the graph's nodes plus
    // one name and one type leaf).
    assert_eq!(report.node_limit, 4 * (before.node_count() + 2));
}

/// `y_i = matmul(transpose(a_i), b_i)` for `n` pairs: each fold adds a
/// `matmul.tn` node to the e-graph.
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
fn a_node_limit_keeps_what_was_found_and_says_so() {
    let n = 10;
    let before = transposed_matmuls(n);
    // The limit is the input's own size: the first iteration starts, its folds add
    // nodes, and the runner stops after applying them.
    let options = EgraphOptions {
        node_limit: 0,
        node_growth: 1,
        ..EgraphOptions::default()
    };
    let (after, report) = egraph::run(&before, &options).unwrap();
    verify(&after).unwrap();
    assert!(!report.saturated, "{report}");
    assert!(report.is_partial());
    assert!(
        report.stop_reason.starts_with("node limit "),
        "{}",
        report.stop_reason
    );
    let line = report.to_string();
    assert!(
        line.contains("(partial: kept what was found)"),
        "the one-line report says the result is partial: {line}"
    );
    // What the stopped run found is kept: every transpose folded into a flag.
    assert_eq!(report.rules_applied.get("fold-transpose-lhs-nn"), Some(&n));
    assert_eq!(report.nodes_after, 3 * n);
    assert!(report.cost_after < report.cost_before, "{report}");
    for i in 0..n {
        let product: NodeId = after.output_by_name(&format!("y{i}")).unwrap();
        assert_eq!(after.op(product).mnemonic(), "matmul.tn", "y{i}");
    }
}

#[test]
fn limits_grow_with_the_input() {
    let options = EgraphOptions::default();
    let (small_nodes, small_time) = options.limits_for(100);
    assert_eq!(small_nodes, options.node_limit);
    assert_eq!(small_time, options.time_limit + options.time_per_node * 100);
    let (large_nodes, large_time) = options.limits_for(100_000);
    assert_eq!(large_nodes, 400_000);
    assert_eq!(
        large_time,
        options.time_limit + options.time_per_node * 100_000
    );
    // Sizes beyond any real graph saturate instead of overflowing.
    assert_eq!(
        options.limits_for(usize::MAX),
        (usize::MAX, std::time::Duration::MAX)
    );
}
