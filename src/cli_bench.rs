//! `kiln bench`: compile a model (its train step when the file trains) and time it:
//! the compile time, the median step over repeated runs on fixed random inputs, and
//! the memory the run takes.

use crate::cli_data::Owned;
use crate::{fail, load, out, Failed, ModelArgs};
use clap::Args;
use kiln::compile::{compile_on, set_params};
use kiln::ir::{DType, Rng};
use kiln::model_file;
use kiln::passes::pipeline::{self, PipelineOptions};
use kiln::{Arg, Device};
use std::time::Instant;

/// The arguments of `kiln bench`.
#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Runs timed after one warm-up run.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Threads the executable runs on; default: the available cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Time the forward pass even when the file trains.
    #[arg(long)]
    pub inference: bool,
    /// Where the model runs: cpu, or an NVIDIA GPU: cuda (the first) or cuda:N
    /// (needs kiln built with --features cuda). A GPU step is timed to the end of
    /// its last kernel and update (synchronised).
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = crate::parse_device)]
    pub device: Device,
}

pub fn bench(args: &BenchArgs) -> Result<(), Failed> {
    if args.steps == 0 {
        return Err(fail("--steps must be at least 1"));
    }
    if args.threads == Some(0) {
        return Err(fail("--threads must be at least 1"));
    }
    if args.threads.is_some() && args.device != Device::Cpu {
        return Err(fail(format!(
            "--threads is for --device cpu; a GPU ({}) uses its own threads",
            args.device
        )));
    }
    let file = load(&args.model)?;
    let mut options = PipelineOptions {
        threads: args.threads,
        ..PipelineOptions::default()
    };
    let (steps, what) = match &file.train {
        Some(train) if !args.inference => {
            options.loss = Some(train.loss.clone());
            options.optimizer = Some(model_file::optimizer(train).map_err(fail)?);
            (pipeline::TRAIN_STEP, "train step")
        }
        _ => (pipeline::INFERENCE, "forward pass"),
    };
    let mut exe = compile_on(file.model.graph(), steps, &options, args.device).map_err(fail)?;
    set_params(&mut exe, &file.model).map_err(fail)?;
    let compile_ms = exe.report.total.as_secs_f64() * 1e3;

    // Uniform in [0, 1) for f32, zeros for i32 and bool (valid labels, indices and
    // seeds whatever the model).
    let mut rng = Rng::new(0);
    let inputs: Vec<(String, Owned)> = exe
        .inputs()
        .into_iter()
        .map(|(name, ty)| {
            let n = ty.num_elements();
            let values = match ty.dtype {
                DType::F32 => Owned::F32((0..n).map(|_| rng.uniform(0.0, 1.0) as f32).collect()),
                DType::I32 => Owned::I32(vec![0; n]),
                DType::Bool => Owned::Bool(vec![false; n]),
            };
            (name, values)
        })
        .collect();
    let feeds: Vec<(&str, Arg)> = inputs
        .iter()
        .map(|(name, values)| (name.as_str(), values.arg()))
        .collect();
    // One run first: it allocates the arena and warms the caches.
    exe.run(&feeds).map_err(fail)?;
    let mut times = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
        let start = Instant::now();
        exe.run(&feeds).map_err(fail)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let stats = exe.stats();
    let runs_on = match exe.device() {
        Device::Cpu => format!("{} thread(s)", exe.threads()),
        gpu => gpu.to_string(),
    };
    out(&format!(
        "{}: {what}, {runs_on}: compile {compile_ms:.2} ms; step median {median:.4} ms \
         over {} runs (min {:.4}, max {:.4}); arena {} bytes, parameters {} bytes, {} kernels",
        file.name,
        args.steps,
        times[0],
        times[times.len() - 1],
        stats.arena_bytes,
        stats.param_bytes,
        stats.kernels
    ))
}
