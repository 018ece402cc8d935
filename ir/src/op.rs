//! The primitive op set and its typing rules.
//!
//! Shapes in the IR are exact: binary ops need equal shapes and numpy-style
//! broadcasting is spelled out with `broadcast`, which the frontend inserts.
//! Reductions keep the reduced axes with extent 1, so `broadcast` can undo them.

use crate::error::IrError;
use crate::types::{check_size, num_elements, DType, Shape, TensorType};
use serde::{Deserialize, Serialize};

/// Elementwise unary ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Relu,
    /// IEEE square root (NaN below zero, -0 for -0).
    Sqrt,
    /// `1 / sqrt(x)`, two roundings.
    Rsqrt,
    Abs,
    /// -1, +1, or the operand itself for ±0 and NaN.
    Sign,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    Tanh,
    /// `ln(1 + exp(x))`.
    Softplus,
    /// `exp(x) - 1`, accurate near 0.
    Expm1,
    /// `ln(1 + x)`, accurate near 0.
    Log1p,
    /// The error function.
    Erf,
}

/// Elementwise binary ops on operands of one type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    /// NaN if either operand is NaN, and -0 < +0 (Cranelift's `fmin`).
    Min,
    /// `a` to the power `b`, with C99's special cases (see `scalar::pow_f32`).
    Pow,
}

/// Elementwise comparisons; the result is `bool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Reductions over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReduceOp {
    Sum,
    Max,
    Mean,
}

/// What [`Op::Random`] samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Distribution {
    /// Uniform on `[0, 1)`, on the grid `k·2^-23`.
    Uniform,
    /// Standard normal (mean 0, variance 1).
    Normal,
}

impl Distribution {
    pub const ALL: [Distribution; 2] = [Distribution::Uniform, Distribution::Normal];

    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Normal => "normal",
        }
    }

    /// Element `counter` of the sample of stream `stream` under `seed`
    /// ([`crate::scalar::random`] defines the bits and the transforms).
    pub fn sample(self, seed: i32, stream: i32, counter: i32) -> f32 {
        match self {
            Distribution::Uniform => crate::scalar::uniform_f32(seed, stream, counter),
            Distribution::Normal => crate::scalar::normal_f32(seed, stream, counter),
        }
    }
}

/// Stride, padding, dilation and groups of a convolution over the trailing (spatial)
/// axes of channels-first tensors, one entry per spatial axis; shared by
/// [`Op::Conv`] and its two backward ops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConvSpec {
    pub stride: Vec<usize>,
    /// Zeros before each spatial axis.
    pub low: Vec<usize>,
    /// Zeros after each spatial axis.
    pub high: Vec<usize>,
    /// The spacing of the kernel's taps.
    pub dilation: Vec<usize>,
    /// Channels split into this many independent groups.
    pub groups: usize,
}

impl ConvSpec {
    /// The output extent of a spatial axis of `n` elements under a kernel of `taps`
    /// taps: `floor((n + low + high − d·(taps − 1) − 1) / s) + 1` (PyTorch's), or
    /// `None` when the kernel does not fit the padded axis.
    pub fn out_extent(&self, axis: usize, n: usize, taps: usize) -> Option<usize> {
        let padded = n
            .checked_add(self.low[axis])?
            .checked_add(self.high[axis])?;
        let span = self.dilation[axis]
            .checked_mul(taps.checked_sub(1)?)?
            .checked_add(1)?;
        Some(padded.checked_sub(span)? / self.stride[axis] + 1)
    }
}

/// Which reduction a pooling takes over its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PoolKind {
    /// The maximum; padding is -inf, so it never wins.
    Max,
    /// The mean over the whole window, padding (zeros) included: PyTorch's default
    /// `count_include_pad=True`.
    Avg,
}

impl PoolKind {
    pub const ALL: [PoolKind; 2] = [PoolKind::Max, PoolKind::Avg];

    /// The value the input is padded with.
    pub fn padding_value(self) -> f64 {
        match self {
            PoolKind::Max => f64::NEG_INFINITY,
            PoolKind::Avg => 0.0,
        }
    }
}

/// A pooling window over the trailing (spatial) axes of a channels-first tensor: its
/// extent, stride and padding per spatial axis.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PoolSpec {
    pub window: Vec<usize>,
    pub stride: Vec<usize>,
    pub low: Vec<usize>,
    pub high: Vec<usize>,
}

impl PoolSpec {
    /// `floor((n + low + high − window) / stride) + 1`, or `None` when the window does
    /// not fit the padded axis.
    pub fn out_extent(&self, axis: usize, n: usize) -> Option<usize> {
        let padded = n
            .checked_add(self.low[axis])?
            .checked_add(self.high[axis])?;
        Some(padded.checked_sub(self.window[axis])? / self.stride.get(axis).copied()?.max(1) + 1)
    }

    /// The number of elements in a window.
    pub fn count(&self) -> usize {
        self.window.iter().product()
    }
}

