//! Trains a 64-128-128-10 ReLU MLP on the UCI handwritten digits (8x8 images) with
//! the JIT-compiled training step, and reports the test accuracy.
//!
//! `cargo run --release --example mlp_digits`

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
    let (train, test) = digits.split(TRAIN_EXAMPLES, SEED);
    println!(
        "digits: {} train / {} test examples, {} features, {} classes",
        train.len(),
        test.len(),
        train.features_per_example,
        digits.num_classes()
    );

    let model = mlp_classifier("mlp_digits", BATCH, &SIZES, true, SEED)?;
    let config = TrainerConfig {
        features_input: "x".to_string(),
        labels_input: "labels".to_string(),
        loss_output: "loss".to_string(),
        optimizer: Optimizer::Sgd {
            learning_rate: LEARNING_RATE,
        },
        seed: SEED,
    };
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
    let eval_model = mlp_classifier("mlp_digits_eval", test.len(), &SIZES, false, SEED)?;
    let mut eval = compile(&eval_model.graph)?;
    for (name, values) in trainer.params()? {
        eval.set_param(&name, &values)?;
    }
    eval.run(&[("x", Arg::F32(&test.features))])?;
    let logits = eval.output_f32("logits")?;
    let accuracy = metrics::accuracy(logits, &test.labels, SIZES[SIZES.len() - 1]);
    println!("test accuracy: {accuracy:.4}");
    Ok(())
}
