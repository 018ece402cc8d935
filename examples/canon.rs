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
use kiln::{compile, metrics, Arg, Dataset, Executable, Trainer, TrainerConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
}

/// A family: its model file's name, data, epochs and the test accuracy it must reach
/// (the perceptron's target is computed from the data instead).
struct Family {
    name: &'static str,
    data: Data,
    epochs: usize,
    target: f64,
}

const FAMILIES: [Family; 16] = [
    family("perceptron", Data::IrisSetosa, 100, 0.0),
    family("logistic_regression", Data::IrisSetosa, 60, 0.93),
    family("softmax_regression", Data::Iris, 300, 0.93),
    family("mlp", Data::Digits, 30, 0.97),
    family("layernorm_mlp", Data::Digits, 20, 0.97),
    family("dropout_mlp", Data::Digits, 30, 0.97),
    family("weightnorm_mlp", Data::Digits, 30, 0.97),
    family("resnet_block", Data::Digits, 12, 0.97),
    family("densenet_block", Data::Digits, 20, 0.97),
    family("rnn", Data::Digits, 30, 0.93),
    family("lstm", Data::Digits, 30, 0.93),
    family("gru", Data::Digits, 30, 0.93),
    family("deep_birnn", Data::Digits, 25, 0.93),
    family("attention", Data::Digits, 25, 0.95),
    family("transformer_encoder", Data::Digits, 25, 0.95),
    family("gcn", Data::Karate, 200, 0.85),
];

