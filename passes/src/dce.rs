//! Dead-code elimination: removes nodes that no output, update or signature entry
//! depends on.
//!
//! Assumes nothing; guarantees every remaining non-leaf node feeds a result. The
//! graph's inputs and parameters always stay, used or not: they are its signature.
//!
//! ```text
//! before:  %2 = exp %0 : f32[4]   %3 = neg %0 : f32[4]   output "y" = %3
//! after:   %2 = neg %0 : f32[4]   output "y" = %2
//! ```

use kiln_ir::Graph;

pub fn run(graph: &Graph) -> Graph {
    let mut graph = graph.clone();
    graph.prune();
    graph
}
