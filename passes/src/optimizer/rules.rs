//! One function per update rule and per modifier, each built from graph ops; the
//! update of a state buffer is set where the buffer is computed.

use super::state::AVERAGE_SLOT;
use super::{Averaging, Optimizer, ParamStep, Rule};
use kiln_ir::{BinaryOp, CmpOp, Graph, IrError, NodeId};

/// The parameter's new value under `optimizer`: weight decay, the rule, the
/// projection; sets the update of its running average too.
pub(super) fn step(
    graph: &mut Graph,
    optimizer: &Optimizer,
    mut input: ParamStep,
) -> Result<NodeId, IrError> {
    let learning_rate = optimizer.rule.learning_rate();
    if optimizer.weight_decay != 0.0 {
        if optimizer.decoupled_weight_decay {
            // PyTorch's AdamW: `p.mul_(1 - lr * weight_decay)` before the rule.
            input.param = times(
                graph,
                1.0 - learning_rate * optimizer.weight_decay,
                input.param,
            )?;
        } else {
            let decay = times(graph, optimizer.weight_decay, input.param)?;
            input.grad = graph.add_(input.grad, decay)?;
        }
    }
    let mut updated = match optimizer.rule {
        Rule::Sgd {
            learning_rate,
            momentum,
            dampening,
            nesterov,
        } => sgd(
            graph,
            &input,
            learning_rate,
            [momentum, dampening],
            nesterov,
        )?,
        Rule::Adagrad {
            learning_rate,
            lr_decay,
            eps,
            ..
        } => adagrad(graph, &input, learning_rate, lr_decay, eps)?,
        Rule::RmsProp {
            learning_rate,
            alpha,
            eps,
            momentum,
            centered,
        } => rmsprop(
            graph,
            &input,
            learning_rate,
            [alpha, momentum],
            eps,
            centered,
        )?,
        Rule::Adam {
            learning_rate,
            beta1,
            beta2,
            eps,
            amsgrad,
        } => adam(graph, &input, learning_rate, [beta1, beta2], eps, amsgrad)?,
        Rule::SignSgd { learning_rate } => {
            let sign = graph.sign(input.grad)?;
            descend(graph, input.param, learning_rate, sign)?
        }
    };
    if let Some(radius) = optimizer.max_param_norm {
        updated = project(graph, updated, radius)?;
    }
    if let Some(averaging) = optimizer.averaging {
        average(graph, &input, averaging, updated)?;
    }
    Ok(updated)
}

fn sgd(
    graph: &mut Graph,
    input: &ParamStep,
    learning_rate: f64,
    [momentum, dampening]: [f64; 2],
    nesterov: bool,
) -> Result<NodeId, IrError> {
    if momentum == 0.0 {
        return descend(graph, input.param, learning_rate, input.grad);
    }
    let buffer = input.slot("sgd.momentum_buffer");
    let carried = times(graph, momentum, buffer)?;
    let fresh = if dampening == 0.0 {
        input.grad
    } else {
        // PyTorch starts the buffer at the first gradient itself, undamped: the
        // factor is 1 at step 1 and 1 − dampening after.
        let step = input
            .step
            .expect("Optimizer::state adds the step counter for dampening");
        let one = graph.constant_like(1.0, step)?;
        let first = graph.compare(CmpOp::Eq, step, one)?;
        let damped = graph.constant_like(1.0 - dampening, step)?;
        let factor = graph.select(first, one, damped)?;
        let factor = spread(graph, factor, input.grad)?;
        graph.mul(factor, input.grad)?
    };
    let velocity = graph.add_(carried, fresh)?;
    graph.set_update(buffer, velocity)?;
    let direction = if nesterov {
        let ahead = times(graph, momentum, velocity)?;
        graph.add_(input.grad, ahead)?
    } else {
        velocity
    };
    descend(graph, input.param, learning_rate, direction)
}