const fn family(name: &'static str, data: Data, epochs: usize, target: f64) -> Family {
    Family {
        name,
        data,
        epochs,
        target,
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
        match run(family) {
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
                    family.name, outcome.metric, outcome.shown, outcome.target
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
        Data::Karate => Err("the karate club is a graph: see run_gcn".into()),
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
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/models")
        .join(format!("{name}.kiln"));
    let options = ElaborateOptions {
        dims: batch
            .map(|b| BTreeMap::from([("B".to_string(), b)]))
            .unwrap_or_default(),
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

/// What a family reached: a metric's value against its target.
struct Outcome {
    metric: &'static str,
    value: f64,
    /// The value as printed.
    shown: String,
    target: f64,
    /// Whether the value must stay at or below the target (else reach it).
    at_most: bool,
}

fn accuracy_outcome(accuracy: f64, target: f64) -> Outcome {
    Outcome {
        metric: "accuracy",
        value: accuracy,
        shown: format!("{accuracy:.4}"),
        target,
        at_most: false,
    }
}

/// Trains the family and measures it.
fn run(family: &Family) -> Result<Outcome, Box<dyn std::error::Error>> {
    match (family.name, family.data) {
        ("perceptron", _) => run_perceptron(family),
        (_, Data::Karate) => Ok(accuracy_outcome(run_gcn(family)?, family.target)),
        _ => Ok(accuracy_outcome(run_classifier(family)?, family.target)),
    }
}

/// Rosenblatt's perceptron, one example at a time, until an epoch makes no mistake:
/// the mistakes made on the way against Novikov's bound `(R/γ)²`, with `R` the
/// largest norm of an example (with the bias's constant 1) and `γ` the margin of the
/// separator found (at most the best margin, so the bound it gives is at least
/// Novikov's). An epoch limit without separation is a miss.
fn run_perceptron(family: &Family) -> Result<Outcome, Box<dyn std::error::Error>> {
    let (train, _) = load_data(family.data)?;
    let mut step = train_step(family)?;
    let sign = |label: i32| if label == 1 { 1.0 } else { -1.0 };
    let mut mistakes = 0usize;
    let mut separated = false;
    for _ in 0..family.epochs {
        let mut epoch_mistakes = 0;
        for index in 0..train.len() {
            let x = train.example(index).ok_or("an example out of range")?;
            let label = train.label(index).ok_or("a label out of range")?;
            step.run(&[("x", Arg::F32(x)), ("labels", Arg::I32(&[label]))])?;
            // The score before this step's update; zero counts as a mistake.
            let score = f64::from(step.output_f32("logits")?[1]);
            if score * sign(label) <= 0.0 {
                epoch_mistakes += 1;
            }
        }
        mistakes += epoch_mistakes;
        if epoch_mistakes == 0 {
            separated = true;
            break;
        }
    }
    if !separated {
        return Err(format!(
            "no separation in {} epochs ({mistakes} mistakes)",
            family.epochs
        )
        .into());
    }
    let w = step.param("unit.weight")?.to_vec();
    let b = step.param("unit.bias")?[0];
    let norm = (w.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() + f64::from(b).powi(2)).sqrt();
    let (mut radius, mut margin) = (0.0f64, f64::INFINITY);
    for index in 0..train.len() {
        let x = train.example(index).ok_or("an example out of range")?;
        let label = train.label(index).ok_or("a label out of range")?;
        let squared: f64 = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() + 1.0;
        radius = radius.max(squared.sqrt());
        let score: f64 = x
            .iter()
            .zip(&w)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum::<f64>()
            + f64::from(b);
        margin = margin.min(sign(label) * score / norm);
    }
    let bound = (radius / margin).powi(2);
    Ok(Outcome {
        metric: "mistakes",
        value: mistakes as f64,
        shown: mistakes.to_string(),
        target: (bound * 10.0).floor() / 10.0,
        at_most: true,
    })
}

/// Rows of a two-column CSV file of whole numbers with a header line.
fn pairs(file: &str) -> Result<Vec<(usize, usize)>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(data_path(file))?;
    let mut rows = Vec::new();
    for (number, line) in text.lines().enumerate().skip(1) {
        let (a, b) = line
            .split_once(',')
            .ok_or_else(|| format!("{file} line {}: expected two columns", number + 1))?;
        rows.push((a.trim().parse()?, b.trim().parse()?));
    }
    Ok(rows)
}

/// The semi-supervised graph convolutional network on the karate club: the members
/// 0 (Mr. Hi's faction) and 33 (the officer's) are labelled; the accuracy is on the
/// other 32.
fn run_gcn(family: &Family) -> Result<f64, Box<dyn std::error::Error>> {
    let clubs = pairs("karate_club_nodes.csv")?;
    let n = clubs.len();
    let mut labels = vec![0i32; n];
    for &(node, club) in &clubs {
        *labels.get_mut(node).ok_or("a node outside 0..34")? = i32::try_from(club)?;
    }
    // Q = D̃^-1/2 (A + I) D̃^-1/2, with D̃ the degrees of A + I.
    let mut adjacency = vec![0.0f64; n * n];
    for i in 0..n {
        adjacency[i * n + i] = 1.0;
    }
    for (a, b) in pairs("karate_club_edges.csv")? {
        if a >= n || b >= n {
            return Err(format!("edge {a}-{b} names a node outside 0..{n}").into());
        }
        adjacency[a * n + b] = 1.0;
        adjacency[b * n + a] = 1.0;
    }
    let degree: Vec<f64> = (0..n)
        .map(|i| adjacency[i * n..(i + 1) * n].iter().sum())
        .collect();
    let q: Vec<f32> = (0..n * n)
        .map(|k| (adjacency[k] / (degree[k / n] * degree[k % n]).sqrt()) as f32)
        .collect();
    let features: Vec<f32> = (0..n * n)
        .map(|k| if k / n == k % n { 1.0 } else { 0.0 })
        .collect();
    let labelled = [0, n - 1];
    let mask: Vec<f32> = (0..n)
        .map(|i| if labelled.contains(&i) { 1.0 } else { 0.0 })
        .collect();
    let mut step = train_step(family)?;
    let args = [
        ("q", Arg::F32(&q)),
        ("x", Arg::F32(&features)),
        ("labels", Arg::I32(&labels)),
        ("mask", Arg::F32(&mask)),
    ];
    for _ in 0..family.epochs {
        step.run(&args)?;
    }
    // One more run: its logits come from the trained weights (before its update).
    step.run(&args)?;
    let logits = step.output_f32("logits")?;
    let unlabelled: Vec<usize> = (0..n).filter(|i| !labelled.contains(i)).collect();
    let correct = unlabelled
        .iter()
        .filter(|&&i| {
            let predicted = if logits[2 * i + 1] > logits[2 * i] {
                1
            } else {
                0
            };
            predicted == labels[i]
        })
        .count();
    Ok(correct as f64 / unlabelled.len() as f64)
}

/// Trains a classifier of `x: [B, features]` and returns its test accuracy.
fn run_classifier(family: &Family) -> Result<f64, Box<dyn std::error::Error>> {
    let (train, test) = load_data(family.data)?;
    let file = load_model(family.name, None, false)?;
    let spec = train_spec(&file)?;
    let mut config = TrainerConfig::new(model_file::optimizer(spec)?)?.with_seed(SEED);
    // A model that samples (dropout, noise) reads a fresh seed every step.
    let samples = file.model.graph().input_by_name(SEED_INPUT).is_some();
    if samples {
        config = config.with_seed_input(SEED_INPUT);
    }
    let mut trainer = Trainer::new(&file.model, config)?;
    for _ in 0..family.epochs {
        trainer.epoch(&train)?;
    }
    // The whole test set at once: the same file with B = its size.
    let mut eval_model = load_model(family.name, Some(test.len()), true)?.model;
    for (name, values) in trainer.params()? {
        eval_model.set_param(&name, values)?;
    }
    let mut eval = compile(eval_model.graph())?;
    set_params(&mut eval, &eval_model)?;
    let mut args = vec![
        ("x", Arg::F32(test.features())),
        ("labels", Arg::I32(test.labels())),
    ];
    // Evaluation draws nothing; the seed input is there all the same.
    if samples {
        args.push((SEED_INPUT, Arg::I32(&[0])));
    }
    eval.run(&args)?;
    let logits = eval.output_f32("logits")?;
    let classes = logits.len() / test.len().max(1);
    let accuracy = metrics::accuracy(logits, test.labels(), classes)?;
    accuracy
        .fraction()
        .ok_or_else(|| "the test set is empty".into())
}