/// One node's operation. A closed set: passes and backends match on it exhaustively.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A value fed by the caller on every run.
    Input {
        name: String,
    },
    /// Persistent state (a weight): fed once, kept by the executable, updated by `update`s.
    Parameter {
        name: String,
    },
    /// A tensor whose every element is `value`.
    Constant {
        value: f64,
    },
    Unary(UnaryOp),
    Binary(BinaryOp),
    Compare(CmpOp),
    /// `select(cond, on_true, on_false)`, elementwise.
    Select,
    Cast {
        to: DType,
    },
    /// Same rank; every axis of extent 1 stretches to the target extent.
    Broadcast {
        shape: Shape,
    },
    /// Reduces `axes` (sorted, distinct) to extent 1.
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
    },
    /// Same elements in row-major order, new shape.
    Reshape {
        shape: Shape,
    },
    /// Output axis `i` is input axis `perm[i]`.
    Transpose {
        perm: Vec<usize>,
    },
    /// `[.., m, k] x [.., k, n] -> [.., m, n]` with equal leading (batch) axes; the flags
    /// read an operand's last two axes swapped, so transposes fold into the matmul.
    MatMul {
        transpose_a: bool,
        transpose_b: bool,
    },
    /// `i32[..] -> f32[.., depth]`: 1.0 where the label equals the index, else 0.0
    /// (a label outside `0..depth` gives a row of zeros).
    OneHot {
        depth: usize,
    },
    /// Per axis, the elements `start, start + step, …` below `end`:
    /// `ceil((end − start) / step)` of them (`start ≤ end ≤ extent`, `step ≥ 1`).
    Slice {
        starts: Vec<usize>,
        ends: Vec<usize>,
        steps: Vec<usize>,
    },
    /// XLA's pad: per axis, `low` elements of `value` before, `interior` between
    /// each pair of elements and `high` after, so an extent `n` becomes
    /// `low + n + max(n − 1, 0)·interior + high`. The adjoint of a strided slice.
    Pad {
        low: Vec<usize>,
        high: Vec<usize>,
        interior: Vec<usize>,
        /// In JSON as text (`"-inf"`), as JSON numbers have no infinities or NaN.
        #[serde(with = "crate::serial::float_text")]
        value: f64,
    },
    /// The two operands one after the other along `axis`; their other extents and
    /// dtypes agree.
    Concat {
        axis: usize,
    },
    /// `i32[] -> f32[shape]`: a sample of `dist`, element `n` (row-major) a pure
    /// function of `(seed, stream, n)` — counter-based (Threefry-2x32), so it does not
    /// depend on tiling or threads, and equal seeds and streams give equal tensors.
    /// The seed is the operand, so a training loop feeds a new one each step;
    /// `stream` tells apart the samples of one graph that share a seed.
    Random {
        dist: Distribution,
        stream: u32,
        shape: Shape,
    },
    /// The convolution (cross-correlation, as PyTorch's `conv1d`/`conv2d`) of
    /// `x: [N, G·C, *in]` with `w: [G·O, C, *taps]`: `[N, G·O, *out]`, each output
    /// extent [`ConvSpec::out_extent`]. Output channel `g·O + o` sums, over the taps in
    /// row-major order and within each tap over the group's channels in order,
    /// `x_padded[n, g·C + c, y·s + t·d] · w[g·O + o, c, t]`, one f32 `fma` a term from
    /// +0 (padding zeros included).
    Conv(ConvSpec),
    /// The gradient of [`Op::Conv`] with respect to `x`: `(dy, w) -> [N, G·C, *input]`
    /// (`input` is the spatial shape of `x`, which the output extents do not fix).
    /// For element `i` and each tap `t` in row-major order, the tap's contribution is
    /// `Σ_o dy[n, g·O + o, y] · w[g·O + o, c, t]` (one `fma` a term from +0) for the
    /// output `y` with `y·s + t·d = i + low`, or +0 where there is none; the taps'
    /// contributions are added in f32 from the first's (col2im's order).
    ConvInputGrad {
        spec: ConvSpec,
        input: Shape,
    },
    /// The gradient of [`Op::Conv`] with respect to `w`: `(x, dy) -> [G·O, C, *taps]`.
    /// Element `[g·O + o, c, t]` sums, over the batch and then the output positions in
    /// row-major order, `dy[n, g·O + o, y] · x_padded[n, g·C + c, y·s + t·d]`, one
    /// `fma` a term from +0.
    ConvFilterGrad {
        spec: ConvSpec,
        taps: Shape,
    },
    /// TensorFlow's `gather(params, indices, axis, batch_dims)`: operands `(params,
    /// indices)`, indices i32. The result has shape `params[..axis] ++
    /// indices[batch_dims..] ++ params[axis+1..]` and element `out[p.., i.., s..] =
    /// params[p.., indices[b.., i..], s..]`, where `b..` are the first `batch_dims` of
    /// `p..` (the leading axes both operands share). An index outside
    /// `0..params.shape[axis]` reads 0 (JAX's `mode="fill"`), so generated code never
    /// reads outside a buffer and [`Op::ScatterAdd`] stays its exact adjoint.
    Gather {
        axis: usize,
        batch_dims: usize,
    },
    /// The adjoint of [`Op::Gather`]: operands `(updates, indices)` shaped like a
    /// gather's result and its indices. The result is zeros of the gathered shape
    /// (`updates[..axis] ++ [extent] ++ updates[axis + indices.rank() - batch_dims..]`),
    /// to which every element of `updates` is added at the position a gather would
    /// have read it from, in row-major order of `updates` (repeated indices
    /// accumulate). An update whose index lies outside `0..extent` is dropped.
    ScatterAdd {
        axis: usize,
        batch_dims: usize,
        extent: usize,
    },
    /// `i32[shape]` whose every element is its own index along `axis` (XLA's and
    /// JAX's `iota`, NumPy's `arange` broadcast): positions for masks and encodings.
    /// Computed, not fed: it has no operands but is not a leaf.
    Iota {
        axis: usize,
        shape: Shape,
    },
    /// Max or average pooling of `x: [N, C, *in]` to `[N, C, *out]`
    /// ([`PoolSpec::out_extent`]): over the window's taps in row-major order of the
    /// input padded with [`PoolKind::padding_value`], the running `max` (kiln's:
    /// NaN-propagating, -0 below +0) or f32 sum from the first tap, the sum divided by
    /// the window's size.
    Pool {
        kind: PoolKind,
        spec: PoolSpec,
    },
    /// The gradient of [`Op::Pool`]: `(x, dy) -> [N, C, *in]`. Each output's gradient
    /// goes to the first tap of its window that equals the maximum (max; none if the
    /// window holds a NaN), or `dy / size` to every tap (average). Per tap in row-major
    /// order, the contributions form a tensor of the padded input's shape (zeros where
    /// the tap does not land); these are summed in f32 from the first tap's, and the
    /// padding cropped.
    PoolGrad {
        kind: PoolKind,
        spec: PoolSpec,
    },
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 14] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Relu,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Abs,
        UnaryOp::Sign,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Softplus,
        UnaryOp::Expm1,
        UnaryOp::Log1p,
        UnaryOp::Erf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Relu => "relu",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Abs => "abs",
            UnaryOp::Sign => "sign",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Expm1 => "expm1",
            UnaryOp::Log1p => "log1p",
            UnaryOp::Erf => "erf",
        }
    }

    /// The meaning of the op on one element in f64 (the interpreter's
    /// `Precision::F64` mode); [`crate::scalar::unary`] gives it in a dtype.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Relu => {
                if x > 0.0 {
                    x
                } else {
                    0.0
                }
            }
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt => 1.0 / x.sqrt(),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Sign => crate::scalar::sign_f64(x),
            UnaryOp::Sigmoid => crate::scalar::sigmoid_f64(x),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Softplus => crate::scalar::softplus_f64(x),
            UnaryOp::Expm1 => x.exp_m1(),
            UnaryOp::Log1p => x.ln_1p(),
            UnaryOp::Erf => libm::erf(x),
        }
    }

    /// Whether the op is defined on integers as well as floats.
    pub fn accepts_int(self) -> bool {
        matches!(
            self,
            UnaryOp::Neg | UnaryOp::Relu | UnaryOp::Abs | UnaryOp::Sign
        )
    }
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 7] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Pow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Pow => "pow",
        }
    }

    /// The meaning of the op on one pair of elements in f64 (the interpreter's
    /// `Precision::F64` mode); [`crate::scalar::binary`] gives it in a dtype. `max`
    /// with a NaN operand is NaN, and orders -0 below +0 as compiled code does.
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Max => crate::scalar::max_f64(a, b),
            BinaryOp::Min => crate::scalar::min_f64(a, b),
            BinaryOp::Pow => a.powf(b),
        }
    }

    /// Integer division could trap on zero, so `div` is for floats only, as is `pow`.
    pub fn accepts_int(self) -> bool {
        !matches!(self, BinaryOp::Div | BinaryOp::Pow)
    }
}

