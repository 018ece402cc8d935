//! A kernel's loop nest as a PTX entry: statements and expressions instruction for
//! instruction, with the leading independent loops spread over threads by a
//! grid-stride loop (`Launch::Threads`) or the whole nest on one thread
//! (`Launch::Single`).
//!
//! Values live in virtual registers: f32 in `%f`, i32 and bool (a 0/1 word, as in
//! memory and on the CPU) in `%r`, comparison results in `%p` until they become a
//! word; loop variables are `s32` registers and addresses `b64`, computed as the
//! buffer's base plus the affine index times 4 in 64-bit arithmetic. Each op has the
//! meaning `kiln_ir::scalar` gives it: IEEE f32 with explicit round-to-nearest,
//! wrapping i32, Rust's saturating float-to-int cast (PTX's `cvt.rzi.s32.f32`
//! clamps and gives 0 for NaN), and the special functions of `crate::math`.

use super::func::{Class, Func, Reg};
use crate::math;
use crate::BackendError;
use kiln_ir::gpu::Reduction;
use kiln_ir::kernel::{BufferId, Expr, Index, Indirect, Kernel, Program, Scalar, Stmt, VarId};
use kiln_ir::{BinaryOp, DType, UnaryOp};
use std::collections::{BTreeMap, BTreeSet};

/// Writes the body of a kernel's entry (after its parameters are loaded into
/// `bases`).
pub struct NestWriter<'a> {
    pub program: &'a Program,
    pub kernel: &'a Kernel,
    pub kernel_index: usize,
    pub f: Func,
    /// The global address of each buffer's first element.
    pub bases: BTreeMap<BufferId, Reg>,
    vars: BTreeMap<VarId, Reg>,
    locals: Vec<Reg>,
    /// Buffers the kernel writes: read through the ordinary cache, not the
    /// read-only one (`ld.global.nc` is for data constant during the kernel).
    written: BTreeSet<BufferId>,
    /// In a vectorised body: the lane being written, and each vector load's lanes.
    lane: Option<usize>,
    vector_loads: BTreeMap<(BufferId, Index), Vec<Reg>>,
}

impl<'a> NestWriter<'a> {
    pub fn new(
        program: &'a Program,
        kernel_index: usize,
        f: Func,
        bases: BTreeMap<BufferId, Reg>,
    ) -> Self {
        let kernel = &program.kernels[kernel_index];
        let mut writer = NestWriter {
            program,
            kernel,
            kernel_index,
            f,
            bases,
            vars: BTreeMap::new(),
            locals: Vec::new(),
            written: kernel.accesses().writes,
            lane: None,
            vector_loads: BTreeMap::new(),
        };
        writer.locals = kernel
            .locals
            .iter()
            .map(|ty| writer.f.reg(class_of(ty.dtype)))
            .collect();
        writer
    }

    pub fn unsupported(&self, message: String) -> BackendError {
        BackendError::Unsupported {
            kernel: format!("k{} ({})", self.kernel_index, self.kernel.name),
            message,
        }
    }

    /// The whole kernel on the one thread of a 1×1 launch.
    pub fn single(&mut self) -> Result<(), BackendError> {
        self.stmts(&self.kernel.body)
    }

