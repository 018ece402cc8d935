//! Host tensors: the values the reference interpreter computes with.
//!
//! Elements are kept as `f64` whatever the dtype (i32 and bool values are exact in
//! f64), so gradient checks can run the interpreter in double precision.

use crate::types::{num_elements, DType, Shape, TensorType};
use std::fmt;

/// A dense row-major tensor on the host. Its fields are private so that every tensor
/// is made by a constructor that checks the data against the type (length, and values
/// that fit the dtype): code that reads a tensor can index it by its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub(crate) dtype: DType,
    pub(crate) shape: Shape,
    pub(crate) data: Vec<f64>,
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
        if let Some(value) = data.iter().find(|&&v| !fits(ty.dtype, v)) {
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

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements in row-major order, as f64 (exact for every dtype).
    pub fn data(&self) -> &[f64] {
        &self.data
    }

    /// Changes elements in place through `edit` (the length cannot change). An i32 or
    /// bool tensor given a value its dtype cannot hold is left as it was, and the
    /// error names the value.
    pub fn edit(&mut self, edit: impl FnOnce(&mut [f64])) -> Result<(), TensorError> {
        let saved = (self.dtype != DType::F32).then(|| self.data.clone());
        edit(&mut self.data);
        if let Some(bad) = self.data.iter().find(|&&v| !fits(self.dtype, v)) {
            let message = format!("{bad} is not a {} value", self.dtype);
            if let Some(saved) = saved {
                self.data = saved;
            }
            return Err(TensorError {
                ty: self.ty(),
                message,
            });
        }
        Ok(())
    }

    /// The elements, giving up the tensor.
    pub fn into_data(self) -> Vec<f64> {
        self.data
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

/// Whether `value` is a value of `dtype` (any f64 is an f32 value before rounding).
fn fits(dtype: DType, value: f64) -> bool {
    match dtype {
        DType::F32 => true,
        DType::I32 => {
            value.fract() == 0.0 && (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&value)
        }
        DType::Bool => value == 0.0 || value == 1.0,
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
