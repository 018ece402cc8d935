//! The optimizer state: the buffers a rule or modifier keeps between steps, as extra
//! parameters of the train-step graph, with stable names (checkpoints read and write
//! them by name) and the initial values a runtime gives them.
//!
//! A parameter `p`'s buffers are named `p.<rule>.<buffer>` after PyTorch's state
//! (`fc1.weight.adam.exp_avg`, `fc1.weight.adam.exp_avg_sq`,
//! `fc1.weight.adam.max_exp_avg_sq`, `fc1.weight.sgd.momentum_buffer`,
//! `fc1.weight.adagrad.sum`, `fc1.weight.rmsprop.square_avg`,
//! `fc1.weight.rmsprop.momentum_buffer`, `fc1.weight.rmsprop.grad_avg`), its running average
//! `p.average`; the step counter shared by all is `optimizer.step`.

use super::{Averaging, Optimizer, OptimizerError, Rule};
use kiln_ir::{Graph, NodeId, TensorType};
use std::collections::BTreeMap;

/// The name of the step counter: an f32 scalar, the number of steps taken (exact up
/// to 2^24 steps), kept when Adam's bias correction or a uniform average needs it.
pub const STEP_NAME: &str = "optimizer.step";

/// The slot of a parameter's running average (`Optimizer::averaging`).
pub(super) const AVERAGE_SLOT: &str = "average";

/// What a state parameter holds before the first step.
#[derive(Clone, Debug, PartialEq)]
pub enum StateInit {
    /// Zeros: moments, accumulators, momentum buffers, the step counter.
    Zeros,
    /// Every element this value: AdaGrad's `initial_accumulator_value`.
    Fill(f64),
    /// The initial value of the named model parameter (a running average).
    ValueOf(String),
}

/// One state parameter the optimizer pass adds.
#[derive(Clone, Debug, PartialEq)]
pub struct StateParam {
    /// `<param>.<slot>`, or [`STEP_NAME`].
    pub name: String,
    /// The model parameter it belongs to; `None` for the step counter.
    pub param: Option<String>,
    /// `adam.exp_avg`, `average`, …, or `step`.
    pub slot: &'static str,
    pub ty: TensorType,
    pub init: StateInit,
}

/// The buffers `rule` keeps per parameter, in the order they are added, each with
/// its initial value (every element).
fn rule_slots(rule: &Rule) -> Vec<(&'static str, f64)> {
    match *rule {
        Rule::Sgd { momentum, .. } if momentum > 0.0 => vec![("sgd.momentum_buffer", 0.0)],
        Rule::Sgd { .. } | Rule::SignSgd { .. } => vec![],
        Rule::Adagrad {
            initial_accumulator_value,
            ..
        } => vec![("adagrad.sum", initial_accumulator_value)],
        Rule::RmsProp {
            momentum, centered, ..
        } => {
            let mut slots = vec![("rmsprop.square_avg", 0.0)];
            if momentum > 0.0 {
                slots.push(("rmsprop.momentum_buffer", 0.0));
            }
            if centered {
                slots.push(("rmsprop.grad_avg", 0.0));
            }
            slots
        }
        Rule::Adam { amsgrad, .. } => {
            let mut slots = vec![("adam.exp_avg", 0.0), ("adam.exp_avg_sq", 0.0)];
            if amsgrad {
                slots.push(("adam.max_exp_avg_sq", 0.0));
            }
            slots
        }
    }
}

/// Whether the step counter is kept: Adam's bias correction, a uniform average,
/// AdaGrad's learning-rate decay, and SGD's dampening (whose first step differs).
fn needs_step(optimizer: &Optimizer) -> bool {
    let rule_needs = match optimizer.rule {
        Rule::Adam { .. } => true,
        Rule::Adagrad { lr_decay, .. } => lr_decay != 0.0,
        Rule::Sgd {
            momentum,
            dampening,
            ..
        } => momentum > 0.0 && dampening != 0.0,
        Rule::RmsProp { .. } | Rule::SignSgd { .. } => false,
    };
    rule_needs || optimizer.averaging == Some(Averaging::Uniform)
}

/// Every state parameter, per trained (not frozen) parameter in declaration order,
/// then the counter.
pub(super) fn list(optimizer: &Optimizer, graph: &Graph) -> Vec<StateParam> {
    let mut state = Vec::new();
    for param in graph.trainable_params() {
        let name = graph.leaf_name(param).expect("parameters are named");
        let ty = graph.ty(param);
        for (slot, value) in rule_slots(&optimizer.rule) {
            state.push(StateParam {
                name: format!("{name}.{slot}"),
                param: Some(name.to_string()),
                slot,
                ty: ty.clone(),
                init: if value == 0.0 {
                    StateInit::Zeros
                } else {
                    StateInit::Fill(value)
                },
            });
        }
        if optimizer.averaging.is_some() {
            state.push(StateParam {
                name: format!("{name}.{AVERAGE_SLOT}"),
                param: Some(name.to_string()),
                slot: AVERAGE_SLOT,
                ty: ty.clone(),
                init: StateInit::ValueOf(name.to_string()),
            });
        }
    }
    if needs_step(optimizer) {
        state.push(StateParam {
            name: STEP_NAME.to_string(),
            param: None,
            slot: "step",
            ty: TensorType::f32(Vec::<usize>::new()),
            init: StateInit::Zeros,
        });
    }
    state
}

/// Adds the parameters `list` names; returns, for each of `params`, its buffers by slot.
pub(super) fn add(
    graph: &mut Graph,
    optimizer: &Optimizer,
    params: &[NodeId],
) -> Result<Vec<BTreeMap<&'static str, NodeId>>, OptimizerError> {
    let position: BTreeMap<NodeId, usize> = params
        .iter()
        .enumerate()
        .map(|(index, &param)| (param, index))
        .collect();
    let mut slots = vec![BTreeMap::new(); params.len()];
    for entry in list(optimizer, graph) {
        if graph.param_by_name(&entry.name).is_some() || graph.input_by_name(&entry.name).is_some()
        {
            return Err(OptimizerError::StateNameTaken(entry.name));
        }
        let node = graph.parameter(&entry.name, entry.ty)?;
        if let Some(owner) = entry
            .param
            .as_deref()
            .and_then(|name| graph.param_by_name(name))
        {
            let index = position[&owner];
            slots[index].insert(entry.slot, node);
        }
    }
    Ok(slots)
}