fn adagrad(
    graph: &mut Graph,
    input: &ParamStep,
    learning_rate: f64,
    lr_decay: f64,
    eps: f64,
) -> Result<NodeId, IrError> {
    let sum = input.slot("adagrad.sum");
    let square = graph.mul(input.grad, input.grad)?;
    let accumulated = graph.add_(sum, square)?;
    graph.set_update(sum, accumulated)?;
    let mut direction = normalized(graph, input.grad, accumulated, eps)?;
    if lr_decay != 0.0 {
        // The rate at step t is lr / (1 + (t − 1)·lr_decay): the direction is divided
        // by that factor and the constant rate applied by `descend`.
        let step = input
            .step
            .expect("Optimizer::state adds the step counter for lr_decay");
        let before = plus(graph, step, -1.0)?;
        let decayed = times(graph, lr_decay, before)?;
        let factor = plus(graph, decayed, 1.0)?;
        let factor = spread(graph, factor, direction)?;
        direction = graph.div(direction, factor)?;
    }
    descend(graph, input.param, learning_rate, direction)
}

fn rmsprop(
    graph: &mut Graph,
    input: &ParamStep,
    learning_rate: f64,
    [alpha, momentum]: [f64; 2],
    eps: f64,
    centered: bool,
) -> Result<NodeId, IrError> {
    let square_avg = input.slot("rmsprop.square_avg");
    let square = graph.mul(input.grad, input.grad)?;
    let averaged = moving_average(graph, alpha, square_avg, square)?;
    graph.set_update(square_avg, averaged)?;
    let second_moment = if centered {
        // The variance estimate v − m², m the running mean of the gradient.
        let grad_avg = input.slot("rmsprop.grad_avg");
        let mean = moving_average(graph, alpha, grad_avg, input.grad)?;
        graph.set_update(grad_avg, mean)?;
        let mean_square = graph.mul(mean, mean)?;
        graph.sub(averaged, mean_square)?
    } else {
        averaged
    };
    let direction = normalized(graph, input.grad, second_moment, eps)?;
    if momentum == 0.0 {
        return descend(graph, input.param, learning_rate, direction);
    }
    let buffer = input.slot("rmsprop.momentum_buffer");
    let carried = times(graph, momentum, buffer)?;
    let velocity = graph.add_(carried, direction)?;
    graph.set_update(buffer, velocity)?;
    descend(graph, input.param, learning_rate, velocity)
}

fn adam(
    graph: &mut Graph,
    input: &ParamStep,
    learning_rate: f64,
    [beta1, beta2]: [f64; 2],
    eps: f64,
    amsgrad: bool,
) -> Result<NodeId, IrError> {
    let step = input
        .step
        .expect("Optimizer::state adds the step counter for Adam");
    let (exp_avg, exp_avg_sq) = (input.slot("adam.exp_avg"), input.slot("adam.exp_avg_sq"));
    let first = moving_average(graph, beta1, exp_avg, input.grad)?;
    graph.set_update(exp_avg, first)?;
    let square = graph.mul(input.grad, input.grad)?;
    let mut second = moving_average(graph, beta2, exp_avg_sq, square)?;
    graph.set_update(exp_avg_sq, second)?;
    if amsgrad {
        let max_exp_avg_sq = input.slot("adam.max_exp_avg_sq");
        second = graph.max(max_exp_avg_sq, second)?;
        graph.set_update(max_exp_avg_sq, second)?;
    }
    let first = bias_corrected(graph, first, beta1, step)?;
    let second = bias_corrected(graph, second, beta2, step)?;
    let direction = normalized(graph, first, second, eps)?;
    descend(graph, input.param, learning_rate, direction)
}

/// Clips every gradient by the same factor so that their global L2 norm is at most
/// `max_norm`, as `torch.nn.utils.clip_grad_norm_`: `g · min(1, max_norm / (‖g‖ + 1e-6))`.
pub(super) fn clip_by_global_norm(
    graph: &mut Graph,
    grads: &mut [NodeId],
    max_norm: f64,
) -> Result<(), IrError> {
    let Some((&first, rest)) = grads.split_first() else {
        return Ok(());
    };
    let mut total = squared_norm(graph, first)?;
    for &grad in rest {
        let squares = squared_norm(graph, grad)?;
        total = graph.add_(total, squares)?;
    }
    let norm = graph.sqrt(total)?;
    let guarded = plus(graph, norm, 1e-6)?;
    let bound = graph.constant_like(max_norm, guarded)?;
    let ratio = graph.div(bound, guarded)?;
    let one = graph.constant_like(1.0, ratio)?;
    let factor = graph.min(ratio, one)?;
    for grad in grads.iter_mut() {
        let spread = spread(graph, factor, *grad)?;
        *grad = graph.mul(*grad, spread)?;
    }
    Ok(())
}

