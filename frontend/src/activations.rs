//! Activation functions and softmax, with PyTorch's names, arguments and defaults,
//! built from IR primitives so that autodiff derives their gradients and the
//! rewriter sees through them.
//!
//! Each is elementwise unless it says otherwise. Those that are one op of the IR
//! (`relu`, `sigmoid`, `tanh`, `softplus`) inherit its numeric contract (see
//! `kiln_ir::scalar`); the others are short compositions, written out below.

use crate::builder::{Context, FrontendError, ModelBuilder};
use kiln_ir::{CmpOp, NodeId, UnaryOp};

/// `max(x, 0)`; relu of NaN and of -0 is +0.
pub fn relu(builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
    unary(builder, UnaryOp::Relu, x)
}

/// The logistic function `1 / (1 + e^-x)`.
pub fn sigmoid(builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
    unary(builder, UnaryOp::Sigmoid, x)
}

pub fn tanh(builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
    unary(builder, UnaryOp::Tanh, x)
}

/// `ln(1 + e^x)` (PyTorch's `Softplus` with `beta = 1`, computed without its
/// linear shortcut above `threshold`: the op is stable in both tails).
pub fn softplus(builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
    unary(builder, UnaryOp::Softplus, x)
}

/// `x > 0 ? x : alpha·(e^x − 1)` (PyTorch's default `alpha` is 1.0), with `expm1` so
/// that small negative inputs keep their precision.
pub fn elu(builder: &mut ModelBuilder, x: NodeId, alpha: f64) -> Result<NodeId, FrontendError> {
    let context = "elu";
    let graph = builder.graph();
    let zero = graph.constant_like(0.0, x).context(context)?;
    let positive = graph.compare(CmpOp::Gt, x, zero).context(context)?;
    let curve = graph.expm1(x).context(context)?;
    let alpha = graph.constant_like(alpha, x).context(context)?;
    let scaled = graph.mul(alpha, curve).context(context)?;
    graph.select(positive, x, scaled).context(context)
}

/// `x > 0 ? x : negative_slope·x` (PyTorch's default slope is 0.01).
pub fn leaky_relu(
    builder: &mut ModelBuilder,
    x: NodeId,
    negative_slope: f64,
) -> Result<NodeId, FrontendError> {
    let context = "leaky_relu";
    let graph = builder.graph();
    let zero = graph.constant_like(0.0, x).context(context)?;
    let positive = graph.compare(CmpOp::Gt, x, zero).context(context)?;
    let slope = graph.constant_like(negative_slope, x).context(context)?;
    let scaled = graph.mul(slope, x).context(context)?;
    graph.select(positive, x, scaled).context(context)
}

/// GELU, `x·Φ(x) = x/2·(1 + erf(x/√2))`: PyTorch's default (`approximate='none'`).
pub fn gelu(builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
    let context = "gelu";
    let graph = builder.graph();
    let scale = graph
        .constant_like(std::f64::consts::FRAC_1_SQRT_2, x)
        .context(context)?;
    let scaled = graph.mul(x, scale).context(context)?;
    let erf = graph.erf(scaled).context(context)?;
    let one = graph.constant_like(1.0, x).context(context)?;
    let cdf = graph.add_(one, erf).context(context)?;
    let half = graph.constant_like(0.5, x).context(context)?;
    let half_x = graph.mul(half, x).context(context)?;
    graph.mul(half_x, cdf).context(context)
}

/// GELU's tanh approximation, `x/2·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`: PyTorch's
/// `approximate='tanh'`.
pub fn gelu_tanh(builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
    let context = "gelu_tanh";
    let graph = builder.graph();
    let square = graph.mul(x, x).context(context)?;
    let cube = graph.mul(square, x).context(context)?;
    let coefficient = graph.constant_like(0.044715, x).context(context)?;
    let cubic = graph.mul(coefficient, cube).context(context)?;
    let inner = graph.add_(x, cubic).context(context)?;
    let sqrt_2_over_pi = (2.0 / std::f64::consts::PI).sqrt();
    let scale = graph.constant_like(sqrt_2_over_pi, x).context(context)?;
    let argument = graph.mul(scale, inner).context(context)?;
    let tanh = graph.tanh(argument).context(context)?;
    let one = graph.constant_like(1.0, x).context(context)?;
    let sum = graph.add_(one, tanh).context(context)?;
    let half = graph.constant_like(0.5, x).context(context)?;
    let half_x = graph.mul(half, x).context(context)?;
    graph.mul(half_x, sum).context(context)
}

/// The Heaviside step `x > 0 ? 1 : 0` (the perceptron's unit); its gradient is zero.
pub fn heaviside(builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
    let context = "heaviside";
    let graph = builder.graph();
    let zero = graph.constant_like(0.0, x).context(context)?;
    let one = graph.constant_like(1.0, x).context(context)?;
    let positive = graph.compare(CmpOp::Gt, x, zero).context(context)?;
    graph.select(positive, one, zero).context(context)
}

