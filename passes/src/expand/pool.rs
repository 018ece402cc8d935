//! The pooling ops as windows combined elementwise (see the module docs of
//! `expand`): a pooling is a chain of `max` or `add` over its windows (the taps in
//! row-major order, as the op sums), and its gradient places each tap's
//! contributions with an interior pad (the adjoint of the window's strided slice)
//! and adds them up in tap order.

use super::{pad_spatial, positions, windows};
use kiln_ir::op::{PoolKind, PoolSpec};
use kiln_ir::{BinaryOp, CmpOp, DType, Graph, IrError, NodeId, TensorType};

/// The output's spatial extents; the op's typing rule made sure they exist.
fn out_shape(spec: &PoolSpec, input: &[usize]) -> Vec<usize> {
    (0..input.len())
        .map(|axis| {
            spec.out_extent(axis, input[axis])
                .expect("the pooling op was typed, so its window fits")
        })
        .collect()
}

/// The windows of `x` padded with `fill`, one `[N, C, out…]` value per tap.
fn pool_windows(
    graph: &mut Graph,
    spec: &PoolSpec,
    x: NodeId,
    fill: f64,
) -> Result<Vec<NodeId>, IrError> {
    let spatial = graph.ty(x).shape[2..].to_vec();
    let out = out_shape(spec, &spatial);
    let interior = vec![0; spatial.len()];
    let padded = pad_spatial(graph, x, 2, (&spec.low, &spec.high, &interior), fill)?;
    windows(
        graph,
        padded,
        2,
        &spec.window,
        &out,
        |tap| tap.to_vec(),
        &spec.stride,
    )
}

/// `parts` combined by `op` from the first, in order.
fn chain(graph: &mut Graph, op: BinaryOp, parts: &[NodeId]) -> Result<NodeId, IrError> {
    let mut acc = parts[0];
    for &part in &parts[1..] {
        acc = graph.binary(op, acc, part)?;
    }
    Ok(acc)
}

pub(super) fn pool(
    graph: &mut Graph,
    kind: PoolKind,
    spec: &PoolSpec,
    x: NodeId,
) -> Result<NodeId, IrError> {
    let parts = pool_windows(graph, spec, x, kind.padding_value())?;
    match kind {
        PoolKind::Max => chain(graph, BinaryOp::Max, &parts),
        PoolKind::Avg => {
            let sum = chain(graph, BinaryOp::Add, &parts)?;
            let size = graph.constant_like(spec.count() as f64, sum)?;
            graph.div(sum, size)
        }
    }
}

/// Per tap, whether it is the first tap of its window to equal the window's maximum
/// (a bool `[N, C, out…]` value each): where a max pooling's gradient goes.
fn max_choices(graph: &mut Graph, spec: &PoolSpec, x: NodeId) -> Result<Vec<NodeId>, IrError> {
    let parts = pool_windows(graph, spec, x, f64::NEG_INFINITY)?;
    let top = chain(graph, BinaryOp::Max, &parts)?;
    let flags = TensorType::new(DType::Bool, graph.ty(top).shape.clone());
    let never = graph.constant(0.0, flags.clone())?;
    let mut free = graph.constant(1.0, flags)?;
    let mut choices = Vec::with_capacity(parts.len());
    for part in parts {
        let equal = graph.compare(CmpOp::Eq, part, top)?;
        let chosen = graph.select(equal, free, never)?;
        free = graph.select(chosen, never, free)?;
        choices.push(chosen);
    }
    Ok(choices)
}

/// The value of `v` (shaped like `x`) at each window's chosen tap (see
/// [`max_choices`]): the adjoint of a max pooling's gradient with respect to its
/// output gradient, and a max pooling's tangent.
pub(crate) fn max_pool_pick(
    graph: &mut Graph,
    spec: &PoolSpec,
    x: NodeId,
    v: NodeId,
) -> Result<NodeId, IrError> {
    let choices = max_choices(graph, spec, x)?;
    let parts = pool_windows(graph, spec, v, 0.0)?;
    let zero = graph.constant_like(0.0, parts[0])?;
    let mut picked = Vec::with_capacity(parts.len());
    for (chosen, part) in choices.into_iter().zip(parts) {
        picked.push(graph.select(chosen, part, zero)?);
    }
    chain(graph, BinaryOp::Add, &picked)
}

pub(super) fn pool_grad(
    graph: &mut Graph,
    kind: PoolKind,
    spec: &PoolSpec,
    x: NodeId,
    dy: NodeId,
) -> Result<NodeId, IrError> {
    let x_shape = graph.ty(x).shape.clone();
    let spatial = &x_shape[2..];
    let out = graph.ty(dy).shape[2..].to_vec();
    let rank = spatial.len();
    let contributions: Vec<NodeId> = match kind {
        PoolKind::Max => {
            let zero = graph.constant_like(0.0, dy)?;
            let mut parts = Vec::new();
            for chosen in max_choices(graph, spec, x)? {
                parts.push(graph.select(chosen, dy, zero)?);
            }
            parts
        }
        PoolKind::Avg => {
            let size = graph.constant_like(spec.count() as f64, dy)?;
            let share = graph.div(dy, size)?;
            vec![share; spec.count()]
        }
    };
    // Each tap's contributions placed where it reads the padded input, summed.
    let padded: Vec<usize> = (0..rank)
        .map(|a| spatial[a] + spec.low[a] + spec.high[a])
        .collect();
    let gaps: Vec<usize> = spec.stride.iter().map(|s| s - 1).collect();
    let mut placed = Vec::with_capacity(contributions.len());
    for (tap, part) in positions(&spec.window).into_iter().zip(contributions) {
        let after: Vec<usize> = (0..rank)
            .map(|a| padded[a] - (tap[a] + (out[a] - 1) * spec.stride[a] + 1))
            .collect();
        placed.push(pad_spatial(graph, part, 2, (&tap, &after, &gaps), 0.0)?);
    }
    let sum = chain(graph, BinaryOp::Add, &placed)?;
    let mut starts = vec![0, 0];
    let mut ends = x_shape[..2].to_vec();
    for (&low, &n) in spec.low.iter().zip(spatial) {
        starts.push(low);
        ends.push(low + n);
    }
    graph.slice(sum, &starts, &ends, &vec![1; rank + 2])
}
