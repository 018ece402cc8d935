//! Convolutions without padding as contractions (`KernelOp::Contraction`): an
//! implicit GEMM whose patch matrix is a strided view of the input, never stored.
//!
//! `expand` in its implicit form leaves a convolution and its filter gradient with
//! their padding split off into a pad of the input, so every patch element is an
//! element of that input: with `x: [N, G·C, P…]`, `w: [G·O, C, T…]` and
//! `y: [N, G·O, Q…]`,
//!
//! - `conv`: `y[n, g·O + o, q] = Σ_(t, c) x[n, g·C + c, s·q + d·t] · w[g·O + o, c, t]`:
//!   rows `(n, q…)`, columns `o`, sums over `(t…, c)` tap-major;
//! - `conv_filter_grad`: `dw[g·O + o, c, t] = Σ_(n, q) dy[n, g·O + o, q] ·
//!   x[n, g·C + c, s·q + d·t]`: rows `o`, columns `(c, t…)`, sums over `(n, q…)`;
//!
//! in the order im2col's matmul sums them (see `expand::conv`), so both forms give
//! the same bits. The kernel's loop nest is that sum, element by element, as for a
//! matmul; the op it records lets the GPU schedule run it as a tiled kernel.

use super::{as_i64, read, wrap, KernelBuilder, Lowering, Value};
use kiln_ir::kernel::{
    BufferId, Contraction, ContractionAxis, Expr, Index, KernelOp, LocalId, Scalar, Stmt, Storage,
    TapAxis, VarId,
};
use kiln_ir::op::ConvSpec;
use kiln_ir::types::strides;
use kiln_ir::{BinaryOp, CmpOp, DType, TensorType};

/// Axes of one extent contribute nothing and get no loop.
fn axis(extent: usize, strides: [usize; 2]) -> Option<ContractionAxis> {
    (extent != 1).then_some(ContractionAxis { extent, strides })
}

/// The extents and strides of a convolution's three tensors.
struct ConvLayout {
    batch: usize,
    groups: usize,
    /// Input channels per group, output channels per group.
    channels: usize,
    filters: usize,
    /// Spatial extents and row-major strides of the (padded) input, the output and
    /// the taps, and the element counts of each.
    input: (Vec<usize>, usize),
    out: (Vec<usize>, Vec<usize>, usize),
    taps: (Vec<usize>, Vec<usize>, usize),
}

impl ConvLayout {
    /// `x: [N, G·C, P…]` and `y: [N, G·O, Q…]`, `taps: [T…]`.
    fn new(spec: &ConvSpec, x: &TensorType, y: &TensorType, taps: &[usize]) -> ConvLayout {
        let spatial = |shape: &[usize]| {
            let extents = shape[2..].to_vec();
            let count = extents.iter().product();
            (strides(&extents), extents, count)
        };
        let (input_strides, _, input_count) = spatial(&x.shape);
        let (out_strides, out, out_count) = spatial(&y.shape);
        let groups = spec.groups;
        ConvLayout {
            batch: x.shape[0],
            groups,
            channels: x.shape[1] / groups,
            filters: y.shape[1] / groups,
            input: (input_strides, input_count),
            out: (out, out_strides, out_count),
            taps: (taps.to_vec(), strides(taps), taps.iter().product()),
        }
    }

    /// The taps' axes: extents, strides in the input (`d·P_stride`) and in `w`.
    fn tap_axes(&self, spec: &ConvSpec) -> Vec<ContractionAxis> {
        let (taps, tap_strides, _) = &self.taps;
        (0..taps.len())
            .filter_map(|a| {
                axis(
                    taps[a],
                    [spec.dilation[a] * self.input.0[a], tap_strides[a]],
                )
            })
            .collect()
    }

    /// The output positions' axes: extents, strides in the output (or `dy`) and in
    /// the input (`s·P_stride`).
    fn position_axes(&self, spec: &ConvSpec) -> Vec<ContractionAxis> {
        let (out, out_strides, _) = &self.out;
        (0..out.len())
            .filter_map(|a| axis(out[a], [out_strides[a], spec.stride[a] * self.input.0[a]]))
            .collect()
    }
}

