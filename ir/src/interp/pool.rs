//! The meaning of [`Op::Pool`](crate::op::Op::Pool) and
//! [`Op::PoolGrad`](crate::op::Op::PoolGrad): direct loops over the windows, in the
//! order and with the roundings the ops document (compiled code keeps them, so the
//! two agree bit for bit), in f64 in the gradient-check mode.

use super::conv::{positions, Reader};
use crate::alloc::{try_vec, OutOfMemory};
use crate::op::{BinaryOp, PoolKind, PoolSpec};
use crate::scalar;
use crate::tensor::Tensor;
use crate::types::{strides, DType, TensorType};

/// `a op b` in f32, or in f64 when `wide`.
fn arith(op: BinaryOp, a: f64, b: f64, wide: bool) -> f64 {
    if wide {
        op.apply(a, b)
    } else {
        scalar::binary(op, DType::F32, a, b)
    }
}

/// The padded position tap `tap` of output `y` reads.
fn tap_position(spec: &PoolSpec, y: &[usize], tap: &[usize]) -> Vec<i64> {
    (0..tap.len())
        .map(|a| (y[a] * spec.stride[a] + tap[a]) as i64)
        .collect()
}

/// Max or average pooling of `x` to `ty`.
pub(super) fn pool(
    kind: PoolKind,
    x: &Tensor,
    spec: &PoolSpec,
    ty: &TensorType,
    wide: bool,
) -> Result<Vec<f64>, OutOfMemory> {
    let xs = Reader::new(x);
    let (taps, outs) = (positions(&spec.window), positions(&ty.shape[2..]));
    let mut data = try_vec(0.0, ty.num_elements(), || {
        format!("the {ty} result of a pooling")
    })?;
    let mut slot = 0;
    for n in 0..ty.shape[0] {
        for c in 0..ty.shape[1] {
            for y in &outs {
                data[slot] = window_value(kind, &xs, n, c, y, spec, &taps, wide);
                slot += 1;
            }
        }
    }
    Ok(data)
}

/// The pooled value of one window: the running max, or the sum divided by the size.
#[allow(clippy::too_many_arguments)]
fn window_value(
    kind: PoolKind,
    xs: &Reader<'_>,
    n: usize,
    c: usize,
    y: &[usize],
    spec: &PoolSpec,
    taps: &[Vec<usize>],
    wide: bool,
) -> f64 {
    let fill = kind.padding_value();
    let op = match kind {
        PoolKind::Max => BinaryOp::Max,
        PoolKind::Avg => BinaryOp::Add,
    };
    let mut acc = None;
    for tap in taps {
        let value = xs.padded_with(n, c, &tap_position(spec, y, tap), &spec.low, fill);
        acc = Some(match acc {
            None => value,
            Some(acc) => arith(op, acc, value, wide),
        });
    }
    let acc = acc.expect("a window has at least one tap");
    match kind {
        PoolKind::Max => acc,
        PoolKind::Avg => arith(BinaryOp::Div, acc, spec.count() as f64, wide),
    }
}

/// The gradient of a pooling with respect to `x` (`ty` is `x`'s type).
pub(super) fn pool_grad(
    kind: PoolKind,
    x: &Tensor,
    dy: &Tensor,
    spec: &PoolSpec,
    ty: &TensorType,
    wide: bool,
) -> Result<Vec<f64>, OutOfMemory> {
    let (xs, dys) = (Reader::new(x), Reader::new(dy));
    let (taps, outs) = (positions(&spec.window), positions(&dy.shape[2..]));
    let spatial = &ty.shape[2..];
    let padded: Vec<usize> = (0..spatial.len())
        .map(|a| spatial[a] + spec.low[a] + spec.high[a])
        .collect();
    let padded_strides = strides(&padded);
    let plane = padded.iter().product::<usize>();
    let size = ty.shape[0] * ty.shape[1] * plane;
    let what = || format!("the gradient of a pooling of {ty}");
    // The sum over taps so far, per padded position, and each tap's contributions.
    let mut sum = try_vec(0.0, size, what)?;
    let mut term = try_vec(0.0, size, what)?;
    // Per output, whether an earlier tap already took the maximum.
    let mut taken = try_vec(false, dy.len(), what)?;
    for (index, tap) in taps.iter().enumerate() {
        term.iter_mut().for_each(|slot| *slot = 0.0);
        let mut out_slot = 0;
        for n in 0..ty.shape[0] {
            for c in 0..ty.shape[1] {
                for y in &outs {
                    let at = tap_position(spec, y, tap);
                    let g = dys.at(n, c, y);
                    let contribution = match kind {
                        PoolKind::Max => {
                            let top = window_value(kind, &xs, n, c, y, spec, &taps, wide);
                            let value = xs.padded_with(n, c, &at, &spec.low, f64::NEG_INFINITY);
                            let chosen = value == top && !taken[out_slot];
                            taken[out_slot] |= chosen;
                            chosen.then_some(g)
                        }
                        PoolKind::Avg => Some(arith(BinaryOp::Div, g, spec.count() as f64, wide)),
                    };
                    if let Some(contribution) = contribution {
                        let offset: usize = at
                            .iter()
                            .zip(&padded_strides)
                            .map(|(&p, s)| p as usize * s)
                            .sum();
                        term[(n * ty.shape[1] + c) * plane + offset] = contribution;
                    }
                    out_slot += 1;
                }
            }
        }
        if index == 0 {
            sum.copy_from_slice(&term);
        } else {
            for (acc, &t) in sum.iter_mut().zip(term.iter()) {
                *acc = arith(BinaryOp::Add, *acc, t, wide);
            }
        }
    }
    // Crop the padding.
    let mut data = try_vec(0.0, ty.num_elements(), what)?;
    let inner = positions(spatial);
    let mut slot = 0;
    for nc in 0..ty.shape[0] * ty.shape[1] {
        for i in &inner {
            let offset: usize = (0..i.len())
                .map(|a| (i[a] + spec.low[a]) * padded_strides[a])
                .sum();
            data[slot] = sum[nc * plane + offset];
            slot += 1;
        }
    }
    Ok(data)
}
