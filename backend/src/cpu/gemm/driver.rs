//! The GEMM driver in Cranelift IR: BLIS-style blocking loops, packing of A and B
//! into the microkernel's panel layout, edge tiles through a scratch tile, and the
//! call of the microkernel on every full tile.
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

use super::{GemmSpec, Plan};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, FuncRef, Function, InstBuilder, MemFlagsData, Value};
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
        let header = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        let iv = self.b.append_block_param(header, types::I64);
        self.b.ins().jump(header, &[start.into()]);
        self.b.switch_to_block(header);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, iv, end);
        self.b.ins().brif(more, body_block, &[], exit, &[]);
        self.b.switch_to_block(body_block);
        body(self, iv);
        let step = i64::try_from(step).expect("sizes were checked to fit in i64");
        let next = self.b.ins().iadd_imm_s(iv, step);
        self.b.ins().jump(header, &[next.into()]);
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
        let r_const = i64::try_from(r).expect("the tile is small");
        let panels = self.b.ins().udiv_imm_u(count, r_const);
        let full_end = self.b.ins().imul_imm_s(panels, r_const);
        let zero = self.iconst(0);
        let panel_bytes = self.b.ins().imul_imm_s(kc, r_const * 4);
        self.for_range(zero, full_end, r, |e, i0| {
            let src_panel = e.offset(src, i0, index_stride);
            let panel_index = e.b.ins().udiv_imm_u(i0, r_const);
            let dst_panel_offset = e.b.ins().imul(panel_index, panel_bytes);
            let dst_panel = e.b.ins().iadd(dst, dst_panel_offset);
            let zero = e.iconst(0);
            e.for_range(zero, kc, 1, |e, p| {
                let from = e.offset(src_panel, p, depth_stride);
                let to = e.offset(dst_panel, p, r * 4);
                if index_stride == 4 {
                    // Contiguous rows: four at a time.
                    for chunk in 0..r / 4 {
                        let offset = (chunk * 16) as i32;
                        let value = e.b.ins().load(types::F32X4, data_flags(), from, offset);
                        e.store(value, to, offset);
                    }
                    for ii in (r / 4) * 4..r {
                        let value = e.load_f32(from, (ii * 4) as i32);
                        e.store(value, to, (ii * 4) as i32);
                    }
                } else {
                    for ii in 0..r {
                        let row = e.iconst(ii * index_stride);
                        let address = e.b.ins().iadd(from, row);
                        let value = e.load_f32(address, 0);
                        e.store(value, to, (ii * 4) as i32);
                    }
                }
            });
        });
        let remaining = self.b.ins().isub(count, full_end);
        let has_partial = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThan, remaining, 0);
        self.if_then(has_partial, |e| {
            let dst_panel_offset = e.b.ins().imul(panels, panel_bytes);
            let dst_panel = e.b.ins().iadd(dst, dst_panel_offset);
            let zero_f32 = e.b.ins().f32const(0.0);
            let zero = e.iconst(0);
            e.for_range(zero, kc, 1, |e, p| {
                let to = e.offset(dst_panel, p, r * 4);
                for ii in 0..r {
                    e.store(zero_f32, to, (ii * 4) as i32);
                }
            });
            let src_rows = e.offset(src, full_end, index_stride);
            let zero = e.iconst(0);
            e.for_range(zero, remaining, 1, |e, ii| {
                let from_row = e.offset(src_rows, ii, index_stride);
                let to_row = e.offset(dst_panel, ii, 4);
                let zero = e.iconst(0);
                e.for_range(zero, kc, 1, |e, p| {
                    let from = e.offset(from_row, p, depth_stride);
                    let to = e.offset(to_row, p, r * 4);
                    let value = e.load_f32(from, 0);
                    e.store(value, to, 0);
                });
            });
        });
    }

    /// Copies a `rows × cols` block between two row-major matrices.
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
        self.for_range(zero, rows, 1, |e, row| {
            let from_row = e.offset(from, row, from_row_bytes);
            let to_row = e.offset(to, row, to_row_bytes);
            let zero = e.iconst(0);
            e.for_range(zero, cols, 1, |e, col| {
                let from_address = e.offset(from_row, col, 4);
                let to_address = e.offset(to_row, col, 4);
                let value = e.load_f32(from_address, 0);
                e.store(value, to_address, 0);
            });
        });
    }
}

