//! The pass pipeline: one readable list of named steps from a declared model to the
//! graph the backend lowers.
//!
//! After every step the IR is verified (in debug builds and when asked), and handed to
//! a dump callback when the step's name matches the dump pattern (the facade maps
//! `KILN_DUMP=<regex>` to it, like XLA's `--xla_dump_hlo_pass_re`). The pipeline does
//! no I/O itself.

use crate::{autodiff, dce, egraph, expand, optimizer};
use kiln_ir::{text, verify, Graph, IrError};
use regex::Regex;
use std::time::{Duration, Instant};
use thiserror::Error;

/// One named step of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Appends the backward graph and `grad.*` outputs (needs `PipelineOptions::loss`).
    Autodiff,
    /// Turns gradients into parameter updates (needs `PipelineOptions::optimizer`).
    Optimizer,
    /// Convolution and pooling ops become primitives: im2col and matmuls, or
    /// unpadded convolutions for an implicit GEMM (`PipelineOptions::conv`; see
    /// `expand`).
    Expand,
    /// Algebraic simplification by equality saturation.
    Egraph,
    /// Dead-code elimination.
    Dce,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Autodiff => "autodiff",
            Step::Optimizer => "optimizer",
            Step::Expand => "expand",
            Step::Egraph => "egraph",
            Step::Dce => "dce",
        }
    }
}

/// The steps that turn a forward graph with a loss output into a training step.
pub const TRAIN_STEP: &[Step] = &[
    Step::Autodiff,
    Step::Optimizer,
    Step::Expand,
    Step::Egraph,
    Step::Dce,
];

/// The loss and its gradients (`grad.<param>`, and `grad.<input>` for the inputs in
/// [`PipelineOptions::grad_inputs`]), without an update: for gradient checks and
/// adversarial examples.
pub const GRADIENTS: &[Step] = &[Step::Autodiff, Step::Expand, Step::Egraph, Step::Dce];

/// The steps for a graph that is run as it is (inference).
pub const INFERENCE: &[Step] = &[Step::Expand, Step::Egraph, Step::Dce];

/// What the steps need to know.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// The output differentiated by `autodiff`.
    pub loss: Option<String>,
    /// f32 inputs whose gradients `autodiff` adds as outputs `grad.<input>` too.
    pub grad_inputs: Vec<String>,
    /// The update rule added by `optimizer`.
    pub optimizer: Option<optimizer::Optimizer>,
    pub egraph: egraph::EgraphOptions,
    /// What `expand` makes of a convolution: im2col for the CPU's matmul routine
    /// (the default), or an unpadded convolution for the GPU's implicit GEMM.
    pub conv: expand::ConvForm,
    /// Verify the IR after every step (always on in debug builds).
    pub verify: bool,
    /// Steps whose name matches are dumped; `build` names the graph as given.
    pub dump: Option<Regex>,
    /// Threads the compiled executable runs on (its schedule and its pool); `None`
    /// for the available cores.
    pub threads: Option<usize>,
    /// Schedule for this target instead of the host (tests of the portable paths,
    /// cross compiles); its `threads` then replace `threads`. The host must be able to
    /// run what it picks (an AVX2 target on a host without AVX2 is refused).
    pub target: Option<kiln_ir::Target>,
}

impl Default for PipelineOptions {
    fn default() -> PipelineOptions {
        PipelineOptions {
            loss: None,
            grad_inputs: Vec::new(),
            optimizer: None,
            egraph: egraph::EgraphOptions::default(),
            conv: expand::ConvForm::default(),
            verify: cfg!(debug_assertions),
            dump: None,
            threads: None,
            target: None,
        }
    }
}

/// What one step did, for reports and dumps.
#[derive(Clone, Debug)]
pub struct StepReport {
    pub name: &'static str,
    /// The step itself.
    pub elapsed: Duration,
    /// Verifying its result (zero when verification is off).
    pub verify: Duration,
    pub nodes_after: usize,
    /// A step's own one-line summary (the e-graph runner's statistics).
    pub note: Option<String>,
}

/// A step failed: its name and why.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("{step}: {message}")]
    Step { step: &'static str, message: String },
    /// The verifier rejected a step's result: a kiln bug in that pass.
    #[error("the IR after step {step} is invalid (a kiln bug): {source}")]
    Invalid {
        step: &'static str,
        #[source]
        source: IrError,
    },
}

fn step_error(step: Step, error: impl std::fmt::Display) -> PipelineError {
    PipelineError::Step {
        step: step.name(),
        message: error.to_string(),
    }
}

/// Runs `steps` in order. `dump(step_name, text)` receives the printed IR of every
/// step whose name matches `options.dump`.
pub fn run(
    graph: &Graph,
    steps: &[Step],
    options: &PipelineOptions,
    dump: &mut dyn FnMut(&str, &str),
) -> Result<(Graph, Vec<StepReport>), PipelineError> {
    let wants_dump = |name: &str| options.dump.as_ref().is_some_and(|re| re.is_match(name));
    if wants_dump("build") {
        dump("build", &text::print(graph));
    }
    let mut graph = graph.clone();
    let mut reports = Vec::with_capacity(steps.len());
    for &step in steps {
        let start = Instant::now();
        let mut note = None;
        graph = match step {
            Step::Autodiff => {
                let loss = options.loss.clone().ok_or_else(|| {
                    step_error(step, "no loss output named in the pipeline options")
                })?;
                let inputs = options.grad_inputs.clone();
                autodiff::run(&graph, &autodiff::AutodiffOptions { loss, inputs })
                    .map_err(|err| step_error(step, err))?
            }
            Step::Optimizer => {
                let rule = options
                    .optimizer
                    .ok_or_else(|| step_error(step, "no optimizer in the pipeline options"))?;
                optimizer::run(&graph, &rule).map_err(|err| step_error(step, err))?
            }
            Step::Egraph => {
                let (rewritten, report) =
                    egraph::run(&graph, &options.egraph).map_err(|err| step_error(step, err))?;
                note = Some(report.to_string());
                rewritten
            }
            Step::Expand => {
                expand::run(&graph, options.conv).map_err(|err| step_error(step, err))?
            }
            Step::Dce => dce::run(&graph),
        };
        let elapsed = start.elapsed();
        let verify_start = Instant::now();
        if options.verify || cfg!(debug_assertions) {
            verify(&graph).map_err(|source| PipelineError::Invalid {
                step: step.name(),
                source,
            })?;
        }
        let verify = verify_start.elapsed();
        if wants_dump(step.name()) {
            let mut text = String::new();
            if let Some(note) = &note {
                text.push_str(&format!("// {note}\n"));
            }
            text.push_str(&text::print(&graph));
            dump(step.name(), &text);
        }
        reports.push(StepReport {
            name: step.name(),
            elapsed,
            verify,
            nodes_after: graph.node_count(),
            note,
        });
    }
    Ok((graph, reports))
}
