//! Batch normalisation compiled, in both modes: a training step normalises by the
//! batch and updates the running statistics as PyTorch does (checked against an f64
//! reference), the trainer hands the statistics on with the weights, and evaluation
//! normalises each example by them alone.

use kiln::compile::set_params;
use kiln::frontend::lang::ElaborateOptions;
use kiln::model_file;
use kiln::{compile, Arg, Dataset, Trainer, TrainerConfig};
use std::collections::BTreeMap;
use std::path::Path;

const SOURCE: &str = "model Bn(B = 6) {
  input x: f32[B, 3]
  input labels: i32[B]
  norm = BatchNorm1d(3, momentum = 0.25)
  head = Linear(3, 2)
  forward {
    logits = head(norm(x))
    loss = cross_entropy(logits, labels)
    output logits, loss
  }
  train loss with sgd(lr = 0.1) batch B
}
";

fn load(batch: usize, evaluation: bool) -> kiln::model_file::ModelFile {
    let options = ElaborateOptions {
        dims: BTreeMap::from([("B".to_string(), batch)]),
        evaluation,
        ..ElaborateOptions::default()
    };
    model_file::load_source(Path::new("bn.kiln"), SOURCE.to_string(), &options)
        .unwrap_or_else(|err| panic!("{}", err.render(false)))
}

fn features(rows: usize) -> Vec<f32> {
    (0..rows * 3)
        .map(|i| ((i * 7 % 11) as f32 - 4.0) * 0.5 + (i % 3) as f32)
        .collect()
}

#[test]
fn a_training_step_updates_the_running_statistics_as_pytorch() {
    let file = load(6, false);
    let spec = file.train.as_ref().unwrap();
    let optimizer = model_file::optimizer(spec).unwrap();
    let mut step = kiln::compile_train_step(&file.model, &spec.loss, optimizer).unwrap();
    let x = features(6);
    let labels = [0, 1, 1, 0, 1, 0];
    step.run(&[("x", Arg::F32(&x)), ("labels", Arg::I32(&labels))])
        .unwrap();
    let mean = step.param("norm.running_mean").unwrap().to_vec();
    let var = step.param("norm.running_var").unwrap().to_vec();
    for c in 0..3 {
        let column: Vec<f64> = (0..6).map(|r| f64::from(x[r * 3 + c])).collect();
        let batch_mean = column.iter().sum::<f64>() / 6.0;
        let unbiased = column.iter().map(|v| (v - batch_mean).powi(2)).sum::<f64>() / 5.0;
        let want_mean = 0.25 * batch_mean;
        let want_var = 0.75 + 0.25 * unbiased;
        assert!(
            (f64::from(mean[c]) - want_mean).abs() < 1e-6,
            "mean {c}: {mean:?}"
        );
        assert!(
            (f64::from(var[c]) - want_var).abs() < 1e-5,
            "var {c}: {var:?}"
        );
    }
    // The normalised batch has mean 0 per feature whatever the weights: the scale
    // and shift (ones and zeros at first) get gradients, the statistics none.
    assert_ne!(step.param("norm.weight").unwrap(), [1.0; 3]);
}

#[test]
fn evaluation_uses_the_trained_statistics_one_example_at_a_time() {
    let file = load(6, false);
    let spec = file.train.as_ref().unwrap();
    let config = TrainerConfig::new(model_file::optimizer(spec).unwrap()).unwrap();
    let mut trainer = Trainer::new(&file.model, config).unwrap();
    let rows = 24;
    let x = features(rows);
    let labels: Vec<i32> = (0..rows).map(|r| i32::from(x[r * 3] > 0.0)).collect();
    let data = Dataset::new(x.clone(), labels, 3, 2).unwrap();
    for _ in 0..3 {
        trainer.epoch(&data).unwrap();
    }
    let params = trainer.params().unwrap();
    assert_ne!(params["norm.running_var"], [1.0; 3], "the statistics moved");
    // The whole set at once and each example alone give the same logits.
    let logits = |batch: usize, x: &[f32]| -> Vec<f32> {
        let mut model = load(batch, true).model;
        for (name, values) in &params {
            model.set_param(name, values.clone()).unwrap();
        }
        let mut exe = compile(model.graph()).unwrap();
        set_params(&mut exe, &model).unwrap();
        let labels = vec![0; batch];
        exe.run(&[("x", Arg::F32(x)), ("labels", Arg::I32(&labels))])
            .unwrap();
        exe.output_f32("logits").unwrap().to_vec()
    };
    let all = logits(rows, &x);
    for r in [0, 5, 23] {
        let one = logits(1, &x[r * 3..r * 3 + 3]);
        for (a, b) in one.iter().zip(&all[r * 2..r * 2 + 2]) {
            assert!((a - b).abs() < 1e-5, "example {r}: {one:?} vs {all:?}");
        }
    }
    // By hand for the first example: head(g·(x − mean)/sqrt(var + eps) + b), the
    // head's weight being [in, out].
    let p = |name: &str| {
        params[name]
            .iter()
            .map(|&v| f64::from(v))
            .collect::<Vec<_>>()
    };
    let (mean, var) = (p("norm.running_mean"), p("norm.running_var"));
    let (g, b) = (p("norm.weight"), p("norm.bias"));
    let normal: Vec<f64> = (0..3)
        .map(|c| g[c] * (f64::from(x[c]) - mean[c]) / (var[c] + 1e-5).sqrt() + b[c])
        .collect();
    let (weight, bias) = (p("head.weight"), p("head.bias"));
    for k in 0..2 {
        let logit = bias[k] + (0..3).map(|c| weight[c * 2 + k] * normal[c]).sum::<f64>();
        assert!(
            (logit - f64::from(all[k])).abs() < 1e-5,
            "logit {k}: {logit} vs {all:?}"
        );
    }
}
