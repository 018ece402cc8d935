//! The reference interpreter: the executable meaning of every op.
//!
//! Plain loops over host tensors, no tricks. Every optimisation and backend is tested
//! against it. With `Precision::F32` it computes every element exactly as kiln's
//! generated code does, by the rules of [`crate::scalar`]: f32 rounding after every
//! op (constants and fed values included), i32 wrapping, Rust `as` casts, sums
//! accumulated in row-major order from +0 and matmuls as a chain of f32 `fma`s, so
//! compiled code and every optimisation must match it bit for bit (any NaN equals any
//! NaN). With `Precision::F64` f32 values are computed in f64 without rounding, for
//! gradient checks by finite differences; i32 and bool values follow the same rules
//! in both modes.

use crate::alloc::{try_clone, try_collect, try_vec, try_with_capacity, OutOfMemory};
use crate::graph::{Graph, NodeId};
use crate::op::{matrix_dims, BinaryOp, Op, ReduceOp};
use crate::scalar;
use crate::tensor::Tensor;
use crate::types::{strides, DType, TensorType};
use std::collections::{BTreeMap, HashMap};
use thiserror::Error;

mod conv;
mod pool;

/// Values for a graph's inputs and parameters, by name.
pub type Feeds = BTreeMap<String, Tensor>;

/// How f32 values are rounded between ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Keep f64 throughout: for gradient checks by finite differences.
    F64,
    /// Compute every value as compiled code does (see [`crate::scalar`]): for
    /// comparison with compiled code and between passes.
    F32,
}

/// Why an evaluation failed: feeds that do not match the graph's signature (the
/// caller's mistake), or a value too large for the memory there is.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum InterpError {
    /// An input or parameter has no value in the feeds.
    #[error("no value fed for {kind} {name:?}")]
    Missing { kind: &'static str, name: String },
    /// A fed value has another dtype or shape than the graph declares.
    #[error("{name:?} expects {expected}, fed {found}")]
    WrongType {
        name: String,
        expected: TensorType,
        found: TensorType,
    },
    /// A feed names nothing in the graph.
    #[error("{name:?} is neither an input nor a parameter of the graph")]
    Unknown { name: String },
    /// A value's memory could not be had (the environment's limit, not a bug).
    #[error(transparent)]
    OutOfMemory(#[from] OutOfMemory),
}

/// The result of one evaluation.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Every node's value.
    pub values: HashMap<NodeId, Tensor>,
    /// Named outputs.
    pub outputs: BTreeMap<String, Tensor>,
    /// New parameter values, by parameter name.
    pub updates: BTreeMap<String, Tensor>,
}

/// Evaluates every node of `graph` on the fed inputs and parameters.
pub fn evaluate(
    graph: &Graph,
    feeds: &Feeds,
    precision: Precision,
) -> Result<Evaluation, InterpError> {
    for name in feeds.keys() {
        if graph.input_by_name(name).is_none() && graph.param_by_name(name).is_none() {
            return Err(InterpError::Unknown { name: name.clone() });
        }
    }
    let mut values: HashMap<NodeId, Tensor> = HashMap::new();
    for id in graph.topo_order() {
        let node = graph.node(id);
        let value = match &node.op {
            Op::Input { name } | Op::Parameter { name } => {
                let kind = if matches!(node.op, Op::Input { .. }) {
                    "input"
                } else {
                    "parameter"
                };
                let fed = feeds.get(name).ok_or_else(|| InterpError::Missing {
                    kind,
                    name: name.clone(),
                })?;
                if fed.ty() != node.ty {
                    return Err(InterpError::WrongType {
                        name: name.clone(),
                        expected: node.ty.clone(),
                        found: fed.ty(),
                    });
                }
                fed.try_clone()?
            }
            op => {
                let operands: Vec<&Tensor> = graph
                    .operands(id)
                    .iter()
                    .map(|operand| &values[operand])
                    .collect();
                apply(op, &node.ty, &operands, precision)?
            }
        };
        values.insert(id, round(value, precision));
    }
    let outputs = graph
        .outputs()
        .iter()
        .map(|(name, id)| Ok((name.clone(), values[id].try_clone()?)))
        .collect::<Result<_, OutOfMemory>>()?;
    let updates = graph
        .updates()
        .iter()
        .map(|(param, value)| {
            let name = graph.leaf_name(*param).expect("updates target parameters");
            Ok((name.to_string(), values[value].try_clone()?))
        })
        .collect::<Result<_, OutOfMemory>>()?;
    Ok(Evaluation {
        values,
        outputs,
        updates,
    })
}

