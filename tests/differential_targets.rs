//! The differential sweep of `tests/differential.rs`, scheduled for the portable
//! target: random well-typed graphs from `kiln_ir::random` compiled with
//! `PipelineOptions::target` set to the host without AVX2 (the f32x4 matmul
//! microkernel) on two threads, as inference and, one in five, as a train step
//! (autodiff, SGD, e-graph, dce, JIT). Every output and update must equal the
//! interpreter's `Precision::F32` result bit for bit, any NaN equal to any NaN.
//!
//! Two sets: small graphs as in the main sweep (odd extents up to 7, three in four
//! with awkward constants, feeds and empty tensors), which cover the f32x4 tiles'
//! and the vector loops' remainders; and larger ones (extents up to 300 at rank 2,
//! 64 at rank 3), some of whose matmuls and elementwise loops are large enough to
//! run in parallel blocks.
//! The test counts how many graphs took a matmul and a parallel loop (an executable
//! has a pool only when its program has a parallel loop) and fails if a set stops
//! reaching those paths.

use kiln::backend::cpu::target::host_target;
use kiln::compile::compile_with;
use kiln::passes::pipeline::{self, PipelineOptions};
use kiln_ir::random::{random_awkward_feeds, random_feeds, random_graph, RandomGraphOptions};
use kiln_ir::{evaluate, text, Feeds, Graph, Precision, Rng, Target};
use std::time::Instant;

#[path = "support/compare.rs"]
mod compare;
#[path = "support/sweep.rs"]
mod sweep;
use compare::{compare, or_panic};

/// Small graphs in the sweep.
const SMALL_GRAPHS: u64 = 1000;
/// Larger graphs in the sweep.
const LARGE_GRAPHS: u64 = 320;
/// Every this many seeds a graph is also compiled as a train step.
const TRAIN_EVERY: u64 = 5;

/// The host without AVX2 (the f32x4 microkernel), scheduled for two threads.
fn target() -> Target {
    Target {
        avx2_fma: false,
        avx512f: false,
        ..host_target(2)
    }
}

/// Few ops on large extents: rank 2 up to 300 (products up to 100 times
/// `PARALLEL_FLOPS`, matrices above `PARALLEL_ELEMENTS`), or rank 3 up to 64,
/// well conditioned so that the interpreter's work stays small. About one graph in
/// forty gets a parallel loop: an extent is 1 one time in four, and most draws are
/// far below the maxima.
fn large_options(seed: u64) -> RandomGraphOptions {
    let rank_two = seed.is_multiple_of(2);
    RandomGraphOptions {
        max_nodes: 3 + (seed % 3) as usize,
        max_rank: if rank_two { 2 } else { 3 },
        max_extent: if rank_two { 300 } else { 64 },
        ..RandomGraphOptions::default()
    }
}

/// What a graph's compilations ran on: whether any executable had a pool (a
/// parallel loop in its program).
#[derive(Default)]
struct Paths {
    parallel: bool,
}

/// Compiles and runs `graph` (and, when asked, its train step) for the target and
/// compares with the interpreter.
fn check_graph(graph: &Graph, feeds: &Feeds, train: bool) -> Result<Paths, String> {
    let mut paths = Paths::default();
    let expected =
        evaluate(graph, feeds, Precision::F32).map_err(|err| format!("interpreter: {err}"))?;
    let options = PipelineOptions {
        target: Some(target()),
        ..PipelineOptions::default()
    };
    let mut exe = compile_with(graph, pipeline::INFERENCE, &options)
        .map_err(|err| format!("compile: {err}"))?;
    paths.parallel |= exe.threads() > 1;
    let (outputs, updates) = exe.run_feeds(feeds).map_err(|err| format!("run: {err}"))?;
    compare("inference", &expected, &outputs, &updates)?;
    if !train {
        return Ok(paths);
    }
    // The interpreter runs the train step as autodiff and the optimizer build it; the
    // executable goes through the whole train-step pipeline.
    let Some((forward, options, step)) = sweep::train_step_with(graph, options)? else {
        return Ok(paths);
    };
    let expected =
        evaluate(&step, feeds, Precision::F32).map_err(|err| format!("interpreter: {err}"))?;
    let mut exe = compile_with(&forward, pipeline::TRAIN_STEP, &options)
        .map_err(|err| format!("compile train step: {err}"))?;
    paths.parallel |= exe.threads() > 1;
    let (outputs, updates) = exe
        .run_feeds(feeds)
        .map_err(|err| format!("run train step: {err}"))?;
    compare("train step", &expected, &outputs, &updates)?;
    Ok(paths)
}

/// Builds and checks one graph; the error names the seed, the options and the
/// graph's text, so it can become a regression case.
fn check_seed(seed: u64, options: &RandomGraphOptions) -> Result<Paths, String> {
    let mut graph = random_graph(&mut Rng::new(seed), options);
    graph.name = format!("random_{seed}");
    let mut rng = Rng::new(seed ^ 0x5eed);
    let feeds = if options.awkward_constants {
        random_awkward_feeds(&graph, &mut rng)
    } else {
        random_feeds(&graph, &mut rng)
    };
    let train = seed.is_multiple_of(TRAIN_EVERY);
    // A panic is a failure too: catch it so the report names the seed.
    let outcome = or_panic(|| check_graph(&graph, &feeds, train));
    outcome.map_err(|err| format!("seed {seed} ({options:?}): {err}\n{}", text::print(&graph)))
}

/// Checks the seeds `seeds`, returning how many graphs had a matmul and how many
/// ran a parallel loop; fails naming the first mismatches.
fn sweep(
    label: &str,
    seeds: std::ops::Range<u64>,
    options: fn(u64) -> RandomGraphOptions,
) -> (usize, usize) {
    let start = Instant::now();
    let count = seeds.end - seeds.start;
    let (mut matmuls, mut parallel) = (0, 0);
    let mut failures = Vec::new();
    for seed in seeds {
        let options = options(seed);
        // The graph as built; its matmuls survive the pipeline unless folded away.
        let graph = random_graph(&mut Rng::new(seed), &options);
        matmuls += usize::from(text::print(&graph).contains("matmul"));
        match check_seed(seed, &options) {
            Ok(paths) => parallel += usize::from(paths.parallel),
            Err(err) => failures.push(err),
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: {} of {count} graphs differ from the interpreter; the first:\n{}",
        failures.len(),
        failures[..failures.len().min(3)].join("\n\n")
    );
    eprintln!(
        "{label}: {count} graphs in {:?}, {matmuls} with a matmul, {parallel} with a parallel loop",
        start.elapsed()
    );
    (matmuls, parallel)
}

#[test]
fn small_random_graphs_match_the_interpreter_on_the_portable_target() {
    let (matmuls, _) = sweep("small", 0..SMALL_GRAPHS, sweep::options);
    // The sweep is deterministic; these floors only catch a generator change that
    // would quietly stop testing the routine.
    assert!(matmuls >= 30, "{matmuls} graphs with a matmul");
}

#[test]
fn large_random_graphs_match_the_interpreter_on_two_threads() {
    let (matmuls, parallel) = sweep("large", 0..LARGE_GRAPHS, large_options);
    assert!(matmuls >= 5, "{matmuls} graphs with a matmul");
    assert!(parallel >= 3, "{parallel} graphs with a parallel loop");
}
