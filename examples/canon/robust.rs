//! Robustness and compression: adversarial examples with adversarial training, and
//! knowledge distillation.

use crate::classify::{logits_of, trained_params};
use crate::{
    accuracy_outcome, copy_params, load_data, load_model, train_spec, train_step, Family, Outcome,
    RunResult, FAMILIES, SEED,
};
use kiln::compile::{compile_with, set_params};
use kiln::ir::Rng;
use kiln::passes::pipeline::{self, PipelineOptions};
use kiln::{metrics, Arg, Dataset, Executable};
use std::collections::BTreeMap;

type Failure = Box<dyn std::error::Error>;

/// The attacks' L∞ radius, in pixels scaled to [0, 1].
const EPSILON: f32 = 0.1;
/// PGD while training: steps, step size (from a random start in the ball).
const TRAIN_PGD: (usize, f32) = (7, 0.025);
/// PGD when testing: steps, step size (from the image itself).
const TEST_PGD: (usize, f32) = (20, 0.0125);

/// Runs `epochs` passes over `data` in seeded random minibatches of `batch` (the last
/// partial one dropped, as `Trainer` does), giving `visit` each batch's indices,
/// features and labels.
fn minibatches(
    data: &Dataset,
    batch: usize,
    epochs: usize,
    mut visit: impl FnMut(&[usize], &[f32], &[i32]) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let width = data.features_per_example();
    let mut rng = Rng::new(SEED);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    for _ in 0..epochs {
        rng.shuffle(&mut order);
        for indices in order.chunks_exact(batch) {
            features.clear();
            labels.clear();
            for &index in indices {
                features.extend_from_slice(data.example(index).ok_or("an example out of range")?);
                labels.push(data.label(index).ok_or("a label out of range")?);
            }
            debug_assert_eq!(features.len(), batch * width);
            visit(indices, &features, &labels)?;
        }
    }
    Ok(())
}

/// The model file `name` (batch `batch`) compiled to give, besides its outputs, the
/// gradient of its loss with respect to the input `x`, as `grad.x`.
fn input_gradient(name: &str, batch: Option<usize>) -> Result<Executable, Failure> {
    let file = load_model(name, batch, true)?;
    let options = PipelineOptions {
        loss: Some(train_spec(&file)?.loss.clone()),
        grad_inputs: vec!["x".into()],
        ..PipelineOptions::default()
    };
    let mut exe = compile_with(file.model.graph(), pipeline::GRADIENTS, &options)?;
    set_params(&mut exe, &file.model)?;
    Ok(exe)
}

/// Projected gradient descent on the loss, ascending: `steps` steps of `size` along
/// the sign of `∂loss/∂x`, each projected back onto the L∞ ball of radius `EPSILON`
/// around `x` and onto [0, 1]; from a uniform random point of the ball when `start`
/// gives a generator, else from `x`. FGSM is one step of `EPSILON` from `x`.
fn attack(
    exe: &mut Executable,
    x: &[f32],
    labels: &[i32],
    (steps, size): (usize, f32),
    start: Option<&mut Rng>,
) -> Result<Vec<f32>, Failure> {
    let mut adversarial = x.to_vec();
    if let Some(rng) = start {
        for value in &mut adversarial {
            let offset = rng.uniform(-f64::from(EPSILON), f64::from(EPSILON)) as f32;
            *value = (*value + offset).clamp(0.0, 1.0);
        }
    }
    for _ in 0..steps {
        exe.run(&[("x", Arg::F32(&adversarial)), ("labels", Arg::I32(labels))])?;
        let gradient = exe.output_f32("grad.x")?;
        for ((value, &clean), &g) in adversarial.iter_mut().zip(x).zip(gradient) {
            // sign(g), 0 where the gradient is 0.
            let direction = f32::from(g > 0.0) - f32::from(g < 0.0);
            *value = (*value + size * direction)
                .clamp(clean - EPSILON, clean + EPSILON)
                .clamp(0.0, 1.0);
        }
    }
    Ok(adversarial)
}

