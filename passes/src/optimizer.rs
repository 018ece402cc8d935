//! The optimizer pass: turns each parameter's gradient output into an in-graph update.
//!
//! Assumes the graph went through `autodiff`, so every parameter `p` that is not
//! frozen has an output `grad.p`. Consumes those outputs and adds, for each such
//! parameter, an update giving its value after one optimizer step, so a whole
//! training step is one graph. A frozen parameter is left as the model leaves it:
//! unchanged, or updated by the model itself (batch norm's running statistics). A rule
//! with memory (momentum, Adam's moments, a step counter, a Polyak average) keeps it
//! as extra parameters, the optimizer state, each updated in place by the step; their
//! names and initial values are listed by [`Optimizer::state`], which the pass itself
//! follows, so whoever loads the executable can initialise them (see `StateParam`).
//!
//! The order within a step is PyTorch's: clip all gradients by their global norm,
//! add the L2 weight decay to each gradient (or shrink the weight, when decoupled),
//! apply the rule, project the new value onto the norm ball, then average it.
//!
//! ```text
//! before:  %9 = ... : f32[4]            output "grad.w" = %9
//! after:   %10 = const 0.1 : f32[4]     %11 = mul %10, %9 : f32[4]
//!          %12 = sub %1, %11 : f32[4]   update "w" = %12
//! ```

mod check;
mod rules;
mod state;

pub use state::{StateInit, StateParam, STEP_NAME};

use crate::autodiff::grad_name;
use kiln_ir::{Graph, IrError, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// How a step moves a parameter given its gradient `g` (after the modifiers): the
/// forms of PyTorch's `torch.optim`, with their arguments and defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// `p ← p − lr·g`; with `momentum` μ > 0, heavy ball `v ← μ·v + (1 − dampening)·g`
    /// (`v ← g` on the first step), `p ← p − lr·v`, or Nesterov `p ← p − lr·(g + μ·v)`
    /// (PyTorch's `SGD`; Nesterov needs momentum and no dampening).
    Sgd {
        learning_rate: f64,
        momentum: f64,
        dampening: f64,
        nesterov: bool,
    },
    /// `s ← s + g²` from `s = initial_accumulator_value`, and at step `t`
    /// `p ← p − lr/(1 + (t − 1)·lr_decay) · g / (√s + eps)` (PyTorch's `Adagrad`).
    Adagrad {
        learning_rate: f64,
        lr_decay: f64,
        initial_accumulator_value: f64,
        eps: f64,
    },
    /// `v ← α·v + (1 − α)·g²` and `d = g / (√v + eps)`; centred, with the running mean
    /// of the gradient `m ← α·m + (1 − α)·g`, `d = g / (√(v − m²) + eps)`; then
    /// `p ← p − lr·d`, or with `momentum` μ > 0 `b ← μ·b + d`, `p ← p − lr·b`
    /// (PyTorch's `RMSprop`).
    RmsProp {
        learning_rate: f64,
        alpha: f64,
        eps: f64,
        momentum: f64,
        centered: bool,
    },
    /// `m ← β₁·m + (1 − β₁)·g`, `v ← β₂·v + (1 − β₂)·g²`, and at step `t`
    /// `p ← p − lr·(m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + eps)`; AMSGrad divides by
    /// the running maximum of `v` instead (PyTorch's `Adam`).
    Adam {
        learning_rate: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        amsgrad: bool,
    },
    /// `p ← p − lr·sign(g)`.
    SignSgd { learning_rate: f64 },
}

impl Rule {
    /// Plain SGD.
    pub fn sgd(learning_rate: f64) -> Rule {
        Rule::Sgd {
            learning_rate,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
        }
    }

    /// SGD with heavy-ball momentum `momentum` (no dampening), or Nesterov's.
    pub fn momentum(learning_rate: f64, momentum: f64, nesterov: bool) -> Rule {
        Rule::Sgd {
            learning_rate,
            momentum,
            dampening: 0.0,
            nesterov,
        }
    }

    /// Adam with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, no AMSGrad.
    pub fn adam(learning_rate: f64) -> Rule {
        Rule::Adam {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            amsgrad: false,
        }
    }

    /// AdaGrad with PyTorch's defaults: no learning-rate decay, accumulators from 0,
    /// eps 1e-10.
    pub fn adagrad(learning_rate: f64) -> Rule {
        Rule::Adagrad {
            learning_rate,
            lr_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
        }
    }