    /// The nest's leading `depth` loops (`(var, trips)`, each the whole body of the
    /// one before) handed out to threads in row-major order by a grid-stride loop,
    /// then `body` (the innermost of them's body) in each; with `lanes` 4, a thread's
    /// work is four consecutive iterations of the innermost loop, as vectors.
    pub fn threads(
        &mut self,
        nest: &[(VarId, usize)],
        body: &[Stmt],
        lanes: u32,
    ) -> Result<(), BackendError> {
        let mut items = nest.to_vec();
        if lanes > 1 {
            match items.last_mut() {
                Some((_, trips)) if *trips % lanes as usize == 0 => *trips /= lanes as usize,
                _ => {
                    return Err(
                        self.unsupported(format!("{lanes} lanes of a loop they do not divide"))
                    )
                }
            }
        }
        let nest = items.as_slice();
        let total: usize = nest.iter().map(|&(_, trips)| trips).product();
        let Ok(total) = i32::try_from(total) else {
            return Err(self.unsupported(format!(
                "{total} threads' work in one kernel (at most 2^31 - 1)"
            )));
        };
        let f = &mut self.f;
        let block = f.op(Class::B32, "mov.u32", format_args!("%ntid.x"));
        let block_index = f.op(Class::B32, "mov.u32", format_args!("%ctaid.x"));
        let thread = f.op(Class::B32, "mov.u32", format_args!("%tid.x"));
        let grid = f.op(Class::B32, "mov.u32", format_args!("%nctaid.x"));
        let stride = f.op(Class::B32, "mul.lo.s32", format_args!("{grid}, {block}"));
        let work = f.op(
            Class::B32,
            "mad.lo.s32",
            format_args!("{block_index}, {block}, {thread}"),
        );
        let (top, done) = (f.label(), f.label());
        f.place(&top);
        let finished = f.op(Class::Pred, "setp.ge.s32", format_args!("{work}, {total}"));
        f.ins(format_args!("@{finished} bra {done}"));
        self.bind_row_major(nest, work);
        match nest.last() {
            Some(&(inner, _)) if lanes > 1 => self.vector_body(inner, lanes as usize, body)?,
            _ => self.stmts(body)?,
        }
        let f = &mut self.f;
        f.ins(format_args!("add.s32 {work}, {work}, {stride}"));
        f.ins(format_args!("bra.uni {top}"));
        f.place(&done);
        Ok(())
    }

    /// A reduction shared by each block (`Launch::Reduce`): blocks take the outputs
    /// of the leading `nest` in a grid-stride loop; a block's threads fold the
    /// elements `tid, tid + block, …` (row-major over the reduced loops) from the
    /// identity, the 32 lanes of each warp combine by butterfly shuffles, the warps'
    /// results meet in shared memory, and thread 0 folds them and runs the
    /// reduction's stores. The operator gives the same bits in any order (see
    /// `kiln_ir::gpu::Reduction`).
    pub fn reduce(
        &mut self,
        nest: &[(VarId, usize)],
        reduction: &Reduction<'_>,
        block: u32,
    ) -> Result<(), BackendError> {
        let outputs: usize = nest.iter().map(|&(_, trips)| trips).product();
        let elements = reduction.elements();
        let (Ok(outputs), Ok(elements)) = (i32::try_from(outputs), i32::try_from(elements)) else {
            return Err(self.unsupported("a reduction beyond 2^31 elements".into()));
        };
        if !block.is_multiple_of(32) || !(32..=1024).contains(&block) {
            return Err(self.unsupported(format!("a reduction block of {block} threads")));
        }
        let warps = block / 32;
        let class = class_of(reduction.dtype);
        let f = &mut self.f;
        f.ins(format_args!(".shared .align 4 .b8 partials[{}]", warps * 4));
        let thread = f.op(Class::B32, "mov.u32", format_args!("%tid.x"));
        let threads = f.op(Class::B32, "mov.u32", format_args!("%ntid.x"));
        let lane = f.op(Class::B32, "and.b32", format_args!("{thread}, 31"));
        let warp = f.op(Class::B32, "shr.u32", format_args!("{thread}, 5"));
        let partials = f.op(Class::B32, "mov.u32", format_args!("partials"));
        let slot = f.op(
            Class::B32,
            "mad.lo.s32",
            format_args!("{warp}, 4, {partials}"),
        );
        let output = f.op(Class::B32, "mov.u32", format_args!("%ctaid.x"));
        let blocks = f.op(Class::B32, "mov.u32", format_args!("%nctaid.x"));
        let (top, done) = (f.label(), f.label());
        f.place(&top);
        let finished = f.op(
            Class::Pred,
            "setp.ge.s32",
            format_args!("{output}, {outputs}"),
        );
        f.ins(format_args!("@{finished} bra {done}"));
        self.bind_row_major(nest, output);

        let init = self.constant(reduction.init);
        let partial = self.f.reg(class);
        self.f.ins(format_args!("mov.b32 {partial}, {init}"));
        let element = self.f.op(Class::B32, "mov.b32", format_args!("{thread}"));
        let (fold, folded) = (self.f.label(), self.f.label());
        self.f.place(&fold);
        let past = self.f.op(
            Class::Pred,
            "setp.ge.s32",
            format_args!("{element}, {elements}"),
        );
        self.f.ins(format_args!("@{past} bra {folded}"));
        self.bind_row_major(&reduction.loops, element);
        let value = self.expr(reduction.element)?;
        let sum = self.binary(reduction.op, reduction.dtype, partial, value)?;
        self.f.ins(format_args!("mov.b32 {partial}, {sum}"));
        self.f
            .ins(format_args!("add.s32 {element}, {element}, {threads}"));
        self.f.ins(format_args!("bra.uni {fold}"));
        self.f.place(&folded);

        for distance in [16, 8, 4, 2, 1] {
            let other = self.f.op(
                class,
                "shfl.sync.bfly.b32",
                format_args!("{partial}, {distance}, 31, -1"),
            );
            let sum = self.binary(reduction.op, reduction.dtype, partial, other)?;
            self.f.ins(format_args!("mov.b32 {partial}, {sum}"));
        }
        let f = &mut self.f;
        let not_first_lane = f.op(Class::Pred, "setp.ne.s32", format_args!("{lane}, 0"));
        f.ins(format_args!(
            "@!{not_first_lane} st.shared.b32 [{slot}], {partial}"
        ));
        f.ins(format_args!("bar.sync 0"));
        let skip = f.label();
        let not_first = f.op(Class::Pred, "setp.ne.s32", format_args!("{thread}, 0"));
        f.ins(format_args!("@{not_first} bra {skip}"));
        let total = self.locals[reduction.local.0 as usize];
        self.f.ins(format_args!("mov.b32 {total}, {init}"));
        for w in 0..warps {
            let part = self.f.op(
                class,
                "ld.shared.b32",
                format_args!("[{partials}+{}]", w * 4),
            );
            let sum = self.binary(reduction.op, reduction.dtype, total, part)?;
            self.f.ins(format_args!("mov.b32 {total}, {sum}"));
        }
        self.stmts(reduction.tail)?;
        let f = &mut self.f;
        f.place(&skip);
        // The partials are read before any warp writes the next output's.
        f.ins(format_args!("bar.sync 0"));
        f.ins(format_args!("add.s32 {output}, {output}, {blocks}"));
        f.ins(format_args!("bra.uni {top}"));
        f.place(&done);
        Ok(())
    }

