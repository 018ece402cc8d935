//! Scheduling: decides how a lowered kernel program runs on a [`Target`], without
//! changing what it computes.
//!
//! Lowering produces plain loop nests (serial, step 1, scalar values). Each schedule
//! step is a pure function `Program -> Program` that keeps every element's value bit
//! for bit (same operations, same order of each accumulation) and only changes how
//! the work is laid out:
//!
//! - [`epilogue`]: a bias-add and/or relu kernel that alone reads a matmul's result
//!   becomes the matmul's epilogue (the routine applies it to each tile in registers);
//! - [`matmul`]: a kernel that computes a matmul (`KernelOp::Matmul`) calls the packed,
//!   register-blocked routine with the target's microkernel and cache blocking, over
//!   row or column blocks in a parallel loop when the target has threads;
//! - [`vectorize`]: innermost loops of independent stores run in the target's SIMD
//!   lanes;
//! - [`parallel`]: large elementwise loops are split into blocks that run on the
//!   executable's threads.
//!
//! The steps are named (`schedule.matmul`, ...) and run by [`run`], which checks the
//! program after each one and hands it to a dump callback, like the graph pipeline.
//!
//! ```text
//! kernel k2 matmul {                          kernel k2 matmul {
//!   for i0 in 0..128 {                  ==>     for i0 in 0..2 parallel {
//!     for i1 in 0..512 { r0 = 0.0 ...             call matmul.nn.avx2 m=128 ... cols=256*i0 (...)
//! ```

pub mod accumulate;
pub mod epilogue;
pub mod gpu;
pub mod matmul;
pub mod parallel;
pub mod vectorize;

use kiln_ir::kernel::{KernelError, Program};
use kiln_ir::Target;
use std::time::{Duration, Instant};

/// One named step of scheduling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleStep {
    Epilogue,
    Matmul,
    Vectorize,
    Parallel,
}

impl ScheduleStep {
    pub fn name(self) -> &'static str {
        match self {
            ScheduleStep::Epilogue => "schedule.epilogue",
            ScheduleStep::Matmul => "schedule.matmul",
            ScheduleStep::Vectorize => "schedule.vectorize",
            ScheduleStep::Parallel => "schedule.parallel",
        }
    }

    fn apply(self, program: &Program, target: &Target) -> Program {
        match self {
            ScheduleStep::Epilogue => epilogue::run(program, target),
            ScheduleStep::Matmul => matmul::run(program, target),
            ScheduleStep::Vectorize => vectorize::run(program, target),
            ScheduleStep::Parallel => parallel::run(program, target),
        }
    }
}

/// Every step, in the order they run.
pub const STEPS: &[ScheduleStep] = &[
    ScheduleStep::Epilogue,
    ScheduleStep::Matmul,
    ScheduleStep::Parallel,
    ScheduleStep::Vectorize,
];

/// Runs `steps` on `program` for `target`, checking the program after each step and
/// passing `(step name, program)` to `after_step`. Returns the scheduled program and
/// each step's time. A failed check is a kiln bug in that step.
pub fn run(
    program: &Program,
    steps: &[ScheduleStep],
    target: &Target,
    after_step: &mut dyn FnMut(&str, &Program),
) -> Result<(Program, Vec<(ScheduleStep, Duration)>), KernelError> {
    let mut program = program.clone();
    let mut times = Vec::with_capacity(steps.len());
    for &step in steps {
        let start = Instant::now();
        program = step.apply(&program, target);
        times.push((step, start.elapsed()));
        program.check()?;
        after_step(step.name(), &program);
    }
    Ok((program, times))
}

/// Runs every step of [`STEPS`] for `target`, without dumps.
pub fn for_target(program: &Program, target: &Target) -> Result<Program, KernelError> {
    run(program, STEPS, target, &mut |_, _| {}).map(|(program, _)| program)
}

/// Schedules `program` for an NVIDIA GPU: the epilogue fusion (for any target: the
/// GPU's matmul applies an epilogue after the whole k sum), accumulations into
/// registers per element ([`accumulate`], so a reduction over a leading axis splits
/// by element), then a launch for every kernel ([`gpu::plan`]). The program keeps
/// plain loop nests.
pub fn for_gpu(
    program: &Program,
    target: &kiln_ir::GpuTarget,
) -> Result<(Program, kiln_ir::GpuSchedule), KernelError> {
    let program = epilogue::run(program, &Target::baseline());
    program.check()?;
    let program = accumulate::run(&program);
    program.check()?;
    let schedule = gpu::plan(&program, target);
    Ok((program, schedule))
}
