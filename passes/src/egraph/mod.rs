//! The e-graph pass: equality saturation with egg over the rule tables in `rules/`,
//! constant folding in the analysis, then DAG-aware extraction by a cost model.
//!
//! Assumes a graph that passes `kiln_ir::verify` (checked; an invalid graph is an
//! error). Guarantees a verified graph with the same signature (inputs and
//! parameters: names, types, order), outputs and updates (names, order), computing
//! the same values (every rule is checked on random inputs through the interpreter),
//! whose cost under [`extract::op_cost`] is at most the input's. Nodes that no
//! output or update reads are dropped, as `dce` would.
//!
//! The runner's node and time limits grow with the input ([`EgraphOptions`]); a run
//! that a limit stops still extracts what it found, and its report says which limit
//! and that the result is partial. Extraction takes memory and time linear in the
//! e-graph.
//!
//! ```text
//! before:  %2 = transpose %0 perm=[1,0] : f32[3,2]      (%0 : f32[2,3], %1 : f32[2,4])
//!          %3 = matmul %2, %1 : f32[3,4]
//! after:   %2 = matmul.tn %0, %1 : f32[3,4]
//! ```

pub mod convert;
pub mod extract;
pub mod language;
pub mod rules;

use egg::{Rewrite, Runner, SimpleScheduler, StopReason};
use kiln_ir::{verify, Graph, IrError};
use language::KilnEGraph;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};
use thiserror::Error;

pub use language::{KilnAnalysis, KilnLang};
pub use rules::rules;

/// Limits of the saturation run. Saturation is the normal stop; the limits guard
/// against a rule set that grows without bound. The node and time limits grow with
/// the input, so that a large graph is still rewritten: a fixed node limit below the
/// input's size would stop the runner before its first iteration. When a limit
/// stops the runner, the pass extracts from the e-graph as it is (egg rebuilds it
/// after every iteration, so it is consistent) and the report says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgraphOptions {
    pub iter_limit: usize,
    /// The e-graph may grow to `max(node_limit, node_growth * the input's e-nodes)`.
    pub node_limit: usize,
    pub node_growth: usize,
    /// The runner may take `time_limit + time_per_node * the input's e-nodes`.
    pub time_limit: Duration,
    pub time_per_node: Duration,
}

impl Default for EgraphOptions {
    fn default() -> EgraphOptions {
        EgraphOptions {
            iter_limit: 30,
            node_limit: 20_000,
            node_growth: 4,
            time_limit: Duration::from_secs(1),
            time_per_node: Duration::from_micros(20),
        }
    }
}

impl EgraphOptions {
    /// The node and time limits for an input of `input_nodes` e-nodes.
    pub fn limits_for(&self, input_nodes: usize) -> (usize, Duration) {
        let node_limit = self
            .node_limit
            .max(self.node_growth.saturating_mul(input_nodes));
        let per_node = u32::try_from(input_nodes)
            .ok()
            .and_then(|n| self.time_per_node.checked_mul(n))
            .unwrap_or(Duration::MAX);
        (node_limit, self.time_limit.saturating_add(per_node))
    }
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
pub struct EgraphReport {
    /// Saturation iterations run.
    pub iterations: usize,
    /// E-nodes and e-classes at the end (attribute leaves included).
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    /// egg's stop reason in words: `saturated`, `iteration limit 30`, `node limit
    /// 80000`, `time limit 1.000 s`.
    pub stop_reason: String,
    /// Whether no rule could fire any more. If not, a limit stopped the runner and
    /// the result holds what was found until then ([`EgraphReport::is_partial`]).
    pub saturated: bool,
    /// The node and time limits this input was given ([`EgraphOptions::limits_for`]).
    pub node_limit: usize,
    pub time_limit: Duration,
    /// How often each rule fired, by name (rules that never fired are absent).
    pub rules_applied: BTreeMap<String, usize>,
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// Graph costs under [`extract::op_cost`].
    pub cost_before: f64,
    pub cost_after: f64,
    /// The whole pass, conversions both ways included.
    pub elapsed: Duration,
}

impl EgraphReport {
    /// Whether a limit stopped the runner before saturation: the graph is then
    /// simplified as far as the run got, not as far as the rules could.
    pub fn is_partial(&self) -> bool {
        !self.saturated
    }
}

/// One line, for the pipeline's dump and the compile report.
impl fmt::Display for EgraphReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let partial = if self.is_partial() {
            " (partial: kept what was found)"
        } else {
            ""
        };
        write!(
            f,
            "egraph: {}{partial} after {} iterations, {} e-nodes in {} classes; {} -> {} nodes, cost {} -> {}; {:.2} ms",
            self.stop_reason,
            self.iterations,
            self.egraph_nodes,
            self.egraph_classes,
            self.nodes_before,
            self.nodes_after,
            self.cost_before,
            self.cost_after,
            self.elapsed.as_secs_f64() * 1e3
        )
    }
}

