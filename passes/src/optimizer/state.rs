//! The optimizer state: the buffers a rule or modifier keeps between steps, as extra
//! parameters of the train-step graph, with stable names (checkpoints read and write
//! them by name) and the initial values a runtime gives them.
//!
//! A parameter `p`'s buffers are named `p.<rule>.<buffer>` after PyTorch's state
//! (`fc1.weight.adam.exp_avg`, `fc1.weight.adam.exp_avg_sq`,
//! `fc1.weight.adam.max_exp_avg_sq`, `fc1.weight.sgd.momentum_buffer`,
//! `fc1.weight.adagrad.sum`, `fc1.weight.rmsprop.square_avg`), its running average
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

/// The buffers `rule` keeps per parameter, in the order they are added.
fn rule_slots(rule: &Rule) -> &'static [&'static str] {
    match *rule {
        Rule::Sgd { momentum, .. } if momentum > 0.0 => &["sgd.momentum_buffer"],
        Rule::Sgd { .. } | Rule::SignSgd { .. } => &[],
        Rule::Adagrad { .. } => &["adagrad.sum"],
        Rule::RmsProp { .. } => &["rmsprop.square_avg"],
        Rule::Adam { amsgrad: false, .. } => &["adam.exp_avg", "adam.exp_avg_sq"],
        Rule::Adam { amsgrad: true, .. } => {
            &["adam.exp_avg", "adam.exp_avg_sq", "adam.max_exp_avg_sq"]
        }
    }
}

fn needs_step(optimizer: &Optimizer) -> bool {
    matches!(optimizer.rule, Rule::Adam { .. }) || optimizer.averaging == Some(Averaging::Uniform)
}

/// Every state parameter, per trained (not frozen) parameter in declaration order,
/// then the counter.
pub(super) fn list(optimizer: &Optimizer, graph: &Graph) -> Vec<StateParam> {
    let mut state = Vec::new();
    for param in graph.trainable_params() {
        let name = graph.leaf_name(param).expect("parameters are named");
        let ty = graph.ty(param);
        for &slot in rule_slots(&optimizer.rule) {
            state.push(StateParam {
                name: format!("{name}.{slot}"),
                param: Some(name.to_string()),
                slot,
                ty: ty.clone(),
                init: StateInit::Zeros,
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
