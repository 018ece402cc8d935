//! JIT compilation for the host: a `cranelift_jit::JITModule`, one function per
//! kernel, and the finalized function pointers. Generated code calls nothing.

use super::codegen::{self, CodegenOptions, KernelCode};
use super::{entry, host_isa, CompileOptions};
use crate::arena::ArenaPlan;
use crate::BackendError;
use cranelift_jit::{JITBuilder, JITModule};
use kiln_ir::kernel::Program;

/// A compiled kernel: `table[b]` is the base address of buffer `b`.
pub type KernelFn = unsafe extern "C" fn(table: *const *mut u8);

/// Executable code for every kernel of a program. The code lives as long as this
/// value; the function pointers must not be called after it is dropped.
pub struct JitCode {
    /// Owns the executable memory; `None` only while dropping.
    module: Option<JITModule>,
    /// The whole step: every kernel in order, then the parameter updates.
    pub step: KernelFn,
    pub kernels: Vec<KernelCode>,
}

// The module is only touched when it is created and when it is freed, both through
// an owned or exclusive reference, and the code it holds is immutable once
// finalized, so moving it to another thread is sound.
unsafe impl Send for JitCode {}

impl JitCode {
    /// JIT-compiles every kernel of `program` (which must pass `Program::check`).
    pub fn new(
        program: &Program,
        plan: &ArenaPlan,
        options: &CompileOptions,
    ) -> Result<JitCode, BackendError> {
        let isa = host_isa(options.opt_level)?;
        let mut builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
        for (name, address) in crate::pool::symbols() {
            builder.symbol(name, address);
        }
        let mut module = JITModule::new(builder);
        let codegen_options = CodegenOptions {
            symbol_prefix: "kiln_".to_string(),
            disasm: options.disasm,
        };
        let defined =
            codegen::define_program(&mut module, program, &codegen_options).and_then(|kernels| {
                let step = entry::define_entry(&mut module, program, &kernels, plan, "kiln_")?;
                Ok((kernels, step))
            });
        let (kernels, step) = match defined {
            Ok(defined) => defined,
            Err(err) => {
                // SAFETY: no function of this module was handed out.
                unsafe { module.free_memory() };
                return Err(err);
            }
        };
        if let Err(err) = module.finalize_definitions() {
            // SAFETY: no function of this module was handed out.
            unsafe { module.free_memory() };
            return Err(BackendError::Cranelift {
                what: "the jit module".to_string(),
                message: err.to_string(),
            });
        }
        let address = module.get_finalized_function(step);
        // SAFETY: `entry` defined this function with the signature
        // `fn(*const *mut u8)` in the host's default (C) calling convention.
        let step = unsafe { std::mem::transmute::<*const u8, KernelFn>(address) };
        Ok(JitCode {
            module: Some(module),
            step,
            kernels,
        })
    }
}

impl Drop for JitCode {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the function pointers are dropped with `self` and the runtime
            // never calls them after dropping it.
            unsafe { module.free_memory() };
        }
    }
}
