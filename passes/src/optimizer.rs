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
    /// Plain stochastic gradient descent: `p <- p - learning_rate * g`. Build it with
    /// `Optimizer::sgd` to check the learning rate at once; `run` checks it anyway.
    Sgd { learning_rate: f64 },
}

impl Optimizer {
    /// Stochastic gradient descent with a learning rate checked by `check`.
    pub fn sgd(learning_rate: f64) -> Result<Optimizer, OptimizerError> {
        let optimizer = Optimizer::Sgd { learning_rate };
        optimizer.check()?;
        Ok(optimizer)
    }

    /// Checks every hyperparameter in f32, the precision of the generated update, not
    /// in the f64 it is given in: each must round to a positive normal f32, between
    /// `f32::MIN_POSITIVE` and `f32::MAX`. A learning rate such as 1e300 is finite in
    /// f64 but rounds to `inf`, which turns every weight into ±inf or NaN after one
    /// step; one below about 1e-45 rounds to 0 and nothing trains; a subnormal one
    /// keeps only a few bits and is flushed to zero by some hardware.
    pub fn check(&self) -> Result<(), OptimizerError> {
        let Optimizer::Sgd { learning_rate } = *self;
        let rounded = learning_rate as f32;
        if !(rounded.is_normal() && rounded > 0.0) {
            return Err(OptimizerError::BadHyperparameter {
                name: "learning rate",
                value: learning_rate,
                rounded,
            });
        }
        Ok(())
    }
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
    /// A hyperparameter that, rounded to f32 (the precision the update runs in), is
    /// not a positive normal number (user's mistake). See `Optimizer::check` for why.
    #[error(
        "{name} {value:?} rounds to {rounded:?} in f32; it must round to a positive normal f32 \
         (from {min:e} to {max:e}) because the update is computed in f32",
        min = f32::MIN_POSITIVE,
        max = f32::MAX
    )]
    BadHyperparameter {
        name: &'static str,
        value: f64,
        rounded: f32,
    },
    /// Building the update failed: a kiln bug, since the gradient has the parameter's type.
    #[error("building the update: {0}")]
    Ir(#[from] IrError),
}

/// Adds one update per parameter and removes the `grad.*` outputs it consumed.
pub fn run(graph: &Graph, optimizer: &Optimizer) -> Result<Graph, OptimizerError> {
    let mut graph = graph.clone();
    optimizer.check()?;
    let Optimizer::Sgd { learning_rate } = *optimizer;
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

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::TensorType;

    #[test]
    fn the_learning_rate_is_checked_in_f32() {
        // 1e300 is a finite f64 but rounds to inf in the f32 update.
        let err = Optimizer::sgd(1e300).unwrap_err();
        assert_eq!(
            err,
            OptimizerError::BadHyperparameter {
                name: "learning rate",
                value: 1e300,
                rounded: f32::INFINITY
            }
        );
        assert_eq!(
            err.to_string(),
            "learning rate 1e300 rounds to inf in f32; it must round to a positive normal \
             f32 (from 1.1754944e-38 to 3.4028235e38) because the update is computed in f32"
        );
        // Rounds to 0, to a subnormal, or is not positive at all.
        for bad in [1e-50, 1e-40, 0.0, -0.1, f64::NAN, f64::INFINITY] {
            assert!(Optimizer::sgd(bad).is_err(), "learning rate {bad}");
        }
        for good in [0.1, 1e-30, f64::from(f32::MAX)] {
            assert_eq!(
                Optimizer::sgd(good),
                Ok(Optimizer::Sgd {
                    learning_rate: good
                })
            );
        }
    }

    #[test]
    fn run_rejects_a_learning_rate_that_overflows_f32() {
        let mut graph = Graph::new("g");
        let weight = graph.parameter("w", TensorType::f32([2])).unwrap();
        graph.set_output(&grad_name("w"), weight).unwrap();
        let err = run(
            &graph,
            &Optimizer::Sgd {
                learning_rate: 1e39,
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, OptimizerError::BadHyperparameter { value, .. } if value == 1e39),
            "{err}"
        );
        let stepped = run(&graph, &Optimizer::Sgd { learning_rate: 0.5 }).unwrap();
        assert_eq!(stepped.updates().len(), 1);
    }
}
