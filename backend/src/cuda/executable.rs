//! [`CudaExecutable`]: a kernel program's PTX module loaded on a GPU, with one device
//! allocation per buffer of the program, run through the [`Runtime`] trait with the
//! CPU executable's argument checks.
//!
//! Memory: every buffer gets its own zeroed allocation when the executable is made
//! (parameters keep their values across runs; inputs are copied in before each run;
//! temporaries are written by the kernels). There is no arena: the PTX entries take
//! one address per buffer, and a GPU has the memory for a model's intermediates.
//! An update copies its value buffer into the parameter on the device after the
//! kernels, in the order the CPU's update plan gives ([`crate::arena::UpdateStep`]):
//! a value that is itself a parameter is staged first, so swaps come out right.
//!
//! Reading a parameter or an output copies it to the host once and keeps the copy
//! until the next run or `set_param`: `param` and `output_f32` hand out slices, as on
//! the CPU, and a run whose outputs nobody reads copies nothing back.
//!
//! Safety rests on `Program::check` (every access of every kernel stays inside its
//! buffer's declared length), on each allocation having that length, and on the PTX
//! module's entries taking exactly the buffers they name, which `new` checks against
//! the program.

use super::driver::{CudaDevice, DeviceWords, Function, Module};
use super::CudaError;
use crate::arena::{self, UpdateStep};
use crate::ptx::PtxModule;
use crate::runtime::{Arg, CompileStats, RuntimeError};
use crate::signature::{as_f32, to_tensor, Binding, Runtime, Signature};
use crate::BackendError;
use kiln_ir::alloc::try_vec;
use kiln_ir::kernel::{Program, Storage};
use kiln_ir::Tensor;
use std::cell::OnceCell;
use std::sync::Arc;
use std::time::Instant;

/// One kernel's launch: its function and the addresses of its buffers.
struct Launch {
    function: Function,
    grid: [u32; 3],
    block: u32,
    shared_bytes: u32,
    addresses: Vec<u64>,
}

/// A program loaded on a GPU; parameters persist across runs. Use it through the
/// [`Runtime`] trait (`run`, `set_param`, `output_f32`, ...).
pub struct CudaExecutable {
    // Fields drop in order: the functions before their module, the module and the
    // memory before the device's context.
    launches: Vec<Launch>,
    /// Held so that the functions stay loaded.
    _module: Module,
    /// One allocation per program buffer, by `BufferId`.
    buffers: Vec<DeviceWords>,
    /// One copy per `UpdateStep::Staged`, in step order.
    staging: Vec<DeviceWords>,
    update_steps: Vec<UpdateStep>,
    /// Host copies of buffers read since they last changed, by `BufferId`.
    host: Vec<OnceCell<Vec<u32>>>,
    /// Which buffers are parameters (they have values before the first run).
    param_buffers: Vec<bool>,
    ran: bool,
    signature: Signature,
    kernel_names: Vec<String>,
    stats: CompileStats,
    device: Arc<CudaDevice>,
}

impl std::fmt::Debug for CudaExecutable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaExecutable")
            .field("device", &self.device.name())
            .field("inputs", &self.inputs())
            .field("params", &self.params())
            .field("outputs", &self.outputs())
            .field("kernels", &self.kernel_names)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Checks that `module` was written for `program` and can run on `device`.
fn check_module(
    program: &Program,
    module: &PtxModule,
    device: &CudaDevice,
) -> Result<(), CudaError> {
    let (major, minor) = device.compute_capability();
    if module.target.sm > major * 10 + minor {
        return Err(CudaError::Module(format!(
            "it is written for {}, and {} is sm_{major}{minor}",
            module.target.arch(),
            device.name()
        )));
    }
    if module.entries.len() != program.kernels.len() {
        return Err(CudaError::Module(format!(
            "{} entries for the {} kernels of program {:?}",
            module.entries.len(),
            program.kernels.len(),
            program.name
        )));
    }
    for entry in &module.entries {
        if entry.kernel >= program.kernels.len() {
            return Err(CudaError::Module(format!(
                "entry {} is for kernel {}, and the program has {}",
                entry.name,
                entry.kernel,
                program.kernels.len()
            )));
        }
        if let Some(buffer) = entry.buffers.iter().find(|b| b.0 >= program.buffers.len()) {
            return Err(CudaError::Module(format!(
                "entry {} takes buffer {}, and the program has {}",
                entry.name,
                buffer.0,
                program.buffers.len()
            )));
        }
        if entry.block == 0 || entry.grid.contains(&0) {
            return Err(CudaError::Module(format!(
                "entry {} launches {:?} blocks of {} threads; each must be at least 1",
                entry.name, entry.grid, entry.block
            )));
        }
    }
    Ok(())
}

