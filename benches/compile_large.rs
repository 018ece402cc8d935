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

/// About `target` nodes: 2 000 inputs and 16 parameters (f32[8,8]) feeding 8 chains
/// of blocks `matmul, transpose, transpose, add input, relu, mul by 1, neg, neg, sub
/// input`, each chain a named output. The transpose pairs, `* 1` and `neg neg` are
/// identities the e-graph removes; the rest is real work.
fn large_graph(target: usize) -> Graph {
    let mut graph = Graph::new("large");
    let ty = TensorType::f32([8, 8]);
    let inputs: Vec<NodeId> = (0..2_000)
        .map(|i| graph.input(&format!("x{i}"), ty.clone()).expect("input"))
        .collect();
    let params: Vec<NodeId> = (0..16)
        .map(|i| {
            graph
                .parameter(&format!("w{i}"), ty.clone())
                .expect("param")
        })
        .collect();
    let one = graph.constant(1.0, ty).expect("constant");
    let chains = 8;
    let mut heads: Vec<NodeId> = inputs[..chains].to_vec();
    let mut block = 0;
    while graph.node_count() < target {
        for head in heads.iter_mut() {
            let x = |k: usize| inputs[(block * 7 + k * 13) % inputs.len()];
            let mut h = graph
                .matmul(*head, params[block % params.len()])
                .expect("matmul");
            h = graph.transpose(h, &[1, 0]).expect("transpose");
            h = graph.transpose(h, &[1, 0]).expect("transpose");
            h = graph.add_(h, x(1)).expect("add");
            h = graph.relu(h).expect("relu");
            h = graph.mul(h, one).expect("mul");
            h = graph.neg(h).expect("neg");
            h = graph.neg(h).expect("neg");
            *head = graph.sub(h, x(2)).expect("sub");
            block += 1;
        }
    }
    for (c, &head) in heads.iter().enumerate() {
        graph.set_output(&format!("y{c}"), head).expect("output");
    }
    graph
}

/// The budget for compiling the 30 000-node graph on the 2-core machine of
/// ../shared/BENCHMARKS.md: 2 s in all, of which the graph passes and lowering (the
/// part that must stay linear in the graph; the rest is Cranelift's per-kernel
/// work) take at most 0.5 s. Measured on 2026-12-02: 1.25 s and 0.19 s when the
/// machine was quiet; under load from other jobs the total doubled.
const COMPILE_BUDGET: Duration = Duration::from_secs(2);
const PASSES_BUDGET: Duration = Duration::from_millis(500);
const REPS: usize = 5;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn bench_compile(target: usize) {
    let graph = large_graph(target);
    println!(
        "large graph: {} nodes ({} inputs, {} parameters, {} outputs)",
        graph.node_count(),
        graph.inputs().len(),
        graph.params().len(),
        graph.outputs().len()
    );
    let mut totals = Vec::new();
    let mut passes = Vec::new();
    for rep in 0..REPS {
        let start = Instant::now();
        let exe = kiln::compile(&graph).expect("compiles");
        totals.push(start.elapsed());
        let report = &exe.report;
        passes.push(report.total.saturating_sub(report.codegen));
        println!("  run {rep}: {report}");
        if rep == 0 {
            for step in &report.steps {
                println!(
                    "    step {:<8} {:>9.2} ms (verify {:.2} ms), {} nodes after",
                    step.name,
                    ms(step.elapsed),
                    ms(step.verify),
                    step.nodes_after
                );
            }
            println!("    step lower    {:>9.2} ms", ms(report.lower));
            println!(
                "    step codegen  {:>9.2} ms ({} kernels)",
                ms(report.codegen),
                exe.kernel_count()
            );
        }
    }
    let (total, passes) = (median(totals), median(passes));
    let verdict = |time: Duration, budget: Duration| if time <= budget { "met" } else { "NOT met" };
    println!(
        "compile of {} nodes: median {:.0} ms over {REPS} runs, budget {:.0} ms: {}; passes and lowering median {:.0} ms, budget {:.0} ms: {}",
        graph.node_count(),
        ms(total),
        ms(COMPILE_BUDGET),
        verdict(total, COMPILE_BUDGET),
        ms(passes),
        ms(PASSES_BUDGET),
        verdict(passes, PASSES_BUDGET)
    );
}

/// `run` with `n` inputs of f32[2], every argument matched by name.
fn bench_run_many_inputs(n: usize) {
    let mut graph = Graph::new("many_inputs");
    let ids: Vec<NodeId> = (0..n)
        .map(|i| {
            graph
                .input(&format!("x{i}"), TensorType::f32([2]))
                .expect("input")
        })
        .collect();
    let sum = graph.add_(ids[0], ids[n - 1]).expect("add");
    graph.set_output("sum", sum).expect("output");
    let start = Instant::now();
    let mut exe = kiln::compile(&graph).expect("compiles");
    let compile = start.elapsed();
    let names: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
    let data: Vec<[f32; 2]> = (0..n).map(|i| [i as f32, 1.0]).collect();
    let args: Vec<(&str, kiln::Arg<'_>)> = names
        .iter()
        .zip(&data)
        .map(|(name, values)| (name.as_str(), kiln::Arg::F32(values)))
        .collect();
    exe.run(&args).expect("runs");
    let times: Vec<Duration> = (0..7)
        .map(|_| {
            let start = Instant::now();
            exe.run(&args).expect("runs");
            start.elapsed()
        })
        .collect();
    let run = median(times);
    println!(
        "run with {n} inputs: median {:.2} ms per call ({:.0} ns per argument); compile {:.0} ms ({})",
        ms(run),
        run.as_secs_f64() * 1e9 / n as f64,
        ms(compile),
        exe.report
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let only = |what: &str| args.iter().any(|arg| arg == what);
    if !only("--bench") && !only("chain") && !only("compile") && !only("run") {
        println!("pass --bench to run (cargo bench --bench compile_large)");
        return;
    }
    let all = !only("chain") && !only("compile") && !only("run");
    if all || only("chain") {
        bench_chain(100_000);
    }
    if all || only("compile") {
        bench_compile(30_000);
    }
    if all || only("run") {
        bench_run_many_inputs(30_000);
    }
}