    /// RMSProp with PyTorch's defaults: alpha 0.99, eps 1e-8, no momentum, not
    /// centred.
    pub fn rmsprop(learning_rate: f64) -> Rule {
        Rule::RmsProp {
            learning_rate,
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            centered: false,
        }
    }

    pub fn learning_rate(&self) -> f64 {
        match *self {
            Rule::Sgd { learning_rate, .. }
            | Rule::Adagrad { learning_rate, .. }
            | Rule::RmsProp { learning_rate, .. }
            | Rule::Adam { learning_rate, .. }
            | Rule::SignSgd { learning_rate } => learning_rate,
        }
    }
}

/// A running average of every parameter, kept as state `<param>.average` for
/// evaluation; it starts at the parameter's initial value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Averaging {
    /// Polyak–Ruppert: the mean of the initial value and every step's,
    /// `a ← a + (p − a)/(t + 1)` after step `t`.
    Uniform,
    /// Exponential moving average `a ← decay·a + (1 − decay)·p`.
    Ema { decay: f64 },
}

/// The update rule applied to every parameter, and the modifiers around it. Build it
/// with `Optimizer::new(rule)` and the `with_*` methods, or `Optimizer::sgd`; `check`
/// (which `run` calls) rejects bad hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Optimizer {
    pub rule: Rule,
    /// The L2 coefficient added to the gradient as `g + weight_decay·p` (PyTorch's
    /// `weight_decay`); 0 for none.
    pub weight_decay: f64,
    /// Decay the weight itself instead, `p ← p − lr·weight_decay·p` before the rule
    /// (AdamW's decoupled weight decay).
    pub decoupled_weight_decay: bool,
    /// Scale all gradients together so their global L2 norm is at most this
    /// (`torch.nn.utils.clip_grad_norm_`).
    pub max_grad_norm: Option<f64>,
    /// After the step, scale each parameter so its L2 norm is at most this: the
    /// projection onto a norm ball of projected gradient descent.
    pub max_param_norm: Option<f64>,
    /// A running average of the parameters, kept for evaluation.
    pub averaging: Option<Averaging>,
}

impl Optimizer {
    /// `rule` without modifiers, unchecked (`check` or `run` check it).
    pub fn new(rule: Rule) -> Optimizer {
        Optimizer {
            rule,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            max_grad_norm: None,
            max_param_norm: None,
            averaging: None,
        }
    }

    /// Stochastic gradient descent with a learning rate checked by `check`.
    pub fn sgd(learning_rate: f64) -> Result<Optimizer, OptimizerError> {
        let optimizer = Optimizer::new(Rule::sgd(learning_rate));
        optimizer.check()?;
        Ok(optimizer)
    }

    /// L2 weight decay added to the gradient.
    pub fn with_weight_decay(self, weight_decay: f64) -> Optimizer {
        Optimizer {
            weight_decay,
            decoupled_weight_decay: false,
            ..self
        }
    }

    /// Decoupled weight decay (AdamW's).
    pub fn with_decoupled_weight_decay(self, weight_decay: f64) -> Optimizer {
        Optimizer {
            weight_decay,
            decoupled_weight_decay: true,
            ..self
        }
    }

    pub fn with_max_grad_norm(self, max_norm: f64) -> Optimizer {
        Optimizer {
            max_grad_norm: Some(max_norm),
            ..self
        }
    }

    pub fn with_max_param_norm(self, radius: f64) -> Optimizer {
        Optimizer {
            max_param_norm: Some(radius),
            ..self
        }
    }

    pub fn with_averaging(self, averaging: Averaging) -> Optimizer {
        Optimizer {
            averaging: Some(averaging),
            ..self
        }
    }

    /// Checks every hyperparameter in f32, the precision of the generated update, not
    /// in the f64 it is given in. A learning rate, eps, norm bound must round to a
    /// positive normal f32: 1e300 is finite in f64 but rounds to `inf`, which turns
    /// every weight into ±inf or NaN after one step; one below about 1e-45 rounds to 0
    /// and nothing trains; a subnormal one keeps only a few bits and is flushed to
    /// zero by some hardware. Decay rates (momentum, betas, alpha, an EMA's decay)
    /// must round into [0, 1): 0.999999999 rounds to 1, where Adam's bias correction
    /// divides by zero. A weight decay must round to a finite number ≥ 0.
    pub fn check(&self) -> Result<(), OptimizerError> {
        check::optimizer(self)
    }