/// Each loop variable of `vars` with stride `which` of its axis in `axes`.
fn terms(vars: &[(VarId, usize)], axes: &[ContractionAxis], which: usize) -> Vec<(VarId, i64)> {
    vars.iter()
        .zip(axes)
        .map(|(&(var, _), axis)| (var, as_i64(axis.strides[which])))
        .collect()
}

/// Swaps an axis's two strides.
fn swapped(axes: Vec<ContractionAxis>) -> Vec<ContractionAxis> {
    axes.into_iter()
        .map(|axis| ContractionAxis {
            extent: axis.extent,
            strides: [axis.strides[1], axis.strides[0]],
        })
        .collect()
}

/// `conv` (no padding) of `x` by `w` into `y` (see the module docs).
fn conv(spec: &ConvSpec, x: &TensorType, w: &TensorType, y: &TensorType) -> Contraction {
    let layout = ConvLayout::new(spec, x, y, &w.shape[2..]);
    let (c, o) = (layout.channels, layout.filters);
    let (p, q, t) = (layout.input.1, layout.out.2, layout.taps.2);
    let mut m: Vec<ContractionAxis> =
        axis(layout.batch, [layout.groups * c * p, layout.groups * o * q])
            .into_iter()
            .collect();
    // Positions: stride in the input first (a), then in y (c).
    m.extend(swapped(layout.position_axes(spec)));
    let mut k = layout.tap_axes(spec);
    k.extend(axis(c, [p, t]));
    Contraction {
        a: BufferId(0),
        b: BufferId(0),
        c: BufferId(0),
        batches: layout.groups,
        batch_strides: [c * p, o * c * t, o * q],
        m,
        n: axis(o, [c * t, q]).into_iter().collect(),
        k,
        taps: Vec::new(),
    }
}

/// `conv_filter_grad` (no padding) of `x` and `dy` into `dw: [G·O, C, T…]`.
fn filter_grad(spec: &ConvSpec, x: &TensorType, dy: &TensorType, taps: &[usize]) -> Contraction {
    let layout = ConvLayout::new(spec, x, dy, taps);
    let (c, o) = (layout.channels, layout.filters);
    let (p, q, t) = (layout.input.1, layout.out.2, layout.taps.2);
    let mut n: Vec<ContractionAxis> = axis(c, [p, t]).into_iter().collect();
    n.extend(layout.tap_axes(spec));
    let mut k: Vec<ContractionAxis> =
        axis(layout.batch, [layout.groups * o * q, layout.groups * c * p])
            .into_iter()
            .collect();
    k.extend(layout.position_axes(spec));
    Contraction {
        a: BufferId(0),
        b: BufferId(0),
        c: BufferId(0),
        batches: layout.groups,
        batch_strides: [o * q, c * p, o * c * t],
        m: axis(o, [q, c * t]).into_iter().collect(),
        n,
        k,
        taps: Vec::new(),
    }
}

/// One tap's term of a tap sum (see `TapAxis`), inside the loops over the taps
/// (`taps`, the position of every axis of `axes` in `positions`): the part `acc`
/// is the fma chain (`step`) over `k` for the one output position `y` (looped over
/// in `outs`) that the tap reads the position from, or +0 where there is none, then
/// added to `total` (assigned at the first tap).
///
/// Integer division is not in the kernel IR, so the loop nest looks the output
/// position up rather than computing it: it runs over every `y` and takes the fma
/// steps only where `s·y + d·t = i + low` on every axis. The GPU's tiled kernel
/// computes `y` instead.
fn tap_sum(
    axes: &[TapAxis],
    positions: &[(VarId, usize)],
    taps: &[(VarId, usize)],
    outs: &[(VarId, usize)],
    k: &[(VarId, usize)],
    (acc, total): (LocalId, LocalId),
    step: Expr,
) -> Vec<Stmt> {
    let holds = |index: Index, value: usize| {
        Expr::compare(
            CmpOp::Eq,
            Expr::index_value(&index),
            Expr::Const(Scalar::I32(value as i32)),
        )
    };
    let mut reads: Option<Expr> = None;
    for (a, tap) in axes.iter().enumerate() {
        let meets = Index::new(
            [
                (outs[a].0, as_i64(tap.stride)),
                (taps[a].0, as_i64(tap.dilation)),
                (positions[a].0, -1),
            ],
            0,
        );
        let axis_reads = holds(meets, tap.low);
        reads = Some(match reads {
            None => axis_reads,
            Some(all) => Expr::select(all, axis_reads, Expr::Const(Scalar::Bool(false))),
        });
    }
    let first = holds(Index::new(taps.iter().map(|&(var, _)| (var, 1)), 0), 0);
    let mut body = vec![Stmt::Assign {
        local: acc,
        value: Expr::Const(Scalar::F32(0.0)),
    }];
    if let Some(reads) = reads {
        let gated = Expr::select(reads, step, Expr::Local(acc));
        let mut nest = outs.to_vec();
        nest.extend_from_slice(k);
        body.extend(wrap(
            &nest,
            vec![Stmt::Assign {
                local: acc,
                value: gated,
            }],
        ));
    }
    body.push(Stmt::Assign {
        local: total,
        value: Expr::select(
            first,
            Expr::Local(acc),
            Expr::binary(BinaryOp::Add, Expr::Local(total), Expr::Local(acc)),
        ),
    });
    body
}

