//! The convolution ops as im2col and matmuls (see the module docs of `expand`), in
//! channels-last layout: the input is transposed once to `[N, spatial…, C]`, so each
//! tap's window (a strided slice) already has the patch matrix's rows in order, and
//! the concatenation of the windows (which `lower` fills in place) is the matrix.
//!
//! - `conv`: `patches(x) @ W`, `W[(t, c), o] = w[o, c, t]`;
//! - `conv_filter_grad`: `dYᵀ @ patches(x)`, reshaped to `[O, C, taps…]`;
//! - `conv_input_grad`: `dY @ Wᵀ` gives each tap's contribution at each output
//!   position (col2im); each tap's columns are placed where the tap reads the padded
//!   input (a pad with the stride's gaps, the adjoint of its strided window) and the
//!   taps summed in order, then the padding cropped.

use super::{pad_spatial, positions, windows};
use kiln_ir::op::ConvSpec;
use kiln_ir::{Graph, IrError, NodeId, Op};

/// `[N, C, spatial…]` as `[N, spatial…, C]`.
fn channels_last(graph: &mut Graph, x: NodeId) -> Result<NodeId, IrError> {
    let rank = graph.ty(x).rank();
    let mut perm = vec![0];
    perm.extend(2..rank);
    perm.push(1);
    graph.transpose(x, &perm)
}

/// `[N, spatial…, C]` as `[N, C, spatial…]`.
fn channels_first(graph: &mut Graph, x: NodeId) -> Result<NodeId, IrError> {
    let rank = graph.ty(x).rank();
    let mut perm = vec![0, rank - 1];
    perm.extend(1..rank - 1);
    graph.transpose(x, &perm)
}

/// Group `group` of `groups` equal ranges along `axis`; `x` itself for one group.
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

/// `parts` joined in order along `axis`.
fn join(graph: &mut Graph, parts: &[NodeId], axis: usize) -> Result<NodeId, IrError> {
    let mut joined = parts[0];
    for &part in &parts[1..] {
        joined = graph.concat(joined, part, axis)?;
    }
    Ok(joined)
}

/// The im2col matrix of group `group` of the padded channels-last input
/// `[N, padded…, C]`: tap `t` (row-major) reads `s·y + d·t` for the output positions
/// `y` of `out`; `[N·prod(out), T·C_group]`, columns tap-major.
fn patches(
    graph: &mut Graph,
    spec: &ConvSpec,
    padded: NodeId,
    group: usize,
    taps: &[usize],
    out: &[usize],
) -> Result<NodeId, IrError> {
    let rank = graph.ty(padded).rank();
    let xg = group_slice(graph, padded, rank - 1, group, spec.groups)?;
    let dilation = spec.dilation.clone();
    let start = move |tap: &[usize]| -> Vec<usize> {
        tap.iter().zip(&dilation).map(|(t, d)| t * d).collect()
    };
    let parts = windows(graph, xg, 1, taps, out, start, &spec.stride)?;
    let joined = join(graph, &parts, rank - 1)?;
    let shape = graph.ty(joined).shape.clone();
    graph.reshape(
        joined,
        vec![shape[..rank - 1].iter().product(), shape[rank - 1]],
    )
}

/// `x: [N, C, spatial…]` padded as `spec` says, channels last.
fn padded_channels_last(graph: &mut Graph, spec: &ConvSpec, x: NodeId) -> Result<NodeId, IrError> {
    let moved = channels_last(graph, x)?;
    let interior = vec![0; spec.low.len()];
    pad_spatial(graph, moved, 1, (&spec.low, &spec.high, &interior), 0.0)
}

/// `x: [N, C, spatial…]` as `[N·prod(spatial), C]` rows.
fn rows(graph: &mut Graph, x: NodeId) -> Result<NodeId, IrError> {
    let shape = graph.ty(x).shape.clone();
    let moved = channels_last(graph, x)?;
    let count = shape[0] * shape[2..].iter().product::<usize>();
    graph.reshape(moved, vec![count, shape[1]])
}

/// Group `group` of `w: [G·O, C, taps…]` as the `[T·C, O]` matrix
/// `W[(t, c), o] = w[g·O + o, c, t]`.
fn weight_matrix(
    graph: &mut Graph,
    w: NodeId,
    group: usize,
    groups: usize,
) -> Result<NodeId, IrError> {
    let wg = group_slice(graph, w, 0, group, groups)?;
    let rank = graph.ty(wg).rank();
    let mut perm: Vec<usize> = (2..rank).collect();
    perm.extend([1, 0]);
    let moved = graph.transpose(wg, &perm)?;
    let shape = graph.ty(moved).shape.clone();
    graph.reshape(
        moved,
        vec![shape[..rank - 1].iter().product(), shape[rank - 1]],
    )
}

