//! Ahead-of-time compilation: programs in a relocatable object for the host
//! (cranelift-object), each behind one exported C function, with the same kernels
//! and step function as the JIT ([`codegen`], [`entry`]). The object needs nothing
//! but libc's `memcpy`; it runs on the caller's thread (programs are compiled without
//! parallel loops: no thread pool, no call back into kiln).
//!
//! An entry point `<library>_<entry>` takes a pointer to its argument block and a
//! workspace:
//!
//! ```text
//! int32_t mlp_infer(void *const args[], void *workspace);
//!   args: one pointer per input (read), then per parameter unless the object embeds
//!         them (read, and written by a train step's updates), then per output
//!         (written), in the order of `EntryLayout::args`
//!   workspace: EntryLayout::workspace_bytes bytes, aligned to 64 (scratch, reused)
//!   returns 0, or 1 when the workspace is not aligned to 64 bytes (nothing runs)
//! ```
//!
//! The function builds the step's pointer table on its stack (the caller's inputs
//! and parameters in place, scratch buffers at their arena offsets in the workspace,
//! staged update copies after the arena), calls the step and copies every output
//! into the caller's buffer. Embedded parameters are data of the object: read-only
//! when no entry updates them, else writable (a train step updates them in place).
//! `<library>_abi_version()` returns [`ABI_VERSION`], so that a program can check
//! that the header it was built with matches the object it links.
//!
//! Does no I/O: [`ObjectCompiler::finish`] returns the object's bytes.

use super::codegen::{self, CodegenOptions};
use super::{entry, object_isa, OptLevel};
use crate::arena::{self, Placement, UpdateStep, ALIGNMENT};
use crate::BackendError;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, AbiParam, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module, ModuleError};
use cranelift_object::{ObjectBuilder, ObjectModule};
use kiln_ir::kernel::{BufferId, Program, Storage};
use kiln_ir::TensorType;
use std::collections::BTreeMap;

/// The version of the entry points' calling convention and argument order; a
/// header and an object agree when their versions do.
pub const ABI_VERSION: u32 = 1;

/// What an argument of an entry point is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// Read before the run.
    Input,
    /// A parameter (or optimizer state) the caller keeps: read, and written by the
    /// updates of a train step.
    Param,
    /// Written after the run.
    Output,
}

/// One pointer of an entry point's argument block.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgSlot {
    pub name: String,
    pub kind: ArgKind,
    pub ty: TensorType,
    /// Whether the entry writes through this pointer (outputs, updated parameters).
    pub written: bool,
}

/// The C interface of one entry point.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryLayout {
    /// The exported function: `<library>_<entry>`.
    pub symbol: String,
    pub args: Vec<ArgSlot>,
    /// Bytes of scratch memory the caller passes (aligned to 64).
    pub workspace_bytes: usize,
    /// The parameters this entry reads from the object's data instead.
    pub embedded: Vec<String>,
}

/// Builds one object: parameters to embed, then entry points, then the bytes.
pub struct ObjectCompiler {
    /// The target triple and the CPU features the code uses.
    target: String,
    module: ObjectModule,
    library: String,
    opt_level: OptLevel,
    /// Values of the parameters to embed (little-endian bytes), by name.
    values: BTreeMap<String, Vec<u8>>,
    /// Parameters some entry updates: embedded writable.
    written: BTreeMap<String, bool>,
    /// Data objects already declared for embedded parameters, by name.
    data: BTreeMap<String, DataId>,
    entries: Vec<String>,
}

fn cranelift_error(what: impl Into<String>) -> impl FnOnce(ModuleError) -> BackendError {
    let what = what.into();
    move |err| BackendError::Cranelift {
        what,
        message: err.to_string(),
    }
}

