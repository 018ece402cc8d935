//! The GEMM driver in Cranelift IR: BLIS-style blocking loops, packing of A and B
//! into the microkernel's panel layout, and the call of a microkernel on every tile:
//! the full one, an edge variant that reads and writes only the tile's valid part
//! of C, or, where no variant fits, the full one on a scratch tile.
//!
//! Loop nest (sizes static, the row range a runtime argument):
//!
//! ```text
//! for jc in 0..n step NC                      B panel of NC columns
//!   pack bias[jc..] (zero padded)             only with a bias epilogue
//!   for pc in 0..k step KC                    KC block of the k dimension
//!     pack B[pc.., jc..] into NR-column micro-panels (zero padded)
//!     for ic in row_begin..row_end step MC
//!       pack A[ic.., pc..] into MR-row micro-panels (zero padded)
//!       for jr in 0..nc step NR
//!         for ir in 0..mc step MR
//!           microkernel(A panel, B panel, C tile, accumulate = pc > 0,
//!                       epilogue = this is the last KC block)
//! ```
//!
//! The KC blocks run in increasing order and every block after the first reloads C
//! into the accumulators, so each element of C is one fma chain in increasing k.

use super::{GemmSpec, Plan, TileShape};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, BlockArg, ConstantData, FuncRef, Function, InstBuilder, MemFlagsData, Value,
};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

/// Matrices, panels and the workspace are only 4-byte aligned; the caller
/// guarantees the bounds.
fn data_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// A `FunctionBuilder` with the structured-control-flow helpers the driver needs.
struct Emit<'a> {
    b: FunctionBuilder<'a>,
}

