//! Forward-mode differentiation: Jacobian-vector products, as a graph pass.
//!
//! What it does: for every parameter or input named in [`JvpOptions::wrt`], adds an
//! input `tangent.<name>` of the same type (the direction), and for every f32 output
//! `o` an output `jvp.<o>` holding the directional derivative `J_o · tangent` (zeros
//! where the output does not depend on a differentiated leaf). Existing outputs and
//! updates are kept.
//!
//! The rules are the adjoints of [`crate::autodiff`]'s, so both modes agree at kinks
//! too: `relu` passes the tangent where `x > 0`; `max` and `min` give ties to their
//! first operand; `reduce_max` sums the tangents of every element equal to the
//! maximum. Elementwise ops reuse the reverse rules directly: their Jacobians are
//! diagonal, so `J·t` is the vector-Jacobian product with `t` as the cotangent, per
//! operand. Linear ops (broadcast, reductions, reshape, transpose) apply themselves to
//! the tangent, and a matmul gives `da·b + a·db`.
//!
//! What it guarantees: a pure function (forward node ids stay valid in the result),
//! well typed (built through the checked builder), deterministic (topological
//! order), and only nodes that depend on a differentiated leaf get a tangent.

use crate::autodiff::vjp;
use kiln_ir::op::PoolKind;
use kiln_ir::{CmpOp, DType, Graph, IrError, NodeId, Op, ReduceOp, TensorType};
use std::collections::BTreeMap;
use thiserror::Error;

/// What to differentiate with respect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JvpOptions {
    /// f32 parameters and inputs, by name; each gets a tangent input.
    pub wrt: Vec<String>,
}

/// Why the tangent graph could not be built.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum JvpError {
    /// A name in [`JvpOptions::wrt`] that is neither a parameter nor an input (user's
    /// mistake).
    #[error("{0:?} is neither a parameter nor an input of the graph")]
    Unknown(String),
    /// A leaf whose dtype carries no derivative (user's mistake).
    #[error("{name:?} must be f32 to be differentiated, found {ty}")]
    NotF32 { name: String, ty: TensorType },
    /// Building a tangent node failed: a taken name is the user's mistake, any other
    /// IR error a kiln bug in a rule.
    #[error("building the tangent graph: {0}")]
    Ir(#[from] IrError),
}

/// The name of the input holding the tangent of leaf `name`.
pub fn tangent_name(name: &str) -> String {
    format!("tangent.{name}")
}

/// The name of the output holding the directional derivative of output `name`.
pub fn jvp_name(name: &str) -> String {
    format!("jvp.{name}")
}

/// Returns a copy of `graph` with tangent inputs and `jvp.<output>` outputs added.
pub fn run(graph: &Graph, options: &JvpOptions) -> Result<Graph, JvpError> {
    let mut result = graph.clone();
    let mut tangents: BTreeMap<NodeId, NodeId> = BTreeMap::new();
    for name in &options.wrt {
        let leaf = graph
            .param_by_name(name)
            .or_else(|| graph.input_by_name(name))
            .ok_or_else(|| JvpError::Unknown(name.clone()))?;
        let ty = graph.ty(leaf).clone();
        if ty.dtype != DType::F32 {
            return Err(JvpError::NotF32 {
                name: name.clone(),
                ty,
            });
        }
        let tangent = result.input(&tangent_name(name), ty)?;
        tangents.insert(leaf, tangent);
    }
    for node in graph.topo_order() {
        let op = graph.op(node);
        if op.is_leaf() || graph.ty(node).dtype != DType::F32 {
            continue;
        }
        let operands = graph.operands(node);
        let dots: Vec<Option<NodeId>> = operands
            .iter()
            .map(|operand| tangents.get(operand).copied())
            .collect();
        if dots.iter().all(Option::is_none) {
            continue;
        }
        if let Some(tangent) = tangent(&mut result, op, &operands, node, &dots)? {
            tangents.insert(node, tangent);
        }
    }
    let outputs: Vec<(String, NodeId)> = graph
        .outputs()
        .iter()
        .map(|(name, id)| (name.clone(), *id))
        .collect();
    for (name, output) in outputs {
        if graph.ty(output).dtype != DType::F32 {
            continue;
        }
        let value = match tangents.get(&output) {
            Some(&tangent) => tangent,
            None => result.constant_like(0.0, output)?,
        };
        result.set_output(&jvp_name(&name), value)?;
    }
    Ok(result)
}

