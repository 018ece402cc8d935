//! The canon: network families of the course, each declared in
//! `examples/models/<name>.kiln`, trained with the file's `train` statement by the
//! JIT-compiled step and measured against the result it must reach.
//!
//! ```text
//! cargo run --release --example canon -- mlp          # one family
//! cargo run --release --example canon -- all          # every family
//! ```
//!
//! Each run ends with `NAME: accuracy 0.9806 (target >= 0.97) ok` (or `MISSED`);
//! `all` ends with `N/M families reached their target`. The classifiers read their
//! examples as `x: f32[B, features]` with `labels: i32[B]` and report `logits`; a
//! family that needs another shape reshapes inside its model file (an image is
//! `reshape(x, B, 1, 8, 8)`, a sequence of rows `transpose(reshape(x, B, 8, 8), 0, 1)`).

use kiln::compile::set_params;
use kiln::frontend::lang::{ElaborateOptions, TrainSpec};
use kiln::model_file::{self, ModelFile};
use kiln::{Dataset, Executable};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod classify;
mod generative;
mod memory;
mod robust;
mod sequence;

const SEED: u64 = 2026;
/// The `i32[]` input of a model that samples (dropout, noise).
const SEED_INPUT: &str = "seed";

/// A data set and how it is split.
#[derive(Clone, Copy, Debug)]
enum Data {
    /// The UCI digits (1797 8x8 images), pixels scaled to [0, 1]; 1437 to train.
    Digits,
    /// Fisher's iris (150 examples, 4 features, 3 classes); a seeded 120/30 split.
    Iris,
    /// Iris with setosa as label 1 and the other two species as 0.
    IrisSetosa,
    /// Zachary's karate club (34 members, 78 friendships), the faction each joined;
    /// one member of each faction labelled, the other 32 to classify.
    Karate,
    /// Points or patterns drawn by the family's runner with the canon's seed, as its
    /// model file describes (two moons, a mixture of Gaussians, memories).
    Generated,
    /// Seeded sequence reversal (examples/canon/sequence.rs): 6000 training and 1000
    /// held-out test sources of 8 symbols.
    Reversal,
}

/// What a family's runner returns.
type RunResult = Result<Outcome, Box<dyn std::error::Error>>;

/// A family: its model file's name, data, epochs, the value its metric must reach
/// (the perceptron's target is computed from the data instead) and the runner that
/// trains and measures it.
struct Family {
    name: &'static str,
    data: Data,
    epochs: usize,
    target: f64,
    run: fn(&Family) -> RunResult,
}

// One row a family, aligned by hand (rustfmt would give each argument a line).
#[rustfmt::skip]
const FAMILIES: &[Family] = &[
    family("perceptron",          Data::IrisSetosa, 100,  0.0,  classify::perceptron),
    family("logistic_regression", Data::IrisSetosa, 60,   0.93, classify::classifier),
    family("softmax_regression",  Data::Iris,       300,  0.93, classify::classifier),
    family("mlp",                 Data::Digits,     30,   0.97, classify::classifier),
    family("batchnorm_mlp",       Data::Digits,     20,   0.97, classify::classifier),
    family("layernorm_mlp",       Data::Digits,     20,   0.97, classify::classifier),
    family("dropout_mlp",         Data::Digits,     30,   0.97, classify::classifier),
    family("weightnorm_mlp",      Data::Digits,     30,   0.97, classify::classifier),
    family("lenet",               Data::Digits,     25,   0.97, classify::classifier),
    family("resnet_block",        Data::Digits,     12,   0.97, classify::classifier),
    family("densenet_block",      Data::Digits,     20,   0.97, classify::classifier),
    family("rnn",                 Data::Digits,     30,   0.93, classify::classifier),
    family("lstm",                Data::Digits,     30,   0.93, classify::classifier),
    family("gru",                 Data::Digits,     30,   0.93, classify::classifier),
    family("deep_birnn",          Data::Digits,     25,   0.93, classify::classifier),
    family("attention",           Data::Digits,     25,   0.95, classify::classifier),
    family("transformer_encoder", Data::Digits,     25,   0.95, classify::classifier),
    family("gcn",                 Data::Karate,     200,  0.85, classify::gcn),
    family("autoencoder",         Data::Digits,     3000, 0.1,  generative::autoencoder),
    family("vae",                 Data::Digits,     100,  0.30, generative::vae),
    family("planar_flow",         Data::Generated,  300,  0.5,  generative::planar_flow),
    family("gan",                 Data::Generated,  5000, 6.0,  generative::gan),
    family("transformer_decoder", Data::Reversal,   4,    0.95, sequence::seq2seq),
    family("seq2seq_attention",   Data::Reversal,   20,   0.95, sequence::seq2seq),
    family("hopfield",            Data::Generated,  0,    0.95, memory::hopfield),
    family("willshaw",            Data::Generated,  0,    0.95, memory::willshaw),
    family("adversarial",         Data::Digits,     30,   20.0, robust::adversarial),
    family("distillation",        Data::Digits,     150,  0.0,  robust::distillation),
];

