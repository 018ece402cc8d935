//! kiln-frontend: the builder API that declares networks as kiln graphs, with the
//! layer library, losses and initialisers.
//!
//! Composite layers are built from IR primitives here, so autodiff and the rewriter
//! see through them.

pub mod activations;
pub mod builder;
pub mod conv;
pub mod init;
pub mod lang;
pub mod layers;
pub mod loss;
pub mod models;
pub mod norm;
pub mod positional;
pub mod random;
pub mod recurrent;
pub mod sequence;
pub mod tensors;

pub use builder::{FrontendError, Model, ModelBuilder};
pub use init::Init;
