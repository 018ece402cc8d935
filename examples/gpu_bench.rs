//! kiln on an NVIDIA GPU, for benches/gpu.sh: W1 (C = A·B in f32, n×n) and a fused
//! elementwise chain y = tanh(x·a + b)·c, each compiled for the GPU and timed over
//! synchronised runs (`run` returns when the last kernel has finished). The operands
//! are parameters, set once, so a run moves no data between host and device. One
//! line per measurement, which the script parses:
//!
//! ```text
//! sgemm n=1024 median_ms=0.1234 min_ms=0.1200 runs=20 gflops=17403.2 kernels=1
//! chain n=67108864 median_ms=0.9876 min_ms=0.9800 runs=20 gbps=543.6 kernels=1
//! ```
//!
//! `chain`'s bandwidth counts x read and y written once (8 bytes per element): what
//! a fused kernel moves; `kernels` says whether the chain was fused into one.
//!
//! `cargo run --release --features cuda --example gpu_bench -- [--device cuda:0]
//!  [--sgemm 1024,2048,4096,8192] [--chain 26] [--repeats 20] [--budget-s 20]`
//!
//! `--device cpu` measures the same graphs on the CPU (a check of the example
//! itself on a machine without a GPU).

use kiln::compile::compile_for;
use kiln::ir::{text, Rng};
use kiln::{Device, Executable};
use std::process::ExitCode;
use std::time::Instant;

/// What to measure, from the command line.
struct Options {
    device: Device,
    sgemm: Vec<usize>,
    /// log2 of the chain's element count; `None`: no chain.
    chain: Option<u32>,
    repeats: usize,
    /// Fewer repeats (at least 3) when a run is so slow that `repeats` of them would
    /// take longer than this.
    budget_s: f64,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        device: Device::Cuda { ordinal: 0 },
        sgemm: vec![1024, 2048, 4096, 8192],
        chain: Some(26),
        repeats: 20,
        budget_s: 20.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |what: &str| format!("{flag} {value}: expected {what}");
        match flag.as_str() {
            "--device" => options.device = value.parse()?,
            "--sgemm" => {
                options.sgemm = value
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(|n| n.parse().map_err(|_| bad("sizes like 1024,2048")))
                    .collect::<Result<_, _>>()?;
            }
            "--chain" => {
                options.chain = match value.as_str() {
                    "none" => None,
                    log2 => Some(
                        log2.parse()
                            .map_err(|_| bad("log2 of the length, or none"))?,
                    ),
                }
            }
            "--repeats" => options.repeats = value.parse().map_err(|_| bad("a count"))?,
            "--budget-s" => options.budget_s = value.parse().map_err(|_| bad("seconds"))?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if options.repeats == 0 {
        return Err("--repeats must be at least 1".to_string());
    }
    Ok(options)
}

/// Uniform values in [-1, 1).
fn random_values(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
}

/// The median and the fastest of timed runs of `exe` (after warm-up runs), in ms.
fn time_runs(exe: &mut Executable, options: &Options) -> Result<(f64, f64, usize), String> {
    let run = |exe: &mut Executable| -> Result<f64, String> {
        let start = Instant::now();
        exe.run(&[]).map_err(|err| err.to_string())?;
        Ok(start.elapsed().as_secs_f64())
    };
    // The first run loads nothing more (the module is loaded at compile time) but
    // warms the caches and the clocks; its time decides how many runs fit the budget.
    let first = run(exe)?;
    run(exe)?;
    let fit = (options.budget_s / first.max(1e-9)) as usize;
    let repeats = options.repeats.min(fit.max(3));
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        times.push(run(exe)? * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[0], repeats))
}

fn sgemm(n: usize, options: &Options, rng: &mut Rng) -> Result<String, String> {
    let source = format!(
        "graph sgemm {{\n  %0 = param \"a\" : f32[{n},{n}]\n  %1 = param \"b\" : f32[{n},{n}]\n  \
         %2 = matmul %0, %1 : f32[{n},{n}]\n  output \"c\" = %2\n}}\n"
    );
    let graph = text::parse(&source).map_err(|err| format!("the sgemm graph: {err}"))?;
    let mut exe = compile_for(&graph, options.device).map_err(|err| err.to_string())?;
    for name in ["a", "b"] {
        exe.set_param(name, &random_values(rng, n * n))
            .map_err(|err| err.to_string())?;
    }
    let (median, min, runs) = time_runs(&mut exe, options)?;
    let gflops = 2.0 * (n as f64).powi(3) / (median * 1e-3) / 1e9;
    Ok(format!(
        "sgemm n={n} median_ms={median:.4} min_ms={min:.4} runs={runs} gflops={gflops:.1} kernels={}",
        exe.kernel_count()
    ))
}

fn chain(log2: u32, options: &Options, rng: &mut Rng) -> Result<String, String> {
    let n = 1usize << log2;
    let source = format!(
        "graph chain {{\n  %0 = param \"x\" : f32[{n}]\n  %1 = const 0.75 : f32[{n}]\n  \
         %2 = const 0.25 : f32[{n}]\n  %3 = const 1.5 : f32[{n}]\n  %4 = mul %0, %1 : f32[{n}]\n  \
         %5 = add %4, %2 : f32[{n}]\n  %6 = tanh %5 : f32[{n}]\n  %7 = mul %6, %3 : f32[{n}]\n  \
         output \"y\" = %7\n}}\n"
    );
    let graph = text::parse(&source).map_err(|err| format!("the chain graph: {err}"))?;
    let mut exe = compile_for(&graph, options.device).map_err(|err| err.to_string())?;
    exe.set_param("x", &random_values(rng, n))
        .map_err(|err| err.to_string())?;
    let (median, min, runs) = time_runs(&mut exe, options)?;
    let bytes = 2.0 * 4.0 * n as f64;
    let gbps = bytes / (median * 1e-3) / 1e9;
    Ok(format!(
        "chain n={n} median_ms={median:.4} min_ms={min:.4} runs={runs} gbps={gbps:.1} kernels={}",
        exe.kernel_count()
    ))
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let mut rng = Rng::new(0);
    let mut failed = false;
    let mut report = |line: Result<String, String>| match line {
        Ok(line) => println!("{line}"),
        Err(message) => {
            eprintln!("error: {message}");
            failed = true;
        }
    };
    for &n in &options.sgemm {
        report(sgemm(n, &options, &mut rng));
    }
    if let Some(log2) = options.chain {
        report(chain(log2, &options, &mut rng));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