    /// `body` (stores only, along `inner` with stride 1 and 16-byte aligned, reading
    /// no buffer it writes: the schedule checked) for the `lanes` consecutive values
    /// of `inner` from `lanes` times its bound value: each load along `inner` is one
    /// `ld.global.nc.v4`, each store one `st.global.v4` of the lanes' values.
    fn vector_body(
        &mut self,
        inner: VarId,
        lanes: usize,
        body: &[Stmt],
    ) -> Result<(), BackendError> {
        let chunk = self.vars[&inner];
        let first = self
            .f
            .op(Class::B32, "mul.lo.s32", format_args!("{chunk}, {lanes}"));
        let lane_values: Vec<Reg> = (0..lanes)
            .map(|lane| {
                self.f
                    .op(Class::B32, "add.s32", format_args!("{first}, {lane}"))
            })
            .collect();
        self.vars.insert(inner, first);
        let mut loads = Vec::new();
        for stmt in body {
            stmt.visit_exprs(&mut |expr| {
                if let Expr::Load { buffer, index, .. } = expr {
                    if index.stride_of(inner) == 1 && !loads.contains(&(*buffer, index.clone())) {
                        loads.push((*buffer, index.clone()));
                    }
                }
            });
        }
        self.vector_loads.clear();
        for (buffer, index) in loads {
            let class = class_of(self.program.buffer(buffer).ty.dtype);
            let address = self.address(buffer, &index);
            let regs: Vec<Reg> = (0..lanes).map(|_| self.f.reg(class)).collect();
            self.f.ins(format_args!(
                "ld.global.nc.v4.b32 {{{}}}, [{address}]",
                list(&regs)
            ));
            self.vector_loads.insert((buffer, index), regs);
        }
        for stmt in body {
            let Stmt::Store {
                buffer,
                index,
                value,
            } = stmt
            else {
                return Err(
                    self.unsupported("a vectorised body of other statements than stores".into())
                );
            };
            let mut values = Vec::with_capacity(lanes);
            for (lane, &value_of_inner) in lane_values.iter().enumerate() {
                self.vars.insert(inner, value_of_inner);
                self.lane = Some(lane);
                values.push(self.expr(value)?);
            }
            self.lane = None;
            self.vars.insert(inner, first);
            let address = self.address(*buffer, index);
            self.f.ins(format_args!(
                "st.global.v4.b32 [{address}], {{{}}}",
                list(&values)
            ));
        }
        self.vector_loads.clear();
        Ok(())
    }

