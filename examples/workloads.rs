//! The standard workloads of ../shared/BENCHMARKS.md as a user runs them, one line
//! of `key=value` results each (benches/compare.sh runs them beside the peers):
//!
//! ```text
//! cargo run --release --example workloads -- W1 --threads 1 --n 1024
//! W1 threads=1 n=1024 median_ms=… gflops=…
//! cargo run --release --example workloads -- W2 --threads 2
//! W2 threads=2 median_ms=… compile_ms=…
//! cargo run --release --example workloads -- W3 --threads 1
//! W3 threads=1 median_ms=… compile_ms=…
//! cargo run --release --example workloads -- W8
//! W8 max_rss_mib=… arena_mib=…
//! ```
//!
//! W3 (LeNet-5 train step), W4 (a 3x3 convolution), W5 (an LSTM, forward and
//! backward) and W6 (a transformer encoder block, forward and backward) are declared
//! in model files: `examples/models/lenet_w3.kiln`, `conv_w4.kiln`, `lstm_w5.kiln` and
//! `transformer_block_w6.kiln`.
//!
//! `--isa avx512|avx2|f32x4` schedules for less than the host has (the default is the
//! host): `W1 --isa f32x4` measures the portable Cranelift microkernel, whose target is
//! a share of the 128-bit FMA peak (`../shared/bench/peak.c`, line (b)).
//!
//! W1 is sgemm `C = A·B` on square f32 matrices; W2 the MLP train step (batch 128,
//! 784→512→512→10, ReLU, softmax cross-entropy, SGD lr 0.01); W8 the peak resident
//! memory of this process after 20 W2 steps. Times are medians of at least 7 timed
//! repetitions after warm-up; pin the process (`taskset -c 0`) to compare with the
//! peers' one-thread numbers.

use kiln::backend::cpu::target::host_target;
use kiln::compile::compile_with;
use kiln::frontend::lang::ElaborateOptions;
use kiln::frontend::models::mlp_classifier;
use kiln::ir::{Graph, Rng, Target, TensorType};
use kiln::passes::pipeline::{self, PipelineOptions};
use kiln::{Arg, Optimizer};
use std::process::ExitCode;
use std::time::Instant;

#[path = "../benches/support/timing.rs"]
mod timing;
use timing::{measure, median, REPS};

struct Args {
    work: String,
    threads: usize,
    n: usize,
    isa: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let work = args.next().ok_or(
        "usage: workloads W1|W2|W3|W4|W5|W6|W8 [--threads N] [--n N] [--isa avx512|avx2|f32x4]",
    )?;
    let mut parsed = Args {
        work,
        threads: kiln::backend::pool::available_threads(),
        n: 1024,
        isa: None,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        if flag == "--isa" {
            parsed.isa = Some(value);
            continue;
        }
        let number: usize = value
            .parse()
            .map_err(|_| format!("{flag} {value}: expected a positive integer"))?;
        match flag.as_str() {
            "--threads" if number > 0 => parsed.threads = number,
            "--n" if number > 0 => parsed.n = number,
            _ => return Err(format!("unknown flag or bad value: {flag} {value}")),
        }
    }
    Ok(parsed)
}

/// The host target for `threads` threads, limited to `isa`'s instructions.
fn target(threads: usize, isa: Option<&str>) -> Result<Option<Target>, String> {
    let mut target = host_target(threads);
    match isa {
        None => return Ok(None),
        Some("avx512") if target.avx512f => {}
        Some("avx2") if target.avx2_fma => target.avx512f = false,
        Some("f32x4") => (target.avx512f, target.avx2_fma) = (false, false),
        Some(other @ ("avx512" | "avx2")) => {
            return Err(format!(
                "--isa {other}: this host does not have it ({target})"
            ))
        }
        Some(other) => return Err(format!("--isa {other}: expected avx512, avx2 or f32x4")),
    }
    Ok(Some(target))
}