impl Emit<'_> {
    fn iconst(&mut self, value: usize) -> Value {
        let value = i64::try_from(value).expect("sizes were checked to fit in i64");
        self.b.ins().iconst(types::I64, value)
    }

    fn min(&mut self, x: Value, y: Value) -> Value {
        self.b.ins().smin(x, y)
    }

    /// `base + index * scale`, with `scale` in bytes.
    fn offset(&mut self, base: Value, index: Value, scale: usize) -> Value {
        let scale = i64::try_from(scale).expect("sizes were checked to fit in i64");
        let scaled = self.b.ins().imul_imm_s(index, scale);
        self.b.ins().iadd(base, scaled)
    }

    /// `for (iv = start; iv < end; iv += step) body(iv)`, tested at the top because
    /// runtime ranges may be empty.
    fn for_range(
        &mut self,
        start: Value,
        end: Value,
        step: usize,
        body: impl FnOnce(&mut Self, Value),
    ) {
        self.for_each(start, end, step, [], |e, iv, []| body(e, iv));
    }

    /// [`Self::for_range`] that also walks `pointers`: each `(first, stride)` starts
    /// at `first` and advances by `stride` bytes every iteration, and the body gets
    /// their current values. They are loop-carried because Cranelift recomputes an
    /// address derived from the induction variable in every iteration (product and
    /// all, often from spilled operands) instead of strength-reducing it.
    fn for_each<const N: usize>(
        &mut self,
        start: Value,
        end: Value,
        step: usize,
        pointers: [(Value, Value); N],
        body: impl FnOnce(&mut Self, Value, [Value; N]),
    ) {
        let header = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        let iv = self.b.append_block_param(header, types::I64);
        let current = pointers.map(|_| self.b.append_block_param(header, types::I64));
        let args: Vec<BlockArg> = std::iter::once(start)
            .chain(pointers.iter().map(|&(first, _)| first))
            .map(BlockArg::from)
            .collect();
        self.b.ins().jump(header, &args);
        self.b.switch_to_block(header);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, iv, end);
        self.b.ins().brif(more, body_block, &[], exit, &[]);
        self.b.switch_to_block(body_block);
        body(self, iv, current);
        let step = i64::try_from(step).expect("sizes were checked to fit in i64");
        let next = self.b.ins().iadd_imm_s(iv, step);
        let mut args = vec![BlockArg::from(next)];
        for (&pointer, &(_, stride)) in current.iter().zip(&pointers) {
            args.push(self.b.ins().iadd(pointer, stride).into());
        }
        self.b.ins().jump(header, &args);
        self.b.switch_to_block(exit);
    }

    fn if_then(&mut self, condition: Value, then: impl FnOnce(&mut Self)) {
        let then_block = self.b.create_block();
        let merge = self.b.create_block();
        self.b.ins().brif(condition, then_block, &[], merge, &[]);
        self.b.switch_to_block(then_block);
        then(self);
        self.b.ins().jump(merge, &[]);
        self.b.switch_to_block(merge);
    }

    fn if_else(
        &mut self,
        condition: Value,
        then: impl FnOnce(&mut Self),
        otherwise: impl FnOnce(&mut Self),
    ) {
        let then_block = self.b.create_block();
        let else_block = self.b.create_block();
        let merge = self.b.create_block();
        self.b
            .ins()
            .brif(condition, then_block, &[], else_block, &[]);
        self.b.switch_to_block(then_block);
        then(self);
        self.b.ins().jump(merge, &[]);
        self.b.switch_to_block(else_block);
        otherwise(self);
        self.b.ins().jump(merge, &[]);
        self.b.switch_to_block(merge);
    }

    fn load_f32(&mut self, address: Value, offset: i32) -> Value {
        self.b.ins().load(types::F32, data_flags(), address, offset)
    }

    fn store(&mut self, value: Value, address: Value, offset: i32) {
        self.b.ins().store(data_flags(), value, address, offset);
    }

    /// `(base, offset)` addressing `base + bytes`: the offset in the instruction
    /// where it fits in 32 bits, an addition otherwise.
    fn at(&mut self, base: Value, bytes: usize) -> (Value, i32) {
        match i32::try_from(bytes) {
            Ok(offset) => (base, offset),
            Err(_) => {
                let bytes = self.iconst(bytes);
                (self.b.ins().iadd(base, bytes), 0)
            }
        }
    }

    /// Packs `count` (≤ the panel block) rows of a `kc`-deep block into micro-panels
    /// of `r` rows: element (i, p) of the block is read at
    /// `src + i * index_stride + p * depth_stride` and written to
    /// `dst[(i / r) * kc * r + p * r + i % r]`; a last partial panel is zero padded.
    #[allow(clippy::too_many_arguments)]
    fn pack(
        &mut self,
        src: Value,
        index_stride: usize,
        depth_stride: usize,
        count: Value,
        kc: Value,
        r: usize,
        dst: Value,
    ) {
        let layout = PanelLayout {
            index_stride,
            depth_stride,
            r,
        };
        let r_const = i64::try_from(r).expect("the tile is small");
        let panels = self.b.ins().udiv_imm_u(count, r_const);
        let full_end = self.b.ins().imul_imm_s(panels, r_const);
        let zero = self.iconst(0);
        let panel_bytes = self.b.ins().imul_imm_s(kc, r_const * 4);
        let src_stride = self.iconst(r * index_stride);
        if index_stride == 4 {
            // Rows contiguous: depth by depth, so that the block is read in address
            // order (one sequential stream per depth that the prefetchers follow)
            // rather than `r` rows of every depth per panel with a large stride.
            let one_depth = [(src, self.iconst(depth_stride)), (dst, self.iconst(r * 4))];
            self.for_each(zero, kc, 1, one_depth, |e, _, [from, to]| {
                let zero = e.iconst(0);
                let panels = [(from, src_stride), (to, panel_bytes)];
                e.for_each(zero, full_end, r, panels, |e, _, [from, to]| {
                    e.copy_row(from, to, r);
                });
            });
        } else {
            self.for_each(
                zero,
                full_end,
                r,
                [(src, src_stride), (dst, panel_bytes)],
                |e, _, [src_panel, dst_panel]| e.pack_rows(&layout, src_panel, dst_panel, kc, r),
            );
        }
        let remaining = self.b.ins().isub(count, full_end);
        let has_partial = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThan, remaining, 0);
        self.if_then(has_partial, |e| {
            let dst_panel_offset = e.b.ins().imul(panels, panel_bytes);
            let dst_panel = e.b.ins().iadd(dst, dst_panel_offset);
            let zero_f32 = e.b.ins().f32const(0.0);
            let zero_vector = e.b.ins().splat(types::F32X4, zero_f32);
            let zero = e.iconst(0);
            let panel_row = e.iconst(r * 4);
            e.for_each(zero, kc, 1, [(dst_panel, panel_row)], |e, _, [to]| {
                for chunk in 0..r / 4 {
                    e.store(zero_vector, to, (chunk * 16) as i32);
                }
                for row in r / 4 * 4..r {
                    e.store(zero_f32, to, (row * 4) as i32);
                }
            });
            let src_rows = e.offset(src, full_end, index_stride);
            // Whole groups of four rows as in a full panel, then row by row.
            let groups_end = e.b.ins().band_imm_s(remaining, !3);
            let zero = e.iconst(0);
            let (group_src, group_dst) = (e.iconst(4 * index_stride), e.iconst(16));
            e.for_each(
                zero,
                groups_end,
                4,
                [(src_rows, group_src), (dst_panel, group_dst)],
                |e, _, [from, to]| e.pack_rows(&layout, from, to, kc, 4),
            );
            let from = e.offset(src_rows, groups_end, index_stride);
            let to = e.offset(dst_panel, groups_end, 4);
            let (row_src, row_dst) = (e.iconst(index_stride), e.iconst(4));
            e.for_each(
                groups_end,
                remaining,
                1,
                [(from, row_src), (to, row_dst)],
                |e, _, [from, to]| e.pack_rows(&layout, from, to, kc, 1),
            );
        });
    }

    /// Packs `rows` rows (from `src`) into one panel at `dst`, all `kc` depths, with
    /// vectors where it can: four rows at a time where the rows are contiguous, and
    /// where the depths are, 4×4 blocks transposed in registers. Rows past the last
    /// group of four, and a kc remainder of the transposed path, go element by
    /// element.
    fn pack_rows(&mut self, layout: &PanelLayout, src: Value, dst: Value, kc: Value, rows: usize) {
        let PanelLayout {
            index_stride,
            depth_stride,
            r,
        } = *layout;
        let groups = rows / 4;
        // Elements (row, depth) of `rows_to_copy` and `0..depths` from `from`.
        let copy_elements = |e: &mut Self,
                             from: Value,
                             to: Value,
                             rows_to_copy: std::ops::Range<usize>,
                             depths: usize| {
            for depth in 0..depths {
                for row in rows_to_copy.clone() {
                    let (from, offset) = e.at(from, row * index_stride + depth * depth_stride);
                    let value = e.load_f32(from, offset);
                    let (to, offset) = e.at(to, (depth * r + row) * 4);
                    e.store(value, to, offset);
                }
            }
        };
        let zero = self.iconst(0);
        let one_depth = [(src, self.iconst(depth_stride)), (dst, self.iconst(r * 4))];
        if index_stride == 4 {
            self.for_each(zero, kc, 1, one_depth, |e, _, [from, to]| {
                e.copy_row(from, to, rows);
            });
            return;
        }
        if depth_stride != 4 || groups == 0 {
            // Element by element: neither axis contiguous (not a layout the driver
            // packs, but correct), or too few rows for a transposition.
            self.for_each(zero, kc, 1, one_depth, |e, _, [from, to]| {
                copy_elements(e, from, to, 0..rows, 1);
            });
            return;
        }
        let kc_whole = self.b.ins().band_imm_s(kc, !3);
        let four_depths = [(src, self.iconst(16)), (dst, self.iconst(4 * r * 4))];
        self.for_each(zero, kc_whole, 4, four_depths, |e, _, [from, to]| {
            for group in 0..groups {
                let rows: [Value; 4] = std::array::from_fn(|q| {
                    let (from, offset) = e.at(from, (4 * group + q) * index_stride);
                    e.b.ins().load(types::I8X16, data_flags(), from, offset)
                });
                for (depth, column) in transpose4(e, rows).into_iter().enumerate() {
                    let (to, offset) = e.at(to, (depth * r + 4 * group) * 4);
                    e.store(column, to, offset);
                }
            }
            copy_elements(e, from, to, 4 * groups..rows, 4);
        });
        let from = self.offset(src, kc_whole, 4);
        let to = self.offset(dst, kc_whole, r * 4);
        let rest = [(from, one_depth[0].1), (to, one_depth[1].1)];
        self.for_each(kc_whole, kc, 1, rest, |e, _, [from, to]| {
            copy_elements(e, from, to, 0..rows, 1);
        });
    }

    /// Copies `count` contiguous floats from `from` to `to`, four at a time.
    fn copy_row(&mut self, from: Value, to: Value, count: usize) {
        for group in 0..count / 4 {
            let (from, offset) = self.at(from, group * 16);
            let value = self.b.ins().load(types::F32X4, data_flags(), from, offset);
            self.store(value, to, (group * 16) as i32);
        }
        for index in count / 4 * 4..count {
            let value = self.load_f32(from, (index * 4) as i32);
            self.store(value, to, (index * 4) as i32);
        }
    }

    /// Copies a `rows × cols` block between two row-major matrices, four columns at
    /// a time and then one by one.
    fn copy_block(
        &mut self,
        from: Value,
        from_row_bytes: usize,
        to: Value,
        to_row_bytes: usize,
        rows: Value,
        cols: Value,
    ) {
        let zero = self.iconst(0);
        let cols_whole = self.b.ins().band_imm_s(cols, !3);
        let row_strides = [
            (from, self.iconst(from_row_bytes)),
            (to, self.iconst(to_row_bytes)),
        ];
        self.for_each(zero, rows, 1, row_strides, |e, _, [from_row, to_row]| {
            let zero = e.iconst(0);
            let four = [(from_row, e.iconst(16)), (to_row, e.iconst(16))];
            e.for_each(zero, cols_whole, 4, four, |e, _, [from, to]| {
                let value = e.b.ins().load(types::F32X4, data_flags(), from, 0);
                e.store(value, to, 0);
            });
            let from = e.offset(from_row, cols_whole, 4);
            let to = e.offset(to_row, cols_whole, 4);
            let one = [(from, e.iconst(4)), (to, e.iconst(4))];
            e.for_each(cols_whole, cols, 1, one, |e, _, [from, to]| {
                let value = e.load_f32(from, 0);
                e.store(value, to, 0);
            });
        });
    }
}

