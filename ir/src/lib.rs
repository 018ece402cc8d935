//! kiln-ir: the typed tensor graph, its text form, and the reference interpreter that
//! defines what every op means.

pub mod alloc;
pub mod dot;
pub mod error;
pub mod gpu;
pub mod graph;
pub mod interp;
pub mod kernel;
pub mod kernel_filetest;
pub mod kernel_interp;
pub mod kernel_text;
mod lex;
pub mod op;
pub mod random;
pub mod rng;
pub mod scalar;
pub mod serial;
pub mod target;
pub mod tensor;
pub mod text;
pub mod types;
pub mod verify;

pub use alloc::OutOfMemory;
pub use error::IrError;
pub use gpu::{GpuSchedule, GpuTarget, Launch};
pub use graph::{Graph, GraphId, Node, NodeId};
pub use interp::{evaluate, Evaluation, Feeds, InterpError, Precision};
pub use op::{BinaryOp, CmpOp, Distribution, Op, ReduceOp, UnaryOp};
pub use rng::Rng;
pub use target::Target;
pub use tensor::{max_relative_error, Tensor, TensorError};
pub use types::{DType, Shape, TensorType};
pub use verify::verify;