/// Fills `func` (whose signature is the driver's, see [`super::define_gemm`]) with
/// the blocked GEMM calling `microkernel`.
pub(super) fn build(
    func: &mut Function,
    builder_ctx: &mut FunctionBuilderContext,
    spec: &GemmSpec,
    plan: &Plan,
    microkernel: FuncRef,
    config: TargetFrontendConfig,
) {
    let mut e = Emit {
        b: FunctionBuilder::new(func, builder_ctx),
    };
    let entry = e.b.create_block();
    e.b.append_block_params_for_function_params(entry);
    e.b.switch_to_block(entry);
    let params = e.b.block_params(entry).to_vec();
    let (a, b, c, workspace, row_begin, row_end) = (
        params[0], params[1], params[2], params[3], params[4], params[5],
    );
    let bias = spec.epilogue.has_bias().then(|| params[6]);
    let (m, n, k) = (spec.m, spec.n, spec.k);

    // Clamp the row range to [0, m] so that a bad range cannot write outside C.
    let zero = e.iconst(0);
    let m_value = e.iconst(m);
    let row_begin = e.b.ins().smax(row_begin, zero);
    let row_begin = e.min(row_begin, m_value);
    let row_end = e.min(row_end, m_value);

    if m == 0 || n == 0 {
        // Nothing to write; the workspace may be empty.
        e.b.ins().return_(&[]);
        e.b.seal_all_blocks();
        e.b.finalize(config);
        return;
    }
    if k == 0 {
        // No products: every element is the empty chain +0.0, then the epilogue.
        let n_value = e.iconst(n);
        e.for_range(row_begin, row_end, 1, |e, i| {
            let row = e.offset(c, i, n * 4);
            let zero = e.iconst(0);
            e.for_range(zero, n_value, 1, |e, j| {
                let mut value = e.b.ins().f32const(0.0);
                if let Some(bias) = bias {
                    let bias_address = e.offset(bias, j, 4);
                    let bias_value = e.load_f32(bias_address, 0);
                    value = e.b.ins().fadd(value, bias_value);
                }
                if spec.epilogue.has_relu() {
                    value = relu(e, value);
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
    let empty =
        e.b.ins()
            .icmp(IntCC::SignedGreaterThanOrEqual, row_begin, row_end);
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
    let epilogue_flags = spec.epilogue.flags();

    let n_value = e.iconst(n);
    let k_value = e.iconst(k);
    e.for_range(zero, n_value, plan.nc, |e, jc| {
        let nc_limit = e.iconst(plan.nc);
        let n_left = e.b.ins().isub(n_value, jc);
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
            let kc_bytes = e.b.ins().imul_imm_s(kc_cur, 4);

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
                e.for_range(zero, nc_cur, nr, |e, jr| {
                    let nr_limit = e.iconst(nr);
                    let cols_left = e.b.ins().isub(nc_cur, jr);
                    let nr_valid = e.min(nr_limit, cols_left);
                    let b_panel = {
                        let offset = e.b.ins().imul(jr, kc_bytes);
                        e.b.ins().iadd(b_packed, offset)
                    };
                    let bias_panel = e.offset(bias_packed, jr, 4);
                    let c_column = e.offset(c_block, jr, 4);
                    let zero = e.iconst(0);
                    e.for_range(zero, mc_cur, mr, |e, ir| {
                        let mr_limit = e.iconst(mr);
                        let rows_left = e.b.ins().isub(mc_cur, ir);
                        let mr_valid = e.min(mr_limit, rows_left);
                        let a_panel = {
                            let offset = e.b.ins().imul(ir, kc_bytes);
                            e.b.ins().iadd(a_packed, offset)
                        };
                        let c_tile = e.offset(c_column, ir, n * 4);
                        let full_rows = e.b.ins().icmp(IntCC::Equal, mr_valid, mr_limit);
                        let full_cols = e.b.ins().icmp(IntCC::Equal, nr_valid, nr_limit);
                        let full = e.b.ins().band(full_rows, full_cols);
                        e.if_else(
                            full,
                            |e| {
                                let ldc = e.iconst(n * 4);
                                e.b.ins().call(
                                    microkernel,
                                    &[
                                        a_panel,
                                        b_panel,
                                        c_tile,
                                        ldc,
                                        kc_cur,
                                        kernel_flags,
                                        bias_panel,
                                    ],
                                );
                            },
                            |e| {
                                // An edge tile: the kernel writes a full tile into the
                                // scratch tile, and only the valid part is C's.
                                e.if_then(not_first, |e| {
                                    e.copy_block(c_tile, n * 4, tile, nr * 4, mr_valid, nr_valid);
                                });
                                let ldc = e.iconst(nr * 4);
                                e.b.ins().call(
                                    microkernel,
                                    &[
                                        a_panel,
                                        b_panel,
                                        tile,
                                        ldc,
                                        kc_cur,
                                        kernel_flags,
                                        bias_panel,
                                    ],
                                );
                                e.copy_block(tile, nr * 4, c_tile, n * 4, mr_valid, nr_valid);
                            },
                        );
                    });
                });
            });
        });
    });
    e.b.ins().return_(&[]);
    e.b.seal_all_blocks();
    e.b.finalize(config);
}

/// kiln's relu, `x > 0 ? x : +0` (NaN and -0 give +0).
fn relu(e: &mut Emit, value: Value) -> Value {
    let zero = e.b.ins().f32const(0.0);
    let positive = e.b.ins().fcmp(FloatCC::GreaterThan, value, zero);
    e.b.ins().select(positive, value, zero)
}
