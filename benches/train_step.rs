//! Benchmarks W2 (MLP train step: batch 128, 784-512-512-10, ReLU, softmax
//! cross-entropy, SGD lr 0.01) and W7 (its compile time, graph to callable code) of
//! ../shared/BENCHMARKS.md, plus the digits MLP of the example, through the facade's
//! `compile_train_step`, with each compile phase's time. `examples/workloads.rs -- W2`
//! (what benches/compare.sh runs) times the same W2 the same way
//! (benches/support/timing.rs) without the phases. Prints medians of timed
//! repetitions after warm-up; run the peers with ../shared/bench/run.sh in the same
//! session to compare.
//!
//! `cargo bench --bench train_step`

use kiln::frontend::models::mlp_classifier;
use kiln::{compile_train_step, Arg, Optimizer};
use kiln_ir::Rng;
use std::time::{Duration, Instant};

#[path = "support/timing.rs"]
mod timing;
use timing::{measure, median, REPS};

fn bench_mlp(label: &str, batch: usize, sizes: &[usize], learning_rate: f64) {
    let model = mlp_classifier(label, batch, sizes, true, 1).expect("valid model");
    let optimizer = Optimizer::sgd(learning_rate).expect("a valid learning rate");
    let compile_times: Vec<Duration> = (0..REPS)
        .map(|_| {
            let start = Instant::now();
            compile_train_step(&model, "loss", optimizer).expect("compiles");
            start.elapsed()
        })
        .collect();
    let mut step = compile_train_step(&model, "loss", optimizer).expect("compiles");
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..batch * sizes[0])
        .map(|_| rng.uniform(0.0, 1.0) as f32)
        .collect();
    let classes = sizes[sizes.len() - 1];
    let labels: Vec<i32> = (0..batch).map(|_| rng.below(classes) as i32).collect();
    let step_time = measure(|| {
        step.run(&[("x", Arg::F32(&x)), ("labels", Arg::I32(&labels))])
            .expect("runs");
    });
    println!(
        "{label}: compile (W7) median {:.2} ms; train step median {:.3} ms ({})",
        median(compile_times).as_secs_f64() * 1e3,
        step_time.as_secs_f64() * 1e3,
        step.report
    );
}

fn main() {
    // `cargo test --benches` runs this binary with `--bench` absent; keep it cheap then.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("pass --bench to run (cargo bench --bench train_step)");
        return;
    }
    bench_mlp("digits_mlp", 32, &[64, 128, 128, 10], 0.1);
    bench_mlp("W2", 128, &[784, 512, 512, 10], 0.01);
}