    /// Binds `loops` (outermost first) to the row-major digits of `position`: the
    /// innermost varies fastest.
    fn bind_row_major(&mut self, loops: &[(VarId, usize)], position: Reg) {
        let mut rest = position;
        for (index, &(var, trips)) in loops.iter().enumerate().rev() {
            let value = if index == 0 {
                self.f.op(Class::B32, "mov.b32", format_args!("{rest}"))
            } else {
                let value = self
                    .f
                    .op(Class::B32, "rem.u32", format_args!("{rest}, {trips}"));
                rest = self
                    .f
                    .op(Class::B32, "div.u32", format_args!("{rest}, {trips}"));
                value
            };
            self.vars.insert(var, value);
        }
    }

    /// A register holding a constant of any dtype (a bool as its 0/1 word).
    fn constant(&mut self, value: Scalar) -> Reg {
        match value {
            Scalar::F32(x) => self.f.float_const(x),
            Scalar::I32(x) => self.f.int_const(x),
            Scalar::Bool(x) => self.f.int_const(i32::from(x)),
        }
    }

    fn stmts(&mut self, stmts: &[Stmt]) -> Result<(), BackendError> {
        for stmt in stmts {
            match stmt {
                Stmt::Loop {
                    var,
                    start,
                    end,
                    step,
                    body,
                    ..
                } => {
                    // Every loop kind means the serial loop; CPU kinds (vector lanes,
                    // unrolling, threads) do not apply here.
                    let (Ok(start), Ok(end), Ok(step)) = (
                        i32::try_from(*start),
                        i32::try_from(*end),
                        i32::try_from(*step),
                    ) else {
                        return Err(self.unsupported(format!("loop {var} beyond 2^31")));
                    };
                    let counter = self.f.int_const(start);
                    self.vars.insert(*var, counter);
                    let (top, done) = (self.f.label(), self.f.label());
                    self.f.place(&top);
                    let finished =
                        self.f
                            .op(Class::Pred, "setp.ge.s32", format_args!("{counter}, {end}"));
                    self.f.ins(format_args!("@{finished} bra {done}"));
                    self.stmts(body)?;
                    self.f
                        .ins(format_args!("add.s32 {counter}, {counter}, {step}"));
                    self.f.ins(format_args!("bra.uni {top}"));
                    self.f.place(&done);
                }
                Stmt::Call { routine, .. } => {
                    return Err(self.unsupported(format!(
                        "call {routine}: routines are CPU schedules; the GPU schedule runs \
                         a matmul as its own kernel"
                    )));
                }
                Stmt::Store {
                    buffer,
                    index,
                    value,
                } => {
                    let value = self.expr(value)?;
                    let address = self.address(*buffer, index);
                    self.f
                        .ins(format_args!("st.global.b32 [{address}], {value}"));
                }
                Stmt::Assign { local, value } => {
                    let value = self.expr(value)?;
                    let target = self.locals[local.0 as usize];
                    self.f.ins(format_args!("mov.b32 {target}, {value}"));
                }
                Stmt::ScatterAdd { target, value } => {
                    let dtype = self.program.buffer(target.buffer).ty.dtype;
                    let value = self.expr(value)?;
                    let (address, in_range) = self.picked(target)?;
                    let skip = self.f.label();
                    self.f.ins(format_args!("@!{in_range} bra {skip}"));
                    let old = self.f.reg(class_of(dtype));
                    self.f.ins(format_args!("ld.global.b32 {old}, [{address}]"));
                    let sum = self.binary(BinaryOp::Add, dtype, old, value)?;
                    self.f.ins(format_args!("st.global.b32 [{address}], {sum}"));
                    self.f.place(&skip);
                }
            }
        }
        Ok(())
    }

