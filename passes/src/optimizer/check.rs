//! The hyperparameter checks, in f32 (see `Optimizer::check` for why).

use super::{Averaging, Optimizer, OptimizerError, Rule};

/// Rounds to a positive normal f32: learning rates, eps, norm bounds.
fn positive(name: &'static str, value: f64) -> Result<(), OptimizerError> {
    let rounded = value as f32;
    if rounded.is_normal() && rounded > 0.0 {
        return Ok(());
    }
    Err(OptimizerError::BadHyperparameter {
        name,
        value,
        rounded,
    })
}

/// Rounds into [0, 1): decay rates.
fn fraction(name: &'static str, value: f64) -> Result<(), OptimizerError> {
    let rounded = value as f32;
    if (0.0..1.0).contains(&rounded) {
        return Ok(());
    }
    Err(OptimizerError::OutOfRange {
        name,
        value,
        rounded,
        expected: "a number in [0, 1) after rounding to f32",
    })
}

/// Rounds to a finite f32 ≥ 0: weight decay, AdaGrad's learning-rate decay and
/// initial accumulator.
fn non_negative(name: &'static str, value: f64) -> Result<(), OptimizerError> {
    let rounded = value as f32;
    if rounded.is_finite() && rounded >= 0.0 {
        return Ok(());
    }
    Err(OptimizerError::OutOfRange {
        name,
        value,
        rounded,
        expected: "a finite number ≥ 0",
    })
}

fn rule(rule: &Rule) -> Result<(), OptimizerError> {
    positive("learning rate", rule.learning_rate())?;
    match *rule {
        Rule::Sgd {
            momentum,
            dampening,
            nesterov,
            ..
        } => {
            fraction("momentum", momentum)?;
            fraction("dampening", dampening)?;
            if nesterov && momentum == 0.0 {
                return Err(OptimizerError::NesterovWithoutMomentum);
            }
            if nesterov && dampening != 0.0 {
                return Err(OptimizerError::NesterovWithDampening);
            }
            Ok(())
        }
        Rule::Adagrad {
            lr_decay,
            initial_accumulator_value,
            eps,
            ..
        } => {
            non_negative("learning rate decay", lr_decay)?;
            non_negative("initial accumulator value", initial_accumulator_value)?;
            positive("eps", eps)
        }
        Rule::RmsProp {
            alpha,
            eps,
            momentum,
            ..
        } => {
            fraction("alpha", alpha)?;
            fraction("momentum", momentum)?;
            positive("eps", eps)
        }
        Rule::Adam {
            beta1, beta2, eps, ..
        } => {
            fraction("beta1", beta1)?;
            fraction("beta2", beta2)?;
            positive("eps", eps)
        }
        Rule::SignSgd { .. } => Ok(()),
    }
}

pub(super) fn optimizer(optimizer: &Optimizer) -> Result<(), OptimizerError> {
    rule(&optimizer.rule)?;
    non_negative("weight decay", optimizer.weight_decay)?;
    if let Some(max_norm) = optimizer.max_grad_norm {
        positive("max grad norm", max_norm)?;
    }
    if let Some(radius) = optimizer.max_param_norm {
        positive("max param norm", radius)?;
    }
    if let Some(Averaging::Ema { decay }) = optimizer.averaging {
        fraction("averaging decay", decay)?;
    }
    Ok(())
}