/// The batch an executable takes: the length of its `labels` input.
fn batch_size(exe: &Executable) -> Result<usize, Failure> {
    Ok(exe
        .inputs()
        .into_iter()
        .find(|(name, _)| name == "labels")
        .map(|(_, ty)| ty.num_elements())
        .ok_or("the model file has no `labels` input")?)
}

/// The fraction of `labels` that `logits` (one row per example) gets right.
fn accuracy(logits: &[f32], labels: &[i32]) -> Result<f64, Failure> {
    let classes = logits.len() / labels.len().max(1);
    let accuracy = metrics::accuracy(logits, labels, classes)?;
    Ok(accuracy.fraction().ok_or("no examples")?)
}

/// A model's test accuracy on the images, under FGSM and under PGD.
struct Robustness {
    clean: f64,
    fgsm: f64,
    pgd: f64,
}

/// Trains the family's network with its `train` statement on the images, or (with
/// `adversarial`) on PGD examples of each batch made with the current weights, and
/// measures it on `test`.
fn train_and_attack(
    family: &Family,
    train: &Dataset,
    test: &Dataset,
    adversarial: bool,
) -> Result<Robustness, Failure> {
    let mut step = train_step(family)?;
    let mut gradient = input_gradient(family.name, None)?;
    let batch = batch_size(&gradient)?;
    let mut noise = Rng::new(SEED + 1);
    minibatches(train, batch, family.epochs, |_, x, labels| {
        let x = if adversarial {
            copy_params(&step, &mut gradient)?;
            attack(&mut gradient, x, labels, TRAIN_PGD, Some(&mut noise))?
        } else {
            x.to_vec()
        };
        step.run(&[("x", Arg::F32(&x)), ("labels", Arg::I32(labels))])?;
        Ok(())
    })?;
    let mut eval = input_gradient(family.name, Some(test.len()))?;
    copy_params(&step, &mut eval)?;
    let (x, labels) = (test.features(), test.labels());
    let fgsm = attack(&mut eval, x, labels, (1, EPSILON), None)?;
    let pgd = attack(&mut eval, x, labels, TEST_PGD, None)?;
    let mut accuracy_on = |x: &[f32]| -> Result<f64, Failure> {
        eval.run(&[("x", Arg::F32(x)), ("labels", Arg::I32(labels))])?;
        accuracy(eval.output_f32("logits")?, labels)
    };
    Ok(Robustness {
        clean: accuracy_on(x)?,
        fgsm: accuracy_on(&fgsm)?,
        pgd: accuracy_on(&pgd)?,
    })
}

/// FGSM and PGD against the network trained normally and adversarially: the result
/// is the points of PGD accuracy that adversarial training adds.
pub(crate) fn adversarial(family: &Family) -> RunResult {
    let (train, test) = load_data(family.data)?;
    let normal = train_and_attack(family, &train, &test, false)?;
    let robust = train_and_attack(family, &train, &test, true)?;
    for (how, model) in [("normally", &normal), ("adversarially", &robust)] {
        println!(
            "adversarial: trained {how}: test accuracy clean {:.4}, FGSM {:.4}, PGD {:.4} (ε = {EPSILON})",
            model.clean, model.fgsm, model.pgd
        );
    }
    // The issue asks each attack to take the accuracy to at most half the clean one.
    let half = normal.clean / 2.0;
    let halved = normal.fgsm <= half && normal.pgd <= half;
    println!(
        "adversarial: normally trained, FGSM {:.4} and PGD {:.4} against half the clean accuracy {half:.4}: {}",
        normal.fgsm,
        normal.pgd,
        if halved { "halved" } else { "not halved (MISSED)" }
    );
    let gain = 100.0 * (robust.pgd - normal.pgd);
    Ok(Outcome::at_least(
        "PGD accuracy gain in points",
        gain,
        1,
        family.target,
    ))
}

/// The weight of the teacher's softened outputs in the distilled student's loss.
const ALPHA: f32 = 0.9;
/// The model file of the teacher, trained on the labels.
const TEACHER: &str = "mlp";
/// The students learn from this many training examples, drawn afresh (seeded) for
/// each of `SUBSETS` pairs of students; the teacher from all of them.
const STUDENT_EXAMPLES: usize = 100;
const SUBSETS: u64 = 5;