    /// The address of element `index` of `buffer`.
    fn address(&mut self, buffer: BufferId, index: &Index) -> Reg {
        let base = self.bases[&buffer];
        let mut address = base;
        if index.offset != 0 {
            let bytes = index.offset * 4;
            address = self
                .f
                .op(Class::B64, "add.s64", format_args!("{address}, {bytes}"));
        }
        for &(var, stride) in &index.terms {
            let value = self.vars[&var];
            let bytes = stride * 4;
            let offset = match i32::try_from(bytes) {
                Ok(bytes) => {
                    self.f
                        .op(Class::B64, "mul.wide.s32", format_args!("{value}, {bytes}"))
                }
                Err(_) => {
                    let wide = self
                        .f
                        .op(Class::B64, "cvt.s64.s32", format_args!("{value}"));
                    self.f
                        .op(Class::B64, "mul.lo.s64", format_args!("{wide}, {bytes}"))
                }
            };
            address = self
                .f
                .op(Class::B64, "add.s64", format_args!("{address}, {offset}"));
        }
        address
    }

    /// The address an indirect element picks, and whether it picks one.
    fn picked(&mut self, target: &Indirect) -> Result<(Reg, Reg), BackendError> {
        let at = self.expr(&target.at)?;
        let extent = i64::from(target.extent);
        let not_negative = self
            .f
            .op(Class::Pred, "setp.ge.s32", format_args!("{at}, 0"));
        // Every i32 is below an extent of 2^31 or more.
        let in_range = match i32::try_from(extent) {
            Ok(extent) => {
                let below = self
                    .f
                    .op(Class::Pred, "setp.lt.s32", format_args!("{at}, {extent}"));
                self.f.op(
                    Class::Pred,
                    "and.pred",
                    format_args!("{not_negative}, {below}"),
                )
            }
            Err(_) => not_negative,
        };
        let start = self.address(target.buffer, &target.index);
        // Out of range the address is never used; the multiply is 64-bit, so it
        // cannot wrap for any i32 position.
        let wide = self.f.op(Class::B64, "cvt.s64.s32", format_args!("{at}"));
        let step = self.f.op(
            Class::B64,
            "mul.lo.s64",
            format_args!("{wide}, {}", target.stride * 4),
        );
        let address = self
            .f
            .op(Class::B64, "add.s64", format_args!("{start}, {step}"));
        Ok((address, in_range))
    }

    fn dtype(&self, expr: &Expr) -> DType {
        self.program.expr_dtype(self.kernel, expr)
    }