/// `conv_input_grad` of `dy: [N, G·O, Q…]` and `w: [G·O, C, T…]` into
/// `dx: [N, G·C, I…]` (see the module docs): rows `(n, i…)`, columns `c`, sums over
/// `o` for each tap, added over the taps.
fn input_grad(spec: &ConvSpec, dy: &TensorType, w: &TensorType, dx: &TensorType) -> Contraction {
    let layout = ConvLayout::new(spec, dx, dy, &w.shape[2..]);
    let (c, o) = (layout.channels, layout.filters);
    let (q, t) = (layout.out.2, layout.taps.2);
    let (input_strides, i) = (&layout.input.0, layout.input.1);
    let groups = layout.groups;
    // The positions' strides in dy come from the taps (`TapAxis::out_stride`).
    let mut m = vec![ContractionAxis {
        extent: layout.batch,
        strides: [groups * o * q, groups * c * i],
    }];
    m.extend(
        dx.shape[2..]
            .iter()
            .zip(input_strides)
            .map(|(&extent, &stride)| ContractionAxis {
                extent,
                strides: [0, stride],
            }),
    );
    let (out, out_strides, _) = &layout.out;
    let (taps, tap_strides, _) = &layout.taps;
    let taps = (0..taps.len())
        .map(|a| TapAxis {
            taps: taps[a],
            dilation: spec.dilation[a],
            stride: spec.stride[a],
            low: spec.low[a],
            out: out[a],
            out_stride: out_strides[a],
            tap_stride: tap_strides[a],
        })
        .collect();
    Contraction {
        a: BufferId(0),
        b: BufferId(0),
        c: BufferId(0),
        batches: groups,
        batch_strides: [o * q, o * c * t, c * i],
        m,
        n: vec![ContractionAxis {
            extent: c,
            strides: [t, i],
        }],
        k: vec![ContractionAxis {
            extent: o,
            strides: [q, c * t],
        }],
        taps,
    }
}