/// The student of the family's file trained on `train` with the teacher's logits and
/// loss weight `alpha` (0: the labels alone); its accuracy on `test`.
fn student_accuracy(
    family: &Family,
    train: &Dataset,
    teacher_logits: &[f32],
    alpha: f32,
    test: &Dataset,
) -> Result<f64, Failure> {
    let mut step = train_step(family)?;
    let batch = batch_size(&step)?;
    let classes = teacher_logits.len() / train.len().max(1);
    let mut soft = Vec::with_capacity(batch * classes);
    minibatches(train, batch, family.epochs, |indices, x, labels| {
        soft.clear();
        for &index in indices {
            soft.extend_from_slice(&teacher_logits[index * classes..(index + 1) * classes]);
        }
        step.run(&[
            ("x", Arg::F32(x)),
            ("labels", Arg::I32(labels)),
            ("teacher_logits", Arg::F32(&soft)),
            ("alpha", Arg::F32(&[alpha])),
        ])?;
        Ok(())
    })?;
    let params: BTreeMap<String, Vec<f32>> = step
        .params()
        .into_iter()
        .filter(|(name, _)| !step.is_optimizer_state(name))
        .map(|(name, _)| Ok((name.clone(), step.param(&name)?.to_vec())))
        .collect::<Result<_, Failure>>()?;
    accuracy(&logits_of(family.name, &params, test)?, test.labels())
}

/// The distilled and the label-only student's test accuracies, trained on `train`.
fn students(
    family: &Family,
    teacher: &BTreeMap<String, Vec<f32>>,
    train: &Dataset,
    test: &Dataset,
) -> Result<(f64, f64), Failure> {
    let teacher_logits = logits_of(TEACHER, teacher, train)?;
    Ok((
        student_accuracy(family, train, &teacher_logits, ALPHA, test)?,
        student_accuracy(family, train, &teacher_logits, 0.0, test)?,
    ))
}

/// A teacher trained on the labels of the whole training set, and the family's
/// student trained on its softened outputs against the same student trained on the
/// labels alone, each on a small subset of the training examples: the mean test
/// accuracies over `SUBSETS` subsets. The students on the whole training set are
/// printed too.
pub(crate) fn distillation(family: &Family) -> RunResult {
    let (train, test) = load_data(family.data)?;
    let teacher_epochs = FAMILIES
        .iter()
        .find(|other| other.name == TEACHER)
        .ok_or("the teacher is not a family")?
        .epochs;
    let teacher = trained_params(TEACHER, &train, teacher_epochs)?;
    let teacher_test = accuracy(&logits_of(TEACHER, &teacher, &test)?, test.labels())?;
    println!("distillation: teacher ({TEACHER}) test accuracy {teacher_test:.4}");
    let (mut distilled, mut labels_only) = (0.0, 0.0);
    for subset in 0..SUBSETS {
        let (examples, _) = train.split(STUDENT_EXAMPLES, SEED + subset)?;
        let (soft, hard) = students(family, &teacher, &examples, &test)?;
        println!(
            "distillation: students on {STUDENT_EXAMPLES} examples (subset {subset}): \
             soft targets (alpha = {ALPHA}) {soft:.4}, labels alone {hard:.4}"
        );
        distilled += soft / SUBSETS as f64;
        labels_only += hard / SUBSETS as f64;
    }
    let (soft, hard) = students(family, &teacher, &train, &test)?;
    println!(
        "distillation: students on all {} examples: soft targets {soft:.4}, labels alone {hard:.4}",
        train.len()
    );
    println!(
        "distillation: mean over the {SUBSETS} subsets: soft targets {distilled:.4}, labels alone {labels_only:.4}"
    );
    Ok(Outcome {
        target: (labels_only * 1e4).round() / 1e4,
        ..accuracy_outcome(distilled, 0.0)
    })
}
