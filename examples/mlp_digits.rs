//! Trains a 64-128-128-10 ReLU MLP on the UCI handwritten digits (8x8 images) with
//! the JIT-compiled training step, and reports the test accuracy.
//!
//! `cargo run --release --example mlp_digits`

use kiln::compile::set_params;
use kiln::frontend::models::mlp_classifier;
use kiln::{compile, metrics, Arg, Dataset, Optimizer, Trainer, TrainerConfig};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

const SIZES: [usize; 4] = [64, 128, 128, 10];
const TRAIN_EXAMPLES: usize = 1437;
const BATCH: usize = 32;
const EPOCHS: usize = 30;
const LEARNING_RATE: f64 = 0.1;
const SEED: u64 = 2026;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    // Pixels are 0..16; scale them to [0, 1].
    let digits = Dataset::from_csv(&path, 1.0 / 16.0)?;
    let (train, test) = digits.split(TRAIN_EXAMPLES, SEED)?;
    println!(
        "digits: {} train / {} test examples, {} features, {} classes",
        train.len(),
        test.len(),
        train.features_per_example(),
        digits.classes()
    );

    let model = mlp_classifier("mlp_digits", BATCH, &SIZES, true, SEED)?;
    let config = TrainerConfig::new(Optimizer::sgd(LEARNING_RATE)?)?.with_seed(SEED);
    let mut trainer = Trainer::new(&model, config)?;
    let report = &trainer.step().report;
    println!("compiled the train step: {report}");

    let start = Instant::now();
    for epoch in 1..=EPOCHS {
        let loss = trainer.epoch(&train)?;
        println!("epoch {epoch:2}  loss {loss:.4}");
    }
    let train_time = start.elapsed().as_secs_f64();
    println!(
        "trained {EPOCHS} epochs in {train_time:.2} s ({:.1} ms per epoch)",
        train_time * 1e3 / EPOCHS as f64
    );

    // Evaluate with an inference graph over the whole test set at once.
    // Trained values go through the model, which checks each is finite.
    let mut eval_model = mlp_classifier("mlp_digits_eval", test.len(), &SIZES, false, SEED)?;
    for (name, values) in trainer.params()? {
        eval_model.set_param(&name, values)?;
    }
    let mut eval = compile(eval_model.graph())?;
    set_params(&mut eval, &eval_model)?;
    eval.run(&[("x", Arg::F32(test.features()))])?;
    let logits = eval.output_f32("logits")?;
    let accuracy = metrics::accuracy(logits, test.labels(), SIZES[SIZES.len() - 1])?;
    println!("test accuracy: {accuracy}");
    Ok(())
}
