//! The differential sweep's random graphs, shared through `#[path]` by
//! tests/differential.rs, tests/differential_targets.rs, tests/cuda.rs and
//! tests/ptx_exec.rs: each seed's options and feeds, and a graph's SGD train step
//! as the interpreter runs it.
#![allow(dead_code)]

use kiln::passes::optimizer::Optimizer;
use kiln::passes::pipeline::{self, PipelineOptions, Step};
use kiln_ir::random::{self, random_awkward_feeds, random_feeds, RandomGraphOptions};
use kiln_ir::{Feeds, Graph, Rng};

/// The options for seed `seed`: one in four well conditioned (the default), the rest
/// awkward with empty tensors. Small graphs (4 to 8 ops, 6 on average) keep the sweep
/// within CI's time: about 30 s of CPU in a debug build.
pub fn options(seed: u64) -> RandomGraphOptions {
    let awkward = !seed.is_multiple_of(4);
    RandomGraphOptions {
        max_nodes: 4 + (seed % 5) as usize,
        awkward_constants: awkward,
        zero_extents: awkward,
        ..RandomGraphOptions::default()
    }
}

/// Feeds for `graph` drawn from `seed`: awkward values (±0, subnormals, ±inf, NaN,
/// …) or well-conditioned ones.
pub fn feeds_for(graph: &Graph, seed: u64, awkward: bool) -> Feeds {
    let mut rng = Rng::new(seed ^ 0x5eed);
    if awkward {
        random_awkward_feeds(graph, &mut rng)
    } else {
        random_feeds(graph, &mut rng)
    }
}

/// Seed `seed`'s graph and feeds.
pub fn graph_and_feeds(seed: u64) -> (Graph, Feeds) {
    let options = options(seed);
    let graph = random::random_graph(&mut Rng::new(seed), &options);
    let feeds = feeds_for(&graph, seed, options.awkward_constants);
    (graph, feeds)
}

/// `graph` with a sum loss, the options that compile its SGD train step, and that
/// step built by autodiff and the optimizer (the graph the interpreter runs); `None`
/// when the graph has nothing to differentiate.
pub fn train_step(graph: &Graph) -> Result<Option<(Graph, PipelineOptions, Graph)>, String> {
    train_step_with(graph, PipelineOptions::default())
}

/// [`train_step`] with the other options (a target, threads) taken from `base`.
pub fn train_step_with(
    graph: &Graph,
    base: PipelineOptions,
) -> Result<Option<(Graph, PipelineOptions, Graph)>, String> {
    let Some(forward) = random::with_sum_loss(graph) else {
        return Ok(None);
    };
    let options = PipelineOptions {
        loss: Some("loss".to_string()),
        optimizer: Some(Optimizer::sgd(0.25).map_err(|err| err.to_string())?),
        ..base
    };
    let (step, _) = pipeline::run(
        &forward,
        &[Step::Autodiff, Step::Optimizer],
        &options,
        &mut |_, _| {},
    )
    .map_err(|err| format!("train step: {err}"))?;
    Ok(Some((forward, options, step)))
}