    fn expr(&mut self, expr: &Expr) -> Result<Reg, BackendError> {
        if self.program.expr_type(self.kernel, expr).lanes != 1 {
            return Err(self.unsupported(format!(
                "vector value {expr}: the GPU schedule takes scalar loop nests"
            )));
        }
        Ok(match expr {
            Expr::Load { buffer, index, .. } => {
                let lane_of_vector = self
                    .lane
                    .and_then(|lane| Some(self.vector_loads.get(&(*buffer, index.clone()))?[lane]));
                if let Some(value) = lane_of_vector {
                    return Ok(value);
                }
                let address = self.address(*buffer, index);
                let class = class_of(self.program.buffer(*buffer).ty.dtype);
                let value = self.f.reg(class);
                let cache = if self.written.contains(buffer) {
                    ""
                } else {
                    ".nc"
                };
                self.f
                    .ins(format_args!("ld.global{cache}.b32 {value}, [{address}]"));
                value
            }
            Expr::Splat(_, x) => self.expr(x)?,
            Expr::Const(value) => self.constant(*value),
            Expr::LoopIndex(var) => self.vars[var],
            Expr::Local(local) => self.locals[local.0 as usize],
            Expr::Unary(op, x) => {
                let dtype = self.dtype(x);
                let x = self.expr(x)?;
                self.unary(*op, dtype, x)?
            }
            Expr::Binary(op, a, b) => {
                let dtype = self.dtype(a);
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                self.binary(*op, dtype, a, b)?
            }
            Expr::Compare(op, a, b) => {
                let dtype = self.dtype(a);
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                let condition = match dtype {
                    DType::F32 => Func::float_condition(*op),
                    DType::I32 | DType::Bool => op.name(),
                };
                let kind = if dtype == DType::F32 { "f32" } else { "s32" };
                let flag = self.f.op(
                    Class::Pred,
                    &format!("setp.{condition}.{kind}"),
                    format_args!("{a}, {b}"),
                );
                self.f.word_of(flag)
            }
            Expr::Select(c, a, b) => {
                let c = self.expr(c)?;
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                let flag = self.f.flag_of(c);
                math::Arith::select(&mut self.f, flag, a, b)
            }
            Expr::Cast(to, x) => {
                let from = self.dtype(x);
                let x = self.expr(x)?;
                self.cast(from, *to, x)
            }
            Expr::Fma(a, b, c) => {
                let (a, b, c) = (self.expr(a)?, self.expr(b)?, self.expr(c)?);
                math::Arith::fma(&mut self.f, a, b, c)
            }
            Expr::Random(dist, key0, key1, counter) => {
                let key = [self.expr(key0)?, self.expr(key1)?];
                let counter = self.expr(counter)?;
                math::random(&mut self.f, *dist, key, counter)
            }
            Expr::Gather(indirect) => {
                let class = class_of(self.program.buffer(indirect.buffer).ty.dtype);
                let (address, in_range) = self.picked(indirect)?;
                let value = self.f.reg(class);
                self.f.ins(format_args!("mov.b32 {value}, 0"));
                self.f.ins(format_args!(
                    "@{in_range} ld.global.b32 {value}, [{address}]"
                ));
                value
            }
        })
    }

    fn unary(&mut self, op: UnaryOp, dtype: DType, x: Reg) -> Result<Reg, BackendError> {
        use math::Arith;
        let f = &mut self.f;
        Ok(match (op, dtype) {
            (UnaryOp::Neg, DType::F32) => f.fneg(x),
            (UnaryOp::Neg, DType::I32) => f.op(Class::B32, "neg.s32", format_args!("{x}")),
            (UnaryOp::Exp, DType::F32) => math::exp(f, x),
            (UnaryOp::Log, DType::F32) => math::log(f, x),
            // `x > 0 ? x : +0`: relu of NaN and of -0 is +0.
            (UnaryOp::Relu, DType::F32) => {
                let zero = f.float_const(0.0);
                let positive = f.fcmp(kiln_ir::CmpOp::Gt, x, zero);
                f.select(positive, x, zero)
            }
            (UnaryOp::Relu, DType::I32) => f.op(Class::B32, "max.s32", format_args!("{x}, 0")),
            (UnaryOp::Sqrt, DType::F32) => f.sqrt(x),
            (UnaryOp::Rsqrt, DType::F32) => {
                let root = f.sqrt(x);
                let one = f.float_const(1.0);
                f.fdiv(one, root)
            }
            (UnaryOp::Abs, DType::F32) => f.fabs(x),
            // Wrapping: |i32::MIN| is i32::MIN.
            (UnaryOp::Abs, DType::I32) => f.op(Class::B32, "abs.s32", format_args!("{x}")),
            // ±0 and NaN are their own sign.
            (UnaryOp::Sign, DType::F32) => {
                let zero = f.float_const(0.0);
                let negative = f.fcmp(kiln_ir::CmpOp::Lt, x, zero);
                let minus_one = f.float_const(-1.0);
                let below = f.select(negative, minus_one, x);
                let positive = f.fcmp(kiln_ir::CmpOp::Gt, x, zero);
                let one = f.float_const(1.0);
                f.select(positive, one, below)
            }
            (UnaryOp::Sign, DType::I32) => {
                let floor = f.op(Class::B32, "max.s32", format_args!("{x}, -1"));
                f.op(Class::B32, "min.s32", format_args!("{floor}, 1"))
            }
            (UnaryOp::Sigmoid, DType::F32) => math::sigmoid(f, x),
            (UnaryOp::Tanh, DType::F32) => math::tanh(f, x),
            (UnaryOp::Softplus, DType::F32) => math::softplus(f, x),
            (UnaryOp::Expm1, DType::F32) => math::expm1(f, x),
            (UnaryOp::Log1p, DType::F32) => math::log1p(f, x),
            (UnaryOp::Erf, DType::F32) => math::erf(f, x),
            _ => return Err(self.unsupported(format!("{op:?} on {dtype}"))),
        })
    }

