//! Differential fuzzing: random well-typed graphs from `kiln_ir::random` (the whole op
//! set, random shapes with extent-1 and odd extents, shared subexpressions, reshaped
//! and transposed views, parameter updates) compiled and compared with the
//! interpreter on random feeds, 100 fixed seeds.

mod common;

use common::check_graph_feeds;
use kiln_ir::random::{random_feeds, random_graph, RandomGraphOptions};
use kiln_ir::Rng;

#[test]
fn random_graphs_match_the_interpreter() {
    let options = RandomGraphOptions::default();
    let mut nodes = 0;
    for seed in 0..100 {
        let mut graph = random_graph(&mut Rng::new(seed), &options);
        graph.name = format!("random_{seed}");
        nodes += graph.node_count();
        let feeds = random_feeds(&graph, &mut Rng::new(1000 + seed));
        check_graph_feeds(&graph, &feeds);
    }
    // The generator must produce non-trivial graphs for this test to mean anything.
    assert!(nodes > 1000, "only {nodes} nodes over 100 graphs");
}