/// Where [`Emit::pack`] reads a block and how wide its panels are.
#[derive(Clone, Copy)]
struct PanelLayout {
    /// Bytes between consecutive rows (i) of the block.
    index_stride: usize,
    /// Bytes between consecutive depths (p) of a row.
    depth_stride: usize,
    /// Rows of a panel.
    r: usize,
}

/// Byte masks of `shuffle` that x64 lowers to one instruction each: interleave the
/// low (`punpckldq`) or high (`punpckhdq`) 32-bit halves of two vectors, and the low
/// (`punpcklqdq`) or high (`punpckhqdq`) 64-bit halves.
const INTERLEAVE_LOW_32: u128 = 0x1716_1514_0706_0504_1312_1110_0302_0100;
const INTERLEAVE_HIGH_32: u128 = 0x1f1e_1d1c_0f0e_0d0c_1b1a_1918_0b0a_0908;
const INTERLEAVE_LOW_64: u128 = 0x1716_1514_1312_1110_0706_0504_0302_0100;
const INTERLEAVE_HIGH_64: u128 = 0x1f1e_1d1c_1b1a_1918_0f0e_0d0c_0b0a_0908;

/// Transposes four `i8x16` vectors of four f32 each (rows of a 4×4 block) into its
/// columns, with eight single-instruction shuffles.
fn transpose4(e: &mut Emit, rows: [Value; 4]) -> [Value; 4] {
    let mut shuffle = |x: Value, y: Value, mask: u128| {
        let mask = ConstantData::from(&mask.to_le_bytes()[..]);
        let mask = e.b.func.dfg.immediates.push(mask);
        e.b.ins().shuffle(x, y, mask)
    };
    let low01 = shuffle(rows[0], rows[1], INTERLEAVE_LOW_32);
    let high01 = shuffle(rows[0], rows[1], INTERLEAVE_HIGH_32);
    let low23 = shuffle(rows[2], rows[3], INTERLEAVE_LOW_32);
    let high23 = shuffle(rows[2], rows[3], INTERLEAVE_HIGH_32);
    [
        shuffle(low01, low23, INTERLEAVE_LOW_64),
        shuffle(low01, low23, INTERLEAVE_HIGH_64),
        shuffle(high01, high23, INTERLEAVE_LOW_64),
        shuffle(high01, high23, INTERLEAVE_HIGH_64),
    ]
}