/// The tangent of `output = op(operands)` given its operands' tangents (`None` for
/// zero), or `None` where it is zero.
fn tangent(
    graph: &mut Graph,
    op: &Op,
    operands: &[NodeId],
    output: NodeId,
    dots: &[Option<NodeId>],
) -> Result<Option<NodeId>, IrError> {
    let dot = dots[0];
    Ok(match op {
        Op::Input { .. } | Op::Parameter { .. } | Op::Constant { .. } | Op::Iota { .. } => None,
        Op::Compare(_) | Op::OneHot { .. } | Op::Random { .. } => None,
        // Diagonal Jacobians: per operand, the reverse rule applied to its tangent.
        Op::Unary(_) | Op::Binary(_) => {
            let mut sum = None;
            for (index, dot) in dots.iter().enumerate() {
                let Some(dot) = *dot else { continue };
                let needs: Vec<bool> = (0..dots.len()).map(|i| i == index).collect();
                let Some(part) = vjp(graph, op, operands, output, dot, &needs)?[index] else {
                    continue;
                };
                sum = Some(match sum {
                    Some(previous) => graph.add_(previous, part)?,
                    None => part,
                });
            }
            sum
        }
        Op::Select => {
            let (on_true, on_false) = (dots[1], dots[2]);
            let zero = graph.constant_like(0.0, output)?;
            Some(graph.select(
                operands[0],
                on_true.unwrap_or(zero),
                on_false.unwrap_or(zero),
            )?)
        }
        // Only an f32 to f32 cast carries a derivative; the result is f32 here.
        Op::Cast { .. } => dot,
        Op::Broadcast { shape } => dot.map(|d| graph.broadcast(d, shape.clone())).transpose()?,
        Op::Reshape { shape } => dot.map(|d| graph.reshape(d, shape.clone())).transpose()?,
        Op::Transpose { perm } => dot.map(|d| graph.transpose(d, perm)).transpose()?,
        Op::Reduce { op: reduce, axes } => match dot {
            None => None,
            Some(d) => Some(match reduce {
                ReduceOp::Sum => graph.reduce_sum(d, axes)?,
                ReduceOp::Mean => graph.reduce_mean(d, axes)?,
                ReduceOp::Max => {
                    // Every element equal to the maximum contributes its tangent.
                    let x = operands[0];
                    let shape = graph.ty(x).shape.clone();
                    let max = graph.broadcast(output, shape)?;
                    let at_max = graph.compare(CmpOp::Eq, x, max)?;
                    let zero = graph.constant_like(0.0, x)?;
                    let picked = graph.select(at_max, d, zero)?;
                    graph.reduce_sum(picked, axes)?
                }
            }),
        },
        Op::Slice {
            starts,
            ends,
            steps,
        } => dot
            .map(|d| graph.slice(d, starts, ends, steps))
            .transpose()?,
        // The padding is constant: its tangent is zero.
        Op::Pad {
            low,
            high,
            interior,
            ..
        } => dot
            .map(|d| graph.pad(d, low, high, interior, 0.0))
            .transpose()?,
        Op::Concat { axis } => {
            let mut parts = Vec::with_capacity(2);
            for (index, dot) in dots.iter().enumerate() {
                parts.push(match dot {
                    Some(d) => *d,
                    None => graph.constant_like(0.0, operands[index])?,
                });
            }
            Some(graph.concat(parts[0], parts[1], *axis)?)
        }
        // Bilinear: d(a·b) = da·b + a·db, with the same transpose flags (or the same
        // convolution attributes).
        Op::MatMul { .. } | Op::Conv(_) | Op::ConvInputGrad { .. } | Op::ConvFilterGrad { .. } => {
            let (a, b) = (operands[0], operands[1]);
            let left = dots[0]
                .map(|da| graph.add(op.clone(), &[da, b]))
                .transpose()?;
            let right = dots[1]
                .map(|db| graph.add(op.clone(), &[a, db]))
                .transpose()?;
            match (left, right) {
                (Some(left), Some(right)) => Some(graph.add_(left, right)?),
                (one, other) => one.or(other),
            }
        }
        Op::Pool { kind, spec } => match (kind, dot) {
            (_, None) => None,
            (PoolKind::Avg, Some(d)) => Some(graph.add(op.clone(), &[d])?),
            (PoolKind::Max, Some(d)) => {
                Some(crate::expand::max_pool_pick(graph, spec, operands[0], d)?)
            }
        },
        // Linear in the output gradient; piecewise constant in x.
        Op::PoolGrad { .. } => dots[1]
            .map(|d| graph.add(op.clone(), &[operands[0], d]))
            .transpose()?,
        // Both are linear in their first operand; the indices are integers.
        Op::Gather { axis, batch_dims } => dot
            .map(|d| graph.gather(d, operands[1], *axis, *batch_dims))
            .transpose()?,
        Op::ScatterAdd {
            axis,
            batch_dims,
            extent,
        } => dot
            .map(|d| graph.scatter_add(d, operands[1], *axis, *batch_dims, *extent))
            .transpose()?,
    })
}
