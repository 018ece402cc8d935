//! Convolution and pooling over channels-first tensors (PyTorch's NCHW and NCL).
//! A convolution is the IR's `conv` op and a pooling its `max_pool` or `avg_pool`
//! (each with its gradient ops, which the `expand` pass turns into im2col and
//! matmuls, or windows combined elementwise).
//!
//! Sizes follow PyTorch: an axis of `i` elements, padded by `low + high`, with a
//! kernel of `k` taps `d` apart and stride `s`, gives
//! `o = floor((i + low + high − d·(k − 1) − 1) / s) + 1` outputs (with symmetric
//! padding `p`, `floor((i + 2p − d(k−1) − 1)/s) + 1`).

use crate::builder::{Context, FrontendError, ModelBuilder};
use crate::init::Init;
use kiln_ir::op::{ConvSpec, PoolSpec};
use kiln_ir::{BinaryOp, DType, NodeId, Op, TensorType};

/// How a convolution or pooling pads each spatial axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// No padding (PyTorch's `padding='valid'` or `0`).
    Valid,
    /// Enough zeros that the output has the input's extent at stride 1 (PyTorch's
    /// `padding='same'`: `d·(k − 1)` in all, the odd one after).
    Same,
    /// `[h, w]` on both sides of the height and width axes (a 1-D convolution reads
    /// the width).
    Explicit([usize; 2]),
}

/// Stride, padding, dilation and groups of a 2-D convolution, per spatial axis
/// `[height, width]` where they differ. A 1-D convolution ([`conv1d`]) reads the
/// width entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvOptions {
    pub stride: [usize; 2],
    pub padding: Padding,
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Default for ConvOptions {
    fn default() -> ConvOptions {
        ConvOptions {
            stride: [1, 1],
            padding: Padding::Valid,
            dilation: [1, 1],
            groups: 1,
        }
    }
}

fn operand_error(context: &str, expected: impl Into<String>, found: &TensorType) -> FrontendError {
    FrontendError::Operand {
        context: context.to_string(),
        expected: expected.into(),
        found: found.clone(),
    }
}

fn argument_error(context: &str, message: impl Into<String>) -> FrontendError {
    FrontendError::Argument {
        context: context.to_string(),
        message: message.into(),
    }
}

/// `(low, high)` padding of an axis (`0` height, `1` width) for a kernel of `taps`
/// taps `dilation` apart.
fn pads(padding: Padding, axis: usize, taps: usize, dilation: usize) -> (usize, usize) {
    match padding {
        Padding::Valid => (0, 0),
        Padding::Explicit(p) => (p[axis], p[axis]),
        Padding::Same => {
            let total = dilation * taps.saturating_sub(1);
            (total / 2, total - total / 2)
        }
    }
}

/// The output extent of a padded axis, or an error when the kernel does not fit.
fn out_extent(
    context: &str,
    padded: usize,
    taps: usize,
    dilation: usize,
    stride: usize,
) -> Result<usize, FrontendError> {
    let span = dilation * (taps - 1) + 1;
    if padded < span {
        return Err(argument_error(
            context,
            format!("a kernel spanning {span} elements does not fit a padded extent of {padded}"),
        ));
    }
    Ok((padded - span) / stride + 1)
}

/// `parts` (at least one) joined in order along `axis` by a chain of `concat`s.
pub(crate) fn concat_all(
    builder: &mut ModelBuilder,
    parts: &[NodeId],
    axis: usize,
    context: &str,
) -> Result<NodeId, FrontendError> {
    let (&first, rest) = parts
        .split_first()
        .expect("callers join at least one window, group or time step");
    let graph = builder.graph();
    rest.iter().try_fold(first, |joined, &part| {
        graph.concat(joined, part, axis).context(context)
    })
}

fn check_options(context: &str, options: &ConvOptions) -> Result<(), FrontendError> {
    if options.stride.contains(&0) || options.dilation.contains(&0) || options.groups == 0 {
        return Err(argument_error(
            context,
            format!(
                "stride {:?}, dilation {:?} and groups {} must all be at least 1",
                options.stride, options.dilation, options.groups
            ),
        ));
    }
    if options.padding == Padding::Same && options.stride != [1, 1] {
        return Err(argument_error(
            context,
            "padding 'same' needs stride 1 (as in PyTorch)",
        ));
    }
    Ok(())
}

/// The 2-D convolution (cross-correlation, as PyTorch's `conv2d`) of `x: [N, C, H, W]`
/// with `weight: [O, C / groups, kh, kw]`, plus `bias: [O]` if given: `[N, O, Ho, Wo]`.
/// One `conv` op of the IR (and a broadcast add for the bias).
pub fn conv2d(
    builder: &mut ModelBuilder,
    x: NodeId,
    weight: NodeId,
    bias: Option<NodeId>,
    options: &ConvOptions,
) -> Result<NodeId, FrontendError> {
    conv_nd(builder, x, weight, bias, options, 2, "conv2d")
}