    /// The state parameters `run` adds to `forward` (a graph before autodiff or
    /// after, with the same parameters), in the order it adds them, with their types
    /// and initial values.
    pub fn state(&self, forward: &Graph) -> Vec<StateParam> {
        state::list(self, forward)
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
    /// A hyperparameter outside its range once rounded to f32 (user's mistake).
    #[error("{name} {value:?} rounds to {rounded:?} in f32; expected {expected}")]
    OutOfRange {
        name: &'static str,
        value: f64,
        rounded: f32,
        expected: &'static str,
    },
    /// An optimizer name kiln does not know (user's mistake).
    #[error("unknown optimizer {0:?}; expected sgd, adam, adamw, adagrad, rmsprop or signsgd")]
    UnknownRule(String),
    /// Nesterov momentum with a momentum of 0, which PyTorch rejects too (user's
    /// mistake).
    #[error("nesterov momentum needs a momentum above 0")]
    NesterovWithoutMomentum,
    /// Nesterov momentum with dampening (PyTorch refuses it too).
    #[error("nesterov momentum needs a dampening of 0")]
    NesterovWithDampening,
    /// An optimizer state parameter would take a name the graph already uses
    /// (user's mistake: a model parameter or input with an optimizer state's name).
    #[error("the optimizer state {0:?} has the name of a parameter or input of the model")]
    StateNameTaken(String),
    /// Building the update failed: a kiln bug, since the gradient has the parameter's type.
    #[error("building the update: {0}")]
    Ir(#[from] IrError),
}

impl OptimizerError {
    /// The hyperparameter a user's mistake is about, by PyTorch's argument name
    /// (`lr`, `betas`, `max_grad_norm`, …), so a caller can point at it.
    pub fn argument(&self) -> Option<&'static str> {
        let name = match self {
            OptimizerError::BadHyperparameter { name, .. }
            | OptimizerError::OutOfRange { name, .. } => *name,
            OptimizerError::NesterovWithoutMomentum => return Some("nesterov"),
            OptimizerError::NesterovWithDampening => return Some("dampening"),
            _ => return None,
        };
        Some(match name {
            "learning rate" => "lr",
            "beta1" | "beta2" => "betas",
            "weight decay" => "weight_decay",
            "max grad norm" => "max_grad_norm",
            "max param norm" => "max_param_norm",
            "averaging decay" => "polyak",
            "learning rate decay" => "lr_decay",
            "initial accumulator value" => "initial_accumulator_value",
            other => other,
        })
    }
}

/// One parameter's inputs to its update, after the gradient modifiers.
struct ParamStep {
    param: NodeId,
    grad: NodeId,
    /// The step counter after this step (1 on the first), when the rule needs it.
    step: Option<NodeId>,
    /// The parameter's state by slot (`"adam.exp_avg"`).
    state: BTreeMap<&'static str, NodeId>,
}

impl ParamStep {
    fn slot(&self, slot: &str) -> NodeId {
        *self
            .state
            .get(slot)
            .expect("Optimizer::state lists every slot its rule reads")
    }
}

/// Adds one update per parameter (and per state parameter) and removes the `grad.*`
/// outputs it consumed.
pub fn run(graph: &Graph, optimizer: &Optimizer) -> Result<Graph, OptimizerError> {
    optimizer.check()?;
    let mut graph = graph.clone();
    // Frozen parameters keep their value, or the update the model gives them.
    let params = graph.trainable_params();
    // The consumed gradients are removed in one pass at the end: one removal at a
    // time is quadratic in the number of parameters.
    let mut consumed = BTreeSet::new();
    let mut grads = Vec::with_capacity(params.len());
    for &param in &params {
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
        grads.push(grad);
        consumed.insert(output);
    }
    let mut steps = state::add(&mut graph, optimizer, &params)?;
    let step = match graph.param_by_name(STEP_NAME) {
        Some(counter) => {
            let one = graph.constant_like(1.0, counter)?;
            let next = graph.add_(counter, one)?;
            graph.set_update(counter, next)?;
            Some(next)
        }
        None => None,
    };
    if let Some(max_norm) = optimizer.max_grad_norm {
        rules::clip_by_global_norm(&mut graph, &mut grads, max_norm)?;
    }
    for ((&param, grad), state) in params.iter().zip(grads).zip(steps.iter_mut()) {
        let input = ParamStep {
            param,
            grad,
            step,
            state: std::mem::take(state),
        };
        let updated = rules::step(&mut graph, optimizer, input)?;
        graph.set_update(param, updated)?;
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
            assert_eq!(Optimizer::sgd(good), Ok(Optimizer::new(Rule::sgd(good))));
        }
    }