/// Fills `func` (whose signature is the driver's, see [`super::define_gemm`]) with
/// the blocked GEMM calling `kernels`: the full tile's first, then the edge shapes
/// it calls directly on C.
pub(super) fn build(
    func: &mut Function,
    builder_ctx: &mut FunctionBuilderContext,
    spec: &GemmSpec,
    plan: &Plan,
    kernels: &[(TileShape, FuncRef)],
    config: TargetFrontendConfig,
) {
    let mut e = Emit {
        b: FunctionBuilder::new(func, builder_ctx),
    };
    let entry = e.b.create_block();
    e.b.append_block_params_for_function_params(entry);
    e.b.switch_to_block(entry);
    let params = e.b.block_params(entry).to_vec();
    let (a, b, c, workspace) = (params[0], params[1], params[2], params[3]);
    let bias = spec.epilogue.bias.then(|| params[8]);
    let update = spec
        .epilogue
        .update_scale()
        .map(|scale| (params[8 + usize::from(spec.epilogue.bias)], scale));
    let (m, n, k) = (spec.m, spec.n, spec.k);

    // Clamp the ranges to [0, m] and [0, n] so that a bad range cannot write outside
    // C; an end below its begin is an empty range.
    let zero = e.iconst(0);
    let mut clamp = |begin: Value, end: Value, extent: usize| {
        let extent = e.iconst(extent);
        let begin = e.b.ins().smax(begin, zero);
        let begin = e.min(begin, extent);
        let end = e.min(end, extent);
        (begin, end)
    };
    let (row_begin, row_end) = clamp(params[4], params[5], m);
    let (col_begin, col_end) = clamp(params[6], params[7], n);

    if m == 0 || n == 0 {
        // Nothing to write; the workspace may be empty.
        e.b.ins().return_(&[]);
        e.b.seal_all_blocks();
        e.b.finalize(config);
        return;
    }
    if k == 0 {
        // No products: every element is the empty chain +0.0, then the epilogue.
        e.for_range(row_begin, row_end, 1, |e, i| {
            let row = e.offset(c, i, n * 4);
            e.for_range(col_begin, col_end, 1, |e, j| {
                let mut value = e.b.ins().f32const(0.0);
                if let Some(bias) = bias {
                    let bias_address = e.offset(bias, j, 4);
                    let bias_value = e.load_f32(bias_address, 0);
                    value = e.b.ins().fadd(value, bias_value);
                }
                if spec.epilogue.relu {
                    value = relu(e, value);
                }
                if let Some((param, scale)) = update {
                    let param_row = e.offset(param, i, n * 4);
                    let param_address = e.offset(param_row, j, 4);
                    let old = e.load_f32(param_address, 0);
                    let scale = e.b.ins().f32const(scale);
                    value = descent_step(e, old, scale, value);
                }
                let address = e.offset(row, j, 4);
                e.store(value, address, 0);
            });
        });
        e.b.ins().return_(&[]);
        e.b.seal_all_blocks();
        e.b.finalize(config);
        return;
    }

    // An empty range returns before packing B.
    let no_rows =
        e.b.ins()
            .icmp(IntCC::SignedGreaterThanOrEqual, row_begin, row_end);
    let no_cols =
        e.b.ins()
            .icmp(IntCC::SignedGreaterThanOrEqual, col_begin, col_end);
    let empty = e.b.ins().bor(no_rows, no_cols);
    let done = e.b.create_block();
    let work = e.b.create_block();
    e.b.ins().brif(empty, done, &[], work, &[]);
    e.b.switch_to_block(done);
    e.b.ins().return_(&[]);
    e.b.switch_to_block(work);
    let (mr, nr) = (plan.mr, plan.nr);
    let b_packed = e.b.ins().iadd_imm_s(workspace, plan.b_offset as i64);
    let a_packed = e.b.ins().iadd_imm_s(workspace, plan.a_offset as i64);
    let tile = e.b.ins().iadd_imm_s(workspace, plan.tile_offset as i64);
    let bias_packed = e.b.ins().iadd_imm_s(workspace, plan.bias_offset as i64);
    // Strides in bytes along (index, depth) of op(A) (index = row i) and of op(B)
    // (index = column j); depth is p.
    let (a_index_stride, a_depth_stride) = if spec.trans_a { (4, m * 4) } else { (k * 4, 4) };
    let (b_index_stride, b_depth_stride) = if spec.trans_b { (k * 4, 4) } else { (4, n * 4) };
    let epilogue_flags = super::epilogue_flags(spec.epilogue);

    let k_value = e.iconst(k);
    e.for_range(col_begin, col_end, plan.nc, |e, jc| {
        let nc_limit = e.iconst(plan.nc);
        let n_left = e.b.ins().isub(col_end, jc);
        let nc_cur = e.min(nc_limit, n_left);
        if let Some(bias) = bias {
            // Zero padded so that the kernel can read a full NR columns at an edge.
            let source = e.offset(bias, jc, 4);
            let one = e.iconst(1);
            e.copy_block(source, 0, bias_packed, 0, one, nc_cur);
            let zero_f32 = e.b.ins().f32const(0.0);
            let padded_end = e.iconst(plan.nc);
            e.for_range(nc_cur, padded_end, 1, |e, j| {
                let address = e.offset(bias_packed, j, 4);
                e.store(zero_f32, address, 0);
            });
        }
        let zero = e.iconst(0);
        e.for_range(zero, k_value, plan.kc, |e, pc| {
            let kc_limit = e.iconst(plan.kc);
            let k_left = e.b.ins().isub(k_value, pc);
            let kc_cur = e.min(kc_limit, k_left);
            let b_source = {
                let by_depth = e.offset(b, pc, b_depth_stride);
                e.offset(by_depth, jc, b_index_stride)
            };
            e.pack(
                b_source,
                b_index_stride,
                b_depth_stride,
                nc_cur,
                kc_cur,
                nr,
                b_packed,
            );
            let not_first = e.b.ins().icmp_imm_s(IntCC::NotEqual, pc, 0);
            let accumulate = e.b.ins().uextend(types::I64, not_first);
            let last =
                e.b.ins()
                    .icmp(IntCC::SignedGreaterThanOrEqual, kc_limit, k_left);
            let last = e.b.ins().uextend(types::I64, last);
            let epilogue = e.b.ins().imul_imm_s(last, epilogue_flags);
            let kernel_flags = e.b.ins().bor(accumulate, epilogue);

            e.for_range(row_begin, row_end, plan.mc, |e, ic| {
                let mc_limit = e.iconst(plan.mc);
                let rows_left = e.b.ins().isub(row_end, ic);
                let mc_cur = e.min(mc_limit, rows_left);
                let a_source = {
                    let by_index = e.offset(a, ic, a_index_stride);
                    e.offset(by_index, pc, a_depth_stride)
                };
                e.pack(
                    a_source,
                    a_index_stride,
                    a_depth_stride,
                    mc_cur,
                    kc_cur,
                    mr,
                    a_packed,
                );
                let c_block = {
                    let by_row = e.offset(c, ic, n * 4);
                    e.offset(by_row, jc, 4)
                };
                let zero = e.iconst(0);
                let b_panel_bytes = e.b.ins().imul_imm_s(kc_cur, (nr * 4) as i64);
                let a_panel_bytes = e.b.ins().imul_imm_s(kc_cur, (mr * 4) as i64);
                let tile_columns = e.iconst(nr * 4);
                let columns = [
                    (b_packed, b_panel_bytes),
                    (bias_packed, tile_columns),
                    (c_block, tile_columns),
                ];
                e.for_each(zero, nc_cur, nr, columns, |e, jr, pointers| {
                    let [b_panel, bias_panel, c_column] = pointers;
                    let nr_limit = e.iconst(nr);
                    let cols_left = e.b.ins().isub(nc_cur, jr);
                    let nr_valid = e.min(nr_limit, cols_left);
                    let zero = e.iconst(0);
                    let tile_rows = e.iconst(mr * n * 4);
                    let rows = [(a_packed, a_panel_bytes), (c_column, tile_rows)];
                    e.for_each(zero, mc_cur, mr, rows, |e, ir, [a_panel, c_tile]| {
                        let mr_limit = e.iconst(mr);
                        let rows_left = e.b.ins().isub(mc_cur, ir);
                        let mr_valid = e.min(mr_limit, rows_left);
                        let args = KernelArgs {
                            a_panel,
                            b_panel,
                            kc: kc_cur,
                            flags: kernel_flags,
                            bias_panel,
                        };
                        let tile = EdgeTile {
                            c_tile,
                            rows: mr_valid,
                            cols: nr_valid,
                            scratch: tile,
                            reload: not_first,
                        };
                        match update {
                            Some((param, scale)) => {
                                let param_tile = {
                                    let offset = e.b.ins().isub(c_tile, c);
                                    e.b.ins().iadd(param, offset)
                                };
                                update_tile(e, kernels[0], &args, &tile, param_tile, scale, n * 4);
                            }
                            None => call_kernel(e, kernels[0], kernels, &args, &tile, n * 4),
                        }
                    });
                });
            });
        });
    });
    e.b.ins().return_(&[]);
    e.b.seal_all_blocks();
    e.b.finalize(config);
}

