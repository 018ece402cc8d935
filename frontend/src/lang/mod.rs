//! The `.kiln` model language: a model file declares a network's inputs, its layers
//! (which create their own parameters) and its forward computation, with symbolic
//! dimensions and reusable blocks, and says how it is trained. The grammar, every
//! layer and every function are in docs/model-format.md.
//!
//! ```text
//! model Mlp(B = 32) {
//!   input x: f32[B, 64]
//!   input labels: i32[B]
//!   fc1 = Linear(64, 128)
//!   out = Linear(128, 10)
//!   forward {
//!     logits = out(relu(fc1(x)))
//!     loss = cross_entropy(logits, labels)
//!     output logits, loss
//!   }
//!   train loss with sgd(lr = 0.1)
//! }
//! ```
//!
//! [`load`] goes from source text to a [`ModelFile`] (a graph with initial
//! parameters, the bound dimensions and the training statement) in three steps, one
//! file each: `lexer` (tokens with byte spans), `parser` (the syntax tree of `ast`)
//! and `elaborate` (the graph, through the builder, with the functions of
//! `builtins` and the optimizers of `optimizers`). Every error is a [`ModelError`] with a span, rendered with the
//! source line and a caret by `diagnostic`.

pub mod ast;
mod builtins;
pub mod diagnostic;
mod elaborate;
pub mod lexer;
mod optimizers;
pub mod parser;

pub use diagnostic::{line_column, ModelError, Span};
pub use elaborate::{ElaborateOptions, ModelFile, TrainSpec};
pub use optimizers::{Hyper, OptimizerSpec};

/// Parses `source` and builds the model `options` choose.
pub fn load(source: &str, options: &ElaborateOptions) -> Result<ModelFile, ModelError> {
    let file = parser::parse(source)?;
    elaborate::elaborate(&file, options)
}
