//! The whole step as one generated function: `step(table)` runs every kernel of the
//! program in launch order and then gives each updated parameter its new value, so
//! that code outside kiln (an object file, later) can run a step with nothing but
//! the pointer table; the runtime checks the arguments, fills the table and calls it.
//!
//! The table holds one pointer per buffer (`table[b]`), then the thread pool's
//! address (null: every parallel loop runs on the caller's thread), then one staging
//! buffer per staged update of the arena plan (`arena::UpdateStep::Staged`, in
//! order). Updates follow the plan: in-place updates need nothing; staged values are
//! copied aside first (they are parameters another update may overwrite), then every
//! copied value goes into its parameter, then the staged copies.
//!
//! ```text
//! step(table):  k0(table); k1(table); ...; memcpy(table[p], table[v], bytes) ...
//! ```

use super::codegen::KernelCode;
use crate::arena::{ArenaPlan, UpdateStep};
use crate::BackendError;
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use kiln_ir::kernel::Program;

/// The table slot of the first staging buffer (after the buffers and the pool).
pub fn staging_slot(program: &Program) -> usize {
    program.buffers.len() + 1
}

/// Defines `<prefix>step`, which calls `kernels` in order and applies `plan`'s
/// updates.
pub fn define_entry<M: Module>(
    module: &mut M,
    program: &Program,
    kernels: &[KernelCode],
    plan: &ArenaPlan,
    prefix: &str,
) -> Result<FuncId, BackendError> {
    let name = format!("{prefix}step");
    let cranelift_error = |err: cranelift_module::ModuleError| BackendError::Cranelift {
        what: "the step function".to_string(),
        message: err.to_string(),
    };
    let pointer = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(pointer));
    let func = module
        .declare_function(&name, Linkage::Local, &sig)
        .map_err(cranelift_error)?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    let refs: Vec<_> = kernels
        .iter()
        .map(|kernel| module.declare_func_in_func(kernel.func, &mut ctx.func))
        .collect();
    let config = module.target_config();
    let mut builder_ctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut builder_ctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let table = b.block_params(entry)[0];
        for kernel in refs {
            b.ins().call(kernel, &[table]);
        }
        let slot = |b: &mut FunctionBuilder, index: usize| -> Result<Value, BackendError> {
            let offset = i32::try_from(index * pointer.bytes() as usize).map_err(|_| {
                BackendError::Unsupported {
                    kernel: "step".into(),
                    message: format!("table slot {index} is too far"),
                }
            })?;
            let flags = MemFlagsData::trusted().with_readonly();
            Ok(b.ins().load(pointer, flags, table, offset))
        };
        let bytes = |value: kiln_ir::kernel::BufferId| program.buffer(value).size_bytes();
        let copy = |b: &mut FunctionBuilder,
                    to: usize,
                    from: usize,
                    len: usize|
         -> Result<(), BackendError> {
            if len == 0 {
                return Ok(());
            }
            let (dest, src) = (slot(b, to)?, slot(b, from)?);
            let size = b.ins().iconst(
                types::I64,
                i64::try_from(len).expect("buffer sizes are checked"),
            );
            b.call_memcpy(config, dest, src, size);
            Ok(())
        };
        let staged: Vec<(usize, usize, usize)> = plan
            .updates
            .iter()
            .filter_map(|step| match *step {
                UpdateStep::Staged { param, value } => Some((param.0, value.0, bytes(value))),
                _ => None,
            })
            .collect();
        let first = staging_slot(program);
        for (i, &(_, value, len)) in staged.iter().enumerate() {
            copy(&mut b, first + i, value, len)?;
        }
        for step in &plan.updates {
            if let UpdateStep::Copy { param, value } = *step {
                copy(&mut b, param.0, value.0, bytes(value))?;
            }
        }
        for (i, &(param, _, len)) in staged.iter().enumerate() {
            copy(&mut b, param, first + i, len)?;
        }
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(config);
    }
    module
        .define_function(func, &mut ctx)
        .map_err(cranelift_error)?;
    Ok(func)
}