const fn family(
    name: &'static str,
    data: Data,
    epochs: usize,
    target: f64,
    run: fn(&Family) -> RunResult,
) -> Family {
    Family {
        name,
        data,
        epochs,
        target,
        run,
    }
}

fn main() -> ExitCode {
    let which: Vec<String> = std::env::args().skip(1).collect();
    let chosen: Vec<&Family> = match which.as_slice() {
        [all] if all == "all" => FAMILIES.iter().collect(),
        [name] => match FAMILIES.iter().find(|family| family.name == name) {
            Some(family) => vec![family],
            None => return usage(&format!("no family named {name:?}")),
        },
        _ => return usage("name one family, or `all`"),
    };
    let mut reached = 0;
    for family in &chosen {
        match (family.run)(family) {
            Ok(outcome) => {
                let ok = if outcome.at_most {
                    outcome.value <= outcome.target
                } else {
                    outcome.value >= outcome.target
                };
                reached += usize::from(ok);
                let verdict = if ok { "ok" } else { "MISSED" };
                let op = if outcome.at_most { "<=" } else { ">=" };
                println!(
                    "{}: {} {} (target {op} {}) {verdict}",
                    family.name,
                    outcome.metric,
                    outcome.shown(),
                    outcome.target
                );
            }
            Err(err) => println!("{}: error: {err} MISSED", family.name),
        }
    }
    if chosen.len() > 1 {
        println!("{reached}/{} families reached their target", chosen.len());
    }
    ExitCode::SUCCESS
}

fn usage(problem: &str) -> ExitCode {
    let names: Vec<&str> = FAMILIES.iter().map(|family| family.name).collect();
    eprintln!(
        "{problem}: cargo run --release --example canon -- <{}|all>",
        names.join("|")
    );
    ExitCode::from(2)
}

fn data_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/data")
        .join(file)
}

/// The family's training and test sets.
fn load_data(data: Data) -> Result<(Dataset, Dataset), Box<dyn std::error::Error>> {
    match data {
        Data::Digits => {
            let digits = Dataset::from_csv(&data_path("digits.csv.gz"), 1.0 / 16.0)?;
            Ok(digits.split(1437, SEED)?)
        }
        Data::Karate => Err("the karate club is a graph: see classify::gcn".into()),
        Data::Generated => Err("the family's runner draws its own points or patterns".into()),
        Data::Reversal => Err("reversal is a sequence task: see sequence::seq2seq".into()),
        Data::Iris | Data::IrisSetosa => {
            let text = std::fs::read_to_string(data_path("iris.csv"))?;
            // The first line is scikit-learn's header: `150,4,setosa,versicolor,virginica`.
            let rows: String = text
                .lines()
                .skip(1)
                .map(|line| format!("{line}\n"))
                .collect();
            let rows = match data {
                Data::IrisSetosa => rows
                    .lines()
                    .map(|line| match line.rsplit_once(',') {
                        Some((features, "0")) => format!("{features},1\n"),
                        Some((features, _)) => format!("{features},0\n"),
                        None => format!("{line}\n"),
                    })
                    .collect(),
                _ => rows,
            };
            let iris = Dataset::parse_csv(&rows, 1.0)
                .map_err(|(line, message)| format!("iris.csv line {}: {message}", line + 1))?;
            Ok(iris.split(120, SEED)?)
        }
    }
}