impl Lowering<'_> {
    /// `conv_input_grad` of `dy` and `w` as a contraction kernel summed over taps.
    pub(super) fn input_grad_contraction(
        &mut self,
        name: &str,
        spec: &ConvSpec,
        (dy, dy_ty): (Value, &TensorType),
        (w, w_ty): (Value, &TensorType),
        ty: &TensorType,
    ) -> BufferId {
        let shape = input_grad(spec, dy_ty, w_ty, ty);
        self.contraction(name, shape, dy, w, ty)
    }

    /// `conv` without padding on `x` and `w`, or `conv_filter_grad` on `x` and `dy`
    /// (`filter_taps` its taps), as a contraction kernel.
    pub(super) fn conv_contraction(
        &mut self,
        name: &str,
        spec: &ConvSpec,
        (x, x_ty): (Value, &TensorType),
        (other, other_ty): (Value, &TensorType),
        filter_taps: Option<&[usize]>,
        ty: &TensorType,
    ) -> BufferId {
        let (shape, a, b) = match filter_taps {
            None => (conv(spec, x_ty, other_ty, ty), x, other),
            Some(taps) => (filter_grad(spec, x_ty, other_ty, taps), other, x),
        };
        self.contraction(name, shape, a, b, ty)
    }

    /// The kernel of `shape` (whose buffers are set here) reading `a` and `b`.
    fn contraction(
        &mut self,
        name: &str,
        mut shape: Contraction,
        a: Value,
        b: Value,
        ty: &TensorType,
    ) -> BufferId {
        let out = self.program.add_buffer(ty.clone(), Storage::Temp);
        if ty.num_elements() == 0 {
            return out;
        }
        let mut kernel = KernelBuilder::default();
        let batch = (shape.batches > 1).then(|| (kernel.var(), shape.batches));
        let mut loops = |axes: &[ContractionAxis]| -> Vec<(VarId, usize)> {
            axes.iter()
                .map(|axis| (kernel.var(), axis.extent))
                .collect()
        };
        let (m, n, k) = (loops(&shape.m), loops(&shape.n), loops(&shape.k));
        let batch_term =
            |which: usize| batch.map(|(var, _)| (var, as_i64(shape.batch_strides[which])));
        let index = |which: usize, first: Vec<(VarId, i64)>, second: Vec<(VarId, i64)>| {
            Index::new(batch_term(which).into_iter().chain(first).chain(second), 0)
        };
        // With taps: their loops, the gathered output positions', and each tap's
        // shift of a's rows and b.
        let tap_loops: Vec<(VarId, usize)> = shape
            .taps
            .iter()
            .map(|tap| (kernel.var(), tap.taps))
            .collect();
        let out_loops: Vec<(VarId, usize)> = shape
            .taps
            .iter()
            .map(|tap| (kernel.var(), tap.out))
            .collect();
        let gathered = out_loops
            .iter()
            .zip(&shape.taps)
            .map(|(&(var, _), tap)| (var, as_i64(tap.out_stride)));
        let shifted = tap_loops
            .iter()
            .zip(&shape.taps)
            .map(|(&(var, _), tap)| (var, as_i64(tap.tap_stride)));
        let mut a_terms = terms(&m, &shape.m, 0);
        a_terms.extend(gathered);
        let mut b_terms = terms(&n, &shape.n, 0);
        b_terms.extend(shifted);
        let a_index = index(0, a_terms, terms(&k, &shape.k, 0));
        let b_index = index(1, b_terms, terms(&k, &shape.k, 1));
        let c_index = index(2, terms(&m, &shape.m, 1), terms(&n, &shape.n, 1));
        // The fma chain over k in row-major order from +0, as a matmul's.
        let acc = kernel.local(DType::F32);
        let zero = || Expr::Const(Scalar::F32(0.0));
        let step = Expr::fma(read(a, a_index), read(b, b_index), Expr::Local(acc));
        let mut element = vec![Stmt::Assign {
            local: acc,
            value: zero(),
        }];
        if shape.taps.is_empty() {
            if shape.depth() > 0 {
                element.extend(wrap(
                    &k,
                    vec![Stmt::Assign {
                        local: acc,
                        value: step,
                    }],
                ));
            }
        } else {
            let total = kernel.local(DType::F32);
            let positions = &m[m.len() - shape.taps.len()..];
            element = vec![Stmt::Assign {
                local: total,
                value: zero(),
            }];
            element.extend(wrap(
                &tap_loops,
                tap_sum(
                    &shape.taps,
                    positions,
                    &tap_loops,
                    &out_loops,
                    &k,
                    (acc, total),
                    step,
                ),
            ));
            element.push(Stmt::Assign {
                local: acc,
                value: Expr::Local(total),
            });
        }
        element.push(Stmt::Store {
            buffer: out,
            index: c_index,
            value: Expr::Local(acc),
        });
        let outer: Vec<(VarId, usize)> = batch.into_iter().chain(m).chain(n).collect();
        let mut kernel = kernel.finish(name, wrap(&outer, element));
        // A constant operand has no buffer; such a (rare) contraction stays a loop
        // nest, as a matmul does.
        if let (Value::Buffer(a), Value::Buffer(b)) = (a, b) {
            (shape.a, shape.b, shape.c) = (a, b, out);
            kernel.op = Some(KernelOp::Contraction(shape));
        }
        self.program.kernels.push(kernel);
        out
    }
}