/// The microkernel arguments of one tile but C's.
struct KernelArgs {
    a_panel: Value,
    b_panel: Value,
    kc: Value,
    flags: Value,
    bias_panel: Value,
}

impl KernelArgs {
    /// Calls `kernel` on the tile of C at `c`, rows `ldc` bytes apart.
    fn call(&self, e: &mut Emit, kernel: FuncRef, c: Value, ldc: usize) {
        let ldc = e.iconst(ldc);
        e.b.ins().call(
            kernel,
            &[
                self.a_panel,
                self.b_panel,
                c,
                ldc,
                self.kc,
                self.flags,
                self.bias_panel,
            ],
        );
    }
}

/// The part of C one tile covers, and the scratch tile for when no kernel fits it.
struct EdgeTile {
    c_tile: Value,
    /// Valid rows and columns (runtime values, at most the tile's).
    rows: Value,
    cols: Value,
    scratch: Value,
    /// Whether C holds an earlier KC block's sums (the scratch tile must get them).
    reload: Value,
}

impl EdgeTile {
    /// Whether the valid part is exactly `shape` (a runtime condition).
    fn fits(&self, e: &mut Emit, shape: TileShape) -> Value {
        let rows =
            e.b.ins()
                .icmp_imm_s(IntCC::Equal, self.rows, shape.rows as i64);
        let cols =
            e.b.ins()
                .icmp_imm_s(IntCC::Equal, self.cols, shape.cols as i64);
        e.b.ins().band(rows, cols)
    }
}

