//! Softmax cross-entropy at the edges of f32: for logits near ±f32::MAX the compiled
//! loss and its gradient stay finite and match the interpreter, through the inference
//! pipeline, the training pipeline and one SGD step.

use kiln::compile::compile_with;
use kiln::frontend::loss::softmax_cross_entropy;
use kiln::frontend::{Init, Model, ModelBuilder};
use kiln::ir::{evaluate, Feeds, Precision, Tensor, TensorType};
use kiln::passes::pipeline::{self, PipelineOptions, Step};
use kiln::{compile, compile_train_step, Arg, Optimizer};

const BIG: f32 = f32::MAX;

/// Rows whose true loss is representable in f32, each hitting one edge. Two losses
/// of f32::MAX also make the sum of the losses overflow, though not their mean.
#[rustfmt::skip]
const LOGITS: [f32; 12] = [
    BIG, -BIG, 0.0,   // label 0: loss 0; `-BIG - BIG` shifts to -inf
    BIG, -BIG, 0.0,   // label 2: loss f32::MAX
    -BIG, -BIG, -BIG, // label 1: loss ln 3
    0.0, BIG, -BIG,   // label 0: loss f32::MAX
];
const LABELS: [i32; 4] = [0, 2, 1, 0];

/// The loss in f64: per row `logsumexp(z) - z[label]`, averaged.
fn exact_loss() -> f64 {
    let rows = LOGITS.chunks(3).zip(LABELS).map(|(row, label)| {
        let row: Vec<f64> = row.iter().map(|&z| f64::from(z)).collect();
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|&z| (z - max).exp()).sum();
        sum.ln() + max - row[label as usize]
    });
    rows.sum::<f64>() / LABELS.len() as f64
}

/// The gradient in f64: `(softmax(z) - one_hot(label)) / batch` per row.
fn exact_gradient() -> Vec<f64> {
    let mut gradient = Vec::new();
    for (row, label) in LOGITS.chunks(3).zip(LABELS) {
        let row: Vec<f64> = row.iter().map(|&z| f64::from(z)).collect();
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|&z| (z - max).exp()).sum();
        for (class, &z) in row.iter().enumerate() {
            let target = if class == label as usize { 1.0 } else { 0.0 };
            gradient.push(((z - max).exp() / sum - target) / LABELS.len() as f64);
        }
    }
    gradient
}

fn assert_close(what: &str, actual: &[f32], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "{what}");
    for (index, (&actual, &expected)) in actual.iter().zip(expected).enumerate() {
        let actual = f64::from(actual);
        assert!(actual.is_finite(), "{what}[{index}] = {actual}");
        let error = (actual - expected).abs() / expected.abs().max(1e-6);
        assert!(
            error < 1e-6,
            "{what}[{index}] = {actual}, expected {expected}"
        );
    }
}

/// The loss of `logits` (an input, or a parameter when `trainable`) against `labels`.
fn loss_model(trainable: bool) -> Model {
    let mut builder = ModelBuilder::new("ce", 0);
    let logits = if trainable {
        builder.parameter("z", &[4, 3], Init::Zeros).unwrap()
    } else {
        builder.input("z", TensorType::f32([4, 3])).unwrap()
    };
    let labels = builder.input("labels", TensorType::i32([4])).unwrap();
    let loss = softmax_cross_entropy(&mut builder, logits, labels).unwrap();
    builder.output("loss", loss).unwrap();
    let mut model = builder.finish().unwrap();
    if trainable {
        model.set_param("z", LOGITS.to_vec()).unwrap();
    }
    model
}

/// The logits (as input or parameter, by name) and the labels.
fn feeds() -> Feeds {
    let mut feeds = Feeds::new();
    feeds.insert("z".into(), Tensor::f32([4, 3], &LOGITS).unwrap());
    feeds.insert("labels".into(), Tensor::i32([4], &LABELS).unwrap());
    feeds
}

#[test]
fn compiled_loss_near_f32_max_is_finite_and_matches_the_interpreter() {
    let model = loss_model(false);
    let expected = exact_loss();
    let interpreted = evaluate(model.graph(), &feeds(), Precision::F32).unwrap();
    let interpreted = interpreted.outputs["loss"].to_f32();
    assert_close("interpreter loss", &interpreted, &[expected]);
    // Before, the compiled loss was NaN (`0 * -inf` in the one-hot product), and with
    // that fixed alone, inf (the sum of the losses before dividing by the batch).
    let mut exe = compile(model.graph()).unwrap();
    exe.run(&[("z", Arg::F32(&LOGITS)), ("labels", Arg::I32(&LABELS))])
        .unwrap();
    let compiled = exe.output_f32("loss").unwrap();
    assert_close("compiled loss", compiled, &[expected]);
    assert_close(
        "compiled vs interpreter",
        compiled,
        &[f64::from(interpreted[0])],
    );
}

#[test]
fn compiled_gradient_near_f32_max_is_finite_and_matches_the_interpreter() {
    let model = loss_model(true);
    let options = PipelineOptions {
        loss: Some("loss".to_string()),
        ..PipelineOptions::default()
    };
    let (backward, _) =
        pipeline::run(model.graph(), &[Step::Autodiff], &options, &mut |_, _| {}).unwrap();
    let interpreted = evaluate(&backward, &feeds(), Precision::F32).unwrap();
    let gradient = exact_gradient();
    assert_close(
        "interpreter gradient",
        &interpreted.outputs["grad.z"].to_f32(),
        &gradient,
    );
    let steps = [Step::Autodiff, Step::Egraph, Step::Dce];
    let mut exe = compile_with(model.graph(), &steps, &options).unwrap();
    exe.set_param("z", &LOGITS).unwrap();
    exe.run(&[("labels", Arg::I32(&LABELS))]).unwrap();
    assert_close(
        "compiled loss",
        exe.output_f32("loss").unwrap(),
        &[exact_loss()],
    );
    assert_close(
        "compiled gradient",
        exe.output_f32("grad.z").unwrap(),
        &gradient,
    );

    // One SGD step from the compiled train step moves each logit by -lr * gradient.
    let learning_rate = 0.5;
    let mut step =
        compile_train_step(&model, "loss", Optimizer::sgd(learning_rate).unwrap()).unwrap();
    step.run(&[("labels", Arg::I32(&LABELS))]).unwrap();
    assert_close(
        "train step loss",
        step.output_f32("loss").unwrap(),
        &[exact_loss()],
    );
    let stepped: Vec<f64> = LOGITS
        .iter()
        .zip(&gradient)
        .map(|(&z, &g)| f64::from(z) - learning_rate * g)
        .collect();
    assert_close("stepped logits", step.param("z").unwrap(), &stepped);
}
