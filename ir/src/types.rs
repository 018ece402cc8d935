//! Element types and tensor types: every value in a graph has a static dtype and shape.

use crate::error::IrError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DType {
    F32,
    I32,
    /// Stored as a 32-bit 0/1 word by the CPU backend so that masks stay lane-sized.
    Bool,
}

impl DType {
    pub const ALL: [DType; 3] = [DType::F32, DType::I32, DType::Bool];

    /// The mnemonic used by the text IR.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::Bool => "bool",
        }
    }

    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|dtype| dtype.name() == name)
    }

    /// Size of one element in a host or device buffer, in bytes.
    pub fn size_bytes(self) -> usize {
        4
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A static shape: the extent of every axis, outermost first. Rank 0 is a scalar.
pub type Shape = Vec<usize>;

/// The size limit on every tensor type in a graph: the product of a shape's extents,
/// counting extents of 0 as 1, is at most this many elements.
///
/// Why this number: generated code reads a loop index as an i32 value and the kernel
/// IR allows loop extents up to `i32::MAX`, so every element of a tensor must be
/// numbered by an i32. Counting zero extents as 1 also bounds every row-major stride
/// of an empty tensor (`[0, 2^40, 2^40]` has no elements but a stride of 2^80), so
/// element counts, strides and element offsets all fit in an i32, and byte offsets
/// (at most 4 bytes an element, computed in i64 by generated code and in usize on the
/// host) cannot overflow either. Enforced by [`check_size`] wherever a type enters a
/// graph: leaves and every op's inferred result type.
pub const MAX_ELEMENTS: usize = i32::MAX as usize;

/// The number of elements of a shape, or `None` if it does not fit in a `usize`.
pub fn checked_num_elements(shape: &[usize]) -> Option<usize> {
    checked_product(shape.iter().copied())
}

fn checked_product(mut extents: impl Iterator<Item = usize>) -> Option<usize> {
    extents.try_fold(1usize, |count, extent| count.checked_mul(extent))
}

/// The number of elements of a shape. Exact for every shape within [`MAX_ELEMENTS`]
/// (every type in a graph); a count too large for a `usize` saturates to `usize::MAX`
/// instead of wrapping, so it still compares as too large.
pub fn num_elements(shape: &[usize]) -> usize {
    // A saturated prefix only stays wrong if no later extent is 0, and then the true
    // count is at least as large.
    shape
        .iter()
        .fold(1usize, |count, &extent| count.saturating_mul(extent))
}

/// Row-major strides (in elements) of a shape. Exact for every shape within
/// [`MAX_ELEMENTS`]; a stride too large for a `usize` saturates instead of wrapping.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for axis in (0..shape.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1].saturating_mul(shape[axis + 1]);
    }
    strides
}

/// Checks `shape` against [`MAX_ELEMENTS`]; the error names `op`, the op (or leaf
/// kind) that would create a value of this shape.
pub fn check_size(op: &'static str, shape: &[usize]) -> Result<(), IrError> {
    // Zero extents count as 1 (see `MAX_ELEMENTS`).
    match checked_product(shape.iter().copied().filter(|&extent| extent != 0)) {
        Some(count) if count <= MAX_ELEMENTS => Ok(()),
        _ => Err(IrError::TooLarge {
            op,
            shape: shape.to_vec(),
            max: MAX_ELEMENTS,
        }),
    }
}

/// The type of a value: dtype and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: impl Into<Shape>) -> TensorType {
        TensorType {
            dtype,
            shape: shape.into(),
        }
    }

    pub fn f32(shape: impl Into<Shape>) -> TensorType {
        TensorType::new(DType::F32, shape)
    }

    pub fn i32(shape: impl Into<Shape>) -> TensorType {
        TensorType::new(DType::I32, shape)
    }

    pub fn bool(shape: impl Into<Shape>) -> TensorType {
        TensorType::new(DType::Bool, shape)
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn num_elements(&self) -> usize {
        num_elements(&self.shape)
    }

    /// Bytes of the elements in a device buffer; saturates like `num_elements`.
    pub fn size_bytes(&self) -> usize {
        self.num_elements().saturating_mul(self.dtype.size_bytes())
    }

    pub fn with_shape(&self, shape: impl Into<Shape>) -> TensorType {
        TensorType::new(self.dtype, shape)
    }

    pub fn with_dtype(&self, dtype: DType) -> TensorType {
        TensorType::new(dtype, self.shape.clone())
    }
}

/// Prints as `f32[2,3]`; a scalar prints as `f32[]`.
impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (axis, extent) in self.shape.iter().enumerate() {
            if axis > 0 {
                f.write_str(",")?;
            }
            write!(f, "{extent}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_major_strides() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
        assert_eq!(strides(&[5]), vec![1]);
    }

    #[test]
    fn counts_and_strides_saturate_instead_of_wrapping() {
        let huge = [(1usize << 63) + 1, 2];
        assert_eq!(checked_num_elements(&huge), None);
        assert_eq!(num_elements(&huge), usize::MAX);
        assert_eq!(
            strides(&[3, 1 << 40, 1 << 40]),
            vec![usize::MAX, 1 << 40, 1]
        );
        // An extent of 0 anywhere makes the count 0, even after a saturated prefix.
        assert_eq!(num_elements(&[1 << 40, 1 << 40, 0]), 0);
        assert_eq!(checked_num_elements(&[1 << 40, 1 << 40, 0]), None);
        assert_eq!(num_elements(&[0, 5]), 0);
        assert_eq!(strides(&[0, 5]), vec![5, 1]);
    }

    #[test]
    fn size_limit_counts_zero_extents_as_one() {
        assert!(check_size("input", &[MAX_ELEMENTS]).is_ok());
        assert!(check_size("input", &[0, MAX_ELEMENTS]).is_ok());
        assert!(check_size("input", &[]).is_ok());
        assert!(check_size("input", &[0, 0]).is_ok());
        let err = check_size("input", &[MAX_ELEMENTS + 1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input: shape [2147483648] has more than 2147483647 elements, the most a tensor may have"
        );
        // No elements, but a stride of 2^40 that generated code could not index.
        let err = check_size("input", &[0, 1 << 20, 1 << 20]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input: shape [0, 1048576, 1048576] has more than 2147483647 elements, the most a tensor may have (counting extents of 0 as 1)"
        );
    }

    #[test]
    fn tensor_type_display() {
        assert_eq!(TensorType::f32([2, 3]).to_string(), "f32[2,3]");
        assert_eq!(TensorType::bool(Vec::new()).to_string(), "bool[]");
    }
}