/// Makes every element a value of the tensor's dtype: f32 values are rounded in
/// `Precision::F32` mode (fed values and constants are read as f32), i32 and bool
/// values are canonical in both modes (an i32 constant written -0.0 is 0).
fn round(mut tensor: Tensor, precision: Precision) -> Tensor {
    if tensor.dtype != DType::F32 || precision == Precision::F32 {
        let dtype = tensor.dtype;
        for v in &mut tensor.data {
            *v = scalar::to_dtype(*v, dtype);
        }
    }
    tensor
}

/// Computes one op. Operand types were checked when the graph was built. In
/// `Precision::F32` mode the result is exactly what compiled code computes; in
/// `Precision::F64` mode f32 arithmetic is done in f64 (the caller rounds leaves).
pub fn apply(
    op: &Op,
    ty: &TensorType,
    operands: &[&Tensor],
    precision: Precision,
) -> Result<Tensor, OutOfMemory> {
    let what = || format!("the {ty} value of a {}", op.mnemonic());
    // Whether f32 values of this op are computed in f64 (the gradient-check mode).
    let wide = |dtype: DType| precision == Precision::F64 && dtype == DType::F32;
    let data = match op {
        Op::Input { .. } | Op::Parameter { .. } => {
            unreachable!("inputs and parameters are read from the feeds")
        }
        Op::Constant { value } => try_vec(*value, ty.num_elements(), what)?,
        Op::Unary(unary) => {
            let dtype = operands[0].dtype;
            let values = operands[0].data.iter().map(|&x| {
                if wide(dtype) {
                    unary.apply(x)
                } else {
                    scalar::unary(*unary, dtype, x)
                }
            });
            try_collect(values, what)?
        }
        Op::Binary(binary) => {
            let dtype = operands[0].dtype;
            zip(operands[0], operands[1], |a, b| {
                if wide(dtype) {
                    binary.apply(a, b)
                } else {
                    scalar::binary(*binary, dtype, a, b)
                }
            })?
        }
        Op::Compare(cmp) => {
            let dtype = operands[0].dtype;
            zip(operands[0], operands[1], |a, b| {
                let flag = if wide(dtype) {
                    cmp.apply(a, b)
                } else {
                    scalar::compare(*cmp, dtype, a, b)
                };
                f64::from(u8::from(flag))
            })?
        }
        Op::Select => try_collect(
            operands[0]
                .data
                .iter()
                .zip(&operands[1].data)
                .zip(&operands[2].data)
                .map(|((&cond, &on_true), &on_false)| scalar::select(cond, on_true, on_false)),
            what,
        )?,
        // In f64 mode a cast to f32 keeps the value unrounded (an i32 above 2^24 stays
        // exact), as every other f32 value in that mode.
        Op::Cast { to } => try_collect(
            operands[0]
                .data
                .iter()
                .map(|&x| if wide(*to) { x } else { scalar::cast(x, *to) }),
            what,
        )?,
        Op::Broadcast { shape } => {
            let x = operands[0];
            let x_strides = strides(&x.shape);
            // A stretched axis reads the same element for every output index.
            let read_strides: Vec<usize> = x
                .shape
                .iter()
                .zip(&x_strides)
                .map(|(&extent, &stride)| if extent == 1 { 0 } else { stride })
                .collect();
            map_indices(shape, |index| x.data[dot(index, &read_strides)])?
        }
        Op::Reduce { op: reduce, axes } => {
            reduce_axes(*reduce, axes, operands[0], ty, wide(operands[0].dtype))?
        }
        Op::Reshape { .. } => try_clone(&operands[0].data, what)?,
        Op::Transpose { perm } => {
            let x = operands[0];
            let x_strides = strides(&x.shape);
            let read_strides: Vec<usize> = perm.iter().map(|&axis| x_strides[axis]).collect();
            map_indices(&ty.shape, |index| x.data[dot(index, &read_strides)])?
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => matmul(
            operands[0],
            operands[1],
            (*transpose_a, *transpose_b),
            ty,
            wide(DType::F32),
        )?,
        Op::OneHot { depth } => {
            let mut data = try_vec(0.0, ty.num_elements(), what)?;
            for (row, &label) in operands[0].data.iter().enumerate() {
                if label >= 0.0 && (label as usize) < *depth {
                    data[row * depth + label as usize] = 1.0;
                }
            }
            data
        }
        Op::Slice { starts, steps, .. } => {
            let x = operands[0];
            let x_strides = strides(&x.shape);
            let offset: usize = dot(starts, &x_strides);
            let read_strides: Vec<usize> = steps
                .iter()
                .zip(&x_strides)
                .map(|(step, stride)| step * stride)
                .collect();
            map_indices(&ty.shape, |index| {
                x.data[offset + dot(index, &read_strides)]
            })?
        }
        Op::Pad {
            low,
            interior,
            value,
            ..
        } => {
            let x = operands[0];
            // The padding value is a value of the dtype, as a constant is.
            let mut data = try_vec(scalar::to_dtype(*value, ty.dtype), ty.num_elements(), what)?;
            let out_strides = strides(&ty.shape);
            let offset = dot(low, &out_strides);
            let write_strides: Vec<usize> = interior
                .iter()
                .zip(&out_strides)
                .map(|(gap, stride)| (gap + 1) * stride)
                .collect();
            let mut position = 0;
            map_indices(&x.shape, |index| {
                data[offset + dot(index, &write_strides)] = x.data[position];
                position += 1;
                0.0
            })?;
            data
        }
        Op::Concat { axis } => {
            let (a, b) = (operands[0], operands[1]);
            let (a_strides, b_strides) = (strides(&a.shape), strides(&b.shape));
            let split = a.shape[*axis];
            map_indices(&ty.shape, |index| {
                if index[*axis] < split {
                    a.data[dot(index, &a_strides)]
                } else {
                    let offset = (index[*axis] - split) * b_strides[*axis];
                    let rest: usize = index
                        .iter()
                        .zip(&b_strides)
                        .enumerate()
                        .filter(|&(i, _)| i != *axis)
                        .map(|(_, (i, s))| i * s)
                        .sum();
                    b.data[offset + rest]
                }
            })?
        }
        Op::Iota { axis, shape } => map_indices(shape, |index| index[*axis] as f64)?,
        Op::Pool { kind, spec } => pool::pool(*kind, operands[0], spec, ty, wide(DType::F32))?,
        Op::PoolGrad { kind, spec } => {
            pool::pool_grad(*kind, operands[0], operands[1], spec, ty, wide(DType::F32))?
        }
        Op::Conv(spec) => conv::conv(operands[0], operands[1], spec, ty, wide(DType::F32))?,
        Op::ConvInputGrad { spec, .. } => {
            conv::input_grad(operands[0], operands[1], spec, ty, wide(DType::F32))?
        }
        Op::ConvFilterGrad { spec, .. } => {
            conv::filter_grad(operands[0], operands[1], spec, ty, wide(DType::F32))?
        }
        Op::Random { dist, stream, .. } => {
            // The samples are f32 values in both precisions: the op means these values.
            let seed = operands[0].data[0] as i32;
            let mut data = try_vec(0.0, ty.num_elements(), what)?;
            // Counters fit in an i32: a type holds at most `MAX_ELEMENTS` elements.
            for (counter, slot) in data.iter_mut().enumerate() {
                *slot = f64::from(dist.sample(seed, *stream as i32, counter as i32));
            }
            data
        }
        Op::Gather { axis, batch_dims } => {
            let (params, indices) = (operands[0], operands[1]);
            let positions = gather_positions(&params.shape, indices, *axis, *batch_dims);
            let values = positions.map(|position| position.map_or(0.0, |at| params.data[at]));
            try_collect(values, what)?
        }
        Op::ScatterAdd {
            axis, batch_dims, ..
        } => {
            let (updates, indices) = (operands[0], operands[1]);
            let dtype = updates.dtype;
            let mut data = try_vec(0.0, ty.num_elements(), what)?;
            let positions = gather_positions(&ty.shape, indices, *axis, *batch_dims);
            for (position, &update) in positions.zip(&updates.data) {
                if let Some(at) = position {
                    data[at] = if wide(dtype) {
                        data[at] + update
                    } else {
                        scalar::binary(BinaryOp::Add, dtype, data[at], update)
                    };
                }
            }
            data
        }
    };
    Ok(Tensor {
        dtype: ty.dtype,
        shape: ty.shape.clone(),
        data,
    })
}

/// For every element of `gather(params, indices, axis, batch_dims)` in row-major
/// order, the flat position in `params` (of shape `params_shape`) it reads, or `None`
/// when its index is outside `0..params_shape[axis]` (the element is 0). The one
/// definition of where gather reads and scatter_add writes.
fn gather_positions<'a>(
    params_shape: &'a [usize],
    indices: &'a Tensor,
    axis: usize,
    batch_dims: usize,
) -> impl ExactSizeIterator<Item = Option<usize>> + 'a {
    let out_shape = crate::op::gather_shape(params_shape, &indices.shape, axis, batch_dims);
    let params_strides = strides(params_shape);
    let index_strides = strides(&indices.shape);
    let gathered = indices.shape.len() - batch_dims;
    let extent = params_shape[axis];
    let total = crate::types::num_elements(&out_shape);
    let mut index = vec![0; out_shape.len()];
    (0..total).map(move |position| {
        if position > 0 {
            for axis in (0..index.len()).rev() {
                index[axis] += 1;
                if index[axis] < out_shape[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
        // Output axes: params' leading `axis`, then the indices' own, then params' rest.
        let (leading, rest) = index.split_at(axis);
        let (own, trailing) = rest.split_at(gathered);
        let label_at = dot(&leading[..batch_dims], &index_strides[..batch_dims])
            + dot(own, &index_strides[batch_dims..]);
        let label = indices.data[label_at];
        // Labels are integral i32 values, so the test is exact.
        (label >= 0.0 && label < extent as f64).then(|| {
            dot(leading, &params_strides[..axis])
                + label as usize * params_strides[axis]
                + dot(trailing, &params_strides[axis + 1..])
        })
    })
}

fn zip(a: &Tensor, b: &Tensor, f: impl Fn(f64, f64) -> f64) -> Result<Vec<f64>, OutOfMemory> {
    let pairs = a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y));
    try_collect(pairs, || format!("the {} result of a binary op", a.ty()))
}