impl CmpOp {
    pub const ALL: [CmpOp; 6] = [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
        }
    }

    pub fn apply(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        }
    }
}

impl ReduceOp {
    pub const ALL: [ReduceOp; 3] = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Mean];

    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Max => "reduce_max",
            ReduceOp::Mean => "reduce_mean",
        }
    }
}

/// Every mnemonic of the text IR, one per op (and per matmul flag combination).
pub const MNEMONICS: [&str; 58] = [
    "input",
    "param",
    "const",
    "neg",
    "exp",
    "log",
    "relu",
    "sqrt",
    "rsqrt",
    "abs",
    "sign",
    "sigmoid",
    "tanh",
    "softplus",
    "expm1",
    "log1p",
    "erf",
    "add",
    "sub",
    "mul",
    "div",
    "max",
    "min",
    "pow",
    "cmp.eq",
    "cmp.ne",
    "cmp.lt",
    "cmp.le",
    "cmp.gt",
    "cmp.ge",
    "select",
    "cast",
    "broadcast",
    "reduce_sum",
    "reduce_max",
    "reduce_mean",
    "reshape",
    "transpose",
    "matmul",
    "matmul.tn",
    "matmul.nt",
    "matmul.tt",
    "one_hot",
    "slice",
    "pad",
    "concat",
    "random.uniform",
    "random.normal",
    "conv",
    "conv_input_grad",
    "conv_filter_grad",
    "gather",
    "scatter_add",
    "iota",
    "max_pool",
    "avg_pool",
    "max_pool_grad",
    "avg_pool_grad",
];

