//! The reference interpreter: the executable meaning of every op.
//!
//! Plain loops over host tensors, no tricks. Every optimisation and backend is tested
//! against it. It computes in f64; with `Precision::F32` every f32 result is rounded
//! to f32 after each op, which models what compiled f32 code computes (up to the
//! order of additions in sums and matmuls).

use crate::alloc::{try_clone, try_collect, try_vec, try_with_capacity, OutOfMemory};
use crate::graph::{Graph, NodeId};
use crate::op::{matrix_dims, Op, ReduceOp};
use crate::tensor::Tensor;
use crate::types::{strides, DType, TensorType};
use std::collections::{BTreeMap, HashMap};
use thiserror::Error;

/// Values for a graph's inputs and parameters, by name.
pub type Feeds = BTreeMap<String, Tensor>;

/// How f32 values are rounded between ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Keep f64 throughout: for gradient checks by finite differences.
    F64,
    /// Round every f32 result to f32: for comparison with compiled code.
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
                apply(op, &node.ty, &operands)?
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

fn round(mut tensor: Tensor, precision: Precision) -> Tensor {
    match tensor.dtype {
        DType::F32 if precision == Precision::F32 => {
            for v in &mut tensor.data {
                *v = *v as f32 as f64;
            }
        }
        // Integer arithmetic wraps around, as in the compiled code.
        DType::I32 => {
            for v in &mut tensor.data {
                *v = f64::from(*v as i64 as i32);
            }
        }
        _ => {}
    }
    tensor
}

/// Computes one op. Operand types were checked when the graph was built; the only
/// error is memory for the result (or a temporary) that cannot be had.
pub fn apply(op: &Op, ty: &TensorType, operands: &[&Tensor]) -> Result<Tensor, OutOfMemory> {
    let what = || format!("the {ty} value of a {}", op.mnemonic());
    let data = match op {
        Op::Input { .. } | Op::Parameter { .. } => {
            unreachable!("inputs and parameters are read from the feeds")
        }
        Op::Constant { value } => try_vec(*value, ty.num_elements(), what)?,
        Op::Unary(unary) => try_collect(operands[0].data.iter().map(|&x| unary.apply(x)), what)?,
        // i32 arithmetic wraps; products can exceed f64's 53-bit mantissa, so integers
        // are computed as integers.
        Op::Binary(binary) if ty.dtype == DType::I32 => zip(operands[0], operands[1], |a, b| {
            f64::from(binary.apply_i32(a as i32, b as i32))
        })?,
        Op::Binary(binary) => zip(operands[0], operands[1], |a, b| binary.apply(a, b))?,
        Op::Compare(cmp) => zip(operands[0], operands[1], |a, b| {
            f64::from(u8::from(cmp.apply(a, b)))
        })?,
        Op::Select => try_collect(
            operands[0]
                .data
                .iter()
                .zip(&operands[1].data)
                .zip(&operands[2].data)
                .map(|((&cond, &on_true), &on_false)| if cond != 0.0 { on_true } else { on_false }),
            what,
        )?,
        Op::Cast { to } => try_collect(operands[0].data.iter().map(|&x| cast(x, *to)), what)?,
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
        Op::Reduce { op: reduce, axes } => reduce_axes(*reduce, axes, operands[0], ty)?,
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
        } => matmul(operands[0], operands[1], *transpose_a, *transpose_b, ty)?,
        Op::OneHot { depth } => {
            let mut data = try_vec(0.0, ty.num_elements(), what)?;
            for (row, &label) in operands[0].data.iter().enumerate() {
                if label >= 0.0 && (label as usize) < *depth {
                    data[row * depth + label as usize] = 1.0;
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

fn zip(a: &Tensor, b: &Tensor, f: impl Fn(f64, f64) -> f64) -> Result<Vec<f64>, OutOfMemory> {
    let pairs = a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y));
    try_collect(pairs, || format!("the {} result of a binary op", a.ty()))
}

/// Conversion with Rust's `as` semantics: float to int truncates toward zero and
/// saturates, NaN becomes 0; anything to bool is `x != 0`. Rounding to f32 is left to
/// `round` (a detour through f32 here would change i32 values above 2^24 and make f64
/// precision round).
fn cast(x: f64, to: DType) -> f64 {
    match to {
        DType::F32 => x,
        DType::I32 => f64::from(x as i32),
        DType::Bool => f64::from(u8::from(x != 0.0)),
    }
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

fn reduce_axes(
    op: ReduceOp,
    axes: &[usize],
    x: &Tensor,
    ty: &TensorType,
) -> Result<Vec<f64>, OutOfMemory> {
    let init = match op {
        ReduceOp::Sum | ReduceOp::Mean => 0.0,
        ReduceOp::Max => f64::NEG_INFINITY,
    };
    let mut out = try_vec(init, ty.num_elements(), || {
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
            ReduceOp::Sum | ReduceOp::Mean => *target + value,
            ReduceOp::Max if value.is_nan() || target.is_nan() => f64::NAN,
            ReduceOp::Max => target.max(value),
        };
        0.0
    })?;
    if op == ReduceOp::Mean {
        let count: usize = axes.iter().map(|&axis| x.shape[axis]).product();
        for v in &mut out {
            *v /= count as f64;
        }
    }
    Ok(out)
}

fn matmul(
    a: &Tensor,
    b: &Tensor,
    transpose_a: bool,
    transpose_b: bool,
    ty: &TensorType,
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
                out[(batch * m + i) * n + j] =
                    (0..k).map(|p| a_at(batch, i, p) * b_at(batch, p, j)).sum();
            }
        }
    }
    Ok(out)
}