    #[test]
    fn run_rejects_a_learning_rate_that_overflows_f32() {
        let mut graph = Graph::new("g");
        let weight = graph.parameter("w", TensorType::f32([2])).unwrap();
        graph.set_output(&grad_name("w"), weight).unwrap();
        let err = run(&graph, &Optimizer::new(Rule::sgd(1e39))).unwrap_err();
        assert!(
            matches!(err, OptimizerError::BadHyperparameter { value, .. } if value == 1e39),
            "{err}"
        );
        let stepped = run(&graph, &Optimizer::new(Rule::sgd(0.5))).unwrap();
        assert_eq!(stepped.updates().len(), 1);
    }

    /// The error `check` gives for `optimizer`.
    fn check_error(optimizer: Optimizer) -> String {
        optimizer.check().unwrap_err().to_string()
    }

    #[test]
    fn bad_hyperparameters_are_named() {
        let adam = |beta1, beta2, eps| {
            Optimizer::new(Rule::Adam {
                learning_rate: 1e-3,
                beta1,
                beta2,
                eps,
                amsgrad: false,
            })
        };
        let sgd = |momentum, dampening, nesterov| {
            Optimizer::new(Rule::Sgd {
                learning_rate: 0.1,
                momentum,
                dampening,
                nesterov,
            })
        };
        let cases = [
            (
                Optimizer::new(Rule::adam(-0.1)),
                "learning rate -0.1 rounds to -0.1 in f32; it must round to a positive normal",
            ),
            (
                adam(1.0, 0.999, 1e-8),
                "beta1 1.0 rounds to 1.0 in f32; expected a number in [0, 1) after rounding to f32",
            ),
            // Below 1 in f64, but 1 in f32, where the bias correction divides by 0.
            (
                adam(0.9, 0.999999999, 1e-8),
                "beta2 0.999999999 rounds to 1.0 in f32; expected a number in [0, 1)",
            ),
            (adam(-0.5, 0.999, 1e-8), "beta1 -0.5 rounds to -0.5"),
            (
                adam(0.9, 0.999, 0.0),
                "eps 0.0 rounds to 0.0 in f32; it must round",
            ),
            (
                Optimizer::new(Rule::RmsProp {
                    learning_rate: 0.01,
                    alpha: 1.0,
                    eps: 1e-8,
                    momentum: 0.0,
                    centered: false,
                }),
                "alpha 1.0 rounds to 1.0",
            ),
            (
                Optimizer::new(Rule::RmsProp {
                    learning_rate: 0.01,
                    alpha: 0.99,
                    eps: 1e-8,
                    momentum: -0.5,
                    centered: false,
                }),
                "momentum -0.5 rounds to -0.5",
            ),
            (
                Optimizer::new(Rule::Adagrad {
                    learning_rate: 0.01,
                    lr_decay: 0.0,
                    initial_accumulator_value: 0.0,
                    eps: -1e-10,
                }),
                "eps -1e-10 rounds",
            ),
            (
                Optimizer::new(Rule::Adagrad {
                    learning_rate: 0.01,
                    lr_decay: f64::NAN,
                    initial_accumulator_value: 0.0,
                    eps: 1e-10,
                }),
                "learning rate decay NaN rounds to NaN in f32; expected a finite number ≥ 0",
            ),
            (
                Optimizer::new(Rule::Adagrad {
                    learning_rate: 0.01,
                    lr_decay: 0.0,
                    initial_accumulator_value: -1.0,
                    eps: 1e-10,
                }),
                "initial accumulator value -1.0 rounds to -1.0",
            ),
            (sgd(-0.1, 0.0, false), "momentum -0.1 rounds to -0.1"),
            (sgd(0.9, 1.0, false), "dampening 1.0 rounds to 1.0"),
            (
                sgd(0.0, 0.0, true),
                "nesterov momentum needs a momentum above 0",
            ),
            (
                sgd(0.9, 0.1, true),
                "nesterov momentum needs a dampening of 0",
            ),
            (
                Optimizer::new(Rule::sgd(0.1)).with_weight_decay(-1e-4),
                "weight decay -0.0001 rounds to -0.0001 in f32; expected a finite number ≥ 0",
            ),
            (
                Optimizer::new(Rule::sgd(0.1)).with_max_grad_norm(0.0),
                "max grad norm 0.0 rounds to 0.0",
            ),
            (
                Optimizer::new(Rule::sgd(0.1)).with_max_param_norm(f64::INFINITY),
                "max param norm inf rounds to inf",
            ),
            (
                Optimizer::new(Rule::sgd(0.1)).with_averaging(Averaging::Ema { decay: 1.0 }),
                "averaging decay 1.0 rounds to 1.0",
            ),
        ];
        let mut arguments = Vec::new();
        for (optimizer, expected) in cases {
            let message = check_error(optimizer);
            assert!(message.starts_with(expected), "{message}");
            arguments.push(optimizer.check().unwrap_err().argument());
        }
        // By PyTorch's argument names, as the model language writes them.
        assert_eq!(
            arguments.into_iter().flatten().collect::<Vec<_>>(),
            [
                "lr",
                "betas",
                "betas",
                "betas",
                "eps",
                "alpha",
                "momentum",
                "eps",
                "lr_decay",
                "initial_accumulator_value",
                "momentum",
                "dampening",
                "nesterov",
                "dampening",
                "weight_decay",
                "max_grad_norm",
                "max_param_norm",
                "polyak"
            ]
        );
        let good = Optimizer::new(Rule::adam(1e-3))
            .with_decoupled_weight_decay(0.01)
            .with_max_grad_norm(1.0)
            .with_max_param_norm(10.0)
            .with_averaging(Averaging::Ema { decay: 0.999 });
        assert_eq!(good.check(), Ok(()));
    }