/// Calls the first of `candidates` whose shape is the tile's valid part directly on
/// C (`ldc` bytes between rows); when none is, the `full` kernel writes the scratch
/// tile and only the valid part is copied to C.
fn call_kernel(
    e: &mut Emit,
    full: (TileShape, FuncRef),
    candidates: &[(TileShape, FuncRef)],
    args: &KernelArgs,
    tile: &EdgeTile,
    ldc: usize,
) {
    let call = |e: &mut Emit, kernel: FuncRef, c: Value, ldc: usize| args.call(e, kernel, c, ldc);
    let Some(((shape, kernel), rest)) = candidates.split_first() else {
        let (shape, kernel) = full;
        let tile_ldc = shape.cols * 4;
        e.if_then(tile.reload, |e| {
            e.copy_block(
                tile.c_tile,
                ldc,
                tile.scratch,
                tile_ldc,
                tile.rows,
                tile.cols,
            );
        });
        call(e, kernel, tile.scratch, tile_ldc);
        e.copy_block(
            tile.scratch,
            tile_ldc,
            tile.c_tile,
            ldc,
            tile.rows,
            tile.cols,
        );
        return;
    };
    let fits = tile.fits(e, *shape);
    e.if_else(
        fits,
        |e| call(e, *kernel, tile.c_tile, ldc),
        |e| call_kernel(e, full, rest, args, tile, ldc),
    );
}