impl CudaExecutable {
    /// Checks `program`, loads `module` (its PTX, which must be written for it) on
    /// `device` and allocates every buffer, zeroed.
    pub fn new(
        program: &Program,
        module: &PtxModule,
        device: &Arc<CudaDevice>,
    ) -> Result<CudaExecutable, BackendError> {
        program.check()?;
        check_module(program, module, device)?;
        let start = Instant::now();
        let loaded = Module::load(device, &module.text)?;
        let mut launches = Vec::with_capacity(module.entries.len());
        let mut buffers = Vec::with_capacity(program.buffers.len());
        for buffer in &program.buffers {
            buffers.push(DeviceWords::zeroed(device, buffer.len())?);
        }
        for entry in &module.entries {
            launches.push(Launch {
                function: loaded.function(&entry.name, entry.shared_bytes)?,
                grid: entry.grid,
                block: entry.block,
                shared_bytes: entry.shared_bytes,
                addresses: entry
                    .buffers
                    .iter()
                    .map(|b| buffers[b.0].address())
                    .collect(),
            });
        }
        let codegen_time = start.elapsed();
        // The CPU's update plan orders the copies; an in-place step is a copy here,
        // since every buffer has its own allocation.
        let update_steps = arena::plan(program).updates;
        let mut staging = Vec::new();
        for step in &update_steps {
            if let UpdateStep::Staged { value, .. } = *step {
                staging.push(DeviceWords::zeroed(device, program.buffer(value).len())?);
            }
        }
        let param_buffers: Vec<bool> = program
            .buffers
            .iter()
            .map(|buffer| matches!(buffer.storage, Storage::Param(_)))
            .collect();
        let bytes = |wanted: bool| {
            program
                .buffers
                .iter()
                .zip(&param_buffers)
                .filter(|(_, &param)| param == wanted)
                .map(|(buffer, _)| buffer.ty.size_bytes())
                .fold(0, usize::saturating_add)
        };
        let run_bytes = bytes(false);
        let stats = CompileStats {
            kernels: program.kernels.len(),
            buffers: program.buffers.len(),
            buffer_bytes: bytes(true).saturating_add(run_bytes),
            param_bytes: bytes(true),
            arena_bytes: run_bytes,
            arena_unplanned_bytes: run_bytes,
            in_place_updates: 0,
            code_bytes: module.text.len(),
            codegen_time,
        };
        Ok(CudaExecutable {
            launches,
            _module: loaded,
            host: (0..buffers.len()).map(|_| OnceCell::new()).collect(),
            buffers,
            staging,
            update_steps,
            param_buffers,
            ran: false,
            signature: Signature::of(program),
            kernel_names: program.kernels.iter().map(|k| k.name.clone()).collect(),
            stats,
            device: Arc::clone(device),
        })
    }

