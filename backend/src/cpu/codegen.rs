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

use super::gemm::{self, Blocking, GemmSpec};
use super::math;
use crate::pool;
use crate::BackendError;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, ConstantData, Endianness, FuncRef, InstBuilder, MemFlagsData, Type, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{FuncId, Linkage, Module, ModuleError};
use kiln_ir::kernel::{
    BufferId, Expr, Index, Indirect, Kernel, LoopKind, Matmul, Program, Routine, Scalar, Slice,
    Split, Stmt, VType, VarId,
};
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

/// Defines one function per kernel of `program` (which must pass `Program::check`),
/// local to the module: only the step calls them.
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
    // An outlined parallel loop body: `fn(table, begin, end)` over trips begin..end.
    let mut body_sig = module.make_signature();
    body_sig.params.push(AbiParam::new(pointer));
    body_sig.params.push(AbiParam::new(types::I64));
    body_sig.params.push(AbiParam::new(types::I64));
    let mut parallel_for_sig = module.make_signature();
    for ty in [pointer, pointer, pointer, types::I64, types::I64] {
        parallel_for_sig.params.push(AbiParam::new(ty));
    }
    let uses_threads = program.has_parallel_loops();
    let parallel_for = if uses_threads {
        Some(
            module
                .declare_function(pool::PARALLEL_FOR, Linkage::Import, &parallel_for_sig)
                .map_err(module_error(pool::PARALLEL_FOR.to_string()))?,
        )
    } else {
        None
    };

    let gemms = define_gemms(module, program, &options.symbol_prefix)?;
    let mut ctx = module.make_context();
    let mut builder_ctx = FunctionBuilderContext::new();
    let mut compiled = Vec::with_capacity(program.kernels.len());
    for (position, kernel) in program.kernels.iter().enumerate() {
        let symbol = format!("{}k{position}", options.symbol_prefix);
        let what = format!("kernel k{position} ({})", kernel.name);
        // Each top-level parallel loop's body becomes its own function first.
        let mut outlined = BTreeMap::new();
        for (index, stmt) in kernel.body.iter().enumerate() {
            if let Stmt::Loop {
                kind: LoopKind::Parallel,
                ..
            } = stmt
            {
                let body_symbol = format!("{symbol}_p{index}");
                let body_what = format!("{what}, parallel loop {index}");
                let func = module
                    .declare_function(&body_symbol, Linkage::Local, &body_sig)
                    .map_err(module_error(body_what.clone()))?;
                module.clear_context(&mut ctx);
                ctx.func.signature = body_sig.clone();
                let gemm_refs = declare_gemms(module, &gemms, kernel, &mut ctx.func);
                {
                    let builder = FunctionBuilder::new(&mut ctx.func, &mut builder_ctx);
                    let mut gen = FnGen::new(builder, program, kernel, &body_what, pointer);
                    gen.gemms = gemm_refs;
                    gen.function(Entry::Outlined(stmt))?;
                    gen.b.finalize(module.target_config());
                }
                module
                    .define_function(func, &mut ctx)
                    .map_err(module_error(body_what))?;
                outlined.insert(index, func);
            }
        }
        let func = module
            .declare_function(&symbol, Linkage::Local, &kernel_sig)
            .map_err(module_error(what.clone()))?;
        module.clear_context(&mut ctx);
        ctx.func.signature = kernel_sig.clone();
        ctx.set_disasm(options.disasm);
        let gemm_refs = declare_gemms(module, &gemms, kernel, &mut ctx.func);
        let mut parallel = BTreeMap::new();
        for (&index, &body) in &outlined {
            parallel.insert(index, module.declare_func_in_func(body, &mut ctx.func));
        }
        let parallel_for_ref = match (parallel.is_empty(), parallel_for) {
            (false, Some(id)) => Some(module.declare_func_in_func(id, &mut ctx.func)),
            _ => None,
        };
        {
            let builder = FunctionBuilder::new(&mut ctx.func, &mut builder_ctx);
            let mut gen = FnGen::new(builder, program, kernel, &what, pointer);
            gen.parallel = parallel;
            gen.gemms = gemm_refs;
            gen.parallel_for = parallel_for_ref;
            gen.function(Entry::Kernel)?;
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

/// The gemm routines, declared in `func` if `kernel` calls any.
fn declare_gemms<M: Module>(
    module: &mut M,
    gemms: &[(Matmul, FuncId)],
    kernel: &Kernel,
    func: &mut cranelift_codegen::ir::Function,
) -> Vec<(Matmul, FuncRef)> {
    let mut calls = false;
    for stmt in &kernel.body {
        stmt.visit(&mut |stmt| calls |= matches!(stmt, Stmt::Call { .. }));
    }
    if !calls {
        return Vec::new();
    }
    gemms
        .iter()
        .map(|&(spec, id)| (spec, module.declare_func_in_func(id, func)))
        .collect()
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

/// The Cranelift type of a kernel value (explicit vectors have `LANES` lanes, see
/// `check_vectors`).
fn value_type(ty: VType) -> Type {
    if ty.is_vector() {
        vector_type(ty.dtype)
    } else {
        scalar_type(ty.dtype)
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

/// The values a loop variable takes: `start, start + step, ...` below `end`.
#[derive(Clone, Copy, Debug)]
struct LoopRange {
    start: i64,
    end: i64,
    step: i64,
}

impl LoopRange {
    fn new(start: usize, end: usize, step: usize) -> LoopRange {
        let int = |x: usize| i64::try_from(x).expect("Program::check bounds loops");
        LoopRange {
            start: int(start),
            end: int(end),
            step: int(step),
        }
    }

    /// How many iterations run.
    fn trips(self) -> i64 {
        if self.start >= self.end {
            0
        } else {
            (self.end - self.start - 1) / self.step + 1
        }
    }
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
    /// Inside one innermost loop body: `var * stride` by stride in bytes.
    scaled: HashMap<i64, Value>,
    innermost: Option<VarId>,
    /// Constants emitted in the entry block: `(bits, dtype, vector)`.
    constants: HashMap<(u32, DType, bool), Value>,
    /// The pointer table (the function's first parameter).
    table: Option<Value>,
    /// The outlined body of each top-level parallel loop, by statement position.
    parallel: BTreeMap<usize, FuncRef>,
    /// `kiln_parallel_for`, when the kernel has parallel loops.
    parallel_for: Option<FuncRef>,
    /// The matmul routines of the program (by `gemm_key`), declared in this function.
    gemms: Vec<(Matmul, FuncRef)>,
}

/// The routine a matmul call needs: the block it covers is a run-time argument.
fn gemm_key(matmul: &Matmul) -> Matmul {
    Matmul {
        split: Split::All,
        ..*matmul
    }
}

/// Defines one gemm routine per distinct matmul the program calls.
fn define_gemms<M: Module>(
    module: &mut M,
    program: &Program,
    prefix: &str,
) -> Result<Vec<(Matmul, FuncId)>, BackendError> {
    let mut defined: Vec<(Matmul, FuncId)> = Vec::new();
    for kernel in &program.kernels {
        for stmt in &kernel.body {
            let mut calls = Vec::new();
            stmt.visit(&mut |stmt| {
                if let Stmt::Call {
                    routine: Routine::Matmul(matmul),
                    args,
                } = stmt
                {
                    calls.push((*matmul, args[3].len));
                }
            });
            for (matmul, workspace_len) in calls {
                let key = gemm_key(&matmul);
                if defined.iter().any(|(spec, _)| *spec == key) {
                    continue;
                }
                let spec = GemmSpec {
                    m: matmul.m,
                    n: matmul.n,
                    k: matmul.k,
                    trans_a: matmul.trans_a,
                    trans_b: matmul.trans_b,
                    epilogue: matmul.epilogue,
                };
                let blocking = Blocking {
                    mc: matmul.mc,
                    kc: matmul.kc,
                    nc: matmul.nc,
                };
                let name = format!("{prefix}gemm{}", defined.len());
                // The schedule sized the workspace from the same blocking; more would
                // be written past it.
                let kernel = matmul.kernel;
                let needed = spec.workspace_bytes(kernel, &blocking);
                if needed > workspace_len.saturating_mul(4) {
                    return Err(BackendError::Unsupported {
                        kernel: name,
                        message: format!(
                            "{} needs {needed} bytes of workspace, the program gives {}",
                            Routine::Matmul(matmul),
                            workspace_len * 4
                        ),
                    });
                }
                let func = gemm::define_gemm(module, &name, &spec, kernel, &blocking)?;
                defined.push((key, func));
            }
        }
    }
    Ok(defined)
}

/// What function is being generated.
#[derive(Clone, Copy)]
enum Entry<'a> {
    /// A kernel: `fn(table)`.
    Kernel,
    /// The body of a top-level parallel loop: `fn(table, begin, end)` runs trips
    /// `begin..end` of the loop.
    Outlined(&'a Stmt),
}

impl<'a> FnGen<'a, '_> {
    fn unsupported(&self, message: String) -> BackendError {
        BackendError::Unsupported {
            kernel: self.kernel_label.to_string(),
            message,
        }
    }

    fn new<'f>(
        b: FunctionBuilder<'f>,
        program: &'a Program,
        kernel: &'a Kernel,
        kernel_label: &'a str,
        pointer: Type,
    ) -> FnGen<'a, 'f> {
        FnGen {
            b,
            program,
            kernel,
            kernel_label,
            pointer,
            bases: BTreeMap::new(),
            vars: BTreeMap::new(),
            locals: Vec::new(),
            partials: HashMap::new(),
            hoisted: HashMap::new(),
            scaled: HashMap::new(),
            innermost: None,
            constants: HashMap::new(),
            table: None,
            parallel: BTreeMap::new(),
            parallel_for: None,
            gemms: Vec::new(),
        }
    }
}

impl FnGen<'_, '_> {
    fn function(&mut self, what: Entry<'_>) -> Result<(), BackendError> {
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let params = self.b.block_params(entry).to_vec();
        let table = params[0];
        self.table = Some(table);
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
        self.check_vectors()?;
        for &ty in &self.kernel.locals {
            let var = self.b.declare_var(value_type(ty));
            self.locals.push(var);
        }
        match what {
            Entry::Kernel => {
                let body = &self.kernel.body;
                for (index, stmt) in body.iter().enumerate() {
                    match self.parallel.get(&index) {
                        Some(&outlined) => self.launch_parallel(stmt, outlined, table)?,
                        None => self.stmts(std::slice::from_ref(stmt), Mode::Scalar)?,
                    }
                }
            }
            Entry::Outlined(stmt) => self.outlined_loop(stmt, params[1], params[2])?,
        }
        self.b.ins().return_(&[]);
        self.b.seal_all_blocks();
        Ok(())
    }

    /// `gemm(a, b, c, workspace, row_begin, row_end, col_begin, col_end [, bias])`
    /// with the slices' addresses and the call's block of C (a block's end clamped to
    /// m or n).
    fn matmul_call(&mut self, matmul: &Matmul, args: &[Slice]) -> Result<(), BackendError> {
        let key = gemm_key(matmul);
        let func = self
            .gemms
            .iter()
            .find(|(spec, _)| *spec == key)
            .map(|&(_, func)| func)
            .expect("define_program declares every matmul routine the kernel calls");
        let mut operands: Vec<Value> = args
            .iter()
            .map(|slice| self.full_address(slice.buffer, &slice.offset))
            .collect();
        let whole = |e: &mut Self, extent: usize| {
            let extent = i64::try_from(extent).expect("Program::check bounds sizes");
            [
                e.b.ins().iconst(types::I64, 0),
                e.b.ins().iconst(types::I64, extent),
            ]
        };
        // Task `var`'s block `var * size .. min(extent, (var + 1) * size)`.
        let block = |e: &mut Self, var: VarId, size: usize, extent: usize| {
            let size = i64::try_from(size).expect("Program::check bounds blocks");
            let extent = i64::try_from(extent).expect("Program::check bounds sizes");
            let begin = e.b.ins().imul_imm_s(e.vars[&var], size);
            let next = e.b.ins().iadd_imm_s(begin, size);
            let extent = e.b.ins().iconst(types::I64, extent);
            [begin, e.b.ins().smin(next, extent)]
        };
        let (rows, cols) = match matmul.split {
            Split::All => (whole(self, matmul.m), whole(self, matmul.n)),
            Split::Rows { var, rows } => (block(self, var, rows, matmul.m), whole(self, matmul.n)),
            Split::Cols { var, cols } => (whole(self, matmul.m), block(self, var, cols, matmul.n)),
        };
        // The bias, when the epilogue has one, comes after the ranges.
        operands.splice(4..4, rows.into_iter().chain(cols));
        self.b.ins().call(func, &operands);
        Ok(())
    }

    /// Runs a top-level parallel loop's trips on the executable's pool:
    /// `kiln_parallel_for(pool, body, table, trips, 1)`. The pool's address is the
    /// table's slot after the buffers (null: every trip runs on this thread).
    fn launch_parallel(
        &mut self,
        stmt: &Stmt,
        outlined: FuncRef,
        table: Value,
    ) -> Result<(), BackendError> {
        let Stmt::Loop {
            start, end, step, ..
        } = stmt
        else {
            unreachable!("only loops are outlined");
        };
        let trips = LoopRange::new(*start, *end, *step).trips();
        if trips == 0 {
            return Ok(());
        }
        let parallel_for = self
            .parallel_for
            .expect("kiln_parallel_for is declared for kernels with parallel loops");
        let slot = i32::try_from(self.program.buffers.len() * self.pointer.bytes() as usize)
            .map_err(|_| self.unsupported("the pool's slot is beyond the pointer table".into()))?;
        let pool = self.b.ins().load(self.pointer, table_flags(), table, slot);
        let body = self.b.ins().func_addr(self.pointer, outlined);
        let trips = self.b.ins().iconst(types::I64, trips);
        let grain = self.b.ins().iconst(types::I64, 1);
        self.b
            .ins()
            .call(parallel_for, &[pool, body, table, trips, grain]);
        Ok(())
    }

    /// The body of an outlined parallel loop for trips `begin..end` (the pool never
    /// passes an empty range, but an empty one runs nothing).
    fn outlined_loop(&mut self, stmt: &Stmt, begin: Value, end: Value) -> Result<(), BackendError> {
        let Stmt::Loop {
            var,
            start,
            end: loop_end,
            step,
            body,
            ..
        } = stmt
        else {
            unreachable!("only loops are outlined");
        };
        // Trip `t` runs the iteration `start + t * step`.
        let range = LoopRange::new(*start, *loop_end, *step);
        let header = self.b.create_block();
        let exit = self.b.create_block();
        let trip = self.b.append_block_param(header, types::I64);
        let any = self.b.ins().icmp(IntCC::SignedLessThan, begin, end);
        self.b.ins().brif(any, header, &[begin.into()], exit, &[]);
        self.b.switch_to_block(header);
        let scaled = self.b.ins().imul_imm_s(trip, range.step);
        let value = self.b.ins().iadd_imm_s(scaled, range.start);
        self.vars.insert(*var, value);
        self.scaled.clear();
        self.stmts(body, Mode::Scalar)?;
        self.scaled.clear();
        self.vars.remove(var);
        let next = self.b.ins().iadd_imm_s(trip, 1);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, next, end);
        self.b.ins().brif(more, header, &[next.into()], exit, &[]);
        self.b.switch_to_block(exit);
        Ok(())
    }

    /// Explicit vector values (register tiles) are emitted for `f32x4` arithmetic:
    /// loads, splats, locals, add/sub/mul/div/max, fma and stores. Cranelift's x86-64
    /// backend has 128-bit vectors only (256-bit code is the AVX2 microkernel's), and
    /// comparisons, selects, casts and unary ops on explicit vectors have no users yet.
    fn check_vectors(&self) -> Result<(), BackendError> {
        let mut problem: Option<String> = None;
        for stmt in &self.kernel.body {
            stmt.visit_exprs(&mut |expr| {
                let ty = self.program.expr_type(self.kernel, expr);
                if !ty.is_vector() || problem.is_some() {
                    return;
                }
                if ty.lanes != LANES || ty.dtype != DType::F32 {
                    problem = Some(format!(
                        "{expr} is {ty}; only f32x{LANES} vectors are emitted"
                    ));
                } else if matches!(
                    expr,
                    Expr::Unary(..) | Expr::Compare(..) | Expr::Select(..) | Expr::Cast(..)
                ) {
                    problem = Some(format!("{expr}: no code for this op on explicit vectors"));
                }
            });
        }
        if let Some(local) = self
            .kernel
            .locals
            .iter()
            .find(|ty| ty.is_vector() && (ty.lanes != LANES || ty.dtype != DType::F32))
        {
            problem.get_or_insert(format!(
                "a local of type {local}; only f32x{LANES} vectors are emitted"
            ));
        }
        match problem {
            Some(message) => Err(self.unsupported(message)),
            None => Ok(()),
        }
    }

    fn stmts(&mut self, stmts: &[Stmt], mode: Mode) -> Result<(), BackendError> {
        for stmt in stmts {
            match stmt {
                Stmt::Loop {
                    var,
                    start,
                    end,
                    step,
                    kind,
                    body,
                } => {
                    let range = LoopRange::new(*start, *end, *step);
                    self.emit_loop(*var, range, *kind, body)?
                }
                Stmt::Call {
                    routine: Routine::Matmul(matmul),
                    args,
                } => {
                    if mode != Mode::Scalar {
                        return Err(self.unsupported("a call inside a vector loop".into()));
                    }
                    self.matmul_call(matmul, args)?;
                }
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
                Stmt::ScatterAdd { target, value } => {
                    if mode != Mode::Scalar {
                        return Err(
                            self.unsupported(format!("scatter_add({target}) inside a vector loop"))
                        );
                    }
                    let dtype = self.program.buffer(target.buffer).ty.dtype;
                    let value = self.expr(value, mode);
                    self.picked(target, None, |e, address| {
                        let old = e.b.ins().load(scalar_type(dtype), data_flags(), address, 0);
                        let sum = e.binary(BinaryOp::Add, dtype, old, value);
                        e.b.ins().store(data_flags(), sum, address, 0);
                        None
                    });
                }
            }
        }
        Ok(())
    }

    fn emit_loop(
        &mut self,
        var: VarId,
        range: LoopRange,
        kind: LoopKind,
        body: &[Stmt],
    ) -> Result<(), BackendError> {
        let trips = range.trips();
        if trips == 0 {
            return Ok(());
        }
        let innermost = !body.iter().any(|stmt| matches!(stmt, Stmt::Loop { .. }));
        if let LoopKind::Vector(width) = kind {
            if width != LANES {
                return Err(self.unsupported(format!(
                    "vector width {width} (only {LANES} lanes are supported)"
                )));
            }
            if range.step != 1 {
                return Err(
                    self.unsupported(format!("vector loop over {var} with step {}", range.step))
                );
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
            // A gather's position is per element (the checker refuses it here too).
            let mut gathers = false;
            for stmt in body {
                stmt.visit_exprs(&mut |expr| gathers |= matches!(expr, Expr::Gather(_)));
            }
            if gathers {
                return Err(self.unsupported(format!("a gather in the vector loop over {var}")));
            }
        }
        if trips == 1 {
            let first = self.b.ins().iconst(types::I64, range.start);
            self.vars.insert(var, first);
            self.stmts(body, Mode::Scalar)?;
            self.vars.remove(&var);
            return Ok(());
        }
        if innermost {
            self.prepare_innermost(var, body, matches!(kind, LoopKind::Vector(_)));
        }
        let LoopRange { start, end, step } = range;
        match kind {
            // Threads run parallel loops through the executable's pool when the
            // kernel is launched as parallel; inline, the iterations run in order.
            LoopKind::Serial | LoopKind::Parallel => {
                self.counted_loop(var, range, 1, body, Mode::Scalar)?
            }
            LoopKind::Unroll(times) => {
                let times = i64::from(times);
                let main = trips / times * times;
                if main > 0 {
                    let main_end = start + main * step;
                    self.counted_loop(
                        var,
                        LoopRange {
                            start,
                            end: main_end,
                            step,
                        },
                        times,
                        body,
                        Mode::Scalar,
                    )?;
                    if main < trips {
                        self.counted_loop(
                            var,
                            LoopRange {
                                start: main_end,
                                end,
                                step,
                            },
                            1,
                            body,
                            Mode::Scalar,
                        )?;
                    }
                } else {
                    self.counted_loop(var, range, 1, body, Mode::Scalar)?;
                }
            }
            LoopKind::Vector(width) => {
                let width = i64::from(width);
                let main = trips - trips % width;
                if main > 0 {
                    let vector = LoopRange {
                        start,
                        end: start + main,
                        step: width,
                    };
                    self.counted_loop(var, vector, 1, body, Mode::Vector(var))?;
                }
                if main < trips {
                    self.counted_loop(
                        var,
                        LoopRange {
                            start: start + main,
                            end,
                            step: 1,
                        },
                        1,
                        body,
                        Mode::Scalar,
                    )?;
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

    /// `for var in range { body }` with the body repeated `copies` times per trip
    /// (for `var`, `var + step`, ...), tested at the bottom; the caller guarantees
    /// at least one trip and that `copies` divides the trips.
    fn counted_loop(
        &mut self,
        var: VarId,
        range: LoopRange,
        copies: i64,
        body: &[Stmt],
        mode: Mode,
    ) -> Result<(), BackendError> {
        let header = self.b.create_block();
        let exit = self.b.create_block();
        let counter = self.b.append_block_param(header, types::I64);
        let first = self.b.ins().iconst(types::I64, range.start);
        self.b.ins().jump(header, &[first.into()]);
        self.b.switch_to_block(header);
        for copy in 0..copies {
            let value = if copy == 0 {
                counter
            } else {
                self.b.ins().iadd_imm_s(counter, copy * range.step)
            };
            self.vars.insert(var, value);
            self.scaled.clear();
            self.stmts(body, mode)?;
        }
        self.scaled.clear();
        let next = self.b.ins().iadd_imm_s(counter, range.step * copies);
        let more = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedLessThan, next, range.end);
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
            match stmt {
                Stmt::Store { buffer, index, .. }
                | Stmt::ScatterAdd {
                    target: Indirect { buffer, index, .. },
                    ..
                } => {
                    accesses.push((*buffer, index.without(var)));
                    stored.push(*buffer);
                }
                _ => {}
            }
            stmt.visit_exprs(&mut |expr| match expr {
                Expr::Load { buffer, index, .. } => {
                    accesses.push((*buffer, index.without(var)));
                    if index.stride_of(var) == 0 {
                        loads.push((*buffer, index.clone()));
                    }
                }
                Expr::Gather(Indirect { buffer, index, .. }) => {
                    accesses.push((*buffer, index.without(var)));
                }
                _ => {}
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
                    Stmt::Call { .. } => {}
                    Stmt::Store { value, .. } | Stmt::Assign { value, .. } => {
                        value.visit(&mut |expr| {
                            if let Expr::Const(scalar) = expr {
                                wanted.push((*scalar, vector));
                            }
                        });
                    }
                    Stmt::ScatterAdd { target, value } => {
                        for expr in [&*target.at, value] {
                            expr.visit(&mut |expr| {
                                if let Expr::Const(scalar) = expr {
                                    wanted.push((*scalar, vector));
                                }
                            });
                        }
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

    /// Bytes per element of `buffer` (from its dtype).
    fn element_bytes(&self, buffer: BufferId) -> i64 {
        self.program.buffer(buffer).ty.dtype.size_bytes() as i64
    }

    fn full_address(&mut self, buffer: BufferId, index: &Index) -> Value {
        let size = self.element_bytes(buffer);
        let mut address = self.bases[&buffer];
        for &(var, stride) in &index.terms {
            let counter = self.vars[&var];
            let scaled = self.b.ins().imul_imm_s(counter, stride * size);
            address = self.b.ins().iadd(address, scaled);
        }
        if index.offset != 0 {
            address = self.b.ins().iadd_imm_s(address, index.offset * size);
        }
        address
    }

    /// The address of element `index` of `buffer` (lane 0 in a vector loop).
    fn address(&mut self, buffer: BufferId, index: &Index) -> Value {
        if let Some(var) = self.innermost {
            if let Some(&partial) = self.partials.get(&(buffer, index.without(var))) {
                let stride = index.stride_of(var) * self.element_bytes(buffer);
                if stride == 0 {
                    return partial;
                }
                let scaled = match self.scaled.get(&stride) {
                    Some(&scaled) => scaled,
                    None => {
                        let counter = self.vars[&var];
                        let scaled = self.b.ins().imul_imm_s(counter, stride);
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
                    let offset = stride * self.element_bytes(buffer) * i64::from(lane);
                    let at = self.b.ins().iadd_imm_s(address, offset);
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
            Expr::Load {
                buffer,
                index,
                lanes: 1,
            } => self.load(*buffer, index, mode),
            Expr::Load { buffer, index, .. } => {
                // An explicit vector: consecutive elements (check_vectors allowed it).
                let dtype = self.program.buffer(*buffer).ty.dtype;
                let address = self.address(*buffer, index);
                self.b
                    .ins()
                    .load(vector_type(dtype), data_flags(), address, 0)
            }
            Expr::Splat(_, x) => {
                let dtype = self.dtype(x);
                let x = self.expr(x, mode);
                self.b.ins().splat(vector_type(dtype), x)
            }
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
                let ty = self.kernel.locals[local.0 as usize];
                if ty.is_vector() {
                    x
                } else {
                    self.splat_if(mode, ty.dtype, x)
                }
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
            Expr::Random(dist, key0, key1, counter) => {
                let key0 = self.expr(key0, mode);
                let key1 = self.expr(key1, mode);
                let counter = self.expr(counter, mode);
                math::emit_random(&mut self.b, *dist, [key0, key1], counter)
            }
            // Scalar only: emit_loop refuses gathers in vector loops.
            Expr::Gather(indirect) => {
                let dtype = self.program.buffer(indirect.buffer).ty.dtype;
                let zero = self.constant(Scalar::from_f64(0.0, dtype), Mode::Scalar);
                let picked =
                    self.picked(indirect, Some((scalar_type(dtype), zero)), |e, address| {
                        Some(e.b.ins().load(scalar_type(dtype), data_flags(), address, 0))
                    });
                picked.expect("a gather's merge block has its value as a parameter")
            }
        }
    }

    /// Runs `on_pick(address)` only when `indirect`'s position is in range, with the
    /// address of the element it picks, and merges what it gives with `otherwise`'s
    /// value (of the given type) when out of range. The position and the base
    /// address are computed before the branch, so no value that later code reuses
    /// (the loop's cached scaled counters) is defined in the conditional block.
    fn picked(
        &mut self,
        indirect: &Indirect,
        otherwise: Option<(Type, Value)>,
        on_pick: impl FnOnce(&mut Self, Value) -> Option<Value>,
    ) -> Option<Value> {
        let base = self.address(indirect.buffer, &indirect.index);
        let at = self.expr(&indirect.at, Mode::Scalar);
        // One unsigned comparison tests 0 <= at < extent: a negative i32 is above
        // every extent (the checker keeps extents within i32).
        let in_range =
            self.b
                .ins()
                .icmp_imm_u(IntCC::UnsignedLessThan, at, i64::from(indirect.extent));
        let pick = self.b.create_block();
        let done = self.b.create_block();
        let merged = otherwise.map(|(ty, _)| self.b.append_block_param(done, ty));
        let fallback: Vec<_> = otherwise
            .map(|(_, value)| value.into())
            .into_iter()
            .collect();
        self.b.ins().brif(in_range, pick, &[], done, &fallback);
        self.b.switch_to_block(pick);
        let position = self.b.ins().uextend(types::I64, at);
        let bytes = indirect.stride * self.element_bytes(indirect.buffer);
        let offset = self.b.ins().imul_imm_s(position, bytes);
        let address = self.b.ins().iadd(base, offset);
        let value = on_pick(self, address);
        let args: Vec<_> = value.map(Into::into).into_iter().collect();
        self.b.ins().jump(done, &args);
        self.b.switch_to_block(done);
        merged
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
            // IEEE square root, correctly rounded, as Rust's `f32::sqrt`.
            (UnaryOp::Sqrt, _) => self.b.ins().sqrt(x),
            (UnaryOp::Rsqrt, _) => {
                let one = self.constant(Scalar::F32(1.0), mode);
                let root = self.b.ins().sqrt(x);
                self.b.ins().fdiv(one, root)
            }
            (UnaryOp::Abs, DType::F32) => self.b.ins().fabs(x),
            // Wrapping: |i32::MIN| is i32::MIN, as `wrapping_abs`.
            (UnaryOp::Abs, _) => self.b.ins().iabs(x),
            // ±0 and NaN are their own sign: two compares, each picking a constant.
            (UnaryOp::Sign, DType::F32) => {
                let zero = self.constant(Scalar::F32(0.0), mode);
                let one = self.constant(Scalar::F32(1.0), mode);
                let minus_one = self.constant(Scalar::F32(-1.0), mode);
                let negative = self.b.ins().fcmp(FloatCC::LessThan, x, zero);
                let below = self.choose(negative, minus_one, x, mode);
                let positive = self.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                self.choose(positive, one, below, mode)
            }
            // Clamped to [-1, 1]: the sign of an integer.
            (UnaryOp::Sign, _) => {
                let one = self.constant(Scalar::I32(1), mode);
                let minus_one = self.constant(Scalar::I32(-1), mode);
                let floor = self.b.ins().smax(x, minus_one);
                self.b.ins().smin(floor, one)
            }
            // The typing rules keep these to f32; each is emitted inline, operation
            // for operation as its `kiln_ir::scalar` algorithm.
            (UnaryOp::Sigmoid, _) => math::emit_sigmoid(&mut self.b, x),
            (UnaryOp::Tanh, _) => math::emit_tanh(&mut self.b, x),
            (UnaryOp::Softplus, _) => math::emit_softplus(&mut self.b, x),
            (UnaryOp::Expm1, _) => math::emit_expm1(&mut self.b, x),
            (UnaryOp::Log1p, _) => math::emit_log1p(&mut self.b, x),
            (UnaryOp::Erf, _) => math::emit_erf(&mut self.b, x),
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
            // Likewise fmin, with -0 < +0.
            (BinaryOp::Min, DType::F32) => ins.fmin(a, b),
            (BinaryOp::Pow, _) => math::emit_pow(&mut self.b, a, b),
            (BinaryOp::Add, _) => ins.iadd(a, b),
            (BinaryOp::Sub, _) => ins.isub(a, b),
            (BinaryOp::Mul, _) => ins.imul(a, b),
            (BinaryOp::Max, DType::I32) => ins.smax(a, b),
            // Bools are 0/1 words: their maximum is their union.
            (BinaryOp::Max, DType::Bool) => ins.bor(a, b),
            (BinaryOp::Min, DType::I32) => ins.smin(a, b),
            // Only `max` reaches bools (a reduce_max over a mask); their minimum
            // would be their intersection.
            (BinaryOp::Min, DType::Bool) => ins.band(a, b),
        }
    }

    /// The comparison flag (scalar i8 or lane mask).
    fn compare(&mut self, op: CmpOp, dtype: DType, a: Value, b: Value) -> Value {
        if dtype == DType::F32 {
            self.b.ins().fcmp(math::float_cc(op), a, b)
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
