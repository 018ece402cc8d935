//! Layers of the sequence models: embeddings, layer normalisation, multi-head
//! self-attention and the LSTM, with PyTorch's parameter names, shapes and default initialisations,
//! built from IR primitives (an LSTM is unrolled over its time steps, every step
//! sharing the layer's weights).

use crate::builder::{Context, FrontendError, ModelBuilder};
use crate::init::Init;
use kiln_ir::{BinaryOp, CmpOp, DType, NodeId, Op, TensorType};

fn operand_error(context: &str, expected: String, found: TensorType) -> FrontendError {
    FrontendError::Operand {
        context: context.to_string(),
        expected,
        found,
    }
}

/// `x @ wᵀ` for `x: [rows, in]` and a PyTorch-layout weight `w: [out, in]`.
pub(crate) fn times_transposed(
    builder: &mut ModelBuilder,
    x: NodeId,
    w: NodeId,
    context: &str,
) -> Result<NodeId, FrontendError> {
    let op = Op::MatMul {
        transpose_a: false,
        transpose_b: true,
    };
    builder.graph().add(op, &[x, w]).context(context)
}

/// `x` sliced to `from..to` along its last axis.
pub(crate) fn last_axis(
    builder: &mut ModelBuilder,
    x: NodeId,
    from: usize,
    to: usize,
    context: &str,
) -> Result<NodeId, FrontendError> {
    let shape = builder.ty(x)?.shape.clone();
    let rank = shape.len();
    let mut starts = vec![0; rank];
    let mut ends = shape;
    starts[rank - 1] = from;
    ends[rank - 1] = to;
    builder
        .graph()
        .slice(x, &starts, &ends, &vec![1; rank])
        .context(context)
}

/// Layer normalisation over the last axis (PyTorch's `nn.LayerNorm(d)`):
/// `(x − mean) / sqrt(var + eps) · weight + bias`, the variance biased (divided by
/// `d`); `weight` starts at ones and `bias` at zeros.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: NodeId,
    bias: NodeId,
    features: usize,
    eps: f64,
}

impl LayerNorm {
    pub fn new(
        builder: &mut ModelBuilder,
        name: &str,
        features: usize,
        eps: f64,
    ) -> Result<LayerNorm, FrontendError> {
        if !(eps.is_finite() && eps > 0.0) {
            return Err(FrontendError::Argument {
                context: "LayerNorm".to_string(),
                message: format!("eps {eps} must be a positive number"),
            });
        }
        let weight =
            builder.parameter(&format!("{name}.weight"), &[features], Init::Constant(1.0))?;
        let bias = builder.parameter(&format!("{name}.bias"), &[features], Init::Zeros)?;
        Ok(LayerNorm {
            weight,
            bias,
            features,
            eps,
        })
    }

    pub fn forward(&self, builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
        let context = "layer_norm";
        builder.check_own(self.weight, "LayerNorm layer")?;
        let ty = builder.ty(x)?.clone();
        if ty.dtype != DType::F32 || ty.shape.last() != Some(&self.features) {
            let expected = format!("f32[…, {}]", self.features);
            return Err(operand_error(context, expected, ty));
        }
        let last = ty.rank() - 1;
        let graph = builder.graph();
        let mean = graph.reduce_mean(x, &[last]).context(context)?;
        let mean = graph.broadcast(mean, ty.shape.clone()).context(context)?;
        let centred = graph.sub(x, mean).context(context)?;
        let square = graph.mul(centred, centred).context(context)?;
        let var = graph.reduce_mean(square, &[last]).context(context)?;
        let eps = graph.constant_like(self.eps, var).context(context)?;
        let var = graph.add_(var, eps).context(context)?;
        let scale = graph.rsqrt(var).context(context)?;
        let scale = graph.broadcast(scale, ty.shape.clone()).context(context)?;
        let normal = graph.mul(centred, scale).context(context)?;
        let scaled = builder.binary(BinaryOp::Mul, normal, self.weight)?;
        builder.binary(BinaryOp::Add, scaled, self.bias)
    }
}