/// The family's model file with the batch dimension `B` bound to `batch` (the file's
/// default when `None`), for training or (`evaluation`) for evaluation.
fn load_model(
    name: &str,
    batch: Option<usize>,
    evaluation: bool,
) -> Result<ModelFile, Box<dyn std::error::Error>> {
    let dims: Vec<(&str, usize)> = batch.map(|b| ("B", b)).into_iter().collect();
    load_model_with(name, &dims, evaluation)
}

/// The family's model file with the given dimensions (the file's defaults for the
/// others).
fn load_model_with(
    name: &str,
    dims: &[(&str, usize)],
    evaluation: bool,
) -> Result<ModelFile, Box<dyn std::error::Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/models")
        .join(format!("{name}.kiln"));
    let options = ElaborateOptions {
        dims: dims
            .iter()
            .map(|&(dim, value)| (dim.to_string(), value))
            .collect(),
        seed: SEED,
        evaluation,
        ..ElaborateOptions::default()
    };
    model_file::load(&path, &options).map_err(|err| err.render(false).into())
}

/// The model file's `train` statement.
fn train_spec(file: &ModelFile) -> Result<&TrainSpec, Box<dyn std::error::Error>> {
    Ok(file
        .train
        .as_ref()
        .ok_or("the model file has no `train` statement")?)
}

/// The family's compiled train step, parameters set, for a loop of its own.
fn train_step(family: &Family) -> Result<Executable, Box<dyn std::error::Error>> {
    let file = load_model(family.name, None, false)?;
    let spec = train_spec(&file)?;
    let optimizer = model_file::optimizer(spec)?;
    Ok(kiln::compile_train_step(
        &file.model,
        &spec.loss,
        optimizer,
    )?)
}

/// The family's model built for evaluation (dropout off, batch norm by its running
/// statistics) with `B` bound to `batch` and the given trained parameters, compiled
/// to run forward only.
fn evaluator(
    name: &str,
    batch: Option<usize>,
    params: BTreeMap<String, Vec<f32>>,
) -> Result<Executable, Box<dyn std::error::Error>> {
    let mut model = load_model(name, batch, true)?.model;
    for (param, values) in params {
        model.set_param(&param, values)?;
    }
    let mut exe = kiln::compile(model.graph())?;
    set_params(&mut exe, &model)?;
    Ok(exe)
}

/// The parameters (and buffers) of a train step's executable as trained so far,
/// without its optimizer state.
fn step_params(
    step: &Executable,
) -> Result<BTreeMap<String, Vec<f32>>, Box<dyn std::error::Error>> {
    let mut params = BTreeMap::new();
    for (name, _) in step.params() {
        if !step.is_optimizer_state(&name) {
            params.insert(name.clone(), step.param(&name)?.to_vec());
        }
    }
    Ok(params)
}

/// Gives `to` (a forward or gradient executable of the same file) the values of
/// every parameter it has from `from` (a train step, say).
fn copy_params(from: &Executable, to: &mut Executable) -> Result<(), Box<dyn std::error::Error>> {
    for (name, _) in to.params() {
        to.set_param(&name, from.param(&name)?)?;
    }
    Ok(())
}

/// What a family reached: a metric's value against its target.
struct Outcome {
    metric: &'static str,
    value: f64,
    /// Digits printed after the point.
    decimals: usize,
    target: f64,
    /// Whether the value must stay at or below the target (else reach it).
    at_most: bool,
}

impl Outcome {
    /// `value` must reach `target`.
    fn at_least(metric: &'static str, value: f64, decimals: usize, target: f64) -> Outcome {
        Outcome {
            metric,
            value,
            decimals,
            target,
            at_most: false,
        }
    }

    /// `value` must stay at or below `target`.
    fn at_most(metric: &'static str, value: f64, decimals: usize, target: f64) -> Outcome {
        Outcome {
            at_most: true,
            ..Outcome::at_least(metric, value, decimals, target)
        }
    }

    /// The value as printed.
    fn shown(&self) -> String {
        format!("{:.*}", self.decimals, self.value)
    }
}

fn accuracy_outcome(accuracy: f64, target: f64) -> Outcome {
    Outcome::at_least("accuracy", accuracy, 4, target)
}