/// The descent-step epilogue of one tile: the full kernel writes the tile's sums to
/// the scratch tile (k is one KC block, so nothing accumulates), then each valid
/// element of C becomes `param - scale * sum` while the sums are in L1. A whole tile
/// is straight-line vector code; an edge tile loops over its valid part.
fn update_tile(
    e: &mut Emit,
    (shape, kernel): (TileShape, FuncRef),
    args: &KernelArgs,
    tile: &EdgeTile,
    param: Value,
    scale: f32,
    ldc: usize,
) {
    let scratch_ldc = shape.cols * 4;
    args.call(e, kernel, tile.scratch, scratch_ldc);
    let scratch_ldc_value = e.iconst(scratch_ldc);
    let full = tile.fits(e, shape);
    let scale_value = e.b.ins().f32const(scale);
    let scales = e.b.ins().splat(types::F32X4, scale_value);
    e.if_else(
        full,
        |e| {
            for row in 0..shape.rows {
                for column in (0..shape.cols).step_by(4) {
                    let at = |row_bytes: usize| (row * row_bytes + column * 4) as i32;
                    let sum =
                        e.b.ins()
                            .load(types::F32X4, data_flags(), tile.scratch, at(scratch_ldc));
                    let old = e.b.ins().load(types::F32X4, data_flags(), param, at(ldc));
                    let new = descent_step(e, old, scales, sum);
                    e.store(new, tile.c_tile, at(ldc));
                }
            }
        },
        |e| {
            let zero = e.iconst(0);
            let ldc_value = e.iconst(ldc);
            let row_strides = [
                (tile.scratch, scratch_ldc_value),
                (param, ldc_value),
                (tile.c_tile, ldc_value),
            ];
            e.for_each(
                zero,
                tile.rows,
                1,
                row_strides,
                |e, _, [sums, olds, news]| {
                    let zero = e.iconst(0);
                    let step = [
                        (sums, e.iconst(4)),
                        (olds, e.iconst(4)),
                        (news, e.iconst(4)),
                    ];
                    e.for_each(zero, tile.cols, 1, step, |e, _, [sum, old, new]| {
                        let sum = e.load_f32(sum, 0);
                        let old = e.load_f32(old, 0);
                        let value = descent_step(e, old, scale_value, sum);
                        e.store(value, new, 0);
                    });
                },
            );
        },
    );
}

/// `old - scale * sum`: an f32 multiply and an f32 subtract, each rounded, as the
/// graph's `sub(param, mul(scale, grad))` (never one fused operation).
fn descent_step(e: &mut Emit, old: Value, scale: Value, sum: Value) -> Value {
    let step = e.b.ins().fmul(scale, sum);
    e.b.ins().fsub(old, step)
}

/// kiln's relu, `x > 0 ? x : +0` (NaN and -0 give +0).
fn relu(e: &mut Emit, value: Value) -> Value {
    let zero = e.b.ins().f32const(0.0);
    let positive = e.b.ins().fcmp(FloatCC::GreaterThan, value, zero);
    e.b.ins().select(positive, value, zero)
}
