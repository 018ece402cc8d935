//! Gradient checks of a whole model: the compiled gradients (the `GRADIENTS`
//! pipeline, JIT, f32) of a loss with respect to every parameter and every f32
//! input, against central finite differences of the loss in the reference
//! interpreter in f64, on random inputs.
//!
//! Inputs are drawn uniform in [-1, 1); an i32 input read by a `one_hot` (labels)
//! gets valid labels for its depth, any other i32 input values in 0..4. Up to
//! [`GradcheckOptions::samples`] elements of each leaf are perturbed (all of a small
//! leaf), chosen at random. The error of one element is
//! `|compiled − numeric| / max(|compiled|, |numeric|, 1)`: relative for large
//! gradients, absolute below 1, so that f32 rounding of a gradient near zero is not
//! mistaken for a wrong rule.

use crate::compile::{compile_with, set_params, Error};
use kiln_frontend::Model;
use kiln_ir::random::one_hot_depth;
use kiln_ir::{evaluate, DType, Feeds, Graph, NodeId, Precision, Rng, Tensor};
use kiln_passes::pipeline::{self, PipelineOptions};
use std::fmt;

/// The tolerance `kiln gradcheck` applies to the largest error: the f32 JIT's
/// rounding against the f64 interpreter's differences leaves well under this on
/// smooth models, while a wrong derivative rule is off by far more.
pub const TOLERANCE: f64 = 1e-3;

/// How a check runs.
#[derive(Clone, Debug)]
pub struct GradcheckOptions {
    /// Seeds the inputs and the elements sampled.
    pub seed: u64,
    /// The most elements of each leaf that are perturbed.
    pub samples: usize,
    /// The finite-difference step.
    pub epsilon: f64,
}

impl Default for GradcheckOptions {
    fn default() -> GradcheckOptions {
        GradcheckOptions {
            seed: 0,
            samples: 16,
            // Small, so that a step rarely crosses a kink (relu, max); the f64
            // interpreter keeps the difference quotient accurate at this size.
            epsilon: 1e-6,
        }
    }
}

/// The largest error of each leaf's gradient.
#[derive(Clone, Debug)]
pub struct GradcheckReport {
    /// `(leaf, elements checked, largest error, at element)`, parameters first.
    pub leaves: Vec<LeafCheck>,
}

#[derive(Clone, Debug)]
pub struct LeafCheck {
    pub name: String,
    pub checked: usize,
    pub max_error: f64,
    pub worst: usize,
    pub compiled: f64,
    pub numeric: f64,
}

impl GradcheckReport {
    /// The largest error over every leaf (0 when nothing was checked).
    pub fn max_error(&self) -> f64 {
        self.leaves
            .iter()
            .map(|leaf| leaf.max_error)
            .fold(0.0, f64::max)
    }
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for leaf in &self.leaves {
            writeln!(
                f,
                "{}: {} element(s), max error {:.1e} (element {}: compiled {:.6e}, finite differences {:.6e})",
                leaf.name, leaf.checked, leaf.max_error, leaf.worst, leaf.compiled, leaf.numeric
            )?;
        }
        write!(f, "max relative error: {:.1e}", self.max_error())
    }
}