    fn two_params() -> Graph {
        let mut graph = Graph::new("g");
        for (name, shape) in [("fc.weight", vec![2, 3]), ("fc.bias", vec![3])] {
            let param = graph.parameter(name, TensorType::f32(shape)).unwrap();
            graph.set_output(&grad_name(name), param).unwrap();
        }
        graph
    }

    #[test]
    fn the_pass_adds_exactly_the_listed_state_with_stable_names() {
        let graph = two_params();
        let amsgrad = Rule::Adam {
            learning_rate: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            amsgrad: true,
        };
        let optimizer = Optimizer::new(amsgrad).with_averaging(Averaging::Uniform);
        let state = optimizer.state(&graph);
        let names: Vec<&str> = state.iter().map(|entry| entry.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "fc.weight.adam.exp_avg",
                "fc.weight.adam.exp_avg_sq",
                "fc.weight.adam.max_exp_avg_sq",
                "fc.weight.average",
                "fc.bias.adam.exp_avg",
                "fc.bias.adam.exp_avg_sq",
                "fc.bias.adam.max_exp_avg_sq",
                "fc.bias.average",
                "optimizer.step",
            ]
        );
        assert_eq!(state[3].init, StateInit::ValueOf("fc.weight".to_string()));
        assert_eq!(state[8].init, StateInit::Zeros);
        assert_eq!(state[8].ty, TensorType::f32(Vec::<usize>::new()));
        let stepped = run(&graph, &optimizer).unwrap();
        let added: Vec<&str> = stepped.params()[2..]
            .iter()
            .map(|&param| stepped.leaf_name(param).unwrap())
            .collect();
        assert_eq!(added, names);
        // Every parameter and every state buffer is updated by the step.
        assert_eq!(stepped.updates().len(), stepped.params().len());
        assert!(stepped.outputs().is_empty());
        // Plain SGD keeps no state.
        assert!(Optimizer::new(Rule::sgd(0.1)).state(&graph).is_empty());
    }

    #[test]
    fn a_model_parameter_with_a_state_name_is_an_error() {
        let mut graph = two_params();
        graph
            .parameter("optimizer.step", TensorType::f32(Vec::<usize>::new()))
            .unwrap();
        let step = graph.param_by_name("optimizer.step").unwrap();
        graph
            .set_output(&grad_name("optimizer.step"), step)
            .unwrap();
        let err = run(&graph, &Optimizer::new(Rule::adam(1e-3))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the optimizer state \"optimizer.step\" has the name of a parameter or input of the model"
        );
    }
}