/// `[N·prod(spatial), channels]` rows, one matrix per group joined on the channels,
/// back to `[N, channels, spatial…]`.
fn from_rows(
    graph: &mut Graph,
    per_group: &[NodeId],
    batch: usize,
    spatial: &[usize],
) -> Result<NodeId, IrError> {
    let joined = join(graph, per_group, 1)?;
    let channels = graph.ty(joined).shape[1];
    let mut shape = vec![batch];
    shape.extend_from_slice(spatial);
    shape.push(channels);
    let moved = graph.reshape(joined, shape)?;
    channels_first(graph, moved)
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
    let padded = padded_channels_last(graph, spec, x)?;
    let mut per_group = Vec::with_capacity(spec.groups);
    for group in 0..spec.groups {
        let columns = patches(graph, spec, padded, group, &taps, &out)?;
        let weights = weight_matrix(graph, w, group, spec.groups)?;
        per_group.push(graph.matmul(columns, weights)?);
    }
    from_rows(graph, &per_group, x_shape[0], &out)
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
    let padded = padded_channels_last(graph, spec, x)?;
    let dy_rows = rows(graph, dy)?;
    let tn = Op::MatMul {
        transpose_a: true,
        transpose_b: false,
    };
    let mut per_group = Vec::with_capacity(spec.groups);
    for group in 0..spec.groups {
        let columns = patches(graph, spec, padded, group, taps, &out)?;
        let dg = group_slice(graph, dy_rows, 1, group, spec.groups)?;
        // [O, T·C] -> [O, taps…, C] -> [O, C, taps…].
        let flat = graph.add(tn.clone(), &[dg, columns])?;
        let (o, c) = (graph.ty(dg).shape[1], graph.ty(x).shape[1] / spec.groups);
        let mut shape = vec![o];
        shape.extend_from_slice(taps);
        shape.push(c);
        let split = graph.reshape(flat, shape)?;
        let mut perm = vec![0, rank + 1];
        perm.extend(1..rank + 1);
        per_group.push(graph.transpose(split, &perm)?);
    }
    join(graph, &per_group, 0)
}

pub(super) fn input_grad(
    graph: &mut Graph,
    spec: &ConvSpec,
    dy: NodeId,
    w: NodeId,
    input: &[usize],
) -> Result<NodeId, IrError> {
    let dy_shape = graph.ty(dy).shape.clone();
    let (batch, out) = (dy_shape[0], dy_shape[2..].to_vec());
    let taps = graph.ty(w).shape[2..].to_vec();
    let (rank, c) = (taps.len(), graph.ty(w).shape[1]);
    let padded: Vec<usize> = (0..rank)
        .map(|a| input[a] + spec.low[a] + spec.high[a])
        .collect();
    let gaps: Vec<usize> = spec.stride.iter().map(|s| s - 1).collect();
    let dy_rows = rows(graph, dy)?;
    let nt = Op::MatMul {
        transpose_a: false,
        transpose_b: true,
    };
    let mut per_group = Vec::with_capacity(spec.groups);
    for group in 0..spec.groups {
        let dg = group_slice(graph, dy_rows, 1, group, spec.groups)?;
        let weights = weight_matrix(graph, w, group, spec.groups)?;
        // Each output position's contribution through each tap: [N, out…, T·C].
        let flat = graph.add(nt.clone(), &[dg, weights])?;
        let mut shape = vec![batch];
        shape.extend_from_slice(&out);
        shape.push(taps.iter().product::<usize>() * c);
        let contributions = graph.reshape(flat, shape)?;
        let mut placed = Vec::new();
        for (index, tap) in positions(&taps).into_iter().enumerate() {
            let mut starts = vec![0; rank + 2];
            let mut ends = graph.ty(contributions).shape.clone();
            starts[rank + 1] = index * c;
            ends[rank + 1] = (index + 1) * c;
            let part = graph.slice(contributions, &starts, &ends, &vec![1; rank + 2])?;
            let before: Vec<usize> = (0..rank).map(|a| tap[a] * spec.dilation[a]).collect();
            let after: Vec<usize> = (0..rank)
                .map(|a| padded[a] - (before[a] + (out[a] - 1) * spec.stride[a] + 1))
                .collect();
            placed.push(pad_spatial(graph, part, 1, (&before, &after, &gaps), 0.0)?);
        }
        let mut sum = placed[0];
        for &part in &placed[1..] {
            sum = graph.add_(sum, part)?;
        }
        let mut starts = vec![0; rank + 2];
        let mut ends = graph.ty(sum).shape.clone();
        for a in 0..rank {
            starts[a + 1] = spec.low[a];
            ends[a + 1] = spec.low[a] + input[a];
        }
        per_group.push(graph.slice(sum, &starts, &ends, &vec![1; rank + 2])?);
    }
    let joined = join(graph, &per_group, rank + 1)?;
    channels_first(graph, joined)
}

/// Whether `spec` adds zeros around the input.
pub(crate) fn padded(spec: &ConvSpec) -> bool {
    spec.low.iter().chain(&spec.high).any(|&n| n > 0)
}

/// A convolution op with `spec` (`conv` or `conv_filter_grad`, as `op` builds it
/// from a spec) on `x` and `other`, as the same op without padding on `x` padded:
/// every patch element is then an element of the padded input, which `lower`'s
/// contraction reads in place.
pub(super) fn split_padding(
    graph: &mut Graph,
    spec: &ConvSpec,
    x: NodeId,
    other: NodeId,
    op: impl FnOnce(ConvSpec) -> Op,
) -> Result<NodeId, IrError> {
    let interior = vec![0; spec.low.len()];
    let padded = pad_spatial(graph, x, 2, (&spec.low, &spec.high, &interior), 0.0)?;
    let unpadded = ConvSpec {
        low: interior.clone(),
        high: interior,
        ..spec.clone()
    };
    graph.add(op(unpadded), &[padded, other])
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
