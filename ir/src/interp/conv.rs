//! The meaning of [`Op::Conv`](crate::op::Op::Conv) and its two gradients: direct
//! loops that sum each element's terms in the order the op documents, one f32 `fma`
//! a term from +0 (the order compiled code keeps, so the two agree bit for bit), or
//! in f64 in the gradient-check mode.

use crate::alloc::{try_vec, OutOfMemory};
use crate::op::ConvSpec;
use crate::scalar;
use crate::tensor::Tensor;
use crate::types::{strides, TensorType};

/// A running sum of products, in f32 with `fma` or (wide) in f64.
fn step(acc: f64, a: f64, b: f64, wide: bool) -> f64 {
    if wide {
        acc + a * b
    } else {
        f64::from(scalar::fma_f32(a as f32, b as f32, acc as f32))
    }
}

/// Every index of `shape` in row-major order.
pub(super) fn positions(shape: &[usize]) -> Vec<Vec<usize>> {
    let count: usize = shape.iter().product();
    let mut all = Vec::with_capacity(count);
    let mut index = vec![0; shape.len()];
    for _ in 0..count {
        all.push(index.clone());
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    all
}

/// A channels-first tensor read at `[n, channel, spatial…]`.
pub(super) struct Reader<'a> {
    tensor: &'a Tensor,
    strides: Vec<usize>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(tensor: &'a Tensor) -> Reader<'a> {
        Reader {
            strides: strides(&tensor.shape),
            tensor,
        }
    }

    pub(super) fn at(&self, first: usize, second: usize, spatial: &[usize]) -> f64 {
        let offset = first * self.strides[0]
            + second * self.strides[1]
            + spatial
                .iter()
                .zip(&self.strides[2..])
                .map(|(i, s)| i * s)
                .sum::<usize>();
        self.tensor.data[offset]
    }

    /// The element at spatial position `padded − low` on each axis, or 0 where that
    /// falls outside the tensor (the padding).
    pub(super) fn padded(&self, first: usize, second: usize, padded: &[i64], low: &[usize]) -> f64 {
        self.padded_with(first, second, padded, low, 0.0)
    }

    /// [`Reader::padded`] with another padding value.
    pub(super) fn padded_with(
        &self,
        first: usize,
        second: usize,
        padded: &[i64],
        low: &[usize],
        fill: f64,
    ) -> f64 {
        let mut spatial = Vec::with_capacity(padded.len());
        for (axis, (&at, &low)) in padded.iter().zip(low).enumerate() {
            let i = at - low as i64;
            if i < 0 || i >= self.tensor.shape[axis + 2] as i64 {
                return fill;
            }
            spatial.push(i as usize);
        }
        self.at(first, second, &spatial)
    }
}

/// The padded input position tap `t` of output `y` reads: `y·s + t·d` per axis.
fn tap_position(spec: &ConvSpec, y: &[usize], t: &[usize]) -> Vec<i64> {
    (0..t.len())
        .map(|a| (y[a] * spec.stride[a] + t[a] * spec.dilation[a]) as i64)
        .collect()
}

fn output(ty: &TensorType) -> Result<Vec<f64>, OutOfMemory> {
    try_vec(0.0, ty.num_elements(), || {
        format!("the {ty} result of a convolution")
    })
}

/// `conv(x, w)`: for each output element, the taps in row-major order, within each
/// the group's input channels.
pub(super) fn conv(
    x: &Tensor,
    w: &Tensor,
    spec: &ConvSpec,
    ty: &TensorType,
    wide: bool,
) -> Result<Vec<f64>, OutOfMemory> {
    let (xs, ws) = (Reader::new(x), Reader::new(w));
    let (groups, c_group) = (spec.groups, w.shape[1]);
    let o_group = w.shape[0] / groups;
    let (taps, outs) = (positions(&w.shape[2..]), positions(&ty.shape[2..]));
    let mut data = output(ty)?;
    let mut slot = 0;
    for n in 0..x.shape[0] {
        for channel in 0..groups * o_group {
            let g = channel / o_group;
            for y in &outs {
                let mut acc = 0.0;
                for t in &taps {
                    let at = tap_position(spec, y, t);
                    for c in 0..c_group {
                        let value = xs.padded(n, g * c_group + c, &at, &spec.low);
                        acc = step(acc, value, ws.at(channel, c, t), wide);
                    }
                }
                data[slot] = acc;
                slot += 1;
            }
        }
    }
    Ok(data)
}

/// The gradient of `conv` with respect to `x`: for each element and each tap in
/// row-major order, the tap's contribution (an `fma` chain over the group's output
/// channels from +0 where the tap reads this element for some output, +0 where it
/// does not), the taps' contributions added from the first's.
pub(super) fn input_grad(
    dy: &Tensor,
    w: &Tensor,
    spec: &ConvSpec,
    ty: &TensorType,
    wide: bool,
) -> Result<Vec<f64>, OutOfMemory> {
    let (dys, ws) = (Reader::new(dy), Reader::new(w));
    let (groups, c_group) = (spec.groups, w.shape[1]);
    let o_group = w.shape[0] / groups;
    let (taps, inputs) = (positions(&w.shape[2..]), positions(&ty.shape[2..]));
    let out = &dy.shape[2..];
    let mut data = output(ty)?;
    let mut slot = 0;
    for n in 0..ty.shape[0] {
        for channel in 0..groups * c_group {
            let (g, c) = (channel / c_group, channel % c_group);
            for i in &inputs {
                let mut sum = None;
                for t in &taps {
                    let mut contribution = 0.0;
                    if let Some(y) = read_by(spec, i, t, out) {
                        for o in 0..o_group {
                            let channel = g * o_group + o;
                            let (a, b) = (dys.at(n, channel, &y), ws.at(channel, c, t));
                            contribution = step(contribution, a, b, wide);
                        }
                    }
                    sum = Some(match sum {
                        None => contribution,
                        Some(sum) if wide => sum + contribution,
                        Some(sum) => f64::from(sum as f32 + contribution as f32),
                    });
                }
                data[slot] = sum.expect("a kernel has at least one tap");
                slot += 1;
            }
        }
    }
    Ok(data)
}

/// The output position whose tap `t` reads input position `i` (`y·s + t·d = i + low`
/// on every axis), if there is one.
fn read_by(spec: &ConvSpec, i: &[usize], t: &[usize], out: &[usize]) -> Option<Vec<usize>> {
    (0..t.len())
        .map(|a| {
            let j = (i[a] + spec.low[a]) as i64 - (t[a] * spec.dilation[a]) as i64;
            let s = spec.stride[a] as i64;
            (j >= 0 && j % s == 0 && j / s < out[a] as i64).then_some((j / s) as usize)
        })
        .collect()
}

/// The gradient of `conv` with respect to `w`: for each element, the batch, within
/// it the output positions in row-major order.
pub(super) fn filter_grad(
    x: &Tensor,
    dy: &Tensor,
    spec: &ConvSpec,
    ty: &TensorType,
    wide: bool,
) -> Result<Vec<f64>, OutOfMemory> {
    let (xs, dys) = (Reader::new(x), Reader::new(dy));
    let (groups, c_group) = (spec.groups, ty.shape[1]);
    let o_group = ty.shape[0] / groups;
    let (taps, outs) = (positions(&ty.shape[2..]), positions(&dy.shape[2..]));
    let mut data = output(ty)?;
    let mut slot = 0;
    for channel in 0..groups * o_group {
        let g = channel / o_group;
        for c in 0..c_group {
            for t in &taps {
                let mut acc = 0.0;
                for n in 0..x.shape[0] {
                    for y in &outs {
                        let at = tap_position(spec, y, t);
                        let value = xs.padded(n, g * c_group + c, &at, &spec.low);
                        acc = step(acc, dys.at(n, channel, y), value, wide);
                    }
                }
                data[slot] = acc;
                slot += 1;
            }
        }
    }
    Ok(data)
}
