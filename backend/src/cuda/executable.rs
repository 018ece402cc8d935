//! [`CudaExecutable`]: a kernel program's PTX module loaded on a GPU, with one device
//! allocation per buffer of the program, run through the [`Runtime`] trait with the
//! CPU executable's argument checks.
//!
//! Memory follows the CPU's plan ([`crate::arena::plan`]): every parameter gets its
//! own zeroed allocation, kept across runs, and the inputs and temporaries share one
//! arena allocation at the plan's offsets (64-byte aligned, so vector accesses stay
//! aligned), buffers that are never live at the same time sharing bytes; the PTX
//! entries take one address per buffer, so a buffer's address is its allocation's
//! plus its offset. Inputs are copied in before each run. An update whose value the
//! plan places in its parameter's storage is written there by the kernels; the others
//! copy their value into the parameter after the kernels, in the plan's order
//! ([`crate::arena::UpdateStep`]): a value that is itself a parameter is staged first,
//! so swaps come out right.
//!
//! Reading a parameter or an output copies it to the host once and keeps the copy
//! until the next run or `set_param`: `param` and `output_f32` hand out slices, as on
//! the CPU, and a run whose outputs nobody reads copies nothing back.
//!
//! Safety rests on `Program::check` (every access of every kernel stays inside its
//! buffer's declared length), on each buffer's place having that length inside its
//! allocation (checked when the executable is made), and on the PTX
//! module's entries taking exactly the buffers they name, which `new` checks against
//! the program.

use super::driver::{CudaDevice, DeviceWords, Function, Module};
use super::CudaError;
use crate::arena::{self, Placement, UpdateStep};
use crate::ptx::PtxModule;
use crate::runtime::{Arg, CompileStats, RuntimeError};
use crate::signature::{as_f32, to_tensor, Binding, Runtime, Signature};
use crate::BackendError;
use kiln_ir::alloc::try_vec;
use kiln_ir::kernel::{BufferId, Program, Storage};
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

/// Where a buffer's words are: allocation `allocation` of the executable, from word
/// `offset`, `len` words.
#[derive(Clone, Copy, Debug)]
struct Place {
    allocation: usize,
    offset: usize,
    len: usize,
}

/// The arena's allocation; the parameters' follow it.
const ARENA: usize = 0;

/// The allocations of `program`'s buffers on `device` under `plan`, and every
/// buffer's place in them.
fn place_buffers(
    program: &Program,
    plan: &arena::ArenaPlan,
    device: &Arc<CudaDevice>,
) -> Result<(Vec<DeviceWords>, Vec<Place>), CudaError> {
    let mut allocations = vec![DeviceWords::zeroed(device, plan.arena_bytes / 4)?];
    let mut places: Vec<Option<Place>> = vec![None; program.buffers.len()];
    // Parameters first: an in-place update's value is placed in its parameter.
    for (index, (buffer, planned)) in program.buffers.iter().zip(&plan.buffers).enumerate() {
        if planned.placement == Placement::Param {
            allocations.push(DeviceWords::zeroed(device, buffer.len())?);
            places[index] = Some(Place {
                allocation: allocations.len() - 1,
                offset: 0,
                len: buffer.len(),
            });
        }
    }
    for (index, (buffer, planned)) in program.buffers.iter().zip(&plan.buffers).enumerate() {
        let len = buffer.len();
        places[index] = match planned.placement {
            Placement::Param => places[index],
            Placement::InPlace { param } => places[param.0].map(|place| Place { len, ..place }),
            Placement::Arena { offset } => Some(Place {
                allocation: ARENA,
                offset: offset / 4,
                len,
            }),
        };
    }
    let places = places
        .into_iter()
        .enumerate()
        .map(|(index, place)| {
            let place = place
                .ok_or_else(|| CudaError::Placement(format!("buffer b{index} has no place")))?;
            // Kernels address the buffer through its first word; it must fit.
            let room = allocations[place.allocation].len();
            if place
                .offset
                .checked_add(place.len)
                .is_none_or(|end| end > room)
            {
                return Err(CudaError::Placement(format!(
                    "buffer b{index} at words {}..+{} of an allocation of {room}",
                    place.offset, place.len
                )));
            }
            Ok(place)
        })
        .collect::<Result<Vec<Place>, CudaError>>()?;
    Ok((allocations, places))
}