fn dot(index: &[usize], strides: &[usize]) -> usize {
    index.iter().zip(strides).map(|(i, s)| i * s).sum()
}

/// Calls `f` with every multi-index of `shape` in row-major order.
fn map_indices(
    shape: &[usize],
    mut f: impl FnMut(&[usize]) -> f64,
) -> Result<Vec<f64>, OutOfMemory> {
    let total = crate::types::num_elements(shape);
    let mut out = try_with_capacity(total, || format!("a value of shape {shape:?}"))?;
    let mut index = vec![0; shape.len()];
    for _ in 0..total {
        out.push(f(&index));
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Ok(out)
}

/// A reduction, folding each output's elements in row-major order (the order compiled
/// code uses; in f32 mode every step rounds). `wide` computes f32 sums in f64.
fn reduce_axes(
    op: ReduceOp,
    axes: &[usize],
    x: &Tensor,
    ty: &TensorType,
    wide: bool,
) -> Result<Vec<f64>, OutOfMemory> {
    let dtype = x.dtype;
    let mut out = try_vec(scalar::reduce_init(op, dtype), ty.num_elements(), || {
        format!("the {ty} result of a reduction")
    })?;
    let out_strides = strides(&ty.shape);
    // Reduced axes have extent 1 in the output, so they contribute nothing to the
    // output offset.
    let write_strides: Vec<usize> = (0..x.shape.len())
        .map(|axis| {
            if axes.contains(&axis) {
                0
            } else {
                out_strides[axis]
            }
        })
        .collect();
    let mut position = 0;
    map_indices(&x.shape, |index| {
        let target = &mut out[dot(index, &write_strides)];
        let value = x.data[position];
        position += 1;
        *target = match op {
            ReduceOp::Sum | ReduceOp::Mean if wide => *target + value,
            ReduceOp::Max if wide => scalar::max_f64(*target, value),
            _ => scalar::reduce_step(op, dtype, *target, value),
        };
        0.0
    })?;
    if op == ReduceOp::Mean {
        let count: usize = axes.iter().map(|&axis| x.shape[axis]).product();
        for v in &mut out {
            *v = if wide {
                *v / count as f64
            } else {
                scalar::mean_finish(*v, count)
            };
        }
    }
    Ok(out)
}

/// A batched matmul. In f32 mode each output is `fma(a, b, acc)` over the contraction
/// index in increasing order from +0, as compiled code computes it; `wide` sums the
/// products in f64.
fn matmul(
    a: &Tensor,
    b: &Tensor,
    (transpose_a, transpose_b): (bool, bool),
    ty: &TensorType,
    wide: bool,
) -> Result<Vec<f64>, OutOfMemory> {
    let rank = a.shape.len();
    let (m, k) = matrix_dims(&a.shape, transpose_a);
    let (_, n) = matrix_dims(&b.shape, transpose_b);
    let batches: usize = a.shape[..rank - 2].iter().product();
    let a_at = |batch: usize, i: usize, p: usize| {
        let offset = batch * m * k;
        if transpose_a {
            a.data[offset + p * m + i]
        } else {
            a.data[offset + i * k + p]
        }
    };
    let b_at = |batch: usize, p: usize, j: usize| {
        let offset = batch * k * n;
        if transpose_b {
            b.data[offset + j * k + p]
        } else {
            b.data[offset + p * n + j]
        }
    };
    let mut out = try_vec(0.0, ty.num_elements(), || {
        format!("the {ty} result of a matmul")
    })?;
    for batch in 0..batches {
        for i in 0..m {
            for j in 0..n {
                out[(batch * m + i) * n + j] = if wide {
                    (0..k).map(|p| a_at(batch, i, p) * b_at(batch, p, j)).sum()
                } else {
                    let acc = (0..k).fold(0.0_f32, |acc, p| {
                        let (x, y) = (a_at(batch, i, p) as f32, b_at(batch, p, j) as f32);
                        scalar::fma_f32(x, y, acc)
                    });
                    f64::from(acc)
                };
            }
        }
    }
    Ok(out)
}
