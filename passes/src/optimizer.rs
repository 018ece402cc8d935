//! The optimizer pass: turns each parameter's gradient output into an in-graph update.
//!
//! Assumes the graph went through `autodiff`, so every parameter `p` has an output
//! `grad.p`. Consumes those outputs and adds, for each parameter, an update giving
//! its value after one optimizer step, so a whole training step is one graph.
//!
//! ```text
//! before:  %9 = ... : f32[4]            output "grad.w" = %9
//! after:   %10 = const 0.1 : f32[4]     %11 = mul %10, %9 : f32[4]
//!          %12 = sub %1, %11 : f32[4]   update "w" = %12
//! ```

use crate::autodiff::grad_name;
use kiln_ir::{Graph, IrError};
use std::collections::BTreeSet;
use thiserror::Error;

/// The update rule applied to every parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// Plain stochastic gradient descent: `p <- p - learning_rate * g`.
    Sgd { learning_rate: f64 },
}

/// Why the optimizer could not be added.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum OptimizerError {
    /// A parameter has no gradient output: autodiff did not run first (user's pipeline
    /// mistake).
    #[error("parameter {param:?} has no gradient output {output:?}; run autodiff first")]
    MissingGradient { param: String, output: String },
    /// A parameter already has an update.
    #[error("parameter {0:?} already has an update")]
    AlreadyUpdated(String),
    /// The learning rate is not a finite positive number.
    #[error("learning rate must be finite and positive, found {0}")]
    BadLearningRate(f64),
    /// Building the update failed: a kiln bug, since the gradient has the parameter's type.
    #[error("building the update: {0}")]
    Ir(#[from] IrError),
}

/// Adds one update per parameter and removes the `grad.*` outputs it consumed.
pub fn run(graph: &Graph, optimizer: &Optimizer) -> Result<Graph, OptimizerError> {
    let mut graph = graph.clone();
    let Optimizer::Sgd { learning_rate } = *optimizer;
    if !(learning_rate.is_finite() && learning_rate > 0.0) {
        return Err(OptimizerError::BadLearningRate(learning_rate));
    }
    // The consumed gradients are removed in one pass at the end: one removal at a
    // time is quadratic in the number of parameters.
    let mut consumed = BTreeSet::new();
    for param in graph.params().to_vec() {
        let name = graph
            .leaf_name(param)
            .expect("parameters are named")
            .to_string();
        if graph.update_of(param).is_some() {
            return Err(OptimizerError::AlreadyUpdated(name));
        }
        let output = grad_name(&name);
        let grad = graph
            .output_by_name(&output)
            .ok_or(OptimizerError::MissingGradient {
                param: name.clone(),
                output: output.clone(),
            })?;
        let rate = graph.constant_like(learning_rate, param)?;
        let step = graph.mul(rate, grad)?;
        let updated = graph.sub(param, step)?;
        graph.set_update(param, updated)?;
        consumed.insert(output);
    }
    graph.retain_outputs(|name, _| !consumed.contains(name));
    Ok(graph)
}