impl Op {
    /// The mnemonic of the text IR (`add`, `matmul.tn`, `reduce_sum`, ...).
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Parameter { .. } => "param",
            Op::Constant { .. } => "const",
            Op::Unary(op) => op.name(),
            Op::Binary(op) => op.name(),
            Op::Compare(op) => match op {
                CmpOp::Eq => "cmp.eq",
                CmpOp::Ne => "cmp.ne",
                CmpOp::Lt => "cmp.lt",
                CmpOp::Le => "cmp.le",
                CmpOp::Gt => "cmp.gt",
                CmpOp::Ge => "cmp.ge",
            },
            Op::Select => "select",
            Op::Cast { .. } => "cast",
            Op::Broadcast { .. } => "broadcast",
            Op::Reduce { op, .. } => op.name(),
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::MatMul {
                transpose_a,
                transpose_b,
            } => match (transpose_a, transpose_b) {
                (false, false) => "matmul",
                (true, false) => "matmul.tn",
                (false, true) => "matmul.nt",
                (true, true) => "matmul.tt",
            },
            Op::OneHot { .. } => "one_hot",
            Op::Slice { .. } => "slice",
            Op::Pad { .. } => "pad",
            Op::Concat { .. } => "concat",
            Op::Random { dist, .. } => match dist {
                Distribution::Uniform => "random.uniform",
                Distribution::Normal => "random.normal",
            },
            Op::Conv(_) => "conv",
            Op::ConvInputGrad { .. } => "conv_input_grad",
            Op::ConvFilterGrad { .. } => "conv_filter_grad",
            Op::Gather { .. } => "gather",
            Op::ScatterAdd { .. } => "scatter_add",
            Op::Iota { .. } => "iota",
            Op::Pool { kind, .. } => match kind {
                PoolKind::Max => "max_pool",
                PoolKind::Avg => "avg_pool",
            },
            Op::PoolGrad { kind, .. } => match kind {
                PoolKind::Max => "max_pool_grad",
                PoolKind::Avg => "avg_pool_grad",
            },
        }
    }

    /// How many operands the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Input { .. } | Op::Parameter { .. } | Op::Constant { .. } | Op::Iota { .. } => 0,
            Op::Unary(_)
            | Op::Cast { .. }
            | Op::Broadcast { .. }
            | Op::Reduce { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::OneHot { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Random { .. }
            | Op::Pool { .. } => 1,
            Op::Binary(_)
            | Op::Compare(_)
            | Op::MatMul { .. }
            | Op::Concat { .. }
            | Op::Conv(_)
            | Op::ConvInputGrad { .. }
            | Op::ConvFilterGrad { .. }
            | Op::Gather { .. }
            | Op::ScatterAdd { .. }
            | Op::PoolGrad { .. } => 2,
            Op::Select => 3,
        }
    }

    /// Ops that map each output element to the same-index elements of their operands.
    pub fn is_elementwise(&self) -> bool {
        matches!(
            self,
            Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Cast { .. }
        )
    }

    pub fn is_reduce(&self) -> bool {
        matches!(self, Op::Reduce { .. })
    }

    /// Ops that only move or replicate elements, each output element one input
    /// element (so labels read through them keep their meaning).
    pub fn is_movement(&self) -> bool {
        matches!(
            self,
            Op::Broadcast { .. } | Op::Reshape { .. } | Op::Transpose { .. } | Op::Slice { .. }
        )
    }

    /// Leaves: inputs, parameters and constants, whose type is declared, not inferred
    /// (an `iota` has no operands either, but its type follows from its attributes).
    pub fn is_leaf(&self) -> bool {
        matches!(
            self,
            Op::Input { .. } | Op::Parameter { .. } | Op::Constant { .. }
        )
    }

    /// The result type of the op applied to operands of the given types, or an error
    /// naming the op and the offending types. Leaves have no rule: their type is given.
    /// A result larger than [`crate::types::MAX_ELEMENTS`] allows is an error too.
    pub fn infer_type(&self, operands: &[&TensorType]) -> Result<TensorType, IrError> {
        let op = self.mnemonic();
        if operands.len() != self.arity() {
            return Err(IrError::Arity {
                op,
                expected: self.arity(),
                found: operands.len(),
            });
        }
        let bad = |message: String| IrError::Type { op, message };
        let ty = match self {
            Op::Input { .. } | Op::Parameter { .. } | Op::Constant { .. } => {
                unreachable!("leaves have arity 0 and are typed by the caller")
            }
            Op::Unary(unary) => {
                let x = operands[0];
                check_numeric(op, x, unary.accepts_int())?;
                Ok(x.clone())
            }
            Op::Binary(binary) => {
                let (a, b) = (operands[0], operands[1]);
                check_same(op, a, b)?;
                check_numeric(op, a, binary.accepts_int())?;
                Ok(a.clone())
            }
            Op::Compare(_) => {
                let (a, b) = (operands[0], operands[1]);
                check_same(op, a, b)?;
                check_numeric(op, a, true)?;
                Ok(a.with_dtype(DType::Bool))
            }
            Op::Select => {
                let (cond, on_true, on_false) = (operands[0], operands[1], operands[2]);
                if cond.dtype != DType::Bool {
                    return Err(bad(format!("condition must be bool, found {cond}")));
                }
                if cond.shape != on_true.shape {
                    return Err(bad(format!(
                        "condition {cond} and value {on_true} have different shapes"
                    )));
                }
                check_same(op, on_true, on_false)?;
                Ok(on_true.clone())
            }
            Op::Cast { to } => Ok(operands[0].with_dtype(*to)),
            Op::Broadcast { shape } => {
                let x = operands[0];
                let ok = x.rank() == shape.len()
                    && x.shape
                        .iter()
                        .zip(shape)
                        .all(|(&from, &to)| from == to || from == 1);
                if !ok {
                    return Err(bad(format!(
                        "cannot broadcast {x} to shape {:?}: ranks must match and each extent must equal the target or be 1",
                        shape
                    )));
                }
                Ok(x.with_shape(shape.clone()))
            }
            Op::Reduce { op: reduce, axes } => {
                let x = operands[0];
                check_axes(op, x, axes)?;
                if *reduce != ReduceOp::Max {
                    check_numeric(op, x, true)?;
                }
                if *reduce == ReduceOp::Mean && x.dtype != DType::F32 {
                    return Err(bad(format!("reduce_mean needs f32, found {x}")));
                }
                let mut shape = x.shape.clone();
                for &axis in axes {
                    shape[axis] = 1;
                }
                Ok(x.with_shape(shape))
            }
            Op::Reshape { shape } => {
                let x = operands[0];
                // First, so that a count too large to compute is not compared.
                check_size(op, shape)?;
                if num_elements(shape) != x.num_elements() {
                    return Err(bad(format!(
                        "cannot reshape {x} ({} elements) to {:?} ({} elements)",
                        x.num_elements(),
                        shape,
                        num_elements(shape)
                    )));
                }
                Ok(x.with_shape(shape.clone()))
            }
            Op::Transpose { perm } => {
                let x = operands[0];
                let mut seen = vec![false; x.rank()];
                let valid = perm.len() == x.rank()
                    && perm
                        .iter()
                        .all(|&axis| axis < x.rank() && !std::mem::replace(&mut seen[axis], true));
                if !valid {
                    return Err(bad(format!(
                        "{perm:?} is not a permutation of the {} axes of {x}",
                        x.rank()
                    )));
                }
                Ok(x.with_shape(perm.iter().map(|&axis| x.shape[axis]).collect::<Vec<_>>()))
            }
            Op::MatMul {
                transpose_a,
                transpose_b,
            } => {
                let (a, b) = (operands[0], operands[1]);
                if a.dtype != DType::F32 || b.dtype != DType::F32 {
                    return Err(bad(format!("operands must be f32, found {a} and {b}")));
                }
                if a.rank() < 2 || a.rank() != b.rank() {
                    return Err(bad(format!(
                        "operands {a} and {b} must have the same rank, at least 2"
                    )));
                }
                let rank = a.rank();
                let batch = &a.shape[..rank - 2];
                if batch != &b.shape[..rank - 2] {
                    return Err(bad(format!("batch axes of {a} and {b} differ")));
                }
                let (m, k_a) = matrix_dims(&a.shape, *transpose_a);
                let (k_b, n) = matrix_dims(&b.shape, *transpose_b);
                if k_a != k_b {
                    return Err(bad(format!(
                        "contraction extents differ: {a} gives k = {k_a}, {b} gives k = {k_b}"
                    )));
                }
                let mut shape = batch.to_vec();
                shape.extend([m, n]);
                Ok(TensorType::f32(shape))
            }
            Op::OneHot { depth } => {
                let x = operands[0];
                if x.dtype != DType::I32 {
                    return Err(bad(format!("labels must be i32, found {x}")));
                }
                if *depth == 0 {
                    return Err(bad("depth must be at least 1".to_string()));
                }
                let mut shape = x.shape.clone();
                shape.push(*depth);
                Ok(TensorType::f32(shape))
            }
            Op::Slice {
                starts,
                ends,
                steps,
            } => {
                let x = operands[0];
                let rank = x.rank();
                if starts.len() != rank || ends.len() != rank || steps.len() != rank {
                    return Err(bad(format!(
                        "starts, ends and steps need one entry per axis of {x}, found {}, {} and {}",
                        starts.len(),
                        ends.len(),
                        steps.len()
                    )));
                }
                let mut shape = Vec::with_capacity(rank);
                for axis in 0..rank {
                    let (start, end, step) = (starts[axis], ends[axis], steps[axis]);
                    if step == 0 || start > end || end > x.shape[axis] {
                        return Err(bad(format!(
                            "axis {axis} of {x}: {start}..{end} step {step} needs start ≤ end ≤ {} and step ≥ 1",
                            x.shape[axis]
                        )));
                    }
                    shape.push((end - start).div_ceil(step));
                }
                Ok(x.with_shape(shape))
            }
            Op::Pad {
                low,
                high,
                interior,
                ..
            } => {
                let x = operands[0];
                let rank = x.rank();
                if low.len() != rank || high.len() != rank || interior.len() != rank {
                    return Err(bad(format!(
                        "low, high and interior need one entry per axis of {x}, found {}, {} and {}",
                        low.len(),
                        high.len(),
                        interior.len()
                    )));
                }
                let shape: Option<Vec<usize>> = (0..rank)
                    .map(|axis| pad_extent(x.shape[axis], low[axis], high[axis], interior[axis]))
                    .collect();
                let shape =
                    shape.ok_or_else(|| bad(format!("padding {x} overflows its extents")))?;
                Ok(x.with_shape(shape))
            }
            Op::Concat { axis } => {
                let (a, b) = (operands[0], operands[1]);
                let joinable = a.dtype == b.dtype
                    && a.rank() == b.rank()
                    && *axis < a.rank()
                    && (0..a.rank()).all(|i| i == *axis || a.shape[i] == b.shape[i]);
                if !joinable {
                    return Err(bad(format!(
                        "cannot join {a} and {b} along axis {axis}: dtypes, ranks and the other extents must agree"
                    )));
                }
                let mut shape = a.shape.clone();
                shape[*axis] = a.shape[*axis].saturating_add(b.shape[*axis]);
                Ok(a.with_shape(shape))
            }
            Op::Random { shape, .. } => {
                let seed = operands[0];
                if *seed != TensorType::i32(Vec::<usize>::new()) {
                    return Err(bad(format!(
                        "the seed must be an i32 scalar (i32[]), found {seed}"
                    )));
                }
                Ok(TensorType::f32(shape.clone()))
            }
            Op::Conv(spec) => {
                let (x, w) = (operands[0], operands[1]);
                let dims = conv_dims(op, spec, x, w)?;
                let mut shape = vec![dims.batch, dims.groups * dims.out_channels];
                shape.extend(conv_out_shape(op, spec, &x.shape[2..], &w.shape[2..])?);
                Ok(TensorType::f32(shape))
            }
            Op::ConvInputGrad { spec, input } => {
                let (dy, w) = (operands[0], operands[1]);
                if input.len() + 2 != dy.rank() {
                    return Err(bad(format!(
                        "the input's spatial shape {input:?} needs {} extents, one per spatial axis of {dy}",
                        dy.rank().saturating_sub(2)
                    )));
                }
                // The x this is the gradient for, checked as conv checks it.
                let x = TensorType::f32(
                    [
                        dy.shape[0],
                        w.shape.get(1).copied().unwrap_or(0) * spec.groups,
                    ]
                    .into_iter()
                    .chain(input.iter().copied())
                    .collect::<Vec<_>>(),
                );
                conv_dims(op, spec, &x, w)?;
                let out = conv_out_shape(op, spec, input, &w.shape[2..])?;
                check_conv_grad(op, dy, &x.shape[..1], w.shape[0], &out)?;
                Ok(x)
            }
            Op::ConvFilterGrad { spec, taps } => {
                let (x, dy) = (operands[0], operands[1]);
                if taps.len() + 2 != x.rank() || dy.rank() != x.rank() {
                    return Err(bad(format!(
                        "the kernel's taps {taps:?} and {dy} need one extent per spatial axis of {x}"
                    )));
                }
                if spec.groups == 0 || !x.shape[1].is_multiple_of(spec.groups) {
                    return Err(bad(format!(
                        "{} groups must divide the {} channels of {x}",
                        spec.groups, x.shape[1]
                    )));
                }
                let mut shape = vec![dy.shape[1], x.shape[1] / spec.groups];
                shape.extend(taps.iter().copied());
                let w = TensorType::f32(shape);
                conv_dims(op, spec, x, &w)?;
                let out = conv_out_shape(op, spec, &x.shape[2..], taps)?;
                check_conv_grad(op, dy, &x.shape[..1], w.shape[0], &out)?;
                Ok(w)
            }
            Op::Gather { axis, batch_dims } => {
                let (params, indices) = (operands[0], operands[1]);
                check_gather_operands(op, params, indices, *axis, *batch_dims)?;
                Ok(params.with_shape(gather_shape(
                    &params.shape,
                    &indices.shape,
                    *axis,
                    *batch_dims,
                )))
            }
            Op::ScatterAdd {
                axis,
                batch_dims,
                extent,
            } => {
                let (updates, indices) = (operands[0], operands[1]);
                check_numeric(op, updates, true)?;
                let shape = scatter_shape(
                    &updates.shape,
                    &indices.shape,
                    *axis,
                    *batch_dims,
                    *extent,
                )
                .ok_or_else(|| {
                    bad(format!(
                        "updates {updates} do not have the shape of a gather by {indices} along axis {axis} with {batch_dims} batch axes"
                    ))
                })?;
                let params = updates.with_shape(shape);
                check_gather_operands(op, &params, indices, *axis, *batch_dims)?;
                Ok(params)
            }
            Op::Iota { axis, shape } => {
                if *axis >= shape.len() {
                    return Err(bad(format!(
                        "axis {axis} is not an axis of the shape {shape:?}"
                    )));
                }
                Ok(TensorType::i32(shape.clone()))
            }
            Op::Pool { spec, .. } => {
                let x = operands[0];
                let out = pool_out_shape(op, spec, x)?;
                Ok(x.with_shape(out))
            }
            Op::PoolGrad { spec, .. } => {
                let (x, dy) = (operands[0], operands[1]);
                let out = pool_out_shape(op, spec, x)?;
                if dy.dtype != DType::F32 || dy.shape != out {
                    return Err(bad(format!(
                        "the output gradient must be f32{out:?} (the pooling's output), found {dy}"
                    )));
                }
                Ok(x.clone())
            }
        }?;
        check_size(op, &ty.shape)?;
        Ok(ty)
    }
}

