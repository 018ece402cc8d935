//! kiln: a dataflow-graph compiler for neural networks.
//!
//! This crate is the facade: declare a network with [`frontend`], then [`compile`] it
//! (inference) or [`compile_train_step`] (forward, loss, backward and optimizer as
//! one graph), run it through the pass pipeline and the Cranelift JIT, and train it
//! with [`Trainer`].

pub mod aot;
pub mod compile;
pub mod data;
pub mod decode;
pub mod fsutil;
pub mod gpu;
pub mod gradcheck;
pub mod metrics;
pub mod model_file;
pub mod npy;
pub mod plot;
pub mod trainer;
pub mod weights;

pub use compile::{compile, compile_train_step, CompileReport, Device, Error, Executable};
pub use data::{DataError, Dataset};
pub use kiln_backend::{Arg, CudaError, Runtime};
pub use kiln_passes::optimizer::{Averaging, Optimizer, Rule};
pub use trainer::{Trainer, TrainerConfig, TrainerState};

pub use kiln_backend as backend;
pub use kiln_frontend as frontend;
pub use kiln_ir as ir;
pub use kiln_passes as passes;