/// Whether `name` is a C identifier (the symbols and the header are built from it).
pub fn is_c_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl ObjectCompiler {
    /// An empty object whose exported symbols start with `<library>_` (a C
    /// identifier).
    pub fn new(library: &str, opt_level: OptLevel) -> Result<ObjectCompiler, BackendError> {
        if !is_c_identifier(library) {
            return Err(BackendError::Unsupported {
                kernel: "object".into(),
                message: format!("the library name {library:?} is not a C identifier"),
            });
        }
        let isa = object_isa(opt_level)?;
        let features: Vec<&str> = isa
            .isa_flags()
            .iter()
            .filter(|flag| flag.as_bool() == Some(true) && flag.name.starts_with("has_"))
            .map(|flag| &flag.name["has_".len()..])
            .collect();
        let target = format!("{} with {}", isa.triple(), features.join(", "));
        let builder = ObjectBuilder::new(isa, library, cranelift_module::default_libcall_names())
            .map_err(cranelift_error("the object"))?;
        Ok(ObjectCompiler {
            target,
            module: ObjectModule::new(builder),
            library: library.to_string(),
            opt_level,
            values: BTreeMap::new(),
            written: BTreeMap::new(),
            data: BTreeMap::new(),
            entries: Vec::new(),
        })
    }

    /// Embeds the parameter `name` with these bytes (its elements, little endian),
    /// for every entry added after this that has the parameter: they read it from the
    /// object, and the caller does not pass it.
    pub fn embed(&mut self, name: &str, bytes: Vec<u8>) {
        self.values.insert(name.to_string(), bytes);
    }

    /// Adds the entry point `<library>_<entry>` running `program` (which must pass
    /// `Program::check` and have no parallel loops), and returns its interface.
    pub fn add_entry(
        &mut self,
        entry: &str,
        program: &Program,
    ) -> Result<EntryLayout, BackendError> {
        program.check()?;
        let unsupported = |message: String| BackendError::Unsupported {
            kernel: entry.to_string(),
            message,
        };
        if !is_c_identifier(entry) {
            return Err(unsupported(format!("{entry:?} is not a C identifier")));
        }
        if program.has_parallel_loops() {
            return Err(unsupported(
                "an object runs on the caller's thread: compile the program for one thread"
                    .to_string(),
            ));
        }
        let symbol = format!("{}_{entry}", self.library);
        if self.entries.contains(&symbol) {
            return Err(unsupported(format!("{symbol} is defined twice")));
        }
        self.entries.push(symbol.clone());
        let plan = arena::plan(program);
        let prefix = format!("{symbol}__");
        let options = CodegenOptions {
            symbol_prefix: prefix.clone(),
            disasm: false,
        };
        let kernels = codegen::define_program(&mut self.module, program, &options)?;
        let step = entry::define_entry(&mut self.module, program, &kernels, &plan, &prefix)?;

        // The argument block: inputs, parameters not embedded, outputs.
        let updated: Vec<&str> = program.updates.iter().map(|u| u.param.as_str()).collect();
        let mut args = Vec::new();
        let mut field = BTreeMap::new();
        for (name, id) in program.inputs() {
            field.insert(id, args.len());
            args.push(ArgSlot {
                name: name.to_string(),
                kind: ArgKind::Input,
                ty: program.buffer(id).ty.clone(),
                written: false,
            });
        }
        let mut embedded = BTreeMap::new();
        for (name, id) in program.params() {
            let ty = program.buffer(id).ty.clone();
            let written = updated.contains(&name);
            if let Some(bytes) = self.values.get(name) {
                if bytes.len() != ty.size_bytes() {
                    return Err(unsupported(format!(
                        "parameter {name:?} of type {ty} takes {} bytes, {} were given to embed",
                        ty.size_bytes(),
                        bytes.len()
                    )));
                }
                let data = self.embedded_data(name, written)?;
                embedded.insert(id, data);
                continue;
            }
            field.insert(id, args.len());
            args.push(ArgSlot {
                name: name.to_string(),
                kind: ArgKind::Param,
                ty,
                written,
            });
        }
        let outputs: Vec<(usize, BufferId, usize)> = program
            .outputs
            .iter()
            .map(|output| {
                args.push(ArgSlot {
                    name: output.name.clone(),
                    kind: ArgKind::Output,
                    ty: output.ty.clone(),
                    written: true,
                });
                (args.len() - 1, output.buffer, output.ty.size_bytes())
            })
            .collect();

        // The workspace: the arena, then one aligned copy per staged update.
        let round = |bytes: usize| bytes.div_ceil(ALIGNMENT).saturating_mul(ALIGNMENT);
        let mut workspace_bytes = round(plan.arena_bytes);
        let mut staging = Vec::new();
        for step in &plan.updates {
            if let UpdateStep::Staged { value, .. } = *step {
                staging.push(workspace_bytes);
                workspace_bytes =
                    workspace_bytes.saturating_add(round(program.buffer(value).size_bytes()));
            }
        }
        let mut slots = Vec::with_capacity(program.buffers.len() + 1 + staging.len());
        for (index, buffer) in program.buffers.iter().enumerate() {
            let id = BufferId(index);
            let owner = match plan.buffers[index].placement {
                Placement::InPlace { param } => param,
                _ => id,
            };
            slots.push(match (plan.buffers[index].placement, &buffer.storage) {
                (Placement::Arena { .. }, Storage::Input(_))
                | (Placement::Param, _)
                | (Placement::InPlace { .. }, _) => match embedded.get(&owner) {
                    Some(&data) => Slot::Data(data),
                    None => Slot::Arg(*field.get(&owner).ok_or_else(|| {
                        unsupported(format!(
                            "buffer {index} lives in buffer {} of the caller, which is no \
                             argument (a kiln bug in the memory plan)",
                            owner.0
                        ))
                    })?),
                },
                (Placement::Arena { offset }, _) => Slot::Workspace(offset),
            });
        }
        slots.push(Slot::Null);
        slots.extend(staging.into_iter().map(Slot::Workspace));
        let entry_layout = EntryLayout {
            symbol: symbol.clone(),
            args,
            workspace_bytes,
            embedded: program
                .params()
                .into_iter()
                .filter(|(_, id)| embedded.contains_key(id))
                .map(|(name, _)| name.to_string())
                .collect(),
        };
        self.define_wrapper(&symbol, step, &slots, &outputs, workspace_bytes)?;
        self.define_constant(&format!("{symbol}_workspace_bytes"), workspace_bytes as u64)?;
        Ok(entry_layout)
    }

    /// The data object of embedded parameter `name`, declared on first use; writable
    /// when an entry updates it. An entry that updates a parameter another entry
    /// already embedded read-only is refused (add the train step first).
    fn embedded_data(&mut self, name: &str, written: bool) -> Result<DataId, BackendError> {
        if let Some(&data) = self.data.get(name) {
            if written && !self.written.get(name).copied().unwrap_or(false) {
                return Err(BackendError::Unsupported {
                    kernel: "object".into(),
                    message: format!(
                        "parameter {name:?} was embedded read-only before an entry that \
                         updates it: add the updating entry first"
                    ),
                });
            }
            return Ok(data);
        }
        let bytes = self.values.get(name).cloned().unwrap_or_default();
        let symbol = format!("{}__param{}", self.library, self.data.len());
        let data = self
            .module
            .declare_data(&symbol, Linkage::Local, written, false)
            .map_err(cranelift_error(format!("parameter {name:?}")))?;
        let mut description = DataDescription::new();
        description.define(bytes.into_boxed_slice());
        description.set_align(ALIGNMENT as u64);
        self.module
            .define_data(data, &description)
            .map_err(cranelift_error(format!("parameter {name:?}")))?;
        self.data.insert(name.to_string(), data);
        self.written.insert(name.to_string(), written);
        Ok(data)
    }

    /// `int32_t symbol(void *const args[], void *workspace)`: checks the workspace's
    /// alignment, fills the step's table from `slots`, runs the step and copies the
    /// outputs `(field, buffer, bytes)` out.
    fn define_wrapper(
        &mut self,
        symbol: &str,
        step: FuncId,
        slots: &[Slot],
        outputs: &[(usize, BufferId, usize)],
        workspace_bytes: usize,
    ) -> Result<(), BackendError> {
        let module = &mut self.module;
        let pointer = module.target_config().pointer_type();
        let bytes = i64::from(pointer.bytes());
        let mut sig = module.make_signature();
        sig.params.push(AbiParam::new(pointer));
        sig.params.push(AbiParam::new(pointer));
        sig.returns.push(AbiParam::new(types::I32));
        let func = module
            .declare_function(symbol, Linkage::Export, &sig)
            .map_err(cranelift_error(symbol))?;
        let mut ctx = module.make_context();
        ctx.func.signature = sig;
        let step_ref = module.declare_func_in_func(step, &mut ctx.func);
        let data_refs: BTreeMap<DataId, _> = slots
            .iter()
            .filter_map(|slot| match slot {
                Slot::Data(data) => Some(*data),
                _ => None,
            })
            .map(|data| (data, module.declare_data_in_func(data, &mut ctx.func)))
            .collect();
        let config = module.target_config();
        let too_large = |what: &str| BackendError::Unsupported {
            kernel: symbol.to_string(),
            message: format!("{what} is too large for one function"),
        };
        let table_bytes = u32::try_from(slots.len() as i64 * bytes)
            .map_err(|_| too_large("the pointer table"))?;
        let mut builder_ctx = FunctionBuilderContext::new();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut builder_ctx);
            let entry = b.create_block();
            let run = b.create_block();
            let misaligned = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let (args, workspace) = (b.block_params(entry)[0], b.block_params(entry)[1]);
            if workspace_bytes > 0 {
                let low = b.ins().band_imm_u(workspace, (ALIGNMENT - 1) as i64);
                let zero = b.ins().iconst(pointer, 0);
                let null = b.ins().icmp(IntCC::Equal, workspace, zero);
                let unaligned = b.ins().icmp_imm_u(IntCC::NotEqual, low, 0);
                let bad = b.ins().bor(null, unaligned);
                b.ins().brif(bad, misaligned, &[], run, &[]);
            } else {
                b.ins().jump(run, &[]);
            }
            b.switch_to_block(misaligned);
            let one = b.ins().iconst(types::I32, 1);
            b.ins().return_(&[one]);

            b.switch_to_block(run);
            let table_slot = b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                table_bytes,
                3,
            ));
            let flags = MemFlagsData::trusted();
            let arg = |b: &mut FunctionBuilder, index: usize| -> Result<Value, BackendError> {
                let offset = i32::try_from(index as i64 * bytes)
                    .map_err(|_| too_large("the argument block"))?;
                Ok(b.ins().load(pointer, flags.with_readonly(), args, offset))
            };
            for (index, slot) in slots.iter().enumerate() {
                let value = match *slot {
                    Slot::Arg(field) => arg(&mut b, field)?,
                    Slot::Data(data) => b.ins().symbol_value(pointer, data_refs[&data]),
                    Slot::Workspace(offset) => b.ins().iadd_imm_u(workspace, offset as i64),
                    Slot::Null => b.ins().iconst(pointer, 0),
                };
                let at = i32::try_from(index as i64 * bytes)
                    .map_err(|_| too_large("the pointer table"))?;
                b.ins().stack_store(pointer, value, table_slot, at);
            }
            let table = b.ins().stack_addr(pointer, table_slot, 0);
            b.ins().call(step_ref, &[table]);
            for &(field, buffer, len) in outputs {
                if len == 0 {
                    continue;
                }
                let dest = arg(&mut b, field)?;
                let at = i32::try_from(buffer.0 as i64 * bytes)
                    .map_err(|_| too_large("the pointer table"))?;
                let src = b.ins().stack_load(pointer, pointer, table_slot, at);
                let size = b.ins().iconst(
                    types::I64,
                    i64::try_from(len).map_err(|_| too_large("an output"))?,
                );
                b.call_memcpy(config, dest, src, size);
            }
            let zero = b.ins().iconst(types::I32, 0);
            b.ins().return_(&[zero]);
            b.seal_all_blocks();
            b.finalize(config);
        }
        module
            .define_function(func, &mut ctx)
            .map_err(cranelift_error(symbol))
    }

    /// `uint64_t symbol(void)` returning `value`.
    fn define_constant(&mut self, symbol: &str, value: u64) -> Result<(), BackendError> {
        let module = &mut self.module;
        let mut sig = module.make_signature();
        sig.returns.push(AbiParam::new(types::I64));
        let func = module
            .declare_function(symbol, Linkage::Export, &sig)
            .map_err(cranelift_error(symbol))?;
        let mut ctx = module.make_context();
        ctx.func.signature = sig;
        let mut builder_ctx = FunctionBuilderContext::new();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut builder_ctx);
            let block = b.create_block();
            b.switch_to_block(block);
            let value = b.ins().iconst(types::I64, value as i64);
            b.ins().return_(&[value]);
            b.seal_all_blocks();
            b.finalize(module.target_config());
        }
        module
            .define_function(func, &mut ctx)
            .map_err(cranelift_error(symbol))
    }

    /// The target triple and the CPU features the code may use (`x86_64-unknown-linux-gnu
    /// with sse3, ssse3, ..., avx2, fma`): the object runs on CPUs that have them.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The optimisation level entries are compiled at.
    pub fn opt_level(&self) -> OptLevel {
        self.opt_level
    }

    /// Defines `<library>_abi_version` and returns the object file's bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, BackendError> {
        let symbol = format!("{}_abi_version", self.library);
        self.define_constant(&symbol, u64::from(ABI_VERSION))?;
        self.module
            .finish()
            .emit()
            .map_err(|err| BackendError::Cranelift {
                what: "the object file".to_string(),
                message: err.to_string(),
            })
    }
}

/// Where a table slot's pointer comes from.
#[derive(Clone, Copy, Debug)]
enum Slot {
    /// The argument block's pointer at this position.
    Arg(usize),
    /// An embedded parameter.
    Data(DataId),
    /// The workspace plus this many bytes.
    Workspace(usize),
    /// Null (the thread pool: none).
    Null,
}