/// The shape [`Op::Pool`] gives `x`, or an error naming what does not fit.
pub fn pool_out_shape(
    op: &'static str,
    spec: &PoolSpec,
    x: &TensorType,
) -> Result<Vec<usize>, IrError> {
    let bad = |message: String| Err(IrError::Type { op, message });
    if x.dtype != DType::F32 || x.rank() < 3 {
        return bad(format!(
            "the operand must be f32 of rank 3 or more ([N, C, spatial…]), found {x}"
        ));
    }
    let spatial = x.rank() - 2;
    let lengths = [
        spec.window.len(),
        spec.stride.len(),
        spec.low.len(),
        spec.high.len(),
    ];
    if lengths.iter().any(|&len| len != spatial) {
        return bad(format!(
            "window, stride, low and high need {spatial} entries (one per spatial axis of {x}), found {lengths:?}"
        ));
    }
    if spec.window.contains(&0) || spec.stride.contains(&0) {
        return bad(format!(
            "window {:?} and stride {:?} must be at least 1",
            spec.window, spec.stride
        ));
    }
    let mut shape = x.shape[..2].to_vec();
    for axis in 0..spatial {
        let n = x.shape[axis + 2];
        match spec.out_extent(axis, n) {
            Some(out) => shape.push(out),
            None => {
                return bad(format!(
                    "a window of {} does not fit axis {axis} of {n} elements padded by {} and {}",
                    spec.window[axis], spec.low[axis], spec.high[axis]
                ))
            }
        }
    }
    Ok(shape)
}