    fn binary(&mut self, op: BinaryOp, dtype: DType, a: Reg, b: Reg) -> Result<Reg, BackendError> {
        use math::Arith;
        let f = &mut self.f;
        Ok(match (op, dtype) {
            (BinaryOp::Add, DType::F32) => f.fadd(a, b),
            (BinaryOp::Sub, DType::F32) => f.fsub(a, b),
            (BinaryOp::Mul, DType::F32) => f.fmul(a, b),
            (BinaryOp::Div, DType::F32) => f.fdiv(a, b),
            (BinaryOp::Max | BinaryOp::Min, DType::F32) => {
                // `max.NaN` gives NaN when either operand is; PTX leaves the order
                // of ±0 open, so equal operands take the and (max: +0 wins) or the
                // or (min: -0 wins) of their bits, which is either one otherwise.
                let (name, bits) = match op {
                    BinaryOp::Max => ("max.NaN.f32", "and.b32"),
                    _ => ("min.NaN.f32", "or.b32"),
                };
                let extreme = f.op(Class::F32, name, format_args!("{a}, {b}"));
                let zeros = f.op(Class::F32, bits, format_args!("{a}, {b}"));
                let equal = f.fcmp(kiln_ir::CmpOp::Eq, a, b);
                f.select(equal, zeros, extreme)
            }
            (BinaryOp::Pow, DType::F32) => math::pow(f, a, b),
            (BinaryOp::Add, DType::I32) => f.iadd(a, b),
            (BinaryOp::Sub, DType::I32) => f.isub(a, b),
            (BinaryOp::Mul, DType::I32) => f.op(Class::B32, "mul.lo.s32", format_args!("{a}, {b}")),
            (BinaryOp::Max, DType::I32) => f.op(Class::B32, "max.s32", format_args!("{a}, {b}")),
            (BinaryOp::Min, DType::I32) => f.op(Class::B32, "min.s32", format_args!("{a}, {b}")),
            // Bools are 0/1 words: max is or, min is and.
            (BinaryOp::Max, DType::Bool) => f.bor(a, b),
            (BinaryOp::Min, DType::Bool) => f.band(a, b),
            _ => return Err(self.unsupported(format!("{op:?} on {dtype}"))),
        })
    }

    fn cast(&mut self, from: DType, to: DType, x: Reg) -> Reg {
        let f = &mut self.f;
        match (from, to) {
            (DType::F32, DType::I32) => f.op(Class::B32, "cvt.rzi.s32.f32", format_args!("{x}")),
            (DType::I32 | DType::Bool, DType::F32) => {
                f.op(Class::F32, "cvt.rn.f32.s32", format_args!("{x}"))
            }
            // Anything to bool is `x != 0`; NaN is true.
            (DType::F32, DType::Bool) => {
                let zero = f.float_const(0.0);
                let flag = f.op(Class::Pred, "setp.neu.f32", format_args!("{x}, {zero}"));
                f.word_of(flag)
            }
            (DType::I32, DType::Bool) => {
                let flag = f.flag_of(x);
                f.word_of(flag)
            }
            (DType::Bool, DType::I32) | (DType::F32, DType::F32) | (DType::I32, DType::I32) => x,
            (DType::Bool, DType::Bool) => x,
        }
    }
}

/// Registers as a PTX vector operand's list: `%f1, %f2, %f3, %f4`.
fn list(regs: &[Reg]) -> String {
    regs.iter()
        .map(|reg| reg.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The register class of a dtype's values.
pub fn class_of(dtype: DType) -> Class {
    match dtype {
        DType::F32 => Class::F32,
        DType::I32 | DType::Bool => Class::B32,
    }
}