/// [`conv2d`] over one spatial axis: `x: [N, C, L]`, `weight: [O, C / groups, k]`;
/// the width entries of `options` apply.
pub fn conv1d(
    builder: &mut ModelBuilder,
    x: NodeId,
    weight: NodeId,
    bias: Option<NodeId>,
    options: &ConvOptions,
) -> Result<NodeId, FrontendError> {
    conv_nd(builder, x, weight, bias, options, 1, "conv1d")
}

/// A convolution over the last `spatial` axes (1 or 2), checked with the layer's
/// names for what it expects.
fn conv_nd(
    builder: &mut ModelBuilder,
    x: NodeId,
    weight: NodeId,
    bias: Option<NodeId>,
    options: &ConvOptions,
    spatial: usize,
    context: &str,
) -> Result<NodeId, FrontendError> {
    check_options(context, options)?;
    let x_ty = builder.ty(x)?.clone();
    let w_ty = builder.ty(weight)?.clone();
    let (x_form, w_form) = if spatial == 2 {
        ("[N, C, H, W]", "kh, kw")
    } else {
        ("[N, C, L]", "k")
    };
    if x_ty.dtype != DType::F32 || x_ty.rank() != spatial + 2 {
        return Err(operand_error(
            context,
            format!("an input f32{x_form}"),
            &x_ty,
        ));
    }
    let groups = options.groups;
    let c = x_ty.shape[1];
    let fits = w_ty.dtype == DType::F32
        && w_ty.rank() == spatial + 2
        && c.is_multiple_of(groups)
        && w_ty.shape[0].is_multiple_of(groups)
        && w_ty.shape[1] == c / groups
        && !w_ty.shape[2..].contains(&0);
    if !fits {
        return Err(operand_error(
            context,
            format!(
                "a weight f32[O, {}, {w_form}] with O divisible by groups = {groups} (and C = {c} too)",
                c / groups
            ),
            &w_ty,
        ));
    }
    // The options' last `spatial` entries: [height, width], or width alone.
    let axes = 2 - spatial..2;
    let mut spec = ConvSpec {
        stride: options.stride[axes.clone()].to_vec(),
        dilation: options.dilation[axes].to_vec(),
        groups,
        ..ConvSpec::default()
    };
    for (axis, &taps) in w_ty.shape[2..].iter().enumerate() {
        let (low, high) = pads(
            options.padding,
            2 - spatial + axis,
            taps,
            spec.dilation[axis],
        );
        out_extent(
            context,
            x_ty.shape[axis + 2] + low + high,
            taps,
            spec.dilation[axis],
            spec.stride[axis],
        )?;
        spec.low.push(low);
        spec.high.push(high);
    }
    let y = builder
        .graph()
        .add(Op::Conv(spec), &[x, weight])
        .context(context)?;
    let Some(bias) = bias else { return Ok(y) };
    let o = w_ty.shape[0];
    let b_ty = builder.ty(bias)?.clone();
    if b_ty.shape != [o] || b_ty.dtype != DType::F32 {
        return Err(operand_error(context, format!("a bias f32[{o}]"), &b_ty));
    }
    let mut shape = vec![1, o];
    shape.extend(std::iter::repeat_n(1, spatial));
    let bias = builder.graph().reshape(bias, shape).context(context)?;
    builder.binary(BinaryOp::Add, y, bias)
}

pub use kiln_ir::op::PoolKind as Pool;