/// Why the pass failed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EgraphError {
    /// The input graph does not verify (the caller's mistake, or a bug in an
    /// earlier pass).
    #[error("the egraph pass needs a valid graph: {0}")]
    InvalidInput(IrError),
    /// Rebuilding the graph after rewriting failed: a kiln bug in a rule or the
    /// extraction.
    #[error("rebuilding the graph after rewriting failed (a kiln bug): {0}")]
    Rebuild(IrError),
}

/// Rewrites `graph` with the default rules.
pub fn run(graph: &Graph, options: &EgraphOptions) -> Result<(Graph, EgraphReport), EgraphError> {
    run_with(graph, options, &rules())
}

/// Rewrites `graph` with the given rules (tests run single rules through this).
pub fn run_with(
    graph: &Graph,
    options: &EgraphOptions,
    rules: &[Rewrite<KilnLang, KilnAnalysis>],
) -> Result<(Graph, EgraphReport), EgraphError> {
    let start = Instant::now();
    verify(graph).map_err(EgraphError::InvalidInput)?;
    let mut egraph = KilnEGraph::default();
    let converted = convert::to_egraph(graph, &mut egraph);
    let (node_limit, time_limit) = options.limits_for(egraph.total_number_of_nodes());
    // The simple scheduler never bans a rule, so `Saturated` means no rule can fire.
    let runner = Runner::default()
        .with_scheduler(SimpleScheduler)
        .with_iter_limit(options.iter_limit)
        .with_node_limit(node_limit)
        .with_time_limit(time_limit)
        .with_egraph(egraph)
        .run(rules);
    let stop = runner
        .stop_reason
        .clone()
        .expect("a runner that ran has a stop reason");

    let mut roots: Vec<egg::Id> = graph
        .outputs()
        .iter()
        .map(|(_, id)| converted.class_of[id])
        .collect();
    roots.extend(
        graph
            .updates()
            .iter()
            .map(|(_, value)| converted.class_of[value]),
    );
    // Whatever stopped the runner, its e-graph is consistent (egg rebuilds it after
    // every iteration, even one cut short) and holds every equality found so far, so
    // extraction keeps them: a limit makes the result partial, never discarded.
    let extraction = extract::extract(&runner.egraph, &roots, &converted.seed);
    let rewritten = convert::from_egraph(graph, &runner.egraph, &converted.class_of, &extraction)
        .map_err(EgraphError::Rebuild)?;

    let mut rules_applied = BTreeMap::new();
    for iteration in &runner.iterations {
        for (name, count) in &iteration.applied {
            *rules_applied.entry(name.to_string()).or_insert(0) += count;
        }
    }
    let report = EgraphReport {
        iterations: runner.iterations.len(),
        egraph_nodes: runner.egraph.total_number_of_nodes(),
        egraph_classes: runner.egraph.number_of_classes(),
        saturated: matches!(stop, StopReason::Saturated),
        node_limit,
        time_limit,
        stop_reason: match stop {
            StopReason::Saturated => "saturated".to_string(),
            StopReason::IterationLimit(n) => format!("iteration limit {n}"),
            StopReason::NodeLimit(n) => format!("node limit {n}"),
            StopReason::TimeLimit(seconds) => format!("time limit {seconds:.3} s"),
            StopReason::Other(reason) => reason,
        },
        rules_applied,
        nodes_before: graph.node_count(),
        nodes_after: rewritten.node_count(),
        cost_before: extract::graph_cost(graph),
        cost_after: extract::graph_cost(&rewritten),
        elapsed: start.elapsed(),
    };
    Ok((rewritten, report))
}
