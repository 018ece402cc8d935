//! The runtime: an [`Executable`] owns a program's memory and compiled kernels,
//! checks the caller's arguments, launches the kernels in order and applies
//! parameter updates.
//!
//! Memory follows the [`crate::arena`] plan: each parameter has its own allocation
//! (zeroed when the executable is made, since it is state the caller sets and reads
//! across runs); every input and scratch buffer is a range of one arena, allocated on
//! the first `run`, so compiling a program with large intermediates costs no memory
//! for them until it runs. An update's value buffer is either the parameter's own
//! storage (written in place by the kernels) or copied into it after the run.
//! Everything is allocated with `try_reserve_exact`: memory that cannot be had is an
//! `OutOfMemory` error (from `compile` or the first `run`), not an abort.
//!
//! Safety rests on three facts: `Program::check` proved at compile time that every
//! access of every kernel stays inside its buffer, given each buffer's declared
//! length; every parameter allocation has exactly that length and is never resized,
//! and every arena range lies inside the arena (arguments and parameter values are
//! length-checked before they are copied in, updates copy between buffers of equal
//! length); and the plan gives buffers that one kernel uses disjoint memory, except a
//! value written in place, which the plan admits only where its writer reads each
//! parameter element just before overwriting it. So nothing a caller passes can make
//! generated code touch memory outside the buffers.

use crate::arena::{self, Placement, UpdateStep, ALIGNMENT};
use crate::cpu::jit::JitCode;
use crate::cpu::CompileOptions;
use crate::cuda::CudaError;
use crate::pool::ThreadPool;
use crate::signature::{as_f32, to_tensor, Binding, RunResults, Runtime, Signature};
use crate::BackendError;
use kiln_ir::alloc::{try_vec, OutOfMemory};
use kiln_ir::kernel::{BufferId, Program, Storage};
use kiln_ir::{DType, Feeds, Tensor, TensorType};
use std::time::{Duration, Instant};
use thiserror::Error;