/// `min(max(x, min), max)`, as PyTorch's `clamp`: NaN stays NaN, and the gradient
/// flows where the value was not clamped.
pub fn clamp(
    builder: &mut ModelBuilder,
    x: NodeId,
    min: f64,
    max: f64,
) -> Result<NodeId, FrontendError> {
    let context = "clamp";
    if min.is_nan() || max.is_nan() || min > max {
        return Err(FrontendError::Argument {
            context: context.to_string(),
            message: format!("bounds [{min}, {max}] must be ordered numbers"),
        });
    }
    let graph = builder.graph();
    let low = graph.constant_like(min, x).context(context)?;
    let high = graph.constant_like(max, x).context(context)?;
    let raised = graph.max(x, low).context(context)?;
    graph.min(raised, high).context(context)
}

/// Maxout over groups of `pieces` consecutive features of the last axis:
/// `[.., k·pieces] -> [.., k]`, each output the maximum of its group.
pub fn maxout(
    builder: &mut ModelBuilder,
    x: NodeId,
    pieces: usize,
) -> Result<NodeId, FrontendError> {
    let context = "maxout";
    let ty = builder.ty(x)?.clone();
    let features = ty.shape.last().copied();
    let groups = match features {
        Some(features) if pieces > 0 && features % pieces == 0 => features / pieces,
        _ => {
            return Err(FrontendError::Operand {
                context: context.to_string(),
                expected: format!("a last axis divisible into groups of {pieces} (pieces ≥ 1)"),
                found: ty,
            })
        }
    };
    let mut grouped = ty.shape.clone();
    grouped.pop();
    let mut out = grouped.clone();
    out.push(groups);
    grouped.extend([groups, pieces]);
    let last = grouped.len() - 1;
    let graph = builder.graph();
    let x = graph.reshape(x, grouped).context(context)?;
    let max = graph.reduce_max(x, &[last]).context(context)?;
    graph.reshape(max, out).context(context)
}

/// Softmax along `axis` (negative counts from the end, as PyTorch's `dim`),
/// stabilised by subtracting the maximum along it.
pub fn softmax(
    builder: &mut ModelBuilder,
    x: NodeId,
    axis: isize,
) -> Result<NodeId, FrontendError> {
    let context = "softmax";
    let parts = shifted_exponentials(builder, x, axis, context)?;
    let graph = builder.graph();
    let total = graph.broadcast(parts.total, parts.shape).context(context)?;
    graph.div(parts.exp, total).context(context)
}

/// `log(softmax(x))` along `axis`, as `x − max − log Σ e^(x − max)`, which stays
/// finite where softmax underflows to 0.
pub fn log_softmax(
    builder: &mut ModelBuilder,
    x: NodeId,
    axis: isize,
) -> Result<NodeId, FrontendError> {
    let context = "log_softmax";
    let parts = shifted_exponentials(builder, x, axis, context)?;
    let graph = builder.graph();
    let log_total = graph.log(parts.total).context(context)?;
    let log_total = graph.broadcast(log_total, parts.shape).context(context)?;
    graph.sub(parts.shifted, log_total).context(context)
}

/// What softmax and log-softmax share: `x − max`, its exponentials and their sum
/// along the axis (extent 1 there), with `x`'s shape.
struct Shifted {
    shape: Vec<usize>,
    shifted: NodeId,
    exp: NodeId,
    total: NodeId,
}

fn shifted_exponentials(
    builder: &mut ModelBuilder,
    x: NodeId,
    axis: isize,
    context: &str,
) -> Result<Shifted, FrontendError> {
    let (shape, axis) = shape_and_axis(builder, x, axis, context)?;
    let graph = builder.graph();
    let max = graph.reduce_max(x, &[axis]).context(context)?;
    let max = graph.broadcast(max, shape.clone()).context(context)?;
    let shifted = graph.sub(x, max).context(context)?;
    let exp = graph.exp(shifted).context(context)?;
    let total = graph.reduce_sum(exp, &[axis]).context(context)?;
    Ok(Shifted {
        shape,
        shifted,
        exp,
        total,
    })
}

fn unary(builder: &mut ModelBuilder, op: UnaryOp, x: NodeId) -> Result<NodeId, FrontendError> {
    builder.graph().unary(op, x).context(op.name())
}

/// `x`'s shape and `axis` resolved against its rank (negative from the end).
fn shape_and_axis(
    builder: &ModelBuilder,
    x: NodeId,
    axis: isize,
    context: &str,
) -> Result<(Vec<usize>, usize), FrontendError> {
    let ty = builder.ty(x)?.clone();
    let rank = ty.rank() as isize;
    let resolved = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&resolved) {
        return Err(FrontendError::Operand {
            context: context.to_string(),
            expected: format!("a tensor with an axis {axis} (rank ≥ 1, axis in -{rank}..{rank})"),
            found: ty,
        });
    }
    Ok((ty.shape, resolved as usize))
}
