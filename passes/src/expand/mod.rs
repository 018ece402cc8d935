//! Expansion: the convolution and pooling ops become the primitives the back end
//! has kernels for — padding, strided slices, concatenation, transposes and one
//! matmul per group (im2col) for a convolution (`conv.rs`), windows combined
//! elementwise for a pooling (`pool.rs`) — so they run on the tuned matmul routine
//! and fused elementwise kernels until they have kernels of their own.
//!
//! Each expansion sums every element's terms in the order its op documents (the
//! patch columns are laid out tap-major, the matmul adds them in column order from
//! +0 with one `fma` a term), so the expanded graph computes the op's meaning bit for
//! bit; `conv.rs` and `pool.rs` say how each op is laid out.
//!
//! On the GPU ([`ConvForm::Implicit`]) a convolution and its filter gradient only
//! lose their padding, to a pad of the input, the input gradient stays, and `lower`
//! gives each a contraction kernel (an implicit GEMM) that sums in the same order.
//!
//! ```text
//! before:  %2 = conv %0, %1 stride=[1] low=[0] high=[0] dilation=[1] groups=1 : f32[1,1,3]
//! after:   %2 = transpose %0 perm=[0,2,1]   %3 = slice %2 …   %4 = slice %2 …
//!          %5 = concat %3, %4 axis=2   %6 = reshape %5   …   %9 = matmul %6, %8   …
//! ```

use kiln_ir::{Graph, IrError, NodeId, Op};

mod conv;
mod pool;

pub(crate) use conv::padded;
pub(crate) use pool::max_pool_pick;

/// What a convolution and its filter gradient become.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvForm {
    /// im2col: the patch matrix is built from strided windows and multiplied by the
    /// packed matmul routine (the CPU's form).
    #[default]
    Im2col,
    /// Implicit GEMM: a convolution and its filter gradient have their padding
    /// split off as a pad of the input and stay, without padding, for `lower`'s
    /// contraction kernel, which reads the patches where they lie; the input
    /// gradient stays as it is, for a contraction summed over taps (the GPU's form:
    /// its tiled kernel gathers the panels anyway, so building the patch matrix only
    /// costs memory traffic). The poolings expand as for `Im2col`.
    Implicit,
}

/// Whether `graph` has a convolution or pooling op left to expand in `form`.
pub fn needed(graph: &Graph, form: ConvForm) -> bool {
    graph
        .node_ids()
        .into_iter()
        .any(|id| expands(graph.op(id), form))
}

fn expands(op: &Op, form: ConvForm) -> bool {
    match op {
        Op::Conv(spec) | Op::ConvFilterGrad { spec, .. } => {
            form == ConvForm::Im2col || padded(spec)
        }
        Op::ConvInputGrad { .. } => form == ConvForm::Im2col,
        Op::Pool { .. } | Op::PoolGrad { .. } => true,
        _ => false,
    }
}

/// `graph` with every convolution and pooling op replaced by its expansion in
/// `form`.
pub fn run(graph: &Graph, form: ConvForm) -> Result<Graph, IrError> {
    let mut graph = graph.clone();
    for id in graph.topo_order() {
        let op = graph.op(id).clone();
        if !expands(&op, form) {
            continue;
        }
        let operands = graph.operands(id);
        let a = operands[0];
        let b = operands.get(1).copied().unwrap_or(a);
        let ty = graph.ty(id).clone();
        let expanded = match &op {
            // An empty result (an input gradient of an empty axis) has no windows.
            _ if ty.num_elements() == 0 => graph.constant(0.0, ty)?,
            Op::Conv(spec) if form == ConvForm::Implicit => {
                conv::split_padding(&mut graph, spec, a, b, Op::Conv)?
            }
            Op::ConvFilterGrad { spec, taps } if form == ConvForm::Implicit => {
                conv::split_padding(&mut graph, spec, a, b, |spec| Op::ConvFilterGrad {
                    spec,
                    taps: taps.clone(),
                })?
            }
            Op::Conv(spec) => conv::conv(&mut graph, spec, a, b)?,
            Op::ConvInputGrad { spec, input } => conv::input_grad(&mut graph, spec, a, b, input)?,
            Op::ConvFilterGrad { spec, taps } => conv::filter_grad(&mut graph, spec, a, b, taps)?,
            Op::Pool { kind, spec } => pool::pool(&mut graph, *kind, spec, a)?,
            Op::PoolGrad { kind, spec } => pool::pool_grad(&mut graph, *kind, spec, a, b)?,
            _ => unreachable!("`expands` matched the ops expanded here"),
        };
        graph.replace_uses(id, expanded)?;
    }
    graph.prune();
    Ok(graph)
}

/// Every index of `shape` in row-major order.
pub(super) fn positions(shape: &[usize]) -> Vec<Vec<usize>> {
    let mut all = vec![Vec::new()];
    for &extent in shape {
        all = all
            .into_iter()
            .flat_map(|prefix: Vec<usize>| {
                (0..extent).map(move |i| {
                    let mut index = prefix.clone();
                    index.push(i);
                    index
                })
            })
            .collect();
    }
    all
}

/// `x` padded with `value` on the spatial axes, which start at axis `first` (2 for
/// channels-first `[N, C, spatial…]`, 1 for channels-last `[N, spatial…, C]`); `x`
/// itself when nothing is added.
pub(super) fn pad_spatial(
    graph: &mut Graph,
    x: NodeId,
    first: usize,
    (low, high, interior): (&[usize], &[usize], &[usize]),
    value: f64,
) -> Result<NodeId, IrError> {
    if low.iter().chain(high).chain(interior).all(|&n| n == 0) {
        return Ok(x);
    }
    let rank = graph.ty(x).rank();
    let whole = |spatial: &[usize]| {
        let mut all = vec![0; rank];
        all[first..first + spatial.len()].copy_from_slice(spatial);
        all
    };
    graph.pad(x, &whole(low), &whole(high), &whole(interior), value)
}

/// The windows of `x` (already padded; spatial axes from axis `first`, as in
/// [`pad_spatial`]): for each tap of `taps` in row-major order, the slice at
/// `start(t) + step·y` over the positions `y` of `out`, whole along the other axes.
pub(super) fn windows(
    graph: &mut Graph,
    x: NodeId,
    first: usize,
    taps: &[usize],
    out: &[usize],
    start: impl Fn(&[usize]) -> Vec<usize>,
    step: &[usize],
) -> Result<Vec<NodeId>, IrError> {
    let shape = graph.ty(x).shape.clone();
    let mut windows = Vec::new();
    for tap in positions(taps) {
        let begin = start(&tap);
        let mut starts = vec![0; shape.len()];
        let mut ends = shape.clone();
        let mut steps = vec![1; shape.len()];
        for axis in 0..out.len() {
            starts[first + axis] = begin[axis];
            ends[first + axis] = begin[axis] + (out[axis] - 1) * step[axis] + 1;
            steps[first + axis] = step[axis];
        }
        windows.push(graph.slice(x, &starts, &ends, &steps)?);
    }
    Ok(windows)
}