/// One argument's data. Bool data is stored as 0/1 words.
#[derive(Clone, Copy, Debug)]
pub enum Arg<'a> {
    F32(&'a [f32]),
    I32(&'a [i32]),
    Bool(&'a [bool]),
}

impl Arg<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            Arg::F32(_) => DType::F32,
            Arg::I32(_) => DType::I32,
            Arg::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Arg::F32(data) => data.len(),
            Arg::I32(data) => data.len(),
            Arg::Bool(data) => data.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the data as 32-bit words; the lengths were checked to be equal.
    pub(crate) fn write_to(&self, words: &mut [u32]) {
        match self {
            Arg::F32(data) => {
                for (word, value) in words.iter_mut().zip(data.iter()) {
                    *word = value.to_bits();
                }
            }
            Arg::I32(data) => {
                for (word, value) in words.iter_mut().zip(data.iter()) {
                    *word = *value as u32;
                }
            }
            Arg::Bool(data) => {
                for (word, value) in words.iter_mut().zip(data.iter()) {
                    *word = u32::from(*value);
                }
            }
        }
    }
}

/// A mistake in how the caller used an executable, or memory that could not be had
/// (nothing ran when one of these is returned); or, on a GPU, a failed driver call.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RuntimeError {
    /// An argument names no input of the program.
    #[error("unknown input {name:?} (the inputs are: {known})")]
    UnknownInput { name: String, known: String },
    /// The same input was passed twice.
    #[error("input {name:?} is given twice")]
    DuplicateInput { name: String },
    /// An input was not passed.
    #[error("input {name:?} of type {ty} is not given")]
    MissingInput { name: String, ty: TensorType },
    /// Data of another dtype than the input or parameter has.
    #[error("{kind} {name:?} expects {expected}, given {found} data")]
    WrongDtype {
        kind: &'static str,
        name: String,
        expected: TensorType,
        found: DType,
    },
    /// Data with another element count than the input or parameter has.
    #[error("{kind} {name:?} expects {expected} ({} elements), given {found} elements", .expected.num_elements())]
    WrongLength {
        kind: &'static str,
        name: String,
        expected: TensorType,
        found: usize,
    },
    /// A fed tensor whose type differs from the input or parameter.
    #[error("{kind} {name:?} expects {expected}, given {found}")]
    WrongType {
        kind: &'static str,
        name: String,
        expected: TensorType,
        found: TensorType,
    },
    /// A name that is no parameter of the program.
    #[error("unknown parameter {name:?} (the parameters are: {known})")]
    UnknownParam { name: String, known: String },
    /// A name that is no output of the program.
    #[error("unknown output {name:?} (the outputs are: {known})")]
    UnknownOutput { name: String, known: String },
    /// A feed that is neither an input nor a parameter.
    #[error("feed {name:?} is neither an input nor a parameter")]
    UnknownFeed { name: String },
    /// A value read as f32 that has another dtype.
    #[error("{kind} {name:?} is {ty}, not f32")]
    NotF32 {
        kind: &'static str,
        name: String,
        ty: TensorType,
    },
    /// An output read before the first run: its buffer does not exist yet (the
    /// caller's mistake).
    #[error("output {name:?} has no value before the first run")]
    NotRun { name: String },
    /// The run-time buffers (allocated on the first run) or a copy of a value could
    /// not be had: the environment's limit, not the caller's mistake or a kiln bug.
    #[error(transparent)]
    OutOfMemory(#[from] OutOfMemory),
    /// A GPU executable's driver call failed during a run (see `CudaError` for whose
    /// mistake); what ran before it may have changed parameters.
    #[error(transparent)]
    Cuda(#[from] CudaError),
}

/// What compilation produced and what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileStats {
    pub kernels: usize,
    pub buffers: usize,
    /// Bytes of all buffers together, as if each had an allocation of its own.
    pub buffer_bytes: usize,
    /// Bytes of the parameters' allocations (held from compilation on).
    pub param_bytes: usize,
    /// Bytes of the arena that holds every input and scratch buffer (held from the
    /// first run on), as planned by [`crate::arena::plan`].
    pub arena_bytes: usize,
    /// What the input and scratch buffers would take without reuse (one aligned
    /// allocation each), to show what the arena plan saved.
    pub arena_unplanned_bytes: usize,
    /// Parameter updates that kernels write in place, with no copy after the run.
    pub in_place_updates: usize,
    /// Bytes of machine code of all kernels together.
    pub code_bytes: usize,
    /// Wall time of code generation and JIT linking.
    pub codegen_time: Duration,
}

/// One block of the arena: allocating the arena in blocks makes its base, and so
/// every buffer's start (a multiple of `ALIGNMENT` bytes), `ALIGNMENT`-aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct ArenaBlock([u8; ALIGNMENT]);

const _: () = assert!(std::mem::align_of::<ArenaBlock>() == ALIGNMENT);

/// A compiled program with its buffers: parameters persist across runs.
pub struct Executable {
    code: JitCode,
    /// Each parameter's 32-bit words, allocated with its exact length when the
    /// executable is made; empty for the other buffers, which are in `arena`.
    buffers: Vec<Vec<u32>>,
    /// The program's buffer types, for the arena ranges and staging copies.
    buffer_types: Vec<TensorType>,
    /// Where each buffer is, by `BufferId`.
    placements: Vec<Placement>,
    /// The inputs and scratch buffers, `stats.arena_bytes` long from the first run on
    /// (empty until then, and `run_buffers_ready` is false).
    arena: Vec<ArenaBlock>,
    /// Whether `arena` and `staging` have been allocated.
    run_buffers_ready: bool,
    /// One copy per `UpdateStep::Staged`, in step order, allocated with the run-time
    /// buffers so that applying updates never allocates.
    staging: Vec<Vec<u32>>,
    /// The inputs, parameters and outputs, which check every argument.
    signature: Signature,
    update_steps: Vec<UpdateStep>,
    kernel_names: Vec<String>,
    stats: CompileStats,
    /// The threads parallel loops run on (created with the executable, so a run never
    /// spawns one); `None` when the program has no parallel loop or one thread.
    pool: Option<ThreadPool>,
}

impl std::fmt::Debug for Executable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executable")
            .field("inputs", &self.inputs())
            .field("params", &self.params())
            .field("outputs", &self.outputs())
            .field("kernels", &self.kernel_names)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// A zeroed buffer for `ty`, or an error naming `what`.
fn allocate(ty: &TensorType, what: impl FnOnce() -> String) -> Result<Vec<u32>, OutOfMemory> {
    try_vec(0u32, ty.num_elements(), what)
}

/// The arena's bytes as 32-bit words (the runtime's view of every element today).
fn arena_words(arena: &[ArenaBlock]) -> &[u32] {
    let len = arena.len() * (ALIGNMENT / std::mem::size_of::<u32>());
    // SAFETY: the blocks are contiguous initialised bytes, aligned beyond u32, and
    // every bit pattern is a valid u32.
    unsafe { std::slice::from_raw_parts(arena.as_ptr().cast::<u32>(), len) }
}

fn arena_words_mut(arena: &mut [ArenaBlock]) -> &mut [u32] {
    let len = arena.len() * (ALIGNMENT / std::mem::size_of::<u32>());
    // SAFETY: as in `arena_words`, with the exclusive borrow of the blocks.
    unsafe { std::slice::from_raw_parts_mut(arena.as_mut_ptr().cast::<u32>(), len) }
}

/// The word range of an arena buffer of `len` elements at byte `offset`.
fn arena_range(offset: usize, len: usize) -> std::ops::Range<usize> {
    let start = offset / std::mem::size_of::<u32>();
    start..start + len
}

impl Executable {
    /// Checks and JIT-compiles `program` and allocates its parameter buffers
    /// (zeroed); the other buffers wait for the first run (see the module docs).
    pub fn new(program: &Program, options: &CompileOptions) -> Result<Executable, BackendError> {
        program.check()?;
        let plan = arena::plan(program);
        let start = Instant::now();
        let code = JitCode::new(program, &plan, options)?;
        let codegen_time = start.elapsed();
        let parallel = program.has_parallel_loops();
        let pool = if parallel && options.threads > 1 {
            let pool = ThreadPool::new(options.threads)
                .map_err(|err| BackendError::Threads(err.to_string()))?;
            Some(pool)
        } else {
            None
        };
        let mut buffers: Vec<Vec<u32>> = Vec::new();
        for buffer in &program.buffers {
            buffers.push(match &buffer.storage {
                Storage::Param(name) => allocate(&buffer.ty, || format!("parameter {name:?}"))?,
                Storage::Input(_) | Storage::Temp => Vec::new(),
            });
        }
        let param_bytes = buffers
            .iter()
            .map(|words| words.len().saturating_mul(std::mem::size_of::<u32>()))
            .fold(0, usize::saturating_add);
        let stats = CompileStats {
            kernels: program.kernels.len(),
            buffers: program.buffers.len(),
            buffer_bytes: program
                .buffers
                .iter()
                .map(|b| b.ty.size_bytes())
                .fold(0, usize::saturating_add),
            param_bytes,
            arena_bytes: plan.arena_bytes,
            arena_unplanned_bytes: plan.unplanned_bytes,
            in_place_updates: plan.in_place_updates(),
            code_bytes: code.kernels.iter().map(|k| k.code_bytes).sum(),
            codegen_time,
        };
        let update_steps = plan.updates;
        Ok(Executable {
            code,
            buffers,
            buffer_types: program.buffers.iter().map(|b| b.ty.clone()).collect(),
            placements: plan.buffers.iter().map(|b| b.placement).collect(),
            arena: Vec::new(),
            run_buffers_ready: false,
            staging: Vec::new(),
            signature: Signature::of(program),
            update_steps,
            kernel_names: program.kernels.iter().map(|k| k.name.clone()).collect(),
            stats,
            pool,
        })
    }

    /// Threads the executable's parallel loops run on (1 when it has none).
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, ThreadPool::threads)
    }

    /// `(name, type)` of every input, in declaration order.
    pub fn inputs(&self) -> Vec<(String, TensorType)> {
        Runtime::inputs(self)
    }

    /// `(name, type)` of every parameter, in declaration order.
    pub fn params(&self) -> Vec<(String, TensorType)> {
        Runtime::params(self)
    }

    /// `(name, type)` of every output, in declaration order.
    pub fn outputs(&self) -> Vec<(String, TensorType)> {
        Runtime::outputs(self)
    }

    pub fn stats(&self) -> &CompileStats {
        &self.stats
    }

    /// Bytes of buffer memory held now: the parameters' after compilation, and the
    /// arena's and the update staging copies' from the first run on.
    pub fn allocated_bytes(&self) -> usize {
        let words = self
            .buffers
            .iter()
            .chain(&self.staging)
            .map(|words| words.len().saturating_mul(std::mem::size_of::<u32>()))
            .fold(0, usize::saturating_add);
        words.saturating_add(self.arena.len().saturating_mul(ALIGNMENT))
    }

    /// Allocates the arena and the staging copies, once, before the first run;
    /// nothing is kept if any allocation fails.
    fn allocate_run_buffers(&mut self) -> Result<(), OutOfMemory> {
        if self.run_buffers_ready {
            return Ok(());
        }
        let blocks = self.stats.arena_bytes.div_ceil(ALIGNMENT);
        let arena = try_vec(ArenaBlock([0; ALIGNMENT]), blocks, || {
            format!(
                "the arena of a run ({} buffers)",
                self.placements
                    .iter()
                    .filter(|p| matches!(p, Placement::Arena { .. }))
                    .count()
            )
        })?;
        let mut staging = Vec::new();
        for step in &self.update_steps {
            if let UpdateStep::Staged { value, .. } = *step {
                let ty = &self.buffer_types[value.0];
                staging.push(allocate(ty, || format!("a staged update ({ty})"))?);
            }
        }
        self.arena = arena;
        self.staging = staging;
        self.run_buffers_ready = true;
        Ok(())
    }

    /// Number of kernels launched per run.
    pub fn kernel_count(&self) -> usize {
        self.kernel_names.len()
    }

    /// Each kernel's name (the op it computes), in launch order.
    pub fn kernel_names(&self) -> &[String] {
        &self.kernel_names
    }

    /// The machine-code listing of kernel `kernel`, if compiled with
    /// `CompileOptions::disasm`.
    pub fn disassembly(&self, kernel: usize) -> Option<&str> {
        self.code.kernels.get(kernel)?.disasm.as_deref()
    }

    /// The Cranelift IR of kernel `kernel`, if compiled with `CompileOptions::disasm`.
    pub fn clif(&self, kernel: usize) -> Option<&str> {
        self.code.kernels.get(kernel)?.clif.as_deref()
    }

    /// Sets an f32 parameter's value.
    pub fn set_param(&mut self, name: &str, data: &[f32]) -> Result<(), RuntimeError> {
        self.set_param_arg(name, Arg::F32(data))
    }

    /// Sets a parameter's value from data of any dtype.
    pub fn set_param_arg(&mut self, name: &str, data: Arg<'_>) -> Result<(), RuntimeError> {
        let buffer = self.signature.param_for(name, &data)?.buffer;
        data.write_to(&mut self.buffers[buffer.0]);
        Ok(())
    }

    /// The current value of an f32 parameter.
    pub fn param(&self, name: &str) -> Result<&[f32], RuntimeError> {
        let binding = self.signature.f32_param(name)?;
        Ok(as_f32(&self.buffers[binding.buffer.0]))
    }

    /// The current value of a parameter of any dtype.
    pub fn param_tensor(&self, name: &str) -> Result<Tensor, RuntimeError> {
        let binding = self.signature.param(name)?;
        Ok(to_tensor(&self.buffers[binding.buffer.0], &binding.ty)?)
    }

    /// The words of buffer `buffer`; those in the arena exist from the first run on.
    fn words(&self, buffer: BufferId) -> Option<&[u32]> {
        match self.placements[buffer.0] {
            Placement::Param => Some(&self.buffers[buffer.0]),
            Placement::InPlace { param } => Some(&self.buffers[param.0]),
            Placement::Arena { offset } => {
                let len = self.buffer_types[buffer.0].num_elements();
                arena_words(&self.arena).get(arena_range(offset, len))
            }
        }
    }

    /// The words of an output's buffer, which exists from the first run on (an
    /// output that shows a parameter has it from the start).
    fn output_words(&self, binding: &Binding) -> Result<&[u32], RuntimeError> {
        let not_run = || RuntimeError::NotRun {
            name: binding.name.clone(),
        };
        if !self.run_buffers_ready && self.placements[binding.buffer.0] != Placement::Param {
            return Err(not_run());
        }
        self.words(binding.buffer).ok_or_else(not_run)
    }

    /// An f32 output of the last run.
    pub fn output_f32(&self, name: &str) -> Result<&[f32], RuntimeError> {
        let binding = self.signature.f32_output(name)?;
        Ok(as_f32(self.output_words(binding)?))
    }

    /// An output of the last run, of any dtype.
    pub fn output(&self, name: &str) -> Result<Tensor, RuntimeError> {
        let binding = self.signature.output(name)?;
        Ok(to_tensor(self.output_words(binding)?, &binding.ty)?)
    }

    /// Runs the program once: checks every argument, copies the inputs in, launches
    /// every kernel, then gives each updated parameter its new value.
    pub fn run(&mut self, inputs: &[(&str, Arg<'_>)]) -> Result<(), RuntimeError> {
        let args = self.signature.match_inputs(inputs)?;
        self.allocate_run_buffers()?;
        let arena = arena_words_mut(&mut self.arena);
        for (arg, binding) in args.iter().zip(&self.signature.inputs) {
            let Placement::Arena { offset } = self.placements[binding.buffer.0] else {
                unreachable!("the plan puts every input in the arena");
            };
            arg.write_to(&mut arena[arena_range(offset, arg.len())]);
        }
        self.launch();
        Ok(())
    }

    fn launch(&mut self) {
        let base = self.arena.as_mut_ptr().cast::<u8>();
        let params: Vec<*mut u8> = self
            .buffers
            .iter_mut()
            .map(|words| words.as_mut_ptr().cast::<u8>())
            .collect();
        let mut table: Vec<*mut u8> = self
            .placements
            .iter()
            .enumerate()
            .map(|(index, placement)| match *placement {
                Placement::Param => params[index],
                Placement::InPlace { param } => params[param.0],
                // The plan keeps `offset` plus the buffer's size within the arena.
                Placement::Arena { offset } => base.wrapping_add(offset),
            })
            .collect();
        // The slot after the buffers: the pool parallel loops run on (null: inline).
        let pool = self.pool.as_ref().map_or(std::ptr::null(), |pool| {
            std::ptr::from_ref(pool).cast::<u8>()
        });
        table.push(pool.cast_mut());
        // Then the staging copies of staged updates, in plan order (`cpu::entry`).
        table.extend(
            self.staging
                .iter_mut()
                .map(|words| words.as_mut_ptr().cast::<u8>()),
        );
        // SAFETY: the program passed `Program::check`, so every access of every
        // kernel lies inside a buffer of its declared length; `table` points at
        // memory of at least those lengths that the kernels may use as the plan says
        // (see the module docs), and at staging copies of the staged values' sizes.
        // The step runs the kernels and the plan's update copies; the code is alive
        // as long as `self.code`.
        unsafe { (self.code.step)(table.as_ptr()) };
    }

    /// Convenience for differential tests: sets the parameters and inputs named in
    /// `feeds` (parameters not fed keep their values), runs once, and returns every
    /// output and the new value of every updated parameter. Every feed is checked
    /// before anything changes.
    pub fn run_feeds(&mut self, feeds: &Feeds) -> Result<RunResults, RuntimeError> {
        Runtime::run_feeds(self, feeds)
    }
}

/// The trait's required methods are the inherent ones above; its provided methods
/// (`inputs`, `run_feeds`, ...) are shared with the GPU's executable.
impl Runtime for Executable {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn set_param_arg(&mut self, name: &str, data: Arg<'_>) -> Result<(), RuntimeError> {
        Executable::set_param_arg(self, name, data)
    }

    fn param(&self, name: &str) -> Result<&[f32], RuntimeError> {
        Executable::param(self, name)
    }

    fn param_tensor(&self, name: &str) -> Result<Tensor, RuntimeError> {
        Executable::param_tensor(self, name)
    }

    fn output_f32(&self, name: &str) -> Result<&[f32], RuntimeError> {
        Executable::output_f32(self, name)
    }

    fn output(&self, name: &str) -> Result<Tensor, RuntimeError> {
        Executable::output(self, name)
    }

    fn run(&mut self, inputs: &[(&str, Arg<'_>)]) -> Result<(), RuntimeError> {
        Executable::run(self, inputs)
    }

    fn stats(&self) -> &CompileStats {
        Executable::stats(self)
    }

    fn kernel_names(&self) -> &[String] {
        Executable::kernel_names(self)
    }

    fn allocated_bytes(&self) -> usize {
        Executable::allocated_bytes(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Executable>();
    }
}