/// A program loaded on a GPU; parameters persist across runs. Use it through the
/// [`Runtime`] trait (`run`, `set_param`, `output_f32`, ...).
pub struct CudaExecutable {
    // Fields drop in order: the functions before their module, the module and the
    // memory before the device's context.
    launches: Vec<Launch>,
    /// Held so that the functions stay loaded.
    _module: Module,
    /// The arena, then one allocation per parameter.
    allocations: Vec<DeviceWords>,
    /// Every buffer's place, by `BufferId`.
    places: Vec<Place>,
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
        let plan = arena::plan(program);
        let (allocations, places) = place_buffers(program, &plan, device)?;
        let address = |buffer: usize| {
            let place = places[buffer];
            allocations[place.allocation].address() + (place.offset as u64) * 4
        };
        for entry in &module.entries {
            launches.push(Launch {
                function: loaded.function(&entry.name, entry.shared_bytes)?,
                grid: entry.grid,
                block: entry.block,
                shared_bytes: entry.shared_bytes,
                addresses: entry.buffers.iter().map(|b| address(b.0)).collect(),
            });
        }
        let codegen_time = start.elapsed();
        let update_steps = plan.updates.clone();
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
        let stats = CompileStats {
            kernels: program.kernels.len(),
            buffers: program.buffers.len(),
            buffer_bytes: bytes(true).saturating_add(bytes(false)),
            param_bytes: bytes(true),
            arena_bytes: plan.arena_bytes,
            arena_unplanned_bytes: plan.unplanned_bytes,
            in_place_updates: plan.in_place_updates(),
            code_bytes: module.text.len(),
            codegen_time,
        };
        Ok(CudaExecutable {
            launches,
            _module: loaded,
            host: (0..places.len()).map(|_| OnceCell::new()).collect(),
            allocations,
            places,
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
        let place = self.places[index];
        let words = self.allocations[place.allocation].download(place.offset, place.len)?;
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
            self.upload(binding.buffer.0, &words)?;
        }
        self.device.bind()?;
        for launch in &self.launches {
            // SAFETY: the module is loaded (`self.module` outlives the functions) and
            // its context current; `new` checked that every entry's buffers are the
            // program's and that each address starts the buffer's declared length
            // inside its allocation, and `Program::check` keeps every access inside it.
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
                let from = self.places[value.0];
                let source = &self.allocations[from.allocation];
                self.staging[next].copy_from(0, source, from.offset, from.len)?;
                next += 1;
            }
        }
        let mut next = 0;
        for step in &self.update_steps {
            let to = |param: BufferId| self.places[param.0];
            match *step {
                // The kernels wrote the value into the parameter's storage.
                UpdateStep::InPlace { .. } => {}
                UpdateStep::Copy { param, value } => {
                    let (to, from) = (to(param), self.places[value.0]);
                    self.allocations[to.allocation].copy_from(
                        to.offset,
                        &self.allocations[from.allocation],
                        from.offset,
                        from.len,
                    )?;
                }
                UpdateStep::Staged { param, .. } => {
                    let to = to(param);
                    let staged = &self.staging[next];
                    self.allocations[to.allocation].copy_from(
                        to.offset,
                        staged,
                        0,
                        staged.len(),
                    )?;
                    next += 1;
                }
            }
        }
        self.device.synchronize()?;
        Ok(())
    }

    /// Copies `words` (the buffer's length) into buffer `index`.
    fn upload(&self, index: usize, words: &[u32]) -> Result<(), CudaError> {
        let place = self.places[index];
        if words.len() != place.len {
            return Err(CudaError::Placement(format!(
                "{} words for buffer b{index} of {}",
                words.len(),
                place.len
            )));
        }
        self.allocations[place.allocation].upload(place.offset, words)
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
        self.upload(index, &words)?;
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
        self.allocations
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
