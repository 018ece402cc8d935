//! kiln for NVIDIA GPUs: a graph through the pass pipeline, lowered, scheduled for a
//! GPU and written as PTX by kiln's own emitter (`kiln_backend::ptx`).

use crate::compile::{dump_gpu, dump_pattern, lower_graph, Error};
use kiln_backend::ptx::{self, PtxModule};
use kiln_frontend::Model;
use kiln_ir::kernel::Program;
use kiln_ir::{GpuSchedule, GpuTarget, Graph};
use kiln_passes::expand::ConvForm;
use kiln_passes::optimizer::Optimizer;
use kiln_passes::pipeline::{self, PipelineOptions, Step};
use kiln_passes::schedule;

/// A graph compiled for a GPU: the kernel program, how each kernel launches, and
/// the PTX module.
#[derive(Clone, Debug)]
pub struct GpuProgram {
    pub program: Program,
    pub schedule: GpuSchedule,
    pub module: PtxModule,
}

/// Runs `graph` through `steps`, lowers it, schedules it for `target` and writes
/// its PTX. The IR after the steps `options.dump` names — or, when it names none,
/// `KILN_DUMP=<regex>` — is printed to standard error, as by [`crate::compile`]:
/// the pipeline's steps, `lower`, `schedule.gpu` (each kernel's launch, then the
/// program the launches number) and `ptx` (the module).
pub fn compile_ptx(
    graph: &Graph,
    steps: &[Step],
    options: &PipelineOptions,
    target: &GpuTarget,
) -> Result<GpuProgram, Error> {
    let mut options = for_gpu(options);
    if options.dump.is_none() {
        options.dump = dump_pattern()?;
    }
    let (program, _, _) = lower_graph(graph, steps, &options)?;
    let gpu = write_ptx(&program, target)?;
    dump_gpu(&options, &gpu);
    Ok(gpu)
}

/// `options` for a GPU: convolutions stay (unpadded) for the implicit GEMM, whose
/// tiled kernel gathers its panels from the input where im2col would first write
/// the patch matrix out.
pub(crate) fn for_gpu(options: &PipelineOptions) -> PipelineOptions {
    PipelineOptions {
        conv: ConvForm::Implicit,
        ..options.clone()
    }
}

/// A lowered (not CPU-scheduled) program scheduled for `target` and written as PTX.
pub fn write_ptx(program: &Program, target: &GpuTarget) -> Result<GpuProgram, Error> {
    let (program, schedule) =
        schedule::for_gpu(program, target).map_err(kiln_backend::BackendError::from)?;
    let module = ptx::emit(&program, &schedule)?;
    Ok(GpuProgram {
        program,
        schedule,
        module,
    })
}

/// The forward pass of `graph` as PTX (the pipeline of [`crate::compile`]).
pub fn ptx_inference(graph: &Graph, target: &GpuTarget) -> Result<GpuProgram, Error> {
    compile_ptx(
        graph,
        pipeline::INFERENCE,
        &PipelineOptions::default(),
        target,
    )
}

/// One training step of `model` as PTX (the pipeline of
/// [`crate::compile_train_step`]).
pub fn ptx_train_step(
    model: &Model,
    loss: &str,
    optimizer: Optimizer,
    target: &GpuTarget,
) -> Result<GpuProgram, Error> {
    let options = PipelineOptions {
        loss: Some(loss.to_string()),
        optimizer: Some(optimizer),
        ..PipelineOptions::default()
    };
    compile_ptx(model.graph(), pipeline::TRAIN_STEP, &options, target)
}
