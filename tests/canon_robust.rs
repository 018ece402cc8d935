//! Reduced runs of the canon's adversarial and distillation families
//! (examples/models/adversarial.kiln, distillation.kiln): a few training steps on one
//! small batch of digits lower the loss, on the images, on PGD examples and with a
//! teacher's soft targets, and an FGSM step along the compiled input gradient raises
//! it.

use kiln::compile::{compile_train_step, compile_with, set_params};
use kiln::frontend::lang::ElaborateOptions;
use kiln::model_file::{self, ModelFile};
use kiln::passes::pipeline::{self, PipelineOptions};
use kiln::{Arg, Dataset, Executable};
use std::collections::BTreeMap;
use std::path::Path;

const BATCH: usize = 16;
const EPSILON: f32 = 0.1;

fn load(name: &str) -> ModelFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/models")
        .join(format!("{name}.kiln"));
    let options = ElaborateOptions {
        dims: BTreeMap::from([("B".to_string(), BATCH)]),
        seed: 7,
        ..ElaborateOptions::default()
    };
    model_file::load(&path, &options).unwrap_or_else(|err| panic!("{}", err.render(false)))
}

fn train_step(file: &ModelFile) -> Executable {
    let spec = file.train.as_ref().expect("a train statement");
    let optimizer = model_file::optimizer(spec).unwrap();
    compile_train_step(&file.model, &spec.loss, optimizer).unwrap()
}

/// The first `BATCH` digits, pixels in [0, 1].
fn digits() -> (Vec<f32>, Vec<i32>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    let data = Dataset::from_csv(&path, 1.0 / 16.0).unwrap();
    let indices: Vec<usize> = (0..BATCH).collect();
    let batch = data.subset(&indices).unwrap();
    (batch.features().to_vec(), batch.labels().to_vec())
}

/// The loss and `∂loss/∂x` of the adversarial network with `step`'s parameters.
fn loss_and_gradient(
    gradient: &mut Executable,
    step: &Executable,
    x: &[f32],
    labels: &[i32],
) -> (f32, Vec<f32>) {
    for (name, _) in gradient.params() {
        gradient
            .set_param(&name, step.param(&name).unwrap())
            .unwrap();
    }
    gradient
        .run(&[("x", Arg::F32(x)), ("labels", Arg::I32(labels))])
        .unwrap();
    (
        gradient.output_f32("loss").unwrap()[0],
        gradient.output_f32("grad.x").unwrap().to_vec(),
    )
}

/// One signed step of `size` from `x` along `gradient`, kept within `EPSILON` of
/// `clean` and in [0, 1].
fn ascend(x: &[f32], clean: &[f32], gradient: &[f32], size: f32) -> Vec<f32> {
    x.iter()
        .zip(clean)
        .zip(gradient)
        .map(|((&v, &c), &g)| {
            let direction = f32::from(g > 0.0) - f32::from(g < 0.0);
            (v + size * direction)
                .clamp(c - EPSILON, c + EPSILON)
                .clamp(0.0, 1.0)
        })
        .collect()
}

#[test]
fn adversarial_training_lowers_the_loss_on_pgd_examples_and_fgsm_raises_it() {
    let file = load("adversarial");
    let (x, labels) = digits();
    let options = PipelineOptions {
        loss: Some("loss".into()),
        grad_inputs: vec!["x".into()],
        ..PipelineOptions::default()
    };
    let mut gradient = compile_with(file.model.graph(), pipeline::GRADIENTS, &options).unwrap();
    set_params(&mut gradient, &file.model).unwrap();
    let mut step = train_step(&file);

    // FGSM at the initial weights raises the loss.
    let (clean_loss, g) = loss_and_gradient(&mut gradient, &step, &x, &labels);
    let fgsm = ascend(&x, &x, &g, EPSILON);
    let (fgsm_loss, _) = loss_and_gradient(&mut gradient, &step, &fgsm, &labels);
    assert!(fgsm_loss > clean_loss, "FGSM: {clean_loss} -> {fgsm_loss}");

    // Training on PGD examples (3 steps each) of the batch lowers their loss.
    let pgd = |gradient: &mut Executable, step: &Executable| {
        let mut adversarial = x.clone();
        for _ in 0..3 {
            let (_, g) = loss_and_gradient(gradient, step, &adversarial, &labels);
            adversarial = ascend(&adversarial, &x, &g, 0.04);
        }
        let (loss, _) = loss_and_gradient(gradient, step, &adversarial, &labels);
        (adversarial, loss)
    };
    let (_, first) = pgd(&mut gradient, &step);
    for _ in 0..30 {
        let (adversarial, _) = pgd(&mut gradient, &step);
        step.run(&[("x", Arg::F32(&adversarial)), ("labels", Arg::I32(&labels))])
            .unwrap();
    }
    let (_, last) = pgd(&mut gradient, &step);
    assert!(last < 0.5 * first, "loss on PGD examples {first} -> {last}");
}

#[test]
fn the_student_learns_from_soft_targets_and_from_labels_alone() {
    let file = load("distillation");
    let (x, labels) = digits();
    // A teacher that is sure of the label, with a second guess one class up.
    let teacher: Vec<f32> = labels
        .iter()
        .flat_map(|&label| {
            (0..10).map(move |class| match (class - label).rem_euclid(10) {
                0 => 6.0,
                1 => 3.0,
                _ => 0.0,
            })
        })
        .collect();
    // The soft term's least value: T² times the mean entropy of the softened
    // targets (a cross-entropy is at least its target's entropy), T = 4.
    let entropy: f64 = teacher
        .chunks_exact(10)
        .map(|row| {
            let weights: Vec<f64> = row.iter().map(|&z| (f64::from(z) / 4.0).exp()).collect();
            let total: f64 = weights.iter().sum();
            -weights
                .iter()
                .map(|w| w / total * (w / total).ln())
                .sum::<f64>()
        })
        .sum::<f64>()
        / BATCH as f64;
    for alpha in [0.9f32, 0.0] {
        let least = f64::from(alpha) * 16.0 * entropy;
        let mut step = train_step(&file);
        let mut losses = Vec::new();
        for _ in 0..40 {
            step.run(&[
                ("x", Arg::F32(&x)),
                ("labels", Arg::I32(&labels)),
                ("teacher_logits", Arg::F32(&teacher)),
                ("alpha", Arg::F32(&[alpha])),
            ])
            .unwrap();
            losses.push(step.output_f32("loss").unwrap()[0]);
        }
        let (first, last) = (losses[0], losses[losses.len() - 1]);
        let (first, last) = (f64::from(first) - least, f64::from(last) - least);
        assert!(
            last >= -1e-3,
            "alpha {alpha}: below the least loss by {last}"
        );
        assert!(
            last < 0.5 * first,
            "alpha {alpha}: loss above its least {least}: {first} -> {last}"
        );
    }
}
