//! Kernel IR to Cranelift IR, written against `cranelift_module::Module` so the JIT
//! and an AOT object module share it.
//!
//! Each kernel becomes `extern "C" fn(table: *const *mut u8)`: `table[b]` is the base
//! address of buffer `b`. Base addresses are loaded once at entry. Loops are counted
//! with a bottom test (extents are static, so an empty loop emits nothing and an
//! extent-1 loop emits its body once with the variable fixed at 0).
//!
//! Values: f32 is `f32`, i32 and bool are `i32` (bool as 0/1). A `Vector(4)` loop runs
//! its body on `f32x4`/`i32x4`: a load with unit stride along the vector variable is a
//! vector load, with zero stride a scalar load and a splat, otherwise a gather of four
//! scalar loads; stores need unit stride. A scalar loop handles the remainder.
//! Comparisons yield lane masks that are narrowed to 0/1 words; `select` and `relu`
//! rebuild masks for `bitselect`. `exp`/`log` are inline polynomials ([`super::math`],
//! the algorithms of `kiln_ir::scalar`) on scalars and vectors alike.
//!
//! Cranelift at `opt_level=none` hoists nothing, so the generator does the usual
//! loop-invariant work itself: constants (and their splats) are emitted once in the
//! entry block; before an innermost loop, each access's address without the loop
//! variable's term is computed, and loads that do not depend on the loop variable
//! (from buffers the loop does not store to) are done; in the body, `var * stride`
//! is computed once per distinct stride.

use super::math;
use crate::BackendError;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{FuncId, Linkage, Module, ModuleError};
use kiln_ir::kernel::{BufferId, Expr, Index, Kernel, LoopKind, Program, Scalar, Stmt, VarId};
use kiln_ir::{BinaryOp, CmpOp, DType, UnaryOp};
use std::collections::{BTreeMap, HashMap};

/// SIMD lanes of a vector loop: Cranelift's x86-64 backend has 128-bit vectors.
const LANES: u32 = 4;

/// One compiled kernel in a module.
#[derive(Clone, Debug)]
pub struct KernelCode {
    /// The function's symbol.
    pub symbol: String,
    pub func: FuncId,
    /// Size of the machine code in bytes.
    pub code_bytes: usize,
    /// Cranelift IR before compilation, if asked for.
    pub clif: Option<String>,
    /// The machine-code listing (Cranelift's VCode disassembly), if asked for.
    pub disasm: Option<String>,
}

/// Options of [`define_program`].
#[derive(Clone, Debug, Default)]
pub struct CodegenOptions {
    /// Prepended to every kernel's symbol (`<prefix>k<index>`), so that several
    /// programs can share one module or one link.
    pub symbol_prefix: String,
    /// Keep the Cranelift IR and the machine-code listing of every kernel.
    pub disasm: bool,
}

/// Defines one exported function per kernel of
/// `program` (which must pass `Program::check`).
pub fn define_program<M: Module>(
    module: &mut M,
    program: &Program,
    options: &CodegenOptions,
) -> Result<Vec<KernelCode>, BackendError> {
    let module_error = |what: String| {
        move |err: ModuleError| BackendError::Cranelift {
            what,
            message: describe(&err),
        }
    };
    let pointer = module.target_config().pointer_type();
    let mut kernel_sig = module.make_signature();
    kernel_sig.params.push(AbiParam::new(pointer));

    let mut ctx = module.make_context();
    let mut builder_ctx = FunctionBuilderContext::new();
    let mut compiled = Vec::with_capacity(program.kernels.len());
    for (position, kernel) in program.kernels.iter().enumerate() {
        let symbol = format!("{}k{position}", options.symbol_prefix);
        let what = format!("kernel k{position} ({})", kernel.name);
        let func = module
            .declare_function(&symbol, Linkage::Export, &kernel_sig)
            .map_err(module_error(what.clone()))?;
        module.clear_context(&mut ctx);
        ctx.func.signature = kernel_sig.clone();
        ctx.set_disasm(options.disasm);
        {
            let builder = FunctionBuilder::new(&mut ctx.func, &mut builder_ctx);
            let mut gen = FnGen {
                b: builder,
                program,
                kernel,
                kernel_label: &what,
                pointer,
                bases: BTreeMap::new(),
                vars: BTreeMap::new(),
                locals: Vec::new(),
                partials: HashMap::new(),
                hoisted: HashMap::new(),
                scaled: HashMap::new(),
                innermost: None,
                constants: HashMap::new(),
            };
            gen.function()?;
            gen.b.finalize(module.target_config());
        }
        let clif = options.disasm.then(|| ctx.func.display().to_string());
        module
            .define_function(func, &mut ctx)
            .map_err(module_error(what.clone()))?;
        let compiled_code = ctx
            .compiled_code()
            .expect("define_function leaves the compiled code in the context");
        compiled.push(KernelCode {
            symbol,
            func,
            code_bytes: compiled_code.code_info().total_size as usize,
            clif,
            disasm: compiled_code.vcode.clone(),
        });
    }
    Ok(compiled)
}

