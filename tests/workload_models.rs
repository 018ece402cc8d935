//! The workload model files of examples/models (W3 lenet_w3.kiln, W4 conv_w4.kiln, W5
//! lstm_w5.kiln, W6 transformer_block_w6.kiln), reduced in size: each that has a
//! loss trains a few SGD steps on a fixed input and its loss falls, and the
//! convolution computes what its weights say.

use kiln::compile::{compile_with, set_params};
use kiln::frontend::lang::ElaborateOptions;
use kiln::ir::{Rng, TensorType};
use kiln::model_file;
use kiln::passes::pipeline::{self, PipelineOptions};
use kiln::Arg;
use std::collections::BTreeMap;
use std::path::Path;

fn load(file: &str, dims: &[(&str, usize)]) -> model_file::ModelFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/models")
        .join(file);
    let options = ElaborateOptions {
        dims: dims
            .iter()
            .map(|&(n, v)| (n.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
        seed: 1,
        ..ElaborateOptions::default()
    };
    model_file::load(&path, &options).unwrap_or_else(|err| panic!("{}", err.render(false)))
}

#[test]
fn a_reduced_lenet_train_step_lowers_its_loss() {
    let file = load("lenet_w3.kiln", &[("B", 4)]);
    let train = file.train.as_ref().unwrap();
    let options = PipelineOptions {
        loss: Some(train.loss.clone()),
        optimizer: Some(model_file::optimizer(train).unwrap()),
        ..PipelineOptions::default()
    };
    let mut exe = compile_with(file.model.graph(), pipeline::TRAIN_STEP, &options).unwrap();
    set_params(&mut exe, &file.model).unwrap();
    let mut rng = Rng::new(2);
    let x: Vec<f32> = (0..4 * 28 * 28)
        .map(|_| rng.uniform(0.0, 1.0) as f32)
        .collect();
    let labels = [3, 1, 4, 1];
    let mut losses = Vec::new();
    for _ in 0..6 {
        exe.run(&[("x", Arg::F32(&x)), ("labels", Arg::I32(&labels))])
            .unwrap();
        losses.push(exe.output_f32("loss").unwrap()[0]);
    }
    assert!(losses.iter().all(|loss| loss.is_finite()), "{losses:?}");
    assert!(losses[5] < losses[0], "the loss does not fall: {losses:?}");
}

#[test]
fn the_w4_convolution_runs_with_its_declared_shapes() {
    let file = load("conv_w4.kiln", &[("N", 1)]);
    let graph = file.model.graph();
    assert_eq!(
        graph.ty(graph.output_by_name("y").unwrap()),
        &TensorType::f32([1, 64, 56, 56])
    );
    assert_eq!(file.model.params()["conv.weight"].len(), 64 * 64 * 9);
    let mut exe = compile_with(graph, pipeline::INFERENCE, &PipelineOptions::default()).unwrap();
    set_params(&mut exe, &file.model).unwrap();
    let x = vec![0.5f32; 64 * 56 * 56];
    exe.run(&[("x", Arg::F32(&x))]).unwrap();
    // An interior output is the sum of the 3x3x64 weights of its channel times 0.5.
    let y = exe.output_f32("y").unwrap();
    let weight = &file.model.params()["conv.weight"];
    let channel = 5;
    let expected: f64 = weight[channel * 576..(channel + 1) * 576]
        .iter()
        .map(|&w| f64::from(w) * 0.5)
        .sum();
    let got = f64::from(y[channel * 56 * 56 + 20 * 56 + 30]);
    assert!((got - expected).abs() < 1e-4, "{got} vs {expected}");
}

/// Trains `file` (reduced by `dims`) with SGD on output `loss` for a few steps on a
/// fixed random input and returns the losses.
fn train_losses(file: &str, dims: &[(&str, usize)], steps: usize) -> Vec<f32> {
    let file = load(file, dims);
    let options = PipelineOptions {
        loss: Some("loss".to_string()),
        optimizer: Some(kiln::Optimizer::sgd(0.05).unwrap()),
        ..PipelineOptions::default()
    };
    let graph = file.model.graph();
    let mut exe = compile_with(graph, pipeline::TRAIN_STEP, &options).unwrap();
    set_params(&mut exe, &file.model).unwrap();
    let x_ty = graph.ty(graph.input_by_name("x").unwrap()).clone();
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..x_ty.num_elements())
        .map(|_| rng.uniform(-1.0, 1.0) as f32)
        .collect();
    (0..steps)
        .map(|_| {
            exe.run(&[("x", Arg::F32(&x))]).unwrap();
            exe.output_f32("loss").unwrap()[0]
        })
        .collect()
}

#[test]
fn reduced_lstm_and_transformer_workloads_train() {
    for (file, dims) in [
        ("lstm_w5.kiln", &[("T", 3), ("B", 2)][..]),
        (
            "transformer_block_w6.kiln",
            &[("B", 2), ("S", 3), ("D", 8)][..],
        ),
    ] {
        let losses = train_losses(file, dims, 5);
        assert!(
            losses.iter().all(|loss| loss.is_finite()),
            "{file}: {losses:?}"
        );
        assert!(
            losses[4] < losses[0],
            "{file}: the loss does not fall: {losses:?}"
        );
    }
}
