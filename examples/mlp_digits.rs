//! Trains the 64-128-128-10 ReLU MLP declared in `examples/models/mlp_digits.kiln`
//! on the UCI handwritten digits (8x8 images) with the JIT-compiled training step,
//! and reports the test accuracy.
//!
//! `cargo run --release --example mlp_digits`

use kiln::compile::set_params;
use kiln::frontend::lang::ElaborateOptions;
use kiln::model_file::{self, LoadError, ModelFile};
use kiln::{compile, metrics, Arg, Dataset, Trainer, TrainerConfig};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

const CLASSES: usize = 10;
const TRAIN_EXAMPLES: usize = 1437;
const EPOCHS: usize = 30;
const SEED: u64 = 2026;

/// The model file with its batch dimension `B` bound to `batch` (the file's default
/// when `None`).
fn load(batch: Option<usize>) -> Result<ModelFile, LoadError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/mlp_digits.kiln");
    let options = ElaborateOptions {
        dims: batch
            .map(|b| BTreeMap::from([("B".to_string(), b)]))
            .unwrap_or_default(),
        seed: SEED,
        ..ElaborateOptions::default()
    };
    model_file::load(&path, &options).inspect_err(|err| eprintln!("{}", err.render(false)))
}

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

    let file = load(None)?;
    let train_spec = file
        .train
        .as_ref()
        .ok_or("the model file has no `train` statement")?;
    let config = TrainerConfig::new(model_file::optimizer(train_spec)?)?.with_seed(SEED);
    let mut trainer = Trainer::new(&file.model, config)?;
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

    // Evaluate the whole test set at once: the same file with B = the test set's size.
    // Trained values go through the model, which checks each is finite.
    let mut eval_model = load(Some(test.len()))?.model;
    for (name, values) in trainer.params()? {
        eval_model.set_param(&name, values)?;
    }
    let mut eval = compile(eval_model.graph())?;
    set_params(&mut eval, &eval_model)?;
    eval.run(&[
        ("x", Arg::F32(test.features())),
        ("labels", Arg::I32(test.labels())),
    ])?;
    let logits = eval.output_f32("logits")?;
    let accuracy = metrics::accuracy(logits, test.labels(), CLASSES)?;
    println!("test accuracy: {accuracy}");
    Ok(())
}
