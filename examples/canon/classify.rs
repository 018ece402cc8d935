//! The classifiers: the perceptron, the supervised classifiers of `x: [B, features]`
//! and the graph convolutional network.

use crate::{
    accuracy_outcome, data_path, evaluator, load_data, load_model, step_params, train_spec,
    train_step, Family, Outcome, RunResult, SEED, SEED_INPUT,
};
use kiln::ir::DType;
use kiln::model_file;
use kiln::{metrics, Arg, Dataset, Trainer, TrainerConfig};
use std::collections::BTreeMap;

/// Rosenblatt's perceptron, one example at a time, until an epoch makes no mistake:
/// the mistakes made on the way against Novikov's bound `(R/γ)²`, with `R` the
/// largest norm of an example (with the bias's constant 1) and `γ` the margin of the
/// separator found (at most the best margin, so the bound it gives is at least
/// Novikov's). An epoch limit without separation is a miss.
pub(crate) fn perceptron(family: &Family) -> RunResult {
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
    Ok(Outcome::at_most(
        "mistakes",
        mistakes as f64,
        0,
        (bound * 10.0).floor() / 10.0,
    ))
}

/// The semi-supervised graph convolutional network on the karate club: the members
/// 0 (Mr. Hi's faction) and 33 (the officer's) are labelled; the accuracy is on the
/// other 32.
pub(crate) fn gcn(family: &Family) -> RunResult {
    // The inputs derived from the karate club's CSV files (tests/karate_data.rs):
    // the normalised adjacency, one-hot features, the factions, the labelled pair.
    let read = |name: &str| kiln::npy::read(&data_path(&format!("karate/{name}.npy")));
    let (q, features, mask) = (
        read("q")?.to_f32(),
        read("x")?.to_f32(),
        read("mask")?.to_f32(),
    );
    let labels = read("labels")?.to_i32();
    let n = labels.len();
    let labelled: Vec<usize> = (0..n).filter(|&i| mask[i] != 0.0).collect();
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
    let mut eval = evaluator(family.name, None, step_params(&step)?)?;
    eval.run(&args)?;
    let logits = eval.output_f32("logits")?;
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
    Ok(accuracy_outcome(
        correct as f64 / unlabelled.len() as f64,
        family.target,
    ))
}

/// Trains a classifier of `x: [B, features]` and returns its test accuracy.
pub(crate) fn classifier(family: &Family) -> RunResult {
    let (train, test) = load_data(family.data)?;
    let params = trained_params(family.name, &train, family.epochs)?;
    let logits = logits_of(family.name, &params, &test)?;
    let classes = logits.len() / test.len().max(1);
    let accuracy = metrics::accuracy(&logits, test.labels(), classes)?;
    let fraction = accuracy.fraction().ok_or("the test set is empty")?;
    Ok(accuracy_outcome(fraction, family.target))
}

/// The parameters of the classifier in model file `name` after `epochs` epochs on
/// `train` with the file's `train` statement.
pub(crate) fn trained_params(
    name: &str,
    train: &Dataset,
    epochs: usize,
) -> Result<BTreeMap<String, Vec<f32>>, Box<dyn std::error::Error>> {
    let file = load_model(name, None, false)?;
    let spec = train_spec(&file)?;
    let mut config = TrainerConfig::new(model_file::optimizer(spec)?)?.with_seed(SEED);
    // A model that samples (dropout, noise) reads a fresh seed every step.
    if file.model.graph().input_by_name(SEED_INPUT).is_some() {
        config = config.with_seed_input(SEED_INPUT);
    }
    let mut trainer = Trainer::new(&file.model, config)?;
    for _ in 0..epochs {
        trainer.epoch(train)?;
    }
    Ok(trainer.params()?)
}

/// The `logits` of the classifier in model file `name` with `params` on every example
/// of `data` at once (the file built for evaluation with B = its size). Inputs other
/// than `x` and `labels`, which the logits do not read (a seed, a loss's weights), are
/// fed zeros.
pub(crate) fn logits_of(
    name: &str,
    params: &BTreeMap<String, Vec<f32>>,
    data: &Dataset,
) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let mut eval = evaluator(name, Some(data.len()), params.clone())?;
    let inputs = eval.inputs();
    let largest = inputs.iter().map(|(_, ty)| ty.num_elements()).max();
    let largest = largest.unwrap_or(0);
    let (floats, ints, flags) = (vec![0.0; largest], vec![0; largest], vec![false; largest]);
    let mut args = vec![
        ("x", Arg::F32(data.features())),
        ("labels", Arg::I32(data.labels())),
    ];
    for (input, ty) in inputs
        .iter()
        .filter(|(input, _)| input != "x" && input != "labels")
    {
        let n = ty.num_elements();
        args.push((
            input.as_str(),
            match ty.dtype {
                DType::F32 => Arg::F32(&floats[..n]),
                DType::I32 => Arg::I32(&ints[..n]),
                DType::Bool => Arg::Bool(&flags[..n]),
            },
        ));
    }
    eval.run(&args)?;
    Ok(eval.output_f32("logits")?.to_vec())
}