/// The extents [`Op::Conv`] and its gradients work with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDims {
    pub batch: usize,
    pub groups: usize,
    /// Input channels per group.
    pub in_channels: usize,
    /// Output channels per group.
    pub out_channels: usize,
}

/// Checks `x` and `w` against each other and `spec` as [`Op::Conv`] does.
pub fn conv_dims(
    op: &'static str,
    spec: &ConvSpec,
    x: &TensorType,
    w: &TensorType,
) -> Result<ConvDims, IrError> {
    let bad = |message: String| Err(IrError::Type { op, message });
    if x.dtype != DType::F32 || w.dtype != DType::F32 || x.rank() < 3 || w.rank() != x.rank() {
        return bad(format!(
            "operands {x} and {w} must be f32 of one rank, at least 3 ([N, C, spatial…] and [O, C / groups, taps…])"
        ));
    }
    let spatial = x.rank() - 2;
    let lengths = [
        spec.stride.len(),
        spec.low.len(),
        spec.high.len(),
        spec.dilation.len(),
    ];
    if lengths.iter().any(|&len| len != spatial) {
        return bad(format!(
            "stride, low, high and dilation need {spatial} entries (one per spatial axis of {x}), found {lengths:?}"
        ));
    }
    if spec.stride.contains(&0) || spec.dilation.contains(&0) || spec.groups == 0 {
        return bad(format!(
            "stride {:?}, dilation {:?} and groups {} must be at least 1",
            spec.stride, spec.dilation, spec.groups
        ));
    }
    let groups = spec.groups;
    let fits = x.shape[1].is_multiple_of(groups)
        && w.shape[0].is_multiple_of(groups)
        && w.shape[1] * groups == x.shape[1]
        && !w.shape[2..].contains(&0);
    if !fits {
        return bad(format!(
            "a weight for {x} in {groups} group(s) is [O, {}, taps…] with O divisible by {groups} and at least one tap per axis, found {w}",
            x.shape[1] / groups
        ));
    }
    Ok(ConvDims {
        batch: x.shape[0],
        groups,
        in_channels: w.shape[1],
        out_channels: w.shape[0] / groups,
    })
}

/// The output's spatial extents, or an error where the kernel does not fit.
fn conv_out_shape(
    op: &'static str,
    spec: &ConvSpec,
    input: &[usize],
    taps: &[usize],
) -> Result<Vec<usize>, IrError> {
    (0..input.len())
        .map(|axis| {
            spec.out_extent(axis, input[axis], taps[axis]).ok_or_else(|| IrError::Type {
                op,
                message: format!(
                    "a kernel of {} taps with dilation {} does not fit axis {axis} of {} elements padded by {} and {}",
                    taps[axis], spec.dilation[axis], input[axis], spec.low[axis], spec.high[axis]
                ),
            })
        })
        .collect()
}

/// Checks that `dy` is the gradient of a convolution output `[batch, channels, *out]`.
fn check_conv_grad(
    op: &'static str,
    dy: &TensorType,
    batch: &[usize],
    channels: usize,
    out: &[usize],
) -> Result<(), IrError> {
    let mut expected = batch.to_vec();
    expected.push(channels);
    expected.extend_from_slice(out);
    if dy.dtype != DType::F32 || dy.shape != expected {
        return Err(IrError::Type {
            op,
            message: format!(
                "the output gradient must be f32{expected:?} (the convolution's output), found {dy}"
            ),
        });
    }
    Ok(())
}