/// Multi-head self-attention over `x: [B, S, d]` (PyTorch's
/// `nn.MultiheadAttention(d, heads, batch_first=True)` applied as `attn(x, x, x)`):
/// `in_proj_weight: [3d, d]` (Glorot-uniform) and `in_proj_bias: [3d]` (zeros) make
/// the queries, keys and values; each head attends with
/// `softmax(q kᵀ / sqrt(d / heads)) v`; `out_proj.weight: [d, d]` and
/// `out_proj.bias` (zeros) mix the heads.
#[derive(Clone, Debug)]
pub struct MultiheadAttention {
    /// Whether position `i` attends only to positions `j ≤ i` (a decoder's causal
    /// mask, PyTorch's `is_causal`).
    causal: bool,
    in_weight: NodeId,
    in_bias: NodeId,
    out_weight: NodeId,
    out_bias: NodeId,
    dim: usize,
    heads: usize,
}

impl MultiheadAttention {
    /// `scores: [b, heads, s, s]` with the masked ones -∞ (the causal mask and the
    /// padded keys); `scores` itself when nothing is masked.
    fn mask(
        &self,
        builder: &mut ModelBuilder,
        scores: NodeId,
        key_padding: Option<NodeId>,
        context: &str,
    ) -> Result<NodeId, FrontendError> {
        let shape = builder.ty(scores)?.shape.clone();
        let (b, s) = (shape[0], shape[2]);
        let mut allowed = None;
        if self.causal {
            let graph = builder.graph();
            let key = graph
                .add(
                    Op::Iota {
                        axis: 3,
                        shape: shape.clone(),
                    },
                    &[],
                )
                .context(context)?;
            let query = graph
                .add(
                    Op::Iota {
                        axis: 2,
                        shape: shape.clone(),
                    },
                    &[],
                )
                .context(context)?;
            allowed = Some(graph.compare(CmpOp::Le, key, query).context(context)?);
        }
        if let Some(padding) = key_padding {
            let ty = builder.ty(padding)?.clone();
            if ty.shape != [b, s] {
                return Err(operand_error(
                    context,
                    format!("a key padding mask [{b}, {s}] (nonzero where padded)"),
                    ty,
                ));
            }
            let graph = builder.graph();
            let padding = if ty.dtype == DType::Bool {
                graph.cast(padding, DType::I32).context(context)?
            } else {
                padding
            };
            let zero = graph.constant_like(0.0, padding).context(context)?;
            let kept = graph.compare(CmpOp::Eq, padding, zero).context(context)?;
            let kept = graph.reshape(kept, vec![b, 1, 1, s]).context(context)?;
            let kept = graph.broadcast(kept, shape.clone()).context(context)?;
            allowed = Some(match allowed {
                None => kept,
                Some(causal) => {
                    let never = graph.constant_like(0.0, causal).context(context)?;
                    graph.select(causal, kept, never).context(context)?
                }
            });
        }
        let Some(allowed) = allowed else {
            return Ok(scores);
        };
        let graph = builder.graph();
        let minus_inf = graph
            .constant_like(f64::NEG_INFINITY, scores)
            .context(context)?;
        graph.select(allowed, scores, minus_inf).context(context)
    }

