//! From a graph to a callable executable: the pass pipeline, lowering to kernel IR,
//! and JIT compilation for the host (or, with the `cuda` feature and
//! [`Device::Cuda`], PTX loaded on a GPU), with `KILN_DUMP=<regex>` printing the IR
//! after matching steps (on the GPU path also `schedule.gpu` and `ptx`).

use crate::gpu::GpuProgram;
use kiln_backend::Runtime;
use kiln_frontend::Model;
use kiln_ir::kernel::Program;
use kiln_ir::{Graph, TensorType};
use kiln_passes::lower;
use kiln_passes::optimizer::{Optimizer, OptimizerError, StateInit, StateParam};
use kiln_passes::pipeline::{self, PipelineOptions, Step, StepReport};
use kiln_passes::schedule::{self, ScheduleStep};
use regex::Regex;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Where a compiled graph runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// The host's cores, through the Cranelift JIT.
    #[default]
    Cpu,
    /// NVIDIA GPU `ordinal` (0 for the first), through the CUDA driver; needs kiln
    /// built with the `cuda` feature.
    Cuda { ordinal: usize },
}

impl Device {
    /// Whether this build of kiln can compile for the device: the GPU needs the `cuda`
    /// feature.
    pub fn is_supported(&self) -> bool {
        match self {
            Device::Cpu => true,
            Device::Cuda { .. } => cfg!(feature = "cuda"),
        }
    }
}

/// The message of [`Error::NoCudaSupport`], also the command line's when `--device
/// cuda` is given to a build without the feature.
pub const NO_CUDA_SUPPORT: &str =
    "kiln was built without CUDA support: rebuild with --features cuda";

impl fmt::Display for Device {
    /// `cpu`, `cuda:0`: what [`Device::from_str`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl FromStr for Device {
    type Err = String;

    /// `cpu`, `cuda` (GPU 0) or `cuda:N`.
    fn from_str(text: &str) -> Result<Device, String> {
        let expected = || format!("{text:?} is no device: expected cpu, cuda or cuda:N");
        match text {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda { ordinal: 0 }),
            _ => {
                let ordinal = text.strip_prefix("cuda:").ok_or_else(expected)?;
                let ordinal = ordinal.parse().map_err(|_| expected())?;
                Ok(Device::Cuda { ordinal })
            }
        }
    }
}

