//! Expansion: the convolution ops become the primitives the back end has kernels for
//! (padding, strided slices, concatenation, transposes and one matmul per group:
//! im2col), so a convolution runs on the tuned matmul routine until it has a kernel
//! of its own.
//!
//! Each expansion sums every element's terms in the order its op documents (the
//! patch columns are laid out tap-major, the matmul adds them in column order from
//! +0 with one `fma` a term), so the expanded graph computes the op's meaning bit for
//! bit. The two gradients expand to the same pattern: `conv_input_grad` reads the
//! output gradient dilated by the stride (an interior pad) through flipped tap
//! offsets, and `conv_filter_grad` is a transposed matmul of the output gradient with
//! the forward's patches.
//!
//! ```text
//! before:  %2 = conv %0, %1 stride=[1] low=[0] high=[0] dilation=[1] groups=1 : f32[1,1,2]
//! after:   %2 = slice %0 …   %3 = slice %0 …   %4 = concat %2, %3 axis=1   …   %9 = matmul %7, %8
//! ```

use kiln_ir::op::ConvSpec;
use kiln_ir::{Graph, IrError, NodeId, Op};

/// Whether `graph` has a convolution op left to expand.
pub fn needed(graph: &Graph) -> bool {
    graph.node_ids().into_iter().any(|id| is_conv(graph.op(id)))
}

fn is_conv(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv(_) | Op::ConvInputGrad { .. } | Op::ConvFilterGrad { .. }
    )
}

/// `graph` with every convolution op replaced by its expansion.
pub fn run(graph: &Graph) -> Result<Graph, IrError> {
    let mut graph = graph.clone();
    for id in graph.topo_order() {
        let op = graph.op(id).clone();
        if !is_conv(&op) {
            continue;
        }
        let operands = graph.operands(id);
        let (a, b) = (operands[0], operands[1]);
        let ty = graph.ty(id).clone();
        let expanded = match &op {
            // An empty result (an input gradient of an empty axis) has no windows.
            _ if ty.num_elements() == 0 => graph.constant(0.0, ty)?,
            Op::Conv(spec) => conv(&mut graph, spec, a, b)?,
            Op::ConvInputGrad { spec, input } => input_grad(&mut graph, spec, a, b, input)?,
            Op::ConvFilterGrad { spec, taps } => filter_grad(&mut graph, spec, a, b, taps)?,
            _ => unreachable!("is_conv matched the three convolution ops"),
        };
        graph.replace_uses(id, expanded)?;
    }
    graph.prune();
    Ok(graph)
}