/// Cranelift's message, with the verifier's details when there are any.
fn describe(err: &ModuleError) -> String {
    match err {
        ModuleError::Compilation(inner) => format!("{err}: {inner:?}"),
        other => other.to_string(),
    }
}

/// Whether an expression is evaluated per element or four lanes at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Scalar,
    /// Lane `l` is iteration `var + l` of the vector loop.
    Vector(VarId),
}

fn scalar_type(dtype: DType) -> Type {
    match dtype {
        DType::F32 => types::F32,
        DType::I32 | DType::Bool => types::I32,
    }
}

fn vector_type(dtype: DType) -> Type {
    match dtype {
        DType::F32 => types::F32X4,
        DType::I32 | DType::Bool => types::I32X4,
    }
}

/// Buffer elements: aligned to their size, never trapping (bounds are proven by
/// `Program::check`). No `aligned` flag: vector accesses are only 4-byte aligned.
fn data_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// The pointer table does not change while a kernel runs.
fn table_flags() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly()
}

/// Reinterpreting a mask's lanes between integer and float vectors.
fn lane_flags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

struct FnGen<'a, 'f> {
    b: FunctionBuilder<'f>,
    program: &'a Program,
    kernel: &'a Kernel,
    kernel_label: &'a str,
    pointer: Type,
    bases: BTreeMap<BufferId, Value>,
    /// The current value (i64) of every loop variable in scope.
    vars: BTreeMap<VarId, Value>,
    locals: Vec<Variable>,
    /// Inside an innermost loop over `innermost`: the address of each access with
    /// that variable's term left out, computed before the loop.
    partials: HashMap<(BufferId, Index), Value>,
    /// Inside an innermost loop: loads that do not depend on its variable, done
    /// before the loop (scalar value, and its splat for a vector loop).
    hoisted: HashMap<(BufferId, Index), (Value, Option<Value>)>,
    /// Inside one innermost loop body: `var * stride * 4` by stride.
    scaled: HashMap<i64, Value>,
    innermost: Option<VarId>,
    /// Constants emitted in the entry block: `(bits, dtype, vector)`.
    constants: HashMap<(u32, DType, bool), Value>,
}

impl FnGen<'_, '_> {
    fn unsupported(&self, message: String) -> BackendError {
        BackendError::Unsupported {
            kernel: self.kernel_label.to_string(),
            message,
        }
    }

    fn function(&mut self) -> Result<(), BackendError> {
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let table = self.b.block_params(entry)[0];
        for buffer in self.kernel.buffers() {
            let offset = i32::try_from(buffer.0 * self.pointer.bytes() as usize)
                .map_err(|_| self.unsupported(format!("{buffer} is beyond the pointer table")))?;
            let base = self
                .b
                .ins()
                .load(self.pointer, table_flags(), table, offset);
            self.bases.insert(buffer, base);
        }
        self.emit_constants();
        for &dtype in &self.kernel.locals {
            let var = self.b.declare_var(scalar_type(dtype));
            self.locals.push(var);
        }
        let body = &self.kernel.body;
        self.stmts(body, Mode::Scalar)?;
        self.b.ins().return_(&[]);
        self.b.seal_all_blocks();
        Ok(())
    }