    /// The GPU it runs on.
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.device
    }

    /// The words of buffer `index`, copied to the host on the first read since it
    /// last changed.
    fn words(&self, index: usize) -> Result<&[u32], CudaError> {
        let cell = &self.host[index];
        if let Some(words) = cell.get() {
            return Ok(words);
        }
        let words = self.buffers[index].download()?;
        Ok(cell.get_or_init(|| words))
    }

    /// The words of an output's buffer, which has a value from the first run on (an
    /// output that shows a parameter has one from the start).
    fn output_words(&self, binding: &Binding) -> Result<&[u32], RuntimeError> {
        let index = binding.buffer.0;
        if !self.ran && !self.param_buffers[index] {
            return Err(RuntimeError::NotRun {
                name: binding.name.clone(),
            });
        }
        Ok(self.words(index)?)
    }

    /// Copies the inputs in, launches every kernel in order, applies the updates and
    /// waits for the device.
    fn launch(&mut self, args: &[Arg<'_>]) -> Result<(), RuntimeError> {
        for (arg, binding) in args.iter().zip(&self.signature.inputs) {
            let mut words = try_vec(0u32, arg.len(), || {
                format!("a host copy of input {:?}", binding.name)
            })?;
            arg.write_to(&mut words);
            self.buffers[binding.buffer.0].upload(&words)?;
        }
        self.device.bind()?;
        for launch in &self.launches {
            // SAFETY: the module is loaded (`self.module` outlives the functions) and
            // its context current; `new` checked that every entry's buffers are the
            // program's, each address is its buffer's allocation of the declared
            // length, and `Program::check` keeps every access inside it.
            unsafe {
                launch.function.launch(
                    launch.grid,
                    launch.block,
                    launch.shared_bytes,
                    &launch.addresses,
                )?;
            }
        }
        // Staged values are copied aside before any parameter changes (a value may
        // be a parameter that another update replaces), then every update in order.
        let mut next = 0;
        for step in &self.update_steps {
            if let UpdateStep::Staged { value, .. } = *step {
                self.staging[next].copy_from(&self.buffers[value.0])?;
                next += 1;
            }
        }
        let mut next = 0;
        for step in &self.update_steps {
            match *step {
                UpdateStep::InPlace { param, value } | UpdateStep::Copy { param, value } => {
                    self.buffers[param.0].copy_from(&self.buffers[value.0])?;
                }
                UpdateStep::Staged { param, .. } => {
                    self.buffers[param.0].copy_from(&self.staging[next])?;
                    next += 1;
                }
            }
        }
        self.device.synchronize()?;
        Ok(())
    }
}

impl Runtime for CudaExecutable {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn set_param_arg(&mut self, name: &str, data: Arg<'_>) -> Result<(), RuntimeError> {
        let binding = self.signature.param_for(name, &data)?;
        let index = binding.buffer.0;
        let mut words = try_vec(0u32, data.len(), || {
            format!("a host copy of parameter {name:?}")
        })?;
        data.write_to(&mut words);
        self.buffers[index].upload(&words)?;
        // The host copy is what was just uploaded.
        self.host[index] = OnceCell::from(words);
        Ok(())
    }

    fn param(&self, name: &str) -> Result<&[f32], RuntimeError> {
        let binding = self.signature.f32_param(name)?;
        Ok(as_f32(self.words(binding.buffer.0)?))
    }

    fn param_tensor(&self, name: &str) -> Result<Tensor, RuntimeError> {
        let binding = self.signature.param(name)?;
        Ok(to_tensor(self.words(binding.buffer.0)?, &binding.ty)?)
    }

    fn output_f32(&self, name: &str) -> Result<&[f32], RuntimeError> {
        let binding = self.signature.f32_output(name)?;
        Ok(as_f32(self.output_words(binding)?))
    }

    fn output(&self, name: &str) -> Result<Tensor, RuntimeError> {
        let binding = self.signature.output(name)?;
        Ok(to_tensor(self.output_words(binding)?, &binding.ty)?)
    }

    fn run(&mut self, inputs: &[(&str, Arg<'_>)]) -> Result<(), RuntimeError> {
        let args = self.signature.match_inputs(inputs)?;
        // Every buffer may change from here on, even if the run fails part way.
        for cell in &mut self.host {
            cell.take();
        }
        self.launch(&args)?;
        self.ran = true;
        Ok(())
    }

    fn stats(&self) -> &CompileStats {
        &self.stats
    }

    fn kernel_names(&self) -> &[String] {
        &self.kernel_names
    }

    fn allocated_bytes(&self) -> usize {
        self.buffers
            .iter()
            .chain(&self.staging)
            .map(|words| words.len().saturating_mul(4))
            .fold(0, usize::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_executable_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<CudaExecutable>();
    }
}
