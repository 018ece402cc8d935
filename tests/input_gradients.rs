//! Gradients with respect to inputs, compiled: the fast gradient sign method
//! (an adversarial example, `x + ε·sign(∂loss/∂x)`) on an MLP classifier. The
//! compiled gradient equals the interpreter's bit for bit, and the step raises the
//! loss.

use kiln::compile::{compile_with, set_params};
use kiln::frontend::models::mlp_classifier;
use kiln::ir::{evaluate, scalar, Feeds, Precision, Rng, Tensor};
use kiln::passes::pipeline::{self, PipelineOptions, Step};
use kiln::Arg;

const BATCH: usize = 5;
const SIZES: [usize; 3] = [7, 9, 3];

fn options() -> PipelineOptions {
    PipelineOptions {
        loss: Some("loss".to_string()),
        grad_inputs: vec!["x".to_string()],
        ..PipelineOptions::default()
    }
}

#[test]
fn the_compiled_input_gradient_equals_the_interpreter_and_fgsm_raises_the_loss() {
    let model = mlp_classifier("fgsm", BATCH, &SIZES, true, 3).unwrap();
    let mut rng = Rng::new(9);
    let x: Vec<f32> = (0..BATCH * SIZES[0])
        .map(|_| rng.uniform(0.0, 1.0) as f32)
        .collect();
    let labels: Vec<i32> = (0..BATCH).map(|_| rng.below(3) as i32).collect();

    let mut exe = compile_with(model.graph(), pipeline::GRADIENTS, &options()).unwrap();
    set_params(&mut exe, &model).unwrap();
    exe.run(&[("x", Arg::F32(&x)), ("labels", Arg::I32(&labels))])
        .unwrap();
    let gradient = exe.output_f32("grad.x").unwrap().to_vec();
    let loss = exe.output_f32("loss").unwrap()[0];

    // The interpreter on the differentiated graph, in f32.
    let (backward, _) =
        pipeline::run(model.graph(), &[Step::Autodiff], &options(), &mut |_, _| {}).unwrap();
    let mut feeds = Feeds::new();
    feeds.insert("x".into(), Tensor::f32([BATCH, SIZES[0]], &x).unwrap());
    feeds.insert("labels".into(), Tensor::i32([BATCH], &labels).unwrap());
    for (name, values) in model.params() {
        let ty = model.graph().ty(model.graph().param_by_name(name).unwrap());
        feeds.insert(name.clone(), Tensor::f32(ty.shape.clone(), values).unwrap());
    }
    let expected = evaluate(&backward, &feeds, Precision::F32).unwrap();
    let expected_gradient = expected.outputs["grad.x"].data();
    assert_eq!(gradient.len(), expected_gradient.len());
    for (index, (&got, &want)) in gradient.iter().zip(expected_gradient).enumerate() {
        assert!(
            scalar::same(f64::from(got), want),
            "grad.x[{index}]: compiled {got}, interpreter {want}"
        );
    }
    assert!(gradient.iter().any(|&g| g != 0.0), "{gradient:?}");

    // One FGSM step along the gradient's sign raises the loss.
    let epsilon = 0.05;
    let adversarial: Vec<f32> = x
        .iter()
        .zip(&gradient)
        .map(|(&v, &g)| v + epsilon * g.signum() * f32::from(g != 0.0))
        .collect();
    exe.run(&[("x", Arg::F32(&adversarial)), ("labels", Arg::I32(&labels))])
        .unwrap();
    let raised = exe.output_f32("loss").unwrap()[0];
    assert!(raised > loss, "loss {loss} -> {raised} after the FGSM step");
}