    pub fn new(
        builder: &mut ModelBuilder,
        name: &str,
        dim: usize,
        heads: usize,
    ) -> Result<MultiheadAttention, FrontendError> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(FrontendError::Argument {
                context: "MultiheadAttention".to_string(),
                message: format!("embed_dim {dim} must divide into num_heads = {heads} heads"),
            });
        }
        // Glorot over the three projections stacked, as PyTorch's xavier_uniform_ on
        // the [3d, d] matrix.
        let in_weight = builder.parameter(
            &format!("{name}.in_proj_weight"),
            &[3 * dim, dim],
            Init::GlorotUniform,
        )?;
        let in_bias =
            builder.parameter(&format!("{name}.in_proj_bias"), &[3 * dim], Init::Zeros)?;
        let out_weight = builder.parameter(
            &format!("{name}.out_proj.weight"),
            &[dim, dim],
            Init::torch_linear(dim),
        )?;
        let out_bias = builder.parameter(&format!("{name}.out_proj.bias"), &[dim], Init::Zeros)?;
        Ok(MultiheadAttention {
            causal: false,
            in_weight,
            in_bias,
            out_weight,
            out_bias,
            dim,
            heads,
        })
    }

    /// The layer with a causal mask: position `i` attends only to `j ≤ i`.
    pub fn causal(self) -> MultiheadAttention {
        MultiheadAttention {
            causal: true,
            ..self
        }
    }

    pub fn forward(&self, builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
        self.forward_masked(builder, x, None)
    }

    /// [`MultiheadAttention::forward`] that also ignores the keys where
    /// `key_padding: [batch, sequence]` (i32, f32 or bool) is nonzero, as PyTorch's
    /// boolean `key_padding_mask`. Masked scores are -∞ before the softmax, so a query
    /// that may attend to no key gets NaN weights, as in PyTorch.
    pub fn forward_masked(
        &self,
        builder: &mut ModelBuilder,
        x: NodeId,
        key_padding: Option<NodeId>,
    ) -> Result<NodeId, FrontendError> {
        let context = "multihead_attention";
        builder.check_own(self.in_weight, "MultiheadAttention layer")?;
        let ty = builder.ty(x)?.clone();
        let d = self.dim;
        if ty.dtype != DType::F32 || ty.rank() != 3 || ty.shape[2] != d {
            return Err(operand_error(
                context,
                format!("f32[batch, sequence, {d}]"),
                ty,
            ));
        }
        let (b, s, h) = (ty.shape[0], ty.shape[1], self.heads);
        let dh = d / h;
        let rows = builder
            .graph()
            .reshape(x, vec![b * s, d])
            .context(context)?;
        let qkv = times_transposed(builder, rows, self.in_weight, context)?;
        let qkv = builder.binary(BinaryOp::Add, qkv, self.in_bias)?;
        let mut parts = Vec::with_capacity(3);
        for index in 0..3 {
            let part = last_axis(builder, qkv, index * d, (index + 1) * d, context)?;
            let graph = builder.graph();
            let part = graph.reshape(part, vec![b, s, h, dh]).context(context)?;
            parts.push(graph.transpose(part, &[0, 2, 1, 3]).context(context)?);
        }
        let (q, k, v) = (parts[0], parts[1], parts[2]);
        let scores = builder
            .graph()
            .add(
                Op::MatMul {
                    transpose_a: false,
                    transpose_b: true,
                },
                &[q, k],
            )
            .context(context)?;
        let scale = builder
            .graph()
            .constant_like(1.0 / (dh as f64).sqrt(), scores)
            .context(context)?;
        let scores = builder.graph().mul(scores, scale).context(context)?;
        let scores = self.mask(builder, scores, key_padding, context)?;
        let weights = crate::activations::softmax(builder, scores, -1)?;
        let graph = builder.graph();
        let context_heads = graph.matmul(weights, v).context(context)?;
        let merged = graph
            .transpose(context_heads, &[0, 2, 1, 3])
            .context(context)?;
        let merged = graph.reshape(merged, vec![b * s, d]).context(context)?;
        let out = times_transposed(builder, merged, self.out_weight, context)?;
        let out = builder.binary(BinaryOp::Add, out, self.out_bias)?;
        builder.graph().reshape(out, vec![b, s, d]).context(context)
    }
}

/// A lookup table (PyTorch's `nn.Embedding(num, dim)`): `weight: [num, dim]`, drawn
/// from `N(0, 1)`, and i32 indices `[…]` give `[…, dim]`. The lookup is
/// `gather(weight, indices, axis 0)`, so its gradient is a scatter-add of the
/// cotangent rows into the table; an index outside `0..num` gives a row of zeros.
#[derive(Clone, Debug)]
pub struct Embedding {
    weight: NodeId,
}

impl Embedding {
    pub fn new(
        builder: &mut ModelBuilder,
        name: &str,
        num: usize,
        dim: usize,
    ) -> Result<Embedding, FrontendError> {
        let weight = builder.parameter(
            &format!("{name}.weight"),
            &[num, dim],
            Init::Normal { std: 1.0 },
        )?;
        Ok(Embedding { weight })
    }

    pub fn forward(
        &self,
        builder: &mut ModelBuilder,
        indices: NodeId,
    ) -> Result<NodeId, FrontendError> {
        let context = "embedding";
        builder.check_own(self.weight, "Embedding layer")?;
        let ty = builder.ty(indices)?.clone();
        if ty.dtype != DType::I32 {
            return Err(operand_error(context, "i32 indices".to_string(), ty));
        }
        builder
            .graph()
            .gather(self.weight, indices, 0, 0)
            .context(context)
    }
}