/// Every index of `shape` in row-major order.
fn positions(shape: &[usize]) -> Vec<Vec<usize>> {
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

/// `x` padded on its spatial axes (all but the first two); `x` itself when nothing
/// is added.
fn pad_spatial(
    graph: &mut Graph,
    x: NodeId,
    low: &[usize],
    high: &[usize],
    interior: &[usize],
) -> Result<NodeId, IrError> {
    if low.iter().chain(high).chain(interior).all(|&n| n == 0) {
        return Ok(x);
    }
    let whole = |spatial: &[usize]| [0, 0].iter().chain(spatial).copied().collect::<Vec<_>>();
    graph.pad(x, &whole(low), &whole(high), &whole(interior), 0.0)
}

/// Channels `[group·width, (group + 1)·width)` of `x` (axis 0 when `axis` is 0,
/// else axis 1); `x` itself when there is one group.
fn group_slice(
    graph: &mut Graph,
    x: NodeId,
    axis: usize,
    group: usize,
    groups: usize,
) -> Result<NodeId, IrError> {
    if groups == 1 {
        return Ok(x);
    }
    let shape = graph.ty(x).shape.clone();
    let width = shape[axis] / groups;
    let mut starts = vec![0; shape.len()];
    let mut ends = shape.clone();
    starts[axis] = group * width;
    ends[axis] = (group + 1) * width;
    graph.slice(x, &starts, &ends, &vec![1; shape.len()])
}

/// The im2col matrix of `x: [N, C, …]`: for every tap `t` of `taps` (row-major), the
/// window `x[:, :, start(t) + step·y]` over the output positions `y` of `out`, laid
/// side by side: `[N·prod(out), T·C]`, columns tap-major.
fn patches(
    graph: &mut Graph,
    x: NodeId,
    taps: &[usize],
    out: &[usize],
    start: impl Fn(&[usize]) -> Vec<usize>,
    step: &[usize],
) -> Result<NodeId, IrError> {
    let shape = graph.ty(x).shape.clone();
    let rank = shape.len();
    let mut joined: Option<NodeId> = None;
    for tap in positions(taps) {
        let first = start(&tap);
        let starts: Vec<usize> = [0, 0].into_iter().chain(first.iter().copied()).collect();
        let mut ends = vec![shape[0], shape[1]];
        let mut steps = vec![1, 1];
        for axis in 0..out.len() {
            ends.push(first[axis] + (out[axis] - 1) * step[axis] + 1);
            steps.push(step[axis]);
        }
        let window = graph.slice(x, &starts, &ends, &steps)?;
        joined = Some(match joined {
            None => window,
            Some(joined) => graph.concat(joined, window, 1)?,
        });
    }
    let joined = joined.expect("a kernel has at least one tap");
    // [N, T·C, out…] -> [N, out…, T·C] -> [N·prod(out), T·C].
    let mut perm = vec![0];
    perm.extend(2..rank);
    perm.push(1);
    let rows = graph.transpose(joined, &perm)?;
    let columns = graph.ty(rows).shape[rank - 1];
    let count = shape[0] * out.iter().product::<usize>();
    graph.reshape(rows, vec![count, columns])
}

/// `w[g·O : (g+1)·O]` (`[O, C, taps…]`) as a `[T·rows_inner, cols]` matrix: taps
/// first, then the axis `inner` (0 for O, 1 for C); the other channel axis becomes the
/// columns.
fn weight_matrix(
    graph: &mut Graph,
    w: NodeId,
    group: usize,
    groups: usize,
    inner: usize,
) -> Result<NodeId, IrError> {
    let wg = group_slice(graph, w, 0, group, groups)?;
    let rank = graph.ty(wg).rank();
    let mut perm: Vec<usize> = (2..rank).collect();
    perm.extend([inner, 1 - inner]);
    let moved = graph.transpose(wg, &perm)?;
    let shape = graph.ty(moved).shape.clone();
    let columns = shape[rank - 1];
    graph.reshape(moved, vec![shape[..rank - 1].iter().product(), columns])
}

/// `[N·prod(spatial), channels]` rows, one matrix per group joined on the channels,
/// back to `[N, channels, spatial…]`.
fn to_channels_first(
    graph: &mut Graph,
    per_group: &[NodeId],
    batch: usize,
    spatial: &[usize],
) -> Result<NodeId, IrError> {
    let mut joined = per_group[0];
    for &part in &per_group[1..] {
        joined = graph.concat(joined, part, 1)?;
    }
    let channels = graph.ty(joined).shape[1];
    let mut shape = vec![batch];
    shape.extend_from_slice(spatial);
    shape.push(channels);
    let rows = graph.reshape(joined, shape)?;
    let rank = spatial.len() + 2;
    let mut perm = vec![0, rank - 1];
    perm.extend(1..rank - 1);
    graph.transpose(rows, &perm)
}

fn conv(graph: &mut Graph, spec: &ConvSpec, x: NodeId, w: NodeId) -> Result<NodeId, IrError> {
    let x_shape = graph.ty(x).shape.clone();
    let taps = graph.ty(w).shape[2..].to_vec();
    let out = out_shape(spec, &x_shape[2..], &taps);
    let padded = pad_spatial(graph, x, &spec.low, &spec.high, &vec![0; taps.len()])?;
    let mut per_group = Vec::with_capacity(spec.groups);
    for group in 0..spec.groups {
        let xg = group_slice(graph, padded, 1, group, spec.groups)?;
        let dilation = spec.dilation.clone();
        let start = move |tap: &[usize]| -> Vec<usize> {
            tap.iter().zip(&dilation).map(|(t, d)| t * d).collect()
        };
        let columns = patches(graph, xg, &taps, &out, start, &spec.stride)?;
        let weights = weight_matrix(graph, w, group, spec.groups, 1)?;
        per_group.push(graph.matmul(columns, weights)?);
    }
    to_channels_first(graph, &per_group, x_shape[0], &out)
}

fn input_grad(
    graph: &mut Graph,
    spec: &ConvSpec,
    dy: NodeId,
    w: NodeId,
    input: &[usize],
) -> Result<NodeId, IrError> {
    let dy_shape = graph.ty(dy).shape.clone();
    let taps = graph.ty(w).shape[2..].to_vec();
    let rank = taps.len();
    // dy dilated by the stride, with d·(T − 1) zeros before and enough after that
    // every window below stays inside.
    let before: Vec<usize> = (0..rank)
        .map(|a| spec.dilation[a] * (taps[a] - 1))
        .collect();
    let after: Vec<usize> = (0..rank)
        .map(|a| {
            let covered = (dy_shape[a + 2] - 1) * spec.stride[a] + 1;
            (input[a] + spec.low[a]).saturating_sub(covered)
        })
        .collect();
    let gaps: Vec<usize> = spec.stride.iter().map(|s| s - 1).collect();
    let dilated = pad_spatial(graph, dy, &before, &after, &gaps)?;
    let mut per_group = Vec::with_capacity(spec.groups);
    for group in 0..spec.groups {
        let dg = group_slice(graph, dilated, 1, group, spec.groups)?;
        let (low, dilation, taps_at) = (spec.low.clone(), spec.dilation.clone(), taps.clone());
        let start = move |tap: &[usize]| -> Vec<usize> {
            (0..tap.len())
                .map(|a| low[a] + dilation[a] * (taps_at[a] - 1 - tap[a]))
                .collect()
        };
        let columns = patches(graph, dg, &taps, input, start, &vec![1; rank])?;
        let weights = weight_matrix(graph, w, group, spec.groups, 0)?;
        per_group.push(graph.matmul(columns, weights)?);
    }
    to_channels_first(graph, &per_group, dy_shape[0], input)
}

fn filter_grad(
    graph: &mut Graph,
    spec: &ConvSpec,
    x: NodeId,
    dy: NodeId,
    taps: &[usize],
) -> Result<NodeId, IrError> {
    let dy_shape = graph.ty(dy).shape.clone();
    let out = dy_shape[2..].to_vec();
    let rank = taps.len();
    let padded = pad_spatial(graph, x, &spec.low, &spec.high, &vec![0; rank])?;
    let mut per_group = Vec::with_capacity(spec.groups);
    for group in 0..spec.groups {
        let xg = group_slice(graph, padded, 1, group, spec.groups)?;
        let dilation = spec.dilation.clone();
        let start = move |tap: &[usize]| -> Vec<usize> {
            tap.iter().zip(&dilation).map(|(t, d)| t * d).collect()
        };
        let columns = patches(graph, xg, taps, &out, start, &spec.stride)?;
        // dy's group as [N·prod(out), O], the rows in the patches' order.
        let dg = group_slice(graph, dy, 1, group, spec.groups)?;
        let mut perm = vec![0];
        perm.extend(2..rank + 2);
        perm.push(1);
        let rows = graph.transpose(dg, &perm)?;
        let o = dy_shape[1] / spec.groups;
        let count = dy_shape[0] * out.iter().product::<usize>();
        let rows = graph.reshape(rows, vec![count, o])?;
        let tn = Op::MatMul {
            transpose_a: true,
            transpose_b: false,
        };
        // [O, T·C] -> [O, taps…, C] -> [O, C, taps…].
        let flat = graph.add(tn, &[rows, columns])?;
        let c = graph.ty(x).shape[1] / spec.groups;
        let mut shape = vec![o];
        shape.extend_from_slice(taps);
        shape.push(c);
        let split = graph.reshape(flat, shape)?;
        let mut perm = vec![0, rank + 1];
        perm.extend(1..rank + 1);
        per_group.push(graph.transpose(split, &perm)?);
    }
    let mut joined = per_group[0];
    for &part in &per_group[1..] {
        joined = graph.concat(joined, part, 0)?;
    }
    Ok(joined)
}

/// The output's spatial extents; the op's typing rule made sure they exist.
fn out_shape(spec: &ConvSpec, input: &[usize], taps: &[usize]) -> Vec<usize> {
    (0..input.len())
        .map(|axis| {
            spec.out_extent(axis, input[axis], taps[axis])
                .expect("the conv op was typed, so its kernel fits")
        })
        .collect()
}