/// Checks the gradients of output `loss` of `model` (see the module docs).
pub fn gradcheck(
    model: &Model,
    loss: &str,
    options: &GradcheckOptions,
) -> Result<GradcheckReport, Error> {
    let graph = model.graph();
    let mut rng = Rng::new(options.seed);
    let f32_inputs: Vec<String> = graph
        .inputs()
        .iter()
        .filter(|&&id| graph.ty(id).dtype == DType::F32)
        .map(|&id| name(graph, id))
        .collect();
    let pipeline_options = PipelineOptions {
        loss: Some(loss.to_string()),
        grad_inputs: f32_inputs,
        ..PipelineOptions::default()
    };
    let mut exe = compile_with(graph, pipeline::GRADIENTS, &pipeline_options)?;
    set_params(&mut exe, model)?;

    let feeds = random_inputs(graph, &mut rng)?;
    let mut all_feeds = feeds.clone();
    for (param, values) in model.params() {
        let ty = graph
            .param_by_name(param)
            .map(|id| graph.ty(id).clone())
            .ok_or_else(|| Error::MissingParam(param.clone()))?;
        let data = values.iter().map(|&v| f64::from(v)).collect();
        all_feeds.insert(param.clone(), tensor(ty, data)?);
    }
    exe.run_feeds(&feeds)?;

    // Frozen parameters have no gradient to check.
    let leaves: Vec<NodeId> = graph
        .trainable_params()
        .iter()
        .chain(graph.inputs())
        .copied()
        .filter(|&id| graph.ty(id).dtype == DType::F32)
        .collect();
    let loss_at = |feeds: &Feeds| -> Result<f64, Error> {
        let evaluation = evaluate(graph, feeds, Precision::F64)?;
        Ok(evaluation.outputs[loss].data()[0])
    };
    let mut report = GradcheckReport { leaves: Vec::new() };
    for id in leaves {
        let leaf = name(graph, id);
        let compiled = exe.output(&kiln_passes::autodiff::grad_name(&leaf))?;
        let count = graph.ty(id).num_elements();
        let mut elements: Vec<usize> = (0..count).collect();
        // A partial Fisher-Yates shuffle picks the sampled elements.
        let samples = options.samples.min(count);
        for i in 0..samples {
            let j = i + rng.below(count - i);
            elements.swap(i, j);
        }
        let mut check = LeafCheck {
            name: leaf.clone(),
            checked: samples,
            max_error: 0.0,
            worst: 0,
            compiled: 0.0,
            numeric: 0.0,
        };
        for (position, &element) in elements[..samples].iter().enumerate() {
            let nudged = |delta: f64| -> Result<f64, Error> {
                let mut moved = all_feeds.clone();
                if let Some(value) = moved.get_mut(&leaf) {
                    value.edit(|data| data[element] += delta)?;
                }
                loss_at(&moved)
            };
            let numeric =
                (nudged(options.epsilon)? - nudged(-options.epsilon)?) / (2.0 * options.epsilon);
            let analytic = compiled.data()[element];
            let error = (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1.0);
            // NaN (a gradient or a loss that is not finite) counts as the worst error;
            // the first element is recorded so the report names a checked one.
            if position == 0 || error.is_nan() || error > check.max_error {
                check.max_error = if error.is_nan() { f64::INFINITY } else { error };
                check.worst = element;
                check.compiled = analytic;
                check.numeric = numeric;
            }
        }
        report.leaves.push(check);
    }
    Ok(report)
}

/// Random values for every input of `graph`, as the module docs say: f32 uniform
/// in [-1, 1), labels valid for the `one_hot` that reads them (else 0..4).
pub fn random_inputs(graph: &Graph, rng: &mut Rng) -> Result<Feeds, Error> {
    let mut feeds = Feeds::new();
    for &id in graph.inputs() {
        let ty = graph.ty(id);
        let depth = one_hot_depth(graph, id).unwrap_or(4).max(1);
        let data = (0..ty.num_elements())
            .map(|_| match ty.dtype {
                DType::F32 => f64::from(rng.uniform(-1.0, 1.0) as f32),
                DType::I32 => rng.below(depth) as f64,
                DType::Bool => rng.below(2) as f64,
            })
            .collect();
        feeds.insert(name(graph, id), tensor(ty.clone(), data)?);
    }
    Ok(feeds)
}

fn name(graph: &Graph, id: NodeId) -> String {
    graph
        .leaf_name(id)
        .expect("inputs and parameters are named")
        .to_string()
}

fn tensor(ty: kiln_ir::TensorType, data: Vec<f64>) -> Result<Tensor, Error> {
    Ok(Tensor::new(ty, data)?)
}