/// The extent of an axis of `n` elements after [`Op::Pad`], or `None` on overflow.
pub fn pad_extent(n: usize, low: usize, high: usize, interior: usize) -> Option<usize> {
    let gaps = n.saturating_sub(1).checked_mul(interior)?;
    low.checked_add(n)?.checked_add(gaps)?.checked_add(high)
}

/// The shape [`Op::Gather`] gives: `params[..axis] ++ indices[batch_dims..] ++
/// params[axis+1..]` (operands checked by the caller).
pub fn gather_shape(
    params: &[usize],
    indices: &[usize],
    axis: usize,
    batch_dims: usize,
) -> Vec<usize> {
    let mut shape = params[..axis].to_vec();
    shape.extend_from_slice(&indices[batch_dims..]);
    shape.extend_from_slice(&params[axis + 1..]);
    shape
}

/// The shape [`Op::ScatterAdd`] gives (the gathered `params` shape), or `None` when
/// `updates` cannot be the result of a gather by `indices` with these attributes.
pub fn scatter_shape(
    updates: &[usize],
    indices: &[usize],
    axis: usize,
    batch_dims: usize,
    extent: usize,
) -> Option<Vec<usize>> {
    let gathered = indices.len().checked_sub(batch_dims)?;
    let rest = axis.checked_add(gathered)?;
    if rest > updates.len() || updates[axis..rest] != indices[batch_dims..] {
        return None;
    }
    let mut shape = updates[..axis].to_vec();
    shape.push(extent);
    shape.extend_from_slice(&updates[rest..]);
    Some(shape)
}

/// The rules `gather(params, indices)` needs: i32 indices, `batch_dims <= axis <
/// params.rank()`, `batch_dims <= indices.rank()` and equal leading `batch_dims`
/// extents. Shared by [`Op::ScatterAdd`], whose result is the gathered operand.
fn check_gather_operands(
    op: &'static str,
    params: &TensorType,
    indices: &TensorType,
    axis: usize,
    batch_dims: usize,
) -> Result<(), IrError> {
    let bad = |message: String| Err(IrError::Type { op, message });
    if indices.dtype != DType::I32 {
        return bad(format!("indices must be i32, found {indices}"));
    }
    if axis >= params.rank() || batch_dims > axis || batch_dims > indices.rank() {
        return bad(format!(
            "axis={axis} batch_dims={batch_dims} needs batch_dims ≤ axis < {} (the rank of {params}) and batch_dims ≤ {} (the rank of {indices})",
            params.rank(),
            indices.rank()
        ));
    }
    if params.shape[..batch_dims] != indices.shape[..batch_dims] {
        return bad(format!(
            "the {batch_dims} batch axes of {params} and {indices} differ"
        ));
    }
    Ok(())
}

/// `(rows, cols)` of the matrix in the last two axes, read transposed if asked.
pub fn matrix_dims(shape: &[usize], transposed: bool) -> (usize, usize) {
    let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    }
}

fn check_same(op: &'static str, a: &TensorType, b: &TensorType) -> Result<(), IrError> {
    if a != b {
        return Err(IrError::Mismatch {
            op,
            lhs: a.clone(),
            rhs: b.clone(),
        });
    }
    Ok(())
}

fn check_numeric(op: &'static str, x: &TensorType, accepts_int: bool) -> Result<(), IrError> {
    let ok = match x.dtype {
        DType::F32 => true,
        DType::I32 => accepts_int,
        DType::Bool => false,
    };
    if !ok {
        let expected = if accepts_int { "f32 or i32" } else { "f32" };
        return Err(IrError::Type {
            op,
            message: format!("operand must be {expected}, found {x}"),
        });
    }
    Ok(())
}

