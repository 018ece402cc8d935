//! Host tensors: the values the reference interpreter computes with.
//!
//! Elements are kept as `f64` whatever the dtype (i32 and bool values are exact in
//! f64), so gradient checks can run the interpreter in double precision.

use crate::alloc::{try_clone, try_collect, try_vec, OutOfMemory};
use crate::types::{DType, Shape, TensorType};
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

/// Why a tensor could not be made.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TensorError {
    /// Data that does not fit the shape, or values that do not fit the dtype (the
    /// caller's mistake).
    #[error("tensor of type {ty}: {message}")]
    Invalid { ty: TensorType, message: String },
    /// The tensor's memory could not be had (the environment's limit, not a bug).
    #[error(transparent)]
    OutOfMemory(#[from] OutOfMemory),
}

impl Tensor {
    /// A tensor from `f64` values, checked against its type.
    pub fn new(ty: TensorType, data: Vec<f64>) -> Result<Tensor, TensorError> {
        check_len(&ty, data.len())?;
        if let Some(value) = data.iter().find(|&&v| !fits(ty.dtype, v)) {
            return Err(TensorError::Invalid {
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
        Tensor::widened(TensorType::f32(shape), data.iter().map(|&v| f64::from(v)))
    }

    pub fn i32(shape: impl Into<Shape>, data: &[i32]) -> Result<Tensor, TensorError> {
        Tensor::widened(TensorType::i32(shape), data.iter().map(|&v| f64::from(v)))
    }

    /// A tensor of type `ty` from values widened to f64, checked like `new`; the
    /// length is checked before any memory is taken.
    fn widened(
        ty: TensorType,
        values: impl ExactSizeIterator<Item = f64>,
    ) -> Result<Tensor, TensorError> {
        check_len(&ty, values.len())?;
        let data = try_collect(values, || format!("a tensor {ty}"))?;
        Tensor::new(ty, data)
    }

    /// A tensor of type `ty` with every element `value` (not checked against the
    /// dtype), or an error if its memory cannot be had.
    pub fn full(ty: &TensorType, value: f64) -> Result<Tensor, TensorError> {
        let data = try_vec(value, ty.num_elements(), || format!("a tensor {ty}"))?;
        Ok(Tensor {
            dtype: ty.dtype,
            shape: ty.shape.clone(),
            data,
        })
    }

    /// A copy of the tensor, or an error if its memory cannot be had (`clone` aborts
    /// instead).
    pub fn try_clone(&self) -> Result<Tensor, OutOfMemory> {
        Ok(Tensor {
            dtype: self.dtype,
            shape: self.shape.clone(),
            data: try_clone(&self.data, || format!("a copy of a tensor {}", self.ty()))?,
        })
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
        let saved = if self.dtype == DType::F32 {
            None
        } else {
            Some(try_clone(&self.data, || {
                format!("a saved copy of a tensor {}", self.ty())
            })?)
        };
        edit(&mut self.data);
        if let Some(bad) = self.data.iter().find(|&&v| !fits(self.dtype, v)) {
            let message = format!("{bad} is not a {} value", self.dtype);
            if let Some(saved) = saved {
                self.data = saved;
            }
            return Err(TensorError::Invalid {
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

/// Checks that `len` elements fill a tensor of type `ty`.
fn check_len(ty: &TensorType, len: usize) -> Result<(), TensorError> {
    if len != ty.num_elements() {
        return Err(TensorError::Invalid {
            ty: ty.clone(),
            message: format!("{len} elements given, {} expected", ty.num_elements()),
        });
    }
    Ok(())
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