/// Scales `param` onto the L2 ball of `radius` when outside it:
/// `p · radius / max(‖p‖, radius)`, exactly `p` inside.
fn project(graph: &mut Graph, param: NodeId, radius: f64) -> Result<NodeId, IrError> {
    let squares = squared_norm(graph, param)?;
    let norm = graph.sqrt(squares)?;
    let bound = graph.constant_like(radius, norm)?;
    let larger = graph.max(norm, bound)?;
    let factor = graph.div(bound, larger)?;
    let spread = spread(graph, factor, param)?;
    graph.mul(param, spread)
}

/// Sets the update of the parameter's running average towards its new value.
fn average(
    graph: &mut Graph,
    input: &ParamStep,
    averaging: Averaging,
    updated: NodeId,
) -> Result<(), IrError> {
    let average = input.slot(AVERAGE_SLOT);
    let next = match averaging {
        Averaging::Ema { decay } => moving_average(graph, decay, average, updated)?,
        Averaging::Uniform => {
            // After step t the average covers t + 1 values, the initial one included.
            let step = input
                .step
                .expect("Optimizer::state adds the step counter for a uniform average");
            let count = plus(graph, step, 1.0)?;
            let count = spread(graph, count, average)?;
            let gap = graph.sub(updated, average)?;
            let share = graph.div(gap, count)?;
            graph.add_(average, share)?
        }
    };
    graph.set_update(average, next)
}

// ---- helpers -------------------------------------------------------------------

/// `value · x`.
fn times(graph: &mut Graph, value: f64, x: NodeId) -> Result<NodeId, IrError> {
    let factor = graph.constant_like(value, x)?;
    graph.mul(factor, x)
}

/// `x + value`.
fn plus(graph: &mut Graph, x: NodeId, value: f64) -> Result<NodeId, IrError> {
    let constant = graph.constant_like(value, x)?;
    graph.add_(x, constant)
}

/// `param − learning_rate · direction`.
fn descend(
    graph: &mut Graph,
    param: NodeId,
    learning_rate: f64,
    direction: NodeId,
) -> Result<NodeId, IrError> {
    let rate = graph.constant_like(learning_rate, param)?;
    let step = graph.mul(rate, direction)?;
    graph.sub(param, step)
}

/// `numerator / (√second_moment + eps)`, with eps outside the root as in PyTorch.
fn normalized(
    graph: &mut Graph,
    numerator: NodeId,
    second_moment: NodeId,
    eps: f64,
) -> Result<NodeId, IrError> {
    let root = graph.sqrt(second_moment)?;
    let denominator = plus(graph, root, eps)?;
    graph.div(numerator, denominator)
}

/// `decay · old + (1 − decay) · new`.
fn moving_average(
    graph: &mut Graph,
    decay: f64,
    old: NodeId,
    new: NodeId,
) -> Result<NodeId, IrError> {
    let kept = times(graph, decay, old)?;
    let added = times(graph, 1.0 - decay, new)?;
    graph.add_(kept, added)
}

/// `moment / (1 − betaᵗ)` for the scalar step `t`.
fn bias_corrected(
    graph: &mut Graph,
    moment: NodeId,
    beta: f64,
    step: NodeId,
) -> Result<NodeId, IrError> {
    let base = graph.constant_like(beta, step)?;
    let power = graph.binary(BinaryOp::Pow, base, step)?;
    let one = graph.constant_like(1.0, step)?;
    let correction = graph.sub(one, power)?;
    let correction = spread(graph, correction, moment)?;
    graph.div(moment, correction)
}

/// The sum of the squares of `x`'s elements, as a scalar.
fn squared_norm(graph: &mut Graph, x: NodeId) -> Result<NodeId, IrError> {
    let squares = graph.mul(x, x)?;
    let rank = graph.ty(x).rank();
    if rank == 0 {
        return Ok(squares);
    }
    let axes: Vec<usize> = (0..rank).collect();
    let summed = graph.reduce_sum(squares, &axes)?;
    graph.reshape(summed, Vec::<usize>::new())
}

/// The scalar `scalar` broadcast to the shape of `like`.
fn spread(graph: &mut Graph, scalar: NodeId, like: NodeId) -> Result<NodeId, IrError> {
    let shape = graph.ty(like).shape.clone();
    if shape.is_empty() {
        return Ok(scalar);
    }
    let ones = graph.reshape(scalar, vec![1; shape.len()])?;
    graph.broadcast(ones, shape)
}