/// Why compilation failed.
#[derive(Debug, Error)]
pub enum Error {
    /// `KILN_DUMP` is not a valid regular expression (user's mistake).
    #[error("KILN_DUMP={pattern:?} is not a valid regular expression: {source}")]
    DumpPattern {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    /// A pipeline step failed (see the step's own error for whose mistake).
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
    /// Lowering to kernel IR failed (see `LowerError`).
    #[error("lower: {0}")]
    Lower(#[from] lower::LowerError),
    /// Code generation failed (see `BackendError`).
    #[error("codegen: {0}")]
    Backend(#[from] kiln_backend::BackendError),
    /// A trainer or helper was told to feed an input the model does not have.
    #[error("the model has no input named {0:?}")]
    NoSuchInput(String),
    /// An epoch over fewer examples than one batch would train on nothing.
    #[error("the data set has {examples} examples, fewer than the batch size {batch_size}")]
    TooFewExamples { examples: usize, batch_size: usize },
    /// The GPU could not be opened: no driver, no such device, or one too old (see
    /// `CudaError`).
    #[error(transparent)]
    Cuda(#[from] kiln_backend::CudaError),
    /// A GPU was asked of a build without the `cuda` feature (the user's mistake).
    #[error("{}", NO_CUDA_SUPPORT)]
    NoCudaSupport,
    /// Running the executable failed (see `RuntimeError`).
    #[error(transparent)]
    Runtime(#[from] kiln_backend::RuntimeError),
    /// A trainer input of the wrong type: features must be `f32[batch,n]`, labels
    /// `i32[batch]` (user's mistake).
    #[error("input {name:?} is {found}, expected {expected}")]
    InputType {
        name: String,
        expected: String,
        found: TensorType,
    },
    /// A saved training state whose buffer has another length than the step's
    /// (a checkpoint of another model).
    #[error("the saved state {name:?} has {found} values, the train step's has {expected}")]
    StateLength {
        name: String,
        expected: usize,
        found: usize,
    },
    /// `AotOptions::inference` has other parameters than the trained model (a kiln
    /// bug in the caller: both come from one model file).
    #[error("the forward pass's model has other parameters than the trained model")]
    InferenceParams,
    /// A saved training state without one of the train step's buffers.
    #[error("the saved state has no {0:?}, which the train step needs")]
    MissingState(String),
    /// A saved training state with a buffer the train step does not have.
    #[error("the saved state has {0:?}, which the train step does not have")]
    UnknownState(String),
    /// The model's batch size is 0, so an epoch would have no batches (user's mistake).
    #[error("the model's batch size is 0; a training batch needs at least one example")]
    EmptyBatch,
    /// A data set whose examples are not as wide as the model's features input (user's
    /// mistake).
    #[error("the data set has {found} features per example, but input {input:?} takes {expected}")]
    FeatureCount {
        input: String,
        expected: usize,
        found: usize,
    },
    /// A label outside the classes of the model's one-hot encoding of its labels,
    /// which would train towards an all-zero target (user's mistake).
    #[error("example {example}: label {label} is outside 0..{classes}, the model's classes")]
    LabelOutOfRange {
        example: usize,
        label: i32,
        classes: usize,
    },
    /// `set_params` was given a model with no values for one of the executable's
    /// parameters, which would otherwise keep stale or zero values (user's mistake).
    #[error("the model has no values for the executable's parameter {0:?}")]
    MissingParam(String),
    /// A bad optimizer hyperparameter (user's mistake).
    #[error(transparent)]
    Optimizer(#[from] OptimizerError),
    /// The reference interpreter could not evaluate a graph (a gradient check).
    #[error("interpreter: {0}")]
    Interpret(#[from] kiln_ir::InterpError),
    /// A tensor could not be made (a gradient check's random values).
    #[error(transparent)]
    Tensor(#[from] kiln_ir::TensorError),
    /// Greedy decoding could not read a prediction (`decode::greedy`): the logits
    /// are not one row per position, or a row holds a NaN.
    #[error("greedy decoding: {0}")]
    Decode(String),
}

/// Where compile time went: every pipeline step (with its own note, such as the
/// e-graph's stop reason), lowering and code generation; and the memory a run needs.
#[derive(Clone, Debug)]
pub struct CompileReport {
    pub steps: Vec<StepReport>,
    pub lower: Duration,
    /// Each kernel-IR schedule step's time.
    pub schedule: Vec<(ScheduleStep, Duration)>,
    pub codegen: Duration,
    pub total: Duration,
    /// Bytes of the arena holding the inputs and intermediates of a run.
    pub arena_bytes: usize,
    /// What those buffers would take without the arena plan's reuse.
    pub arena_unplanned_bytes: usize,
}

impl CompileReport {
    /// The time spent verifying the IR between steps.
    pub fn verify(&self) -> Duration {
        self.steps.iter().map(|step| step.verify).sum()
    }
}

/// One line: each step's time and note, then verification, lowering, code generation
/// and the total, then the arena size against its size without reuse. A step stopped
/// by a limit says so in its note (`egraph: node limit 80000 (partial: kept what was
/// found) ...`).
impl std::fmt::Display for CompileReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        for step in &self.steps {
            write!(f, "{} {:.2} ms", step.name, ms(step.elapsed))?;
            if let Some(note) = &step.note {
                write!(f, " ({note})")?;
            }
            f.write_str(", ")?;
        }
        write!(
            f,
            "verify {:.2} ms, lower {:.2} ms, ",
            ms(self.verify()),
            ms(self.lower)
        )?;
        for (step, elapsed) in &self.schedule {
            write!(f, "{} {:.2} ms, ", step.name(), ms(*elapsed))?;
        }
        write!(
            f,
            "codegen {:.2} ms; total {:.2} ms; arena {} bytes ({} without reuse)",
            ms(self.codegen),
            ms(self.total),
            self.arena_bytes,
            self.arena_unplanned_bytes
        )
    }
}

/// The backend executable of a compiled graph, by device (boxed, as they differ in
/// size by hundreds of bytes).
enum Engine {
    Cpu(Box<kiln_backend::Executable>),
    #[cfg(feature = "cuda")]
    Cuda(Box<kiln_backend::cuda::CudaExecutable>),
}

/// A compiled graph: the backend's executable for its device (its methods, the same
/// on every device, through `Deref` to [`Runtime`]), the report of how it was
/// compiled, and the optimizer state it keeps, if any.
pub struct Executable {
    engine: Engine,
    pub report: CompileReport,
    /// The parameters the optimizer pass added (moments, averages, the step counter)
    /// and their initial values, which `set_params` gives them.
    pub optimizer_state: Vec<StateParam>,
}

impl Engine {
    fn runtime(&self) -> &(dyn Runtime + 'static) {
        match self {
            Engine::Cpu(exe) => exe.as_ref(),
            #[cfg(feature = "cuda")]
            Engine::Cuda(exe) => exe.as_ref(),
        }
    }

    fn runtime_mut(&mut self) -> &mut (dyn Runtime + 'static) {
        match self {
            Engine::Cpu(exe) => exe.as_mut(),
            #[cfg(feature = "cuda")]
            Engine::Cuda(exe) => exe.as_mut(),
        }
    }
}

impl Deref for Executable {
    type Target = dyn Runtime;
    fn deref(&self) -> &(dyn Runtime + 'static) {
        self.engine.runtime()
    }
}

impl DerefMut for Executable {
    fn deref_mut(&mut self) -> &mut (dyn Runtime + 'static) {
        self.engine.runtime_mut()
    }
}

impl Executable {
    /// Where it runs.
    pub fn device(&self) -> Device {
        match &self.engine {
            Engine::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Engine::Cuda(exe) => Device::Cuda {
                ordinal: exe.device().ordinal(),
            },
        }
    }

    /// The CPU executable (its threads, disassembly), when it runs on the CPU.
    pub fn cpu(&self) -> Option<&kiln_backend::Executable> {
        match &self.engine {
            Engine::Cpu(exe) => Some(exe.as_ref()),
            #[cfg(feature = "cuda")]
            Engine::Cuda(_) => None,
        }
    }

    /// Host threads its kernels run on: the CPU executable's pool, or 1 on a GPU,
    /// where a launch spreads the work over the GPU's own threads.
    pub fn threads(&self) -> usize {
        self.cpu().map_or(1, kiln_backend::Executable::threads)
    }

    /// Whether parameter `name` is optimizer state rather than a model parameter.
    pub fn is_optimizer_state(&self, name: &str) -> bool {
        self.optimizer_state.iter().any(|state| state.name == name)
    }

    /// The running average of every parameter (`Optimizer::averaging`), by the
    /// parameter's name, to evaluate with (load it with `Model::set_param`); empty when
    /// the optimizer keeps no average.
    pub fn averaged_params(&self) -> Result<BTreeMap<String, Vec<f32>>, Error> {
        let mut averages = BTreeMap::new();
        for state in &self.optimizer_state {
            if let StateInit::ValueOf(param) = &state.init {
                averages.insert(param.clone(), self.param(&state.name)?.to_vec());
            }
        }
        Ok(averages)
    }
}

pub(crate) fn dump_pattern() -> Result<Option<Regex>, Error> {
    match std::env::var("KILN_DUMP") {
        Ok(pattern) if !pattern.is_empty() => Regex::new(&pattern)
            .map(Some)
            .map_err(|source| Error::DumpPattern { pattern, source }),
        _ => Ok(None),
    }
}

fn print_dump(step: &str, text: &str) {
    eprintln!("// ---- IR after {step} ----\n{text}");
}

/// Prints, for the steps `KILN_DUMP` names, what the GPU path made after the pass
/// pipeline and lowering (which [`lower_graph`] dumps): `schedule.gpu`, the launch of
/// every kernel followed by the program it launches (the lowered one after the
/// epilogue fusion, whose kernel numbers the launches use), and `ptx`, the module.
pub(crate) fn dump_gpu(options: &PipelineOptions, gpu: &GpuProgram) {
    if dumps(options, "schedule.gpu") {
        print_dump("schedule.gpu", &format!("{}{}", gpu.schedule, gpu.program));
    }
    if dumps(options, "ptx") {
        print_dump("ptx", &gpu.module.text);
    }
}

/// A graph through the pipeline, lowered and scheduled: what code generation takes.
pub(crate) struct Scheduled {
    pub program: kiln_ir::kernel::Program,
    pub target: kiln_ir::Target,
    pub steps: Vec<StepReport>,
    pub lower: Duration,
    pub schedule: Vec<(ScheduleStep, Duration)>,
}

/// Whether `KILN_DUMP` asks for the IR after `step`.
fn dumps(options: &PipelineOptions, step: &str) -> bool {
    options.dump.as_ref().is_some_and(|re| re.is_match(step))
}

/// Runs `graph` through `steps` and lowers it: the program, the steps' reports and
/// the time lowering took.
pub(crate) fn lower_graph(
    graph: &Graph,
    steps: &[Step],
    options: &PipelineOptions,
) -> Result<(Program, Vec<StepReport>, Duration), Error> {
    let (graph, steps) = pipeline::run(graph, steps, options, &mut print_dump)?;
    let lower_start = Instant::now();
    let program = lower::lower_with(&graph, options.conv)?;
    let lower = lower_start.elapsed();
    if dumps(options, "lower") {
        print_dump("lower", &program.to_string());
    }
    Ok((program, steps, lower))
}

/// Runs `graph` through `steps`, lowers it and schedules it for the target (the
/// host's, with `options.threads`, unless `options.target` names one).
pub(crate) fn schedule_graph(
    graph: &Graph,
    steps: &[Step],
    options: &PipelineOptions,
) -> Result<Scheduled, Error> {
    let (program, steps, lower) = lower_graph(graph, steps, options)?;
    let threads = options
        .threads
        .unwrap_or_else(kiln_backend::pool::available_threads);
    let target = match &options.target {
        Some(target) => target.clone(),
        None => kiln_backend::cpu::target::host_target(threads),
    };
    let (program, schedule) =
        schedule::run(&program, schedule::STEPS, &target, &mut |step, program| {
            if dumps(options, step) {
                print_dump(step, &program.to_string());
            }
        })
        .map_err(kiln_backend::BackendError::from)?;
    Ok(Scheduled {
        program,
        target,
        steps,
        lower,
        schedule,
    })
}

/// Compiles `graph` through `steps`, then lowers and JIT-compiles it for the CPU.
pub fn compile_with(
    graph: &Graph,
    steps: &[Step],
    options: &PipelineOptions,
) -> Result<Executable, Error> {
    compile_on(graph, steps, options, Device::Cpu)
}

/// Compiles `graph` through `steps`, then lowers it and compiles it for `device`.
pub fn compile_on(
    graph: &Graph,
    steps: &[Step],
    options: &PipelineOptions,
    device: Device,
) -> Result<Executable, Error> {
    let start = Instant::now();
    let optimizer_state = match options.optimizer {
        Some(optimizer) if steps.contains(&Step::Optimizer) => optimizer.state(graph),
        _ => Vec::new(),
    };
    let (engine, steps, lower, schedule, codegen) = match device {
        Device::Cpu => {
            let Scheduled {
                program,
                target,
                steps,
                lower,
                schedule,
            } = schedule_graph(graph, steps, options)?;
            let codegen_start = Instant::now();
            let backend_options = kiln_backend::CompileOptions {
                threads: target.threads,
                ..kiln_backend::CompileOptions::default()
            };
            let inner = kiln_backend::compile_with(&program, &backend_options)?;
            let codegen = codegen_start.elapsed();
            (
                Engine::Cpu(Box::new(inner)),
                steps,
                lower,
                schedule,
                codegen,
            )
        }
        Device::Cuda { ordinal } => {
            if !device.is_supported() {
                return Err(Error::NoCudaSupport);
            }
            let (program, steps, lower) = lower_graph(graph, steps, &crate::gpu::for_gpu(options))?;
            let codegen_start = Instant::now();
            let engine = cuda_engine(&program, ordinal, options)?;
            let codegen = codegen_start.elapsed();
            (engine, steps, lower, Vec::new(), codegen)
        }
    };
    let stats = engine.runtime().stats();
    let report = CompileReport {
        steps,
        lower,
        schedule,
        codegen,
        total: start.elapsed(),
        arena_bytes: stats.arena_bytes,
        arena_unplanned_bytes: stats.arena_unplanned_bytes,
    };
    Ok(Executable {
        engine,
        report,
        optimizer_state,
    })
}

/// Opens GPU `ordinal` and loads `program` on it (dumping its GPU schedule and PTX
/// when `options.dump` asks).
#[cfg(feature = "cuda")]
fn cuda_engine(
    program: &Program,
    ordinal: usize,
    options: &PipelineOptions,
) -> Result<Engine, Error> {
    use kiln_backend::cuda::{CudaDevice, CudaExecutable};
    let device = CudaDevice::open(ordinal)?;
    // The GPU's program is the lowered one after the GPU schedule's epilogue fusion.
    let gpu = crate::gpu::write_ptx(program, &device.target())?;
    dump_gpu(options, &gpu);
    let exe = CudaExecutable::new(&gpu.program, &gpu.module, &device)?;
    Ok(Engine::Cuda(Box::new(exe)))
}

#[cfg(not(feature = "cuda"))]
fn cuda_engine(
    _program: &Program,
    _ordinal: usize,
    _options: &PipelineOptions,
) -> Result<Engine, Error> {
    Err(Error::NoCudaSupport)
}

/// Compiles a graph to run as it is (inference): simplification, lowering, JIT.
pub fn compile(graph: &Graph) -> Result<Executable, Error> {
    compile_for(graph, Device::Cpu)
}

/// [`compile`] for `device`.
pub fn compile_for(graph: &Graph, device: Device) -> Result<Executable, Error> {
    let options = PipelineOptions {
        dump: dump_pattern()?,
        ..PipelineOptions::default()
    };
    compile_on(graph, pipeline::INFERENCE, &options, device)
}

/// Compiles one training step of `model`: forward, the gradient of output `loss`
/// with respect to every parameter, and `optimizer`'s update, as one graph. The
/// executable starts from the model's initial parameters and the optimizer's initial
/// state (see `set_params`), and keeps them between runs.
pub fn compile_train_step(
    model: &Model,
    loss: &str,
    optimizer: Optimizer,
) -> Result<Executable, Error> {
    compile_train_step_on(model, loss, optimizer, Device::Cpu)
}

/// [`compile_train_step`] for `device`.
pub fn compile_train_step_on(
    model: &Model,
    loss: &str,
    optimizer: Optimizer,
    device: Device,
) -> Result<Executable, Error> {
    let options = PipelineOptions {
        loss: Some(loss.to_string()),
        optimizer: Some(optimizer),
        dump: dump_pattern()?,
        ..PipelineOptions::default()
    };
    let mut exe = compile_on(model.graph(), pipeline::TRAIN_STEP, &options, device)?;
    set_params(&mut exe, model)?;
    Ok(exe)
}

/// Loads the model's parameter values into an executable and starts its optimizer
/// state afresh: zeros (moments, step counter), or the loaded value of its parameter
/// (a running average). The model must have values for every parameter of the
/// executable that is not optimizer state, and the executable every parameter of the
/// model; nothing is loaded unless both hold.
pub fn set_params(exe: &mut Executable, model: &Model) -> Result<(), Error> {
    if let Some((name, _)) = exe
        .params()
        .into_iter()
        .find(|(name, _)| model.param(name).is_none() && !exe.is_optimizer_state(name))
    {
        return Err(Error::MissingParam(name));
    }
    for name in model.params().keys() {
        exe.param(name)?;
    }
    for (name, values) in model.params() {
        exe.set_param(name, values)?;
    }
    for state in exe.optimizer_state.clone() {
        exe.set_param(&state.name, &initial_state(&state, model)?)?;
    }
    Ok(())
}

/// The values optimizer state `state` starts from for `model`'s parameters.
pub fn initial_state(state: &StateParam, model: &Model) -> Result<Vec<f32>, Error> {
    Ok(match &state.init {
        StateInit::Zeros => vec![0.0; state.ty.num_elements()],
        StateInit::Fill(value) => vec![*value as f32; state.ty.num_elements()],
        StateInit::ValueOf(param) => model
            .param(param)
            .ok_or_else(|| Error::MissingParam(param.clone()))?
            .to_vec(),
    })
}