fn check_axes(op: &'static str, x: &TensorType, axes: &[usize]) -> Result<(), IrError> {
    let sorted = axes.windows(2).all(|pair| pair[0] < pair[1]);
    if !sorted || axes.iter().any(|&axis| axis >= x.rank()) {
        return Err(IrError::Type {
            op,
            message: format!(
                "axes {axes:?} must be distinct, increasing and below the rank of {x}"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_flags_read_operands_transposed() {
        let a = TensorType::f32([3, 4]);
        let b = TensorType::f32([5, 4]);
        let op = Op::MatMul {
            transpose_a: false,
            transpose_b: true,
        };
        assert_eq!(op.infer_type(&[&a, &b]).unwrap(), TensorType::f32([3, 5]));
        let plain = Op::MatMul {
            transpose_a: false,
            transpose_b: false,
        };
        let err = plain.infer_type(&[&a, &b]).unwrap_err().to_string();
        assert!(err.contains("matmul") && err.contains("f32[3,4]") && err.contains("f32[5,4]"));
    }

    #[test]
    fn binary_mismatch_names_op_and_both_shapes() {
        let err = Op::Binary(BinaryOp::Add)
            .infer_type(&[&TensorType::f32([2, 3]), &TensorType::f32([3, 2])])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "add: operand types f32[2,3] and f32[3,2] differ"
        );
    }

    #[test]
    fn reduce_keeps_axes_with_extent_one() {
        let op = Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![1],
        };
        let ty = op.infer_type(&[&TensorType::f32([4, 7, 2])]).unwrap();
        assert_eq!(ty.shape, vec![4, 1, 2]);
        let bad = Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![3],
        };
        assert!(bad.infer_type(&[&TensorType::f32([4, 7, 2])]).is_err());
    }

    #[test]
    fn broadcast_stretches_unit_axes_only() {
        let op = Op::Broadcast { shape: vec![4, 3] };
        assert!(op.infer_type(&[&TensorType::f32([4, 1])]).is_ok());
        assert!(op.infer_type(&[&TensorType::f32([1, 3])]).is_ok());
        assert!(op.infer_type(&[&TensorType::f32([2, 3])]).is_err());
        assert!(op.infer_type(&[&TensorType::f32([3])]).is_err());
    }

    #[test]
    fn transpose_rejects_non_permutations() {
        let x = TensorType::f32([2, 3]);
        assert!(Op::Transpose { perm: vec![0, 0] }
            .infer_type(&[&x])
            .is_err());
        assert!(Op::Transpose { perm: vec![1] }.infer_type(&[&x]).is_err());
        let ty = Op::Transpose { perm: vec![1, 0] }
            .infer_type(&[&x])
            .unwrap();
        assert_eq!(ty.shape, vec![3, 2]);
    }

    #[test]
    fn reshape_to_a_count_that_wraps_is_too_large() {
        // (2^63 + 1) * 2 wraps to 2 in unchecked usize arithmetic.
        let op = Op::Reshape {
            shape: vec![(1 << 63) + 1, 2],
        };
        let err = op.infer_type(&[&TensorType::f32([2])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "reshape: shape [9223372036854775809, 2] has more than 2147483647 elements, the most a tensor may have"
        );
    }

    #[test]
    fn results_beyond_the_size_limit_are_errors() {
        let wide = Op::Broadcast {
            shape: vec![1 << 20, 1 << 20],
        };
        let err = wide.infer_type(&[&TensorType::f32([1, 1])]).unwrap_err();
        assert!(
            matches!(
                err,
                IrError::TooLarge {
                    op: "broadcast",
                    ..
                }
            ),
            "{err}"
        );
        let deep = Op::OneHot { depth: 1 << 30 };
        let err = deep.infer_type(&[&TensorType::i32([4])]).unwrap_err();
        assert_eq!(
            err,
            IrError::TooLarge {
                op: "one_hot",
                shape: vec![4, 1 << 30],
                max: crate::types::MAX_ELEMENTS,
            }
        );
        // Zero extents are legal, and broadcast from 1 to 0 like NumPy.
        let empty = Op::Broadcast { shape: vec![0, 3] };
        assert_eq!(
            empty.infer_type(&[&TensorType::f32([1, 3])]).unwrap(),
            TensorType::f32([0, 3])
        );
    }

    #[test]
    fn gather_shapes_follow_tensorflow() {
        let gather = |axis, batch_dims| Op::Gather { axis, batch_dims };
        // An embedding lookup: W[V, D] by ids[B, T] gives [B, T, D].
        let ty = gather(0, 0)
            .infer_type(&[&TensorType::f32([10, 4]), &TensorType::i32([2, 3])])
            .unwrap();
        assert_eq!(ty, TensorType::f32([2, 3, 4]));
        // Indexing logits[B, C] by labels[B]: one value per row.
        let ty = gather(1, 1)
            .infer_type(&[&TensorType::f32([5, 7]), &TensorType::i32([5])])
            .unwrap();
        assert_eq!(ty, TensorType::f32([5]));
        // Any dtype gathers; a scalar index removes the axis.
        let ty = gather(1, 0)
            .infer_type(&[&TensorType::i32([2, 3, 4]), &TensorType::i32([])])
            .unwrap();
        assert_eq!(ty, TensorType::i32([2, 4]));
        let scatter = Op::ScatterAdd {
            axis: 1,
            batch_dims: 1,
            extent: 7,
        };
        let ty = scatter
            .infer_type(&[&TensorType::f32([5]), &TensorType::i32([5])])
            .unwrap();
        assert_eq!(ty, TensorType::f32([5, 7]));
        let scatter = Op::ScatterAdd {
            axis: 0,
            batch_dims: 0,
            extent: 10,
        };
        let ty = scatter
            .infer_type(&[&TensorType::f32([2, 3, 4]), &TensorType::i32([2, 3])])
            .unwrap();
        assert_eq!(ty, TensorType::f32([10, 4]));
    }

    #[test]
    fn gather_and_scatter_errors_name_the_op_and_the_operands() {
        let err = |op: Op, a: TensorType, b: TensorType| {
            op.infer_type(&[&a, &b]).unwrap_err().to_string()
        };
        let gather = |axis, batch_dims| Op::Gather { axis, batch_dims };
        assert_eq!(
            err(gather(0, 0), TensorType::f32([3]), TensorType::f32([2])),
            "gather: indices must be i32, found f32[2]"
        );
        assert_eq!(
            err(gather(2, 0), TensorType::f32([3, 4]), TensorType::i32([2])),
            "gather: axis=2 batch_dims=0 needs batch_dims ≤ axis < 2 (the rank of f32[3,4]) and batch_dims ≤ 1 (the rank of i32[2])"
        );
        assert_eq!(
            err(gather(1, 1), TensorType::f32([3, 4]), TensorType::i32([2])),
            "gather: the 1 batch axes of f32[3,4] and i32[2] differ"
        );
        assert!(
            err(gather(0, 1), TensorType::f32([3, 4]), TensorType::i32([3]))
                .contains("batch_dims ≤ axis")
        );
        let scatter = |extent| Op::ScatterAdd {
            axis: 0,
            batch_dims: 0,
            extent,
        };
        assert_eq!(
            err(scatter(4), TensorType::f32([2, 5]), TensorType::i32([3])),
            "scatter_add: updates f32[2,5] do not have the shape of a gather by i32[3] along axis 0 with 0 batch axes"
        );
        assert_eq!(
            err(scatter(4), TensorType::bool([3]), TensorType::i32([3])),
            "scatter_add: operand must be f32 or i32, found bool[3]"
        );
        assert_eq!(
            err(scatter(4), TensorType::f32([3]), TensorType::f32([3])),
            "scatter_add: indices must be i32, found f32[3]"
        );
    }

    #[test]
    fn integer_division_is_rejected() {
        let x = TensorType::i32([2]);
        assert!(Op::Binary(BinaryOp::Div).infer_type(&[&x, &x]).is_err());
        assert!(Op::Binary(BinaryOp::Add).infer_type(&[&x, &x]).is_ok());
        assert!(Op::Unary(UnaryOp::Exp).infer_type(&[&x]).is_err());
    }
}