fn options(args: &Args) -> Result<PipelineOptions, String> {
    Ok(PipelineOptions {
        threads: Some(args.threads),
        target: target(args.threads, args.isa.as_deref())?,
        // `KILN_DUMP=<regex>` shows the IR after matching steps, as for `kiln::compile`.
        dump: std::env::var("KILN_DUMP")
            .ok()
            .and_then(|pattern| regex::Regex::new(&pattern).ok()),
        ..PipelineOptions::default()
    })
}

fn w1(args: &Args) -> Result<(), String> {
    let (threads, n) = (args.threads, args.n);
    let mut g = Graph::new("sgemm");
    let a = g
        .input("a", TensorType::f32([n, n]))
        .map_err(|e| e.to_string())?;
    let b = g
        .input("b", TensorType::f32([n, n]))
        .map_err(|e| e.to_string())?;
    let c = g.matmul(a, b).map_err(|e| e.to_string())?;
    g.set_output("c", c).map_err(|e| e.to_string())?;
    let mut exe =
        compile_with(&g, pipeline::INFERENCE, &options(args)?).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(1);
    let a: Vec<f32> = (0..n * n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let b: Vec<f32> = (0..n * n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let mut failed = None;
    let time = measure(|| {
        if let Err(err) = exe.run(&[("a", Arg::F32(&a)), ("b", Arg::F32(&b))]) {
            failed = Some(err.to_string());
        }
    });
    if let Some(err) = failed {
        return Err(err);
    }
    let flops = 2.0 * (n as f64).powi(3);
    println!(
        "W1 threads={threads} n={n}{} median_ms={:.3} gflops={:.1}",
        isa_field(args),
        time.as_secs_f64() * 1e3,
        flops / time.as_secs_f64() / 1e9
    );
    Ok(())
}

/// ` isa=…` when the target was limited, so that results say what they measured.
fn isa_field(args: &Args) -> String {
    args.isa
        .as_ref()
        .map(|isa| format!(" isa={isa}"))
        .unwrap_or_default()
}

/// W2's model, its pipeline options and one batch of inputs.
struct W2 {
    model: kiln::frontend::Model,
    options: PipelineOptions,
    x: Vec<f32>,
    labels: Vec<i32>,
}

impl W2 {
    fn new(args: &Args) -> Result<W2, String> {
        let (batch, sizes) = (128, [784, 512, 512, 10]);
        let model = mlp_classifier("W2", batch, &sizes, true, 1).map_err(|e| e.to_string())?;
        let mut options = options(args)?;
        options.loss = Some("loss".into());
        options.optimizer = Some(Optimizer::sgd(0.01).map_err(|e| e.to_string())?);
        let mut rng = Rng::new(3);
        let x: Vec<f32> = (0..batch * sizes[0])
            .map(|_| rng.uniform(0.0, 1.0) as f32)
            .collect();
        let labels: Vec<i32> = (0..batch).map(|_| rng.below(10) as i32).collect();
        Ok(W2 {
            model,
            options,
            x,
            labels,
        })
    }

    fn compile(&self) -> Result<kiln::Executable, String> {
        let mut exe = compile_with(self.model.graph(), pipeline::TRAIN_STEP, &self.options)
            .map_err(|e| e.to_string())?;
        kiln::compile::set_params(&mut exe, &self.model).map_err(|e| e.to_string())?;
        Ok(exe)
    }

    fn step(&self, exe: &mut kiln::Executable) -> Result<(), String> {
        exe.run(&[("x", Arg::F32(&self.x)), ("labels", Arg::I32(&self.labels))])
            .map_err(|e| e.to_string())
    }
}

fn w2(args: &Args) -> Result<(), String> {
    let threads = args.threads;
    let w2 = W2::new(args)?;
    let mut compile_times = Vec::new();
    for _ in 0..REPS {
        let start = Instant::now();
        w2.compile()?;
        compile_times.push(start.elapsed());
    }
    let mut exe = w2.compile()?;
    let mut failed = None;
    let time = measure(|| {
        if let Err(err) = w2.step(&mut exe) {
            failed = Some(err);
        }
    });
    if let Some(err) = failed {
        return Err(err);
    }
    println!(
        "W2 threads={threads}{} median_ms={:.3} compile_ms={:.2}",
        isa_field(args),
        time.as_secs_f64() * 1e3,
        median(compile_times).as_secs_f64() * 1e3
    );
    Ok(())
}

/// Peak resident set of this process (VmHWM), in MiB.
fn max_rss_mib() -> Result<f64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?;
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or("unreadable VmHWM")?;
    Ok(kib / 1024.0)
}

fn w8(args: &Args) -> Result<(), String> {
    let w2 = W2::new(args)?;
    let mut exe = w2.compile()?;
    for _ in 0..20 {
        w2.step(&mut exe)?;
    }
    println!(
        "W8 max_rss_mib={:.1} arena_mib={:.2}",
        max_rss_mib()?,
        exe.stats().arena_bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// A workload declared in a model file under examples/models: its train step when
/// the file says `train`, else its forward and backward (the gradients of output
/// `loss`) when it has that output, else its forward. Inputs are random, labels
/// valid for the model's classes (`kiln::gradcheck::random_inputs`); prints
/// `W3 threads=1 median_ms=… compile_ms=…`.
fn model_file_workload(args: &Args, file: &str) -> Result<(), String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/models")
        .join(file);
    let loaded = kiln::model_file::load(&path, &ElaborateOptions::default())
        .map_err(|err| err.render(false))?;
    let mut options = options(args)?;
    let steps = match &loaded.train {
        Some(train) => {
            options.loss = Some(train.loss.clone());
            options.optimizer =
                Some(kiln::model_file::optimizer(train).map_err(|e| e.to_string())?);
            pipeline::TRAIN_STEP
        }
        // Forward and backward, without an update: the gradient of output `loss`.
        None if loaded.outputs.iter().any(|name| name == "loss") => {
            options.loss = Some("loss".to_string());
            pipeline::GRADIENTS
        }
        None => pipeline::INFERENCE,
    };
    let graph = loaded.model.graph();
    let compile = || -> Result<kiln::Executable, String> {
        let mut exe = compile_with(graph, steps, &options).map_err(|e| e.to_string())?;
        kiln::compile::set_params(&mut exe, &loaded.model).map_err(|e| e.to_string())?;
        Ok(exe)
    };
    let mut compile_times = Vec::new();
    for _ in 0..REPS {
        let start = Instant::now();
        compile()?;
        compile_times.push(start.elapsed());
    }
    let mut exe = compile()?;
    // Labels valid for the model's classes, as `kiln gradcheck` draws them.
    let feeds =
        kiln::gradcheck::random_inputs(graph, &mut Rng::new(5)).map_err(|e| e.to_string())?;
    let mut failed = None;
    let time = measure(|| {
        if let Err(err) = exe.run_feeds(&feeds) {
            failed = Some(err.to_string());
        }
    });
    if let Some(err) = failed {
        return Err(err);
    }
    println!(
        "{} threads={}{} median_ms={:.3} compile_ms={:.2}",
        args.work,
        args.threads,
        isa_field(args),
        time.as_secs_f64() * 1e3,
        median(compile_times).as_secs_f64() * 1e3
    );
    Ok(())
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|args| match args.work.as_str() {
        "W1" => w1(&args),
        "W2" => w2(&args),
        "W3" => model_file_workload(&args, "lenet_w3.kiln"),
        "W4" => model_file_workload(&args, "conv_w4.kiln"),
        "W5" => model_file_workload(&args, "lstm_w5.kiln"),
        "W6" => model_file_workload(&args, "transformer_block_w6.kiln"),
        "W8" => w8(&args),
        other => Err(format!("unknown workload {other:?}: W1-W6 and W8 run here")),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
