//! The e-graph pass: equality saturation with egg over the rule tables in `rules/`,
//! then DAG-aware extraction by a cost model.
//!
//! Assumes a verified graph. Guarantees a verified graph with the same signature,
//! outputs and updates, computing the same values (every rule is checked on random
//! inputs through the interpreter), whose cost under `extract::op_cost` is no higher
//! than the input's: if extraction ever found a costlier graph, the input is kept.
//!
//! ```text
//! before:  %3 = transpose %0 perm=[1,0] : f32[3,2]   %4 = matmul %3, %1 : f32[3,4]
//! after:   %3 = matmul.tn %0, %1 : f32[3,4]
//! ```

pub mod convert;
pub mod extract;
pub mod language;
pub mod rules;

use egg::{Runner, SimpleScheduler, StopReason};
use kiln_ir::{Graph, IrError};
use language::KilnEGraph;
use std::fmt;
use std::time::{Duration, Instant};
use thiserror::Error;

pub use language::{KilnAnalysis, KilnLang};
pub use rules::rules;

/// Limits of the equality-saturation run. Saturation is the normal stop; the limits
/// guard against rule sets that grow without bound.
#[derive(Clone, Debug)]
pub struct EgraphOptions {
    pub iter_limit: usize,
    pub node_limit: usize,
    pub time_limit: Duration,
}

impl Default for EgraphOptions {
    fn default() -> EgraphOptions {
        EgraphOptions {
            iter_limit: 30,
            node_limit: 20_000,
            time_limit: Duration::from_secs(1),
        }
    }
}

/// What the run did.
#[derive(Clone, Debug)]
pub struct EgraphReport {
    pub iterations: usize,
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    pub stop_reason: String,
    pub saturated: bool,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub cost_before: f64,
    pub cost_after: f64,
    /// Extraction found nothing cheaper than the input, which was kept as it was.
    pub kept_input: bool,
    pub elapsed: Duration,
}

impl fmt::Display for EgraphReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "egraph: {} after {} iterations, {} e-nodes in {} classes; {} -> {} nodes, cost {} -> {}{}; {:.2} ms",
            self.stop_reason,
            self.iterations,
            self.egraph_nodes,
            self.egraph_classes,
            self.nodes_before,
            self.nodes_after,
            self.cost_before,
            self.cost_after,
            if self.kept_input { " (input kept)" } else { "" },
            self.elapsed.as_secs_f64() * 1e3
        )
    }
}

/// Rebuilding the graph failed: a kiln bug in a rule or the extraction.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EgraphError {
    #[error("rebuilding the graph after rewriting (a kiln bug): {0}")]
    Rebuild(#[from] IrError),
}

/// Rewrites `graph` with the default rules.
pub fn run(graph: &Graph, options: &EgraphOptions) -> Result<(Graph, EgraphReport), EgraphError> {
    run_with(graph, options, &rules())
}

/// Rewrites `graph` with the given rules (tests run single rules through this).
pub fn run_with(
    graph: &Graph,
    options: &EgraphOptions,
    rules: &[egg::Rewrite<KilnLang, KilnAnalysis>],
) -> Result<(Graph, EgraphReport), EgraphError> {
    let start = Instant::now();
    let mut egraph = KilnEGraph::default();
    let class_of = convert::to_egraph(graph, &mut egraph);
    let runner = Runner::default()
        .with_scheduler(SimpleScheduler)
        .with_iter_limit(options.iter_limit)
        .with_node_limit(options.node_limit)
        .with_time_limit(options.time_limit)
        .with_egraph(egraph)
        .run(rules);
    let stop = runner
        .stop_reason
        .clone()
        .expect("a finished runner has a stop reason");
    let extraction = extract::extract(&runner.egraph);
    let rewritten = convert::from_egraph(graph, &runner.egraph, &class_of, &extraction)?;
    let cost_before = extract::graph_cost(graph);
    let cost_after = extract::graph_cost(&rewritten);
    let kept_input = cost_after > cost_before;
    let result = if kept_input { graph.clone() } else { rewritten };
    let report = EgraphReport {
        iterations: runner.iterations.len(),
        egraph_nodes: runner.egraph.total_number_of_nodes(),
        egraph_classes: runner.egraph.number_of_classes(),
        saturated: matches!(stop, StopReason::Saturated),
        stop_reason: match stop {
            StopReason::Saturated => "saturated".to_string(),
            StopReason::IterationLimit(n) => format!("iteration limit {n}"),
            StopReason::NodeLimit(n) => format!("node limit {n}"),
            StopReason::TimeLimit(t) => format!("time limit {t:.3} s"),
            StopReason::Other(reason) => reason,
        },
        nodes_before: graph.node_count(),
        nodes_after: result.node_count(),
        cost_before,
        cost_after: extract::graph_cost(&result),
        kept_input,
        elapsed: start.elapsed(),
    };
    Ok((result, report))
}