    fn stmts(&mut self, stmts: &[Stmt], mode: Mode) -> Result<(), BackendError> {
        for stmt in stmts {
            match stmt {
                Stmt::Loop {
                    var,
                    extent,
                    kind,
                    body,
                } => self.emit_loop(*var, *extent, *kind, body)?,
                Stmt::Store {
                    buffer,
                    index,
                    value,
                } => {
                    let value = self.expr(value, mode);
                    self.store(*buffer, index, value, mode)?;
                }
                Stmt::Assign { local, value } => {
                    if mode != Mode::Scalar {
                        return Err(
                            self.unsupported(format!("assignment to {local} inside a vector loop"))
                        );
                    }
                    let value = self.expr(value, mode);
                    self.b.def_var(self.locals[local.0 as usize], value);
                }
            }
        }
        Ok(())
    }

    fn emit_loop(
        &mut self,
        var: VarId,
        extent: usize,
        kind: LoopKind,
        body: &[Stmt],
    ) -> Result<(), BackendError> {
        if extent == 0 {
            return Ok(());
        }
        let extent = i64::try_from(extent).expect("Program::check bounds extents");
        let innermost = !body.iter().any(|stmt| matches!(stmt, Stmt::Loop { .. }));
        if let LoopKind::Vector(width) = kind {
            if width != LANES {
                return Err(self.unsupported(format!(
                    "vector width {width} (only {LANES} lanes are supported)"
                )));
            }
            for stmt in body {
                if let Stmt::Store { buffer, index, .. } = stmt {
                    if index.stride_of(var) != 1 {
                        return Err(self.unsupported(format!(
                            "vector store to {buffer}[{index}] needs unit stride along {var}"
                        )));
                    }
                }
            }
        }
        if extent == 1 {
            let zero = self.b.ins().iconst(types::I64, 0);
            self.vars.insert(var, zero);
            self.stmts(body, Mode::Scalar)?;
            self.vars.remove(&var);
            return Ok(());
        }
        if innermost {
            self.prepare_innermost(var, body, matches!(kind, LoopKind::Vector(_)));
        }
        match kind {
            LoopKind::Serial => self.counted_loop(var, 0, extent, 1, body, Mode::Scalar)?,
            LoopKind::Vector(width) => {
                let width = i64::from(width);
                let main = extent - extent % width;
                if main > 0 {
                    self.counted_loop(var, 0, main, width, body, Mode::Vector(var))?;
                }
                if main < extent {
                    self.counted_loop(var, main, extent, 1, body, Mode::Scalar)?;
                }
            }
        }
        if innermost {
            self.partials.clear();
            self.hoisted.clear();
            self.innermost = None;
        }
        Ok(())
    }

