//! Host tensors: the values the reference interpreter computes with.
//!
//! Elements are kept as `f64` whatever the dtype (i32 and bool values are exact in
//! f64), so gradient checks can run the interpreter in double precision.

use crate::types::{num_elements, DType, Shape, TensorType};
use std::fmt;

/// A dense row-major tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Shape,
    pub data: Vec<f64>,
}

/// A tensor whose data does not fit its shape, or whose values do not fit its dtype.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("tensor of type {ty}: {message}")]
pub struct TensorError {
    pub ty: TensorType,
    pub message: String,
}

impl Tensor {
    /// A tensor from `f64` values, checked against its type.
    pub fn new(ty: TensorType, data: Vec<f64>) -> Result<Tensor, TensorError> {
        if data.len() != ty.num_elements() {
            return Err(TensorError {
                message: format!(
                    "{} elements given, {} expected",
                    data.len(),
                    ty.num_elements()
                ),
                ty,
            });
        }
        let bad = match ty.dtype {
            DType::F32 => None,
            DType::I32 => data.iter().find(|v| {
                v.fract() != 0.0 || !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(*v)
            }),
            DType::Bool => data.iter().find(|&&v| v != 0.0 && v != 1.0),
        };
        if let Some(value) = bad {
            return Err(TensorError {
                message: format!("{value} is not a {} value", ty.dtype),
                ty,
            });
        }
        Ok(Tensor {
            dtype: ty.dtype,
            shape: ty.shape,
            data,
        })
    }

    pub fn f32(shape: impl Into<Shape>, data: &[f32]) -> Result<Tensor, TensorError> {
        Tensor::new(
            TensorType::f32(shape),
            data.iter().map(|&v| f64::from(v)).collect(),
        )
    }

    pub fn i32(shape: impl Into<Shape>, data: &[i32]) -> Result<Tensor, TensorError> {
        Tensor::new(
            TensorType::i32(shape),
            data.iter().map(|&v| f64::from(v)).collect(),
        )
    }

    /// A tensor of type `ty` with every element `value`.
    pub fn full(ty: &TensorType, value: f64) -> Tensor {
        Tensor {
            dtype: ty.dtype,
            shape: ty.shape.clone(),
            data: vec![value; num_elements(&ty.shape)],
        }
    }

    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype, self.shape.clone())
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements rounded to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }

    pub fn to_i32(&self) -> Vec<i32> {
        self.data.iter().map(|&v| v as i32).collect()
    }

    /// The single element of a one-element tensor.
    pub fn scalar(&self) -> Option<f64> {
        (self.data.len() == 1).then(|| self.data[0])
    }
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.ty(), self.data)
    }
}

/// Largest elementwise difference between `actual` and `expected`, relative to
/// `max(1, |expected|)`; `None` if their types differ. NaNs compare equal to NaNs.
pub fn max_relative_error(actual: &Tensor, expected: &Tensor) -> Option<f64> {
    if actual.ty() != expected.ty() {
        return None;
    }
    let worst = actual
        .data
        .iter()
        .zip(&expected.data)
        .map(|(&a, &e)| {
            if a.is_nan() && e.is_nan() || a == e {
                0.0
            } else {
                (a - e).abs() / e.abs().max(1.0)
            }
        })
        .fold(0.0, f64::max);
    Some(worst)
}