/// Max or average pooling of `x: [N, C, H, W]` with a `kernel` window, `stride`
/// (PyTorch's default is the kernel) and symmetric `padding` per axis (at most half
/// the window, as PyTorch allows): one `max_pool` or `avg_pool` op of the IR; the
/// average counts the padding (PyTorch's default `count_include_pad=True`).
pub fn pool2d(
    builder: &mut ModelBuilder,
    x: NodeId,
    pool: Pool,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Result<NodeId, FrontendError> {
    let context = match pool {
        Pool::Max => "max_pool2d",
        Pool::Avg => "avg_pool2d",
    };
    pool_nd(builder, x, pool, &kernel, &stride, &padding, context)
}

/// [`pool2d`] over one spatial axis: `x: [N, C, L]`.
pub fn pool1d(
    builder: &mut ModelBuilder,
    x: NodeId,
    pool: Pool,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<NodeId, FrontendError> {
    let context = match pool {
        Pool::Max => "max_pool1d",
        Pool::Avg => "avg_pool1d",
    };
    pool_nd(builder, x, pool, &[kernel], &[stride], &[padding], context)
}

fn pool_nd(
    builder: &mut ModelBuilder,
    x: NodeId,
    pool: Pool,
    kernel: &[usize],
    stride: &[usize],
    padding: &[usize],
    context: &str,
) -> Result<NodeId, FrontendError> {
    let x_ty = builder.ty(x)?.clone();
    let form = if kernel.len() == 2 {
        "[N, C, H, W]"
    } else {
        "[N, C, L]"
    };
    if x_ty.dtype != DType::F32 || x_ty.rank() != kernel.len() + 2 {
        return Err(operand_error(context, format!("an input f32{form}"), &x_ty));
    }
    if kernel.contains(&0) || stride.contains(&0) {
        return Err(argument_error(
            context,
            format!("kernel {kernel:?} and stride {stride:?} must be at least 1"),
        ));
    }
    if kernel.iter().zip(padding).any(|(&k, &p)| 2 * p > k) {
        return Err(argument_error(
            context,
            format!(
                "padding {padding:?} is more than half the kernel {kernel:?} (as PyTorch refuses)"
            ),
        ));
    }
    for (axis, &k) in kernel.iter().enumerate() {
        let padded = x_ty.shape[axis + 2] + 2 * padding[axis];
        out_extent(context, padded, k, 1, stride[axis])?;
    }
    let spec = PoolSpec {
        window: kernel.to_vec(),
        stride: stride.to_vec(),
        low: padding.to_vec(),
        high: padding.to_vec(),
    };
    builder
        .graph()
        .add(Op::Pool { kind: pool, spec }, &[x])
        .context(context)
}

/// `[N, d1, d2, …] -> [N, d1·d2·…]` (PyTorch's `flatten(x, 1)`).
pub fn flatten(builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
    let ty = builder.ty(x)?.clone();
    let Some((&first, rest)) = ty.shape.split_first() else {
        return Err(operand_error("flatten", "a tensor of rank 1 or more", &ty));
    };
    let features = rest.iter().product();
    builder
        .graph()
        .reshape(x, vec![first, features])
        .context("flatten")
}

/// A 2-D convolution layer: `<name>.weight: [O, C / groups, kh, kw]` and
/// `<name>.bias: [O]`, PyTorch's `nn.Conv2d` (its default initialisation
/// `U(±1/sqrt(fan_in))`, `fan_in = C / groups · kh · kw`, unless told otherwise).
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: NodeId,
    bias: Option<NodeId>,
    options: ConvOptions,
    one_d: bool,
}

impl Conv2d {
    /// Declares the layer's parameters. `kernel` is `[kh, kw]`; a 1-D layer
    /// (`Conv1d`) is `[1, k]` with `one_d`, applied to `[N, C, L]`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        builder: &mut ModelBuilder,
        name: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: [usize; 2],
        options: ConvOptions,
        bias: bool,
        one_d: bool,
    ) -> Result<Conv2d, FrontendError> {
        let context = if one_d { "Conv1d" } else { "Conv2d" };
        check_options(context, &options)?;
        let groups = options.groups;
        if !in_channels.is_multiple_of(groups)
            || !out_channels.is_multiple_of(groups)
            || kernel.contains(&0)
        {
            return Err(argument_error(
                context,
                format!(
                    "in_channels {in_channels} and out_channels {out_channels} must divide into groups = {groups}, and the kernel {kernel:?} be at least 1"
                ),
            ));
        }
        let fan_in = in_channels / groups * kernel[0] * kernel[1];
        let init = Init::torch_linear(fan_in);
        let shape: Vec<usize> = if one_d {
            vec![out_channels, in_channels / groups, kernel[1]]
        } else {
            vec![out_channels, in_channels / groups, kernel[0], kernel[1]]
        };
        let weight = builder.parameter(&format!("{name}.weight"), &shape, init)?;
        let bias = if bias {
            Some(builder.parameter(&format!("{name}.bias"), &[out_channels], init)?)
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            bias,
            options,
            one_d,
        })
    }

    pub fn weight(&self) -> NodeId {
        self.weight
    }

    pub fn bias(&self) -> Option<NodeId> {
        self.bias
    }

    /// Applies the layer to `[N, C, H, W]` (or `[N, C, L]` for a 1-D layer).
    pub fn forward(&self, builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
        builder.check_own(self.weight, "convolution layer")?;
        if self.one_d {
            conv1d(builder, x, self.weight, self.bias, &self.options)
        } else {
            conv2d(builder, x, self.weight, self.bias, &self.options)
        }
    }
}
