//! Noise from the counter-based `random` op (`kiln_ir::Op::Random`): samples shaped
//! like a tensor (PyTorch's `rand_like` and `randn_like`) and inverted dropout.
//!
//! The seed is an `i32[]` value, usually an input, so a training loop feeds a fresh
//! seed every step and evaluation can feed a fixed one. Each call draws from the
//! builder's next stream ([`ModelBuilder::next_stream`]), so two calls with one seed
//! give independent samples, and a model gives the same samples for the same seed on
//! every machine, whatever the thread count.

use crate::builder::{Context, FrontendError, ModelBuilder};
use kiln_ir::{CmpOp, DType, Distribution, NodeId};

/// Uniform samples in `[0, 1)` with the shape of `like`.
pub fn rand_like(
    builder: &mut ModelBuilder,
    like: NodeId,
    seed: NodeId,
) -> Result<NodeId, FrontendError> {
    sample_like(builder, Distribution::Uniform, like, seed, "rand_like")
}

/// Standard normal samples with the shape of `like` (the reparameterisation
/// `μ + σ·ε` of a VAE draws its ε here).
pub fn randn_like(
    builder: &mut ModelBuilder,
    like: NodeId,
    seed: NodeId,
) -> Result<NodeId, FrontendError> {
    sample_like(builder, Distribution::Normal, like, seed, "randn_like")
}

fn sample_like(
    builder: &mut ModelBuilder,
    dist: Distribution,
    like: NodeId,
    seed: NodeId,
    context: &str,
) -> Result<NodeId, FrontendError> {
    let shape = builder.ty(like)?.shape.clone();
    let stream = builder.next_stream();
    builder
        .graph()
        .random(seed, dist, stream, &shape)
        .context(context)
}

/// Inverted dropout, as PyTorch's `dropout` in training mode: each element is zeroed
/// with probability `p` (an element is kept where its uniform sample is at least
/// `p`) and the kept ones are scaled by `1 / (1 − p)`, so the expectation is `x`.
/// `p = 0` is `x` itself and `p = 1` is zeros (no sample is drawn for either);
/// `p` outside `[0, 1]` is an error. A builder in evaluation mode
/// ([`ModelBuilder::set_evaluation`]) makes it the identity, as PyTorch's eval mode.
pub fn dropout(
    builder: &mut ModelBuilder,
    x: NodeId,
    p: f64,
    seed: NodeId,
) -> Result<NodeId, FrontendError> {
    let context = "dropout";
    if !(0.0..=1.0).contains(&p) {
        return Err(FrontendError::Argument {
            context: context.to_string(),
            message: format!("the probability p = {p} must be in [0, 1]"),
        });
    }
    // Check the operands even where no sample is drawn.
    let found = builder.ty(x)?.clone();
    if found.dtype != DType::F32 {
        return Err(FrontendError::Operand {
            context: context.to_string(),
            expected: "an f32 tensor".to_string(),
            found,
        });
    }
    builder.check_own(seed, context)?;
    if p == 0.0 || builder.evaluation() {
        return Ok(x);
    }
    if p == 1.0 {
        return builder.scalar_like(0.0, x);
    }
    let u = rand_like(builder, x, seed)?;
    let graph = builder.graph();
    let threshold = graph.constant_like(p, u).context(context)?;
    let keep = graph.compare(CmpOp::Ge, u, threshold).context(context)?;
    let scale = graph.constant_like(1.0 / (1.0 - p), x).context(context)?;
    let scaled = graph.mul(x, scale).context(context)?;
    let zero = graph.constant_like(0.0, x).context(context)?;
    graph.select(keep, scaled, zero).context(context)
}
