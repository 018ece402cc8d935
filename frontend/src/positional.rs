//! Sinusoidal positional encoding (Vaswani et al., "Attention is all you need"):
//! `PE[pos, 2i] = sin(pos / 10000^(2i/d))`, `PE[pos, 2i+1] = cos(pos / 10000^(2i/d))`,
//! added to a sequence of `d`-wide embeddings. kiln has no sine op, so, as PyTorch's
//! tutorial registers the table with `register_buffer`, the table is a buffer
//! computed when the layer is declared: a frozen parameter that no optimizer trains.

use crate::builder::{Context, FrontendError, ModelBuilder};
use kiln_ir::alloc::try_collect;
use kiln_ir::types::check_size;
use kiln_ir::{BinaryOp, DType, NodeId};

/// `PE[pos, j]` in f64: column `j` has frequency `10000^(−2⌊j/2⌋/d)`, a sine in the
/// even columns and a cosine in the odd ones.
pub fn sinusoid(pos: usize, j: usize, dim: usize) -> f64 {
    let exponent = (2 * (j / 2)) as f64 / dim as f64;
    let angle = pos as f64 / 10000f64.powf(exponent);
    if j.is_multiple_of(2) {
        angle.sin()
    } else {
        angle.cos()
    }
}

/// `x + PE[..S]` for `x: [.., S, d]` (PyTorch's tutorial `PositionalEncoding`,
/// without its dropout): the buffer `pe: [max_len, d]` holds [`sinusoid`] rounded to
/// f32, and a sequence may be up to `max_len` long.
#[derive(Clone, Debug)]
pub struct PositionalEncoding {
    table: NodeId,
    dim: usize,
    max_len: usize,
}

impl PositionalEncoding {
    /// The layer for `dim`-wide embeddings and sequences of at most `max_len`
    /// positions; its table is the buffer `{name}.pe`.
    pub fn new(
        builder: &mut ModelBuilder,
        name: &str,
        dim: usize,
        max_len: usize,
    ) -> Result<PositionalEncoding, FrontendError> {
        let context = "PositionalEncoding";
        if dim == 0 || max_len == 0 {
            return Err(FrontendError::Argument {
                context: context.to_string(),
                message: format!("d_model {dim} and max_len {max_len} must be at least 1"),
            });
        }
        let shape = [max_len, dim];
        // The limit before the allocation: it refuses what no machine could hold.
        check_size("param", &shape).context(context)?;
        let values = try_collect(
            (0..max_len * dim).map(|k| sinusoid(k / dim, k % dim, dim) as f32),
            || format!("the positional encoding table {shape:?}"),
        )
        .map_err(|source| FrontendError::OutOfMemory {
            context: context.to_string(),
            source,
        })?;
        let table = builder.buffer(&format!("{name}.pe"), &shape, values)?;
        Ok(PositionalEncoding {
            table,
            dim,
            max_len,
        })
    }

    pub fn forward(&self, builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
        let context = "positional_encoding";
        builder.check_own(self.table, "PositionalEncoding layer")?;
        let ty = builder.ty(x)?.clone();
        let rank = ty.rank();
        let fits = ty.dtype == DType::F32
            && rank >= 2
            && ty.shape[rank - 1] == self.dim
            && ty.shape[rank - 2] <= self.max_len;
        if !fits {
            return Err(FrontendError::Operand {
                context: context.to_string(),
                expected: format!("f32[…, sequence ≤ {}, {}]", self.max_len, self.dim),
                found: ty,
            });
        }
        let length = ty.shape[rank - 2];
        let rows = builder
            .graph()
            .slice(self.table, &[0, 0], &[length, self.dim], &[1, 1])
            .context(context)?;
        builder.binary(BinaryOp::Add, x, rows)
    }
}
