//! Errors of graph construction and verification.

use crate::types::{Shape, TensorType};
use thiserror::Error;

/// What went wrong while building or checking a graph. All variants are the user's
/// mistake unless said otherwise.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum IrError {
    /// An op got operands whose types it does not accept.
    #[error("{op}: {message}")]
    Type { op: &'static str, message: String },
    /// A binary op got operands of different types.
    #[error("{op}: operand types {lhs} and {rhs} differ")]
    Mismatch {
        op: &'static str,
        lhs: TensorType,
        rhs: TensorType,
    },
    /// An op got the wrong number of operands.
    #[error("{op}: expected {expected} operands, found {found}")]
    Arity {
        op: &'static str,
        expected: usize,
        found: usize,
    },
    /// A node id of this graph whose node was removed.
    #[error("node %{0} is not in the graph (it was removed)")]
    UnknownNode(usize),
    /// A node id from another graph (or another model's builder).
    #[error("node %{0} belongs to another graph")]
    ForeignNode(usize),
    /// Two inputs, two parameters or two outputs share a name.
    #[error("{kind} name {name:?} is used twice")]
    DuplicateName { kind: &'static str, name: String },
    /// An update that does not target a parameter, or whose value has another type.
    #[error("update of {target}: {message}")]
    BadUpdate { target: String, message: String },
    /// A node that must be a parameter (one to freeze) is not.
    #[error("{node} ({op}) is not a parameter")]
    NotAParameter { node: String, op: &'static str },
    /// A constant that cannot be represented in its dtype.
    #[error("const: {value} is not a valid {dtype} value")]
    BadConstant { value: f64, dtype: &'static str },
    /// A type larger than [`crate::types::MAX_ELEMENTS`] allows: a leaf declared that
    /// large, or an op (`reshape`, `broadcast`, `one_hot`, ...) whose result would be.
    #[error(
        "{op}: shape {shape:?} has more than {max} elements, the most a tensor may have{}",
        if shape.contains(&0) { " (counting extents of 0 as 1)" } else { "" }
    )]
    TooLarge {
        op: &'static str,
        shape: Shape,
        max: usize,
    },
    /// The verifier found a broken invariant; after a pass this is a kiln bug.
    #[error("invalid graph: {0}")]
    Invalid(String),
}