    /// `for var in (start..end).step_by(step) { body }`, tested at the bottom; the
    /// caller guarantees at least one iteration.
    fn counted_loop(
        &mut self,
        var: VarId,
        start: i64,
        end: i64,
        step: i64,
        body: &[Stmt],
        mode: Mode,
    ) -> Result<(), BackendError> {
        let header = self.b.create_block();
        let exit = self.b.create_block();
        let counter = self.b.append_block_param(header, types::I64);
        let first = self.b.ins().iconst(types::I64, start);
        self.b.ins().jump(header, &[first.into()]);
        self.b.switch_to_block(header);
        self.vars.insert(var, counter);
        self.scaled.clear();
        self.stmts(body, mode)?;
        self.scaled.clear();
        let next = self.b.ins().iadd_imm_s(counter, step);
        let more = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, next, end);
        self.b.ins().brif(more, header, &[next.into()], exit, &[]);
        self.b.switch_to_block(exit);
        self.vars.remove(&var);
        Ok(())
    }

    /// Before an innermost loop over `var`: the address of every access in `body`
    /// without `var`'s term, and the loads that do not depend on `var` from buffers
    /// the body does not store to.
    fn prepare_innermost(&mut self, var: VarId, body: &[Stmt], vector: bool) {
        let mut accesses: Vec<(BufferId, Index)> = Vec::new();
        let mut loads: Vec<(BufferId, Index)> = Vec::new();
        let mut stored: Vec<BufferId> = Vec::new();
        for stmt in body {
            if let Stmt::Store { buffer, index, .. } = stmt {
                accesses.push((*buffer, index.without(var)));
                stored.push(*buffer);
            }
            stmt.visit_exprs(&mut |expr| {
                if let Expr::Load { buffer, index } = expr {
                    accesses.push((*buffer, index.without(var)));
                    if index.stride_of(var) == 0 {
                        loads.push((*buffer, index.clone()));
                    }
                }
            });
        }
        self.partials.clear();
        self.hoisted.clear();
        self.innermost = None;
        for key in accesses {
            if !self.partials.contains_key(&key) {
                let address = self.full_address(key.0, &key.1);
                self.partials.insert(key, address);
            }
        }
        for (buffer, index) in loads {
            if stored.contains(&buffer) || self.hoisted.contains_key(&(buffer, index.clone())) {
                continue;
            }
            let dtype = self.program.buffer(buffer).ty.dtype;
            let address = self.partials[&(buffer, index.clone())];
            let scalar = self
                .b
                .ins()
                .load(scalar_type(dtype), data_flags(), address, 0);
            let splat = vector.then(|| self.b.ins().splat(vector_type(dtype), scalar));
            self.hoisted.insert((buffer, index), (scalar, splat));
        }
        self.innermost = Some(var);
    }

    /// Emits every constant the kernel may use in the entry block, so loops reuse
    /// them (with their splats where a vector loop needs them).
    fn emit_constants(&mut self) {
        let mut wanted: Vec<(Scalar, bool)> = Vec::new();
        fn walk(stmts: &[Stmt], vector: bool, wanted: &mut Vec<(Scalar, bool)>) {
            for stmt in stmts {
                match stmt {
                    Stmt::Loop { kind, body, .. } => {
                        walk(body, vector || matches!(kind, LoopKind::Vector(_)), wanted)
                    }
                    Stmt::Store { value, .. } | Stmt::Assign { value, .. } => {
                        value.visit(&mut |expr| {
                            if let Expr::Const(scalar) = expr {
                                wanted.push((*scalar, vector));
                            }
                        });
                    }
                }
            }
        }
        walk(&self.kernel.body, false, &mut wanted);
        // The ones `relu`, comparisons, casts and `select` use.
        let vector = self.kernel.body.iter().any(|stmt| {
            let mut found = false;
            stmt.visit(&mut |inner| {
                found |= matches!(
                    inner,
                    Stmt::Loop {
                        kind: LoopKind::Vector(_),
                        ..
                    }
                )
            });
            found
        });
        for scalar in [Scalar::F32(0.0), Scalar::I32(0), Scalar::I32(1)] {
            wanted.push((scalar, vector));
        }
        for (scalar, vector) in wanted {
            let key = (scalar.to_bits(), scalar.dtype(), false);
            let value = match self.constants.get(&key) {
                Some(&value) => value,
                None => {
                    let value = match scalar {
                        Scalar::F32(v) => self.b.ins().f32const(v),
                        Scalar::I32(_) | Scalar::Bool(_) => {
                            self.b.ins().iconst(types::I32, i64::from(scalar.to_bits()))
                        }
                    };
                    self.constants.insert(key, value);
                    value
                }
            };
            let vector_key = (key.0, key.1, true);
            if vector && !self.constants.contains_key(&vector_key) {
                let splat = self.b.ins().splat(vector_type(scalar.dtype()), value);
                self.constants.insert(vector_key, splat);
            }
        }
    }

    fn full_address(&mut self, buffer: BufferId, index: &Index) -> Value {
        let mut address = self.bases[&buffer];
        for &(var, stride) in &index.terms {
            let counter = self.vars[&var];
            let scaled = self.b.ins().imul_imm_s(counter, stride * 4);
            address = self.b.ins().iadd(address, scaled);
        }
        if index.offset != 0 {
            address = self.b.ins().iadd_imm_s(address, index.offset * 4);
        }
        address
    }

    /// The address of element `index` of `buffer` (lane 0 in a vector loop).
    fn address(&mut self, buffer: BufferId, index: &Index) -> Value {
        if let Some(var) = self.innermost {
            if let Some(&partial) = self.partials.get(&(buffer, index.without(var))) {
                let stride = index.stride_of(var);
                if stride == 0 {
                    return partial;
                }
                let scaled = match self.scaled.get(&stride) {
                    Some(&scaled) => scaled,
                    None => {
                        let counter = self.vars[&var];
                        let scaled = self.b.ins().imul_imm_s(counter, stride * 4);
                        self.scaled.insert(stride, scaled);
                        scaled
                    }
                };
                return self.b.ins().iadd(partial, scaled);
            }
        }
        self.full_address(buffer, index)
    }

    fn dtype(&self, expr: &Expr) -> DType {
        self.program.expr_dtype(self.kernel, expr)
    }

    fn load(&mut self, buffer: BufferId, index: &Index, mode: Mode) -> Value {
        if let Some(&(scalar, splat)) = self.hoisted.get(&(buffer, index.clone())) {
            match (mode, splat) {
                (Mode::Scalar, _) => return scalar,
                (Mode::Vector(_), Some(splat)) => return splat,
                (Mode::Vector(_), None) => {}
            }
        }
        let dtype = self.program.buffer(buffer).ty.dtype;
        let address = self.address(buffer, index);
        let scalar = scalar_type(dtype);
        let Mode::Vector(var) = mode else {
            return self.b.ins().load(scalar, data_flags(), address, 0);
        };
        let vector = vector_type(dtype);
        match index.stride_of(var) {
            0 => {
                let x = self.b.ins().load(scalar, data_flags(), address, 0);
                self.b.ins().splat(vector, x)
            }
            1 => self.b.ins().load(vector, data_flags(), address, 0),
            stride => {
                let first = self.b.ins().load(scalar, data_flags(), address, 0);
                let mut lanes = self.b.ins().splat(vector, first);
                for lane in 1..LANES {
                    let at = self
                        .b
                        .ins()
                        .iadd_imm_s(address, stride * 4 * i64::from(lane));
                    let x = self.b.ins().load(scalar, data_flags(), at, 0);
                    lanes = self.b.ins().insertlane(lanes, x, lane as u8);
                }
                lanes
            }
        }
    }

    fn store(
        &mut self,
        buffer: BufferId,
        index: &Index,
        value: Value,
        mode: Mode,
    ) -> Result<(), BackendError> {
        if let Mode::Vector(var) = mode {
            // emit_loop checked the unit stride; a store that does not depend on the
            // vector variable would race between lanes.
            if index.stride_of(var) != 1 {
                return Err(self.unsupported(format!(
                    "vector store to {buffer}[{index}] needs unit stride along {var}"
                )));
            }
        }
        let address = self.address(buffer, index);
        self.b.ins().store(data_flags(), value, address, 0);
        Ok(())
    }

    fn splat_if(&mut self, mode: Mode, dtype: DType, x: Value) -> Value {
        match mode {
            Mode::Scalar => x,
            Mode::Vector(_) => self.b.ins().splat(vector_type(dtype), x),
        }
    }

    fn constant(&mut self, value: Scalar, mode: Mode) -> Value {
        let key = (value.to_bits(), value.dtype(), mode != Mode::Scalar);
        if let Some(&cached) = self.constants.get(&key) {
            return cached;
        }
        let x = match value {
            Scalar::F32(v) => self.b.ins().f32const(v),
            Scalar::I32(v) => self.b.ins().iconst(types::I32, i64::from(v as u32)),
            Scalar::Bool(v) => self.b.ins().iconst(types::I32, i64::from(v)),
        };
        self.splat_if(mode, value.dtype(), x)
    }

    /// A comparison result (scalar i8 or lane mask) as 0/1 words.
    fn bool_word(&mut self, flag: Value, mode: Mode) -> Value {
        match mode {
            Mode::Scalar => self.b.ins().uextend(types::I32, flag),
            Mode::Vector(_) => {
                let one = self.constant(Scalar::I32(1), mode);
                self.b.ins().band(flag, one)
            }
        }
    }

    /// `cond ? on_true : on_false` where `mask` is a comparison result (scalar flag or
    /// all-ones lane mask).
    fn choose(&mut self, mask: Value, on_true: Value, on_false: Value, mode: Mode) -> Value {
        match mode {
            Mode::Scalar => self.b.ins().select(mask, on_true, on_false),
            Mode::Vector(_) => {
                let ty = self.b.func.dfg.value_type(on_true);
                let mask = if self.b.func.dfg.value_type(mask) == ty {
                    mask
                } else {
                    self.b.ins().bitcast(ty, lane_flags(), mask)
                };
                self.b.ins().bitselect(mask, on_true, on_false)
            }
        }
    }

    fn expr(&mut self, expr: &Expr, mode: Mode) -> Value {
        match expr {
            Expr::Load { buffer, index } => self.load(*buffer, index, mode),
            Expr::Const(value) => self.constant(*value, mode),
            Expr::LoopIndex(var) => {
                let counter = self.vars[var];
                let x = self.b.ins().ireduce(types::I32, counter);
                let lanes = self.splat_if(mode, DType::I32, x);
                if mode == Mode::Vector(*var) {
                    let mut iota = Vec::with_capacity(16);
                    for lane in 0..LANES {
                        iota.extend_from_slice(&lane.to_le_bytes());
                    }
                    let handle = self.b.func.dfg.constants.insert(ConstantData::from(iota));
                    let offsets = self.b.ins().vconst(types::I32X4, handle);
                    self.b.ins().iadd(lanes, offsets)
                } else {
                    lanes
                }
            }
            Expr::Local(local) => {
                let x = self.b.use_var(self.locals[local.0 as usize]);
                let dtype = self.kernel.locals[local.0 as usize];
                self.splat_if(mode, dtype, x)
            }
            Expr::Unary(op, x) => {
                let dtype = self.dtype(x);
                let x = self.expr(x, mode);
                self.unary(*op, dtype, x, mode)
            }
            Expr::Binary(op, a, b) => {
                let dtype = self.dtype(a);
                let a = self.expr(a, mode);
                let b = self.expr(b, mode);
                self.binary(*op, dtype, a, b)
            }
            Expr::Compare(op, a, b) => {
                let dtype = self.dtype(a);
                let a = self.expr(a, mode);
                let b = self.expr(b, mode);
                let flag = self.compare(*op, dtype, a, b);
                self.bool_word(flag, mode)
            }
            Expr::Select(cond, on_true, on_false) => {
                let cond = self.expr(cond, mode);
                let on_true = self.expr(on_true, mode);
                let on_false = self.expr(on_false, mode);
                match mode {
                    // `select` treats any nonzero word as true.
                    Mode::Scalar => self.b.ins().select(cond, on_true, on_false),
                    Mode::Vector(_) => {
                        let zero = self.constant(Scalar::I32(0), mode);
                        let mask = self.b.ins().icmp(IntCC::NotEqual, cond, zero);
                        self.choose(mask, on_true, on_false, mode)
                    }
                }
            }
            Expr::Cast(to, x) => {
                let from = self.dtype(x);
                let x = self.expr(x, mode);
                self.cast(from, *to, x, mode)
            }
            Expr::Fma(a, b, c) => {
                let a = self.expr(a, mode);
                let b = self.expr(b, mode);
                let c = self.expr(c, mode);
                self.b.ins().fma(a, b, c)
            }
        }
    }

    fn unary(&mut self, op: UnaryOp, dtype: DType, x: Value, mode: Mode) -> Value {
        match (op, dtype) {
            (UnaryOp::Neg, DType::F32) => self.b.ins().fneg(x),
            (UnaryOp::Neg, _) => self.b.ins().ineg(x),
            // The typing rules keep exp and log to f32 (scalar or f32x4 by `x`'s type).
            (UnaryOp::Exp, _) => math::emit_exp(&mut self.b, x),
            (UnaryOp::Log, _) => math::emit_log(&mut self.b, x),
            // relu(NaN) is 0 in the interpreter (`x > 0 ? x : 0`), which `fmax` would
            // not give, so it is a compare and select.
            (UnaryOp::Relu, DType::F32) => {
                let zero = self.constant(Scalar::F32(0.0), mode);
                let positive = self.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                self.choose(positive, x, zero, mode)
            }
            (UnaryOp::Relu, _) => {
                let zero = self.constant(Scalar::I32(0), mode);
                self.b.ins().smax(x, zero)
            }
        }
    }

    fn binary(&mut self, op: BinaryOp, dtype: DType, a: Value, b: Value) -> Value {
        let ins = self.b.ins();
        match (op, dtype) {
            (BinaryOp::Add, DType::F32) => ins.fadd(a, b),
            (BinaryOp::Sub, DType::F32) => ins.fsub(a, b),
            (BinaryOp::Mul, DType::F32) => ins.fmul(a, b),
            (BinaryOp::Div, _) => ins.fdiv(a, b),
            // Cranelift's fmax returns NaN if either operand is NaN, as the interpreter.
            (BinaryOp::Max, DType::F32) => ins.fmax(a, b),
            (BinaryOp::Add, _) => ins.iadd(a, b),
            (BinaryOp::Sub, _) => ins.isub(a, b),
            (BinaryOp::Mul, _) => ins.imul(a, b),
            (BinaryOp::Max, DType::I32) => ins.smax(a, b),
            // Bools are 0/1 words: their maximum is their union.
            (BinaryOp::Max, DType::Bool) => ins.bor(a, b),
        }
    }

    /// The comparison flag (scalar i8 or lane mask).
    fn compare(&mut self, op: CmpOp, dtype: DType, a: Value, b: Value) -> Value {
        if dtype == DType::F32 {
            // Ordered comparisons are false on NaN, `NotEqual` is true, as in Rust.
            let cc = match op {
                CmpOp::Eq => FloatCC::Equal,
                CmpOp::Ne => FloatCC::NotEqual,
                CmpOp::Lt => FloatCC::LessThan,
                CmpOp::Le => FloatCC::LessThanOrEqual,
                CmpOp::Gt => FloatCC::GreaterThan,
                CmpOp::Ge => FloatCC::GreaterThanOrEqual,
            };
            self.b.ins().fcmp(cc, a, b)
        } else {
            let cc = match op {
                CmpOp::Eq => IntCC::Equal,
                CmpOp::Ne => IntCC::NotEqual,
                CmpOp::Lt => IntCC::SignedLessThan,
                CmpOp::Le => IntCC::SignedLessThanOrEqual,
                CmpOp::Gt => IntCC::SignedGreaterThan,
                CmpOp::Ge => IntCC::SignedGreaterThanOrEqual,
            };
            self.b.ins().icmp(cc, a, b)
        }
    }

    /// Rust `as` semantics: float to int truncates and saturates (NaN is 0), anything
    /// to bool is `x != 0` (NaN is true).
    fn cast(&mut self, from: DType, to: DType, x: Value, mode: Mode) -> Value {
        let ty = |dtype| match mode {
            Mode::Scalar => scalar_type(dtype),
            Mode::Vector(_) => vector_type(dtype),
        };
        match (from, to) {
            (from, to) if from == to => x,
            (DType::F32, DType::I32) => self.b.ins().fcvt_to_sint_sat(ty(DType::I32), x),
            (DType::I32 | DType::Bool, DType::F32) => {
                self.b.ins().fcvt_from_sint(ty(DType::F32), x)
            }
            (DType::F32, DType::Bool) => {
                let zero = self.constant(Scalar::F32(0.0), mode);
                let flag = self.b.ins().fcmp(FloatCC::NotEqual, x, zero);
                self.bool_word(flag, mode)
            }
            (DType::I32, DType::Bool) => {
                let zero = self.constant(Scalar::I32(0), mode);
                let flag = self.b.ins().icmp(IntCC::NotEqual, x, zero);
                self.bool_word(flag, mode)
            }
            // A bool word already is the i32 0 or 1.
            (DType::Bool, DType::I32) => x,
            (from, to) => unreachable!("cast from {from} to {to} is covered above"),
        }
    }
}
