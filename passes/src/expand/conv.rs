//! The convolution ops as im2col and matmuls (see the module docs of `expand`).

use super::{pad_spatial, windows};
use kiln_ir::op::ConvSpec;
use kiln_ir::{Graph, IrError, NodeId, Op};

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
    let parts = windows(graph, x, taps, out, start, step)?;
    let mut joined = parts[0];
    for &part in &parts[1..] {
        joined = graph.concat(joined, part, 1)?;
    }
    // [N, T·C, out…] -> [N, out…, T·C] -> [N·prod(out), T·C].
    let mut perm = vec![0];
    perm.extend(2..rank);
    perm.push(1);
    let rows = graph.transpose(joined, &perm)?;
    let columns = graph.ty(rows).shape[rank - 1];
    let count = shape[0] * out.iter().product::<usize>();
    graph.reshape(rows, vec![count, columns])
}

/// The forward's im2col matrix of group `group` of the padded input: tap `t` reads
/// `padded[:, group's channels, s·y + d·t]`.
fn input_patches(
    graph: &mut Graph,
    spec: &ConvSpec,
    padded: NodeId,
    group: usize,
    taps: &[usize],
    out: &[usize],
) -> Result<NodeId, IrError> {
    let xg = group_slice(graph, padded, 1, group, spec.groups)?;
    let dilation = spec.dilation.clone();
    let start = move |tap: &[usize]| -> Vec<usize> {
        tap.iter().zip(&dilation).map(|(t, d)| t * d).collect()
    };
    patches(graph, xg, taps, out, start, &spec.stride)
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

pub(super) fn conv(
    graph: &mut Graph,
    spec: &ConvSpec,
    x: NodeId,
    w: NodeId,
) -> Result<NodeId, IrError> {
    let x_shape = graph.ty(x).shape.clone();
    let taps = graph.ty(w).shape[2..].to_vec();
    let out = out_shape(spec, &x_shape[2..], &taps);
    let padded = pad_spatial(graph, x, (&spec.low, &spec.high, &vec![0; taps.len()]), 0.0)?;
    let mut per_group = Vec::with_capacity(spec.groups);
    for group in 0..spec.groups {
        let columns = input_patches(graph, spec, padded, group, &taps, &out)?;
        let weights = weight_matrix(graph, w, group, spec.groups, 1)?;
        per_group.push(graph.matmul(columns, weights)?);
    }
    to_channels_first(graph, &per_group, x_shape[0], &out)
}

pub(super) fn input_grad(
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
    let dilated = pad_spatial(graph, dy, (&before, &after, &gaps), 0.0)?;
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

pub(super) fn filter_grad(
    graph: &mut Graph,
    spec: &ConvSpec,
    x: NodeId,
    dy: NodeId,
    taps: &[usize],
) -> Result<NodeId, IrError> {
    let dy_shape = graph.ty(dy).shape.clone();
    let out = dy_shape[2..].to_vec();
    let rank = taps.len();
    let padded = pad_spatial(graph, x, (&spec.low, &spec.high, &vec![0; rank]), 0.0)?;
    let mut per_group = Vec::with_capacity(spec.groups);
    for group in 0..spec.groups {
        let columns = input_patches(graph, spec, padded, group, taps, &out)?;
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
