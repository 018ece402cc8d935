//! The counter-based `random` op compiled: bit for bit the interpreter's samples at
//! any thread count (scalar, vector and parallel loops, and fused into consumers
//! through a transpose), the right distributions, independence of seeds and streams,
//! element `n` a function of `n` alone, and dropout's gradient is its mask.

use kiln::frontend::random::dropout;
use kiln::frontend::ModelBuilder;
use kiln::ir::{evaluate, Distribution, Feeds, Graph, Precision, Tensor, TensorType};
use kiln::passes::pipeline::{self, PipelineOptions, Step};
use kiln::Arg;

fn seed_feed(seed: i32) -> Tensor {
    Tensor::i32(Vec::<usize>::new(), &[seed]).unwrap()
}

fn bits(tensor: &Tensor) -> Vec<u64> {
    tensor.data().iter().map(|x| x.to_bits()).collect()
}

/// Compiles `graph` with `threads` threads and runs it on `feeds`.
fn run(graph: &Graph, feeds: &Feeds, threads: usize) -> std::collections::BTreeMap<String, Tensor> {
    let options = PipelineOptions {
        threads: Some(threads),
        ..PipelineOptions::default()
    };
    let mut exe = kiln::compile::compile_with(graph, pipeline::INFERENCE, &options).unwrap();
    let (outputs, _) = exe.run_feeds(feeds).unwrap();
    outputs.into_iter().collect()
}

#[test]
fn compiled_samples_equal_the_interpreter_at_any_thread_count() {
    let mut g = Graph::new("samples");
    let seed = g
        .input("seed", TensorType::i32(Vec::<usize>::new()))
        .unwrap();
    let x = g.input("x", TensorType::f32([7, 5])).unwrap();
    // Large enough to be split over threads, odd so vector loops have remainders.
    let wide = g
        .random(seed, Distribution::Uniform, 0, &[300_007])
        .unwrap();
    g.set_output("wide", wide).unwrap();
    let odd = g.random(seed, Distribution::Normal, 1, &[3, 1001]).unwrap();
    g.set_output("odd", odd).unwrap();
    // Fused into an add through a transpose: the counter is re-indexed.
    let noise = g.random(seed, Distribution::Normal, 2, &[5, 7]).unwrap();
    let turned = g.transpose(noise, &[1, 0]).unwrap();
    let noisy = g.add_(x, turned).unwrap();
    g.set_output("noisy", noisy).unwrap();
    let scalar = g
        .random(seed, Distribution::Uniform, 3, &Vec::<usize>::new())
        .unwrap();
    g.set_output("scalar", scalar).unwrap();

    for seed in [0, -1, 123_456_789] {
        let mut feeds = Feeds::new();
        feeds.insert("seed".into(), seed_feed(seed));
        let x: Vec<f32> = (0..35).map(|i| i as f32 * 0.25 - 4.0).collect();
        feeds.insert("x".into(), Tensor::f32([7, 5], &x).unwrap());
        let expected = evaluate(&g, &feeds, Precision::F32).unwrap();
        for threads in [1, 2] {
            let outputs = run(&g, &feeds, threads);
            for (name, want) in &expected.outputs {
                assert_eq!(
                    bits(&outputs[name]),
                    bits(want),
                    "{name}, seed {seed}, {threads} threads"
                );
            }
        }
    }
}

/// Mean, variance and the fraction below `cut` of `data`.
fn moments(data: &[f64], cut: f64) -> (f64, f64, f64) {
    let n = data.len() as f64;
    let mean = data.iter().sum::<f64>() / n;
    let variance = data.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let below = data.iter().filter(|&&x| x < cut).count() as f64 / n;
    (mean, variance, below)
}

#[test]
fn samples_have_the_distributions_they_name() {
    let n = 200_000;
    let mut g = Graph::new("moments");
    let seed = g
        .input("seed", TensorType::i32(Vec::<usize>::new()))
        .unwrap();
    let u = g.random(seed, Distribution::Uniform, 0, &[n]).unwrap();
    let z = g.random(seed, Distribution::Normal, 0, &[n]).unwrap();
    g.set_output("u", u).unwrap();
    g.set_output("z", z).unwrap();
    let mut feeds = Feeds::new();
    feeds.insert("seed".into(), seed_feed(42));
    let outputs = run(&g, &feeds, 2);
    // Standard errors at n = 200 000: mean 0.00065 (uniform) and 0.0022 (normal),
    // variance about 0.0003 and 0.0032, fractions at most 0.0011; bounds are ~4.5σ.
    let u = outputs["u"].data();
    assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
    let (mean, variance, below) = moments(u, 0.25);
    assert!((mean - 0.5).abs() < 0.003, "uniform mean {mean}");
    assert!(
        (variance - 1.0 / 12.0).abs() < 0.0015,
        "uniform variance {variance}"
    );
    assert!((below - 0.25).abs() < 0.005, "uniform below 0.25: {below}");
    let z = outputs["z"].data();
    assert!(z.iter().all(|x| x.is_finite() && x.abs() < 5.5));
    let (mean, variance, below) = moments(z, -1.0);
    assert!((mean).abs() < 0.01, "normal mean {mean}");
    assert!((variance - 1.0).abs() < 0.015, "normal variance {variance}");
    // Φ(−1) = 0.158655.
    assert!(
        (below - 0.158_655).abs() < 0.004,
        "normal below −1: {below}"
    );
    let third_moment = z.iter().map(|x| x.powi(3)).sum::<f64>() / n as f64;
    assert!(third_moment.abs() < 0.04, "normal skew {third_moment}");
}

#[test]
fn element_n_depends_only_on_the_seed_the_stream_and_n() {
    let mut g = Graph::new("prefix");
    let seed = g
        .input("seed", TensorType::i32(Vec::<usize>::new()))
        .unwrap();
    let short = g.random(seed, Distribution::Normal, 5, &[10]).unwrap();
    let long = g.random(seed, Distribution::Normal, 5, &[4, 25]).unwrap();
    let other_stream = g.random(seed, Distribution::Normal, 6, &[10]).unwrap();
    g.set_output("short", short).unwrap();
    g.set_output("long", long).unwrap();
    g.set_output("other_stream", other_stream).unwrap();
    let outputs = |seed: i32| {
        let mut feeds = Feeds::new();
        feeds.insert("seed".into(), seed_feed(seed));
        run(&g, &feeds, 1)
    };
    let first = outputs(7);
    let short = first["short"].data();
    // Row-major numbering: the first ten elements of any shape are the same sample.
    assert_eq!(short, &first["long"].data()[..10]);
    assert_ne!(short, first["other_stream"].data());
    assert_ne!(short, outputs(8)["short"].data());
    // The same seed again gives the same sample.
    assert_eq!(short, outputs(7)["short"].data());
}

#[test]
fn a_seed_that_is_not_an_i32_scalar_is_a_type_error() {
    let mut g = Graph::new("bad");
    let seed = g.input("seed", TensorType::i32([1])).unwrap();
    let err = g
        .random(seed, Distribution::Uniform, 0, &[3])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "random.uniform: the seed must be an i32 scalar (i32[]), found i32[1]"
    );
}

#[test]
fn dropout_zeroes_about_p_scales_the_rest_and_its_gradient_is_the_mask() {
    let (rows, cols, p) = (64, 33, 0.3);
    let mut builder = ModelBuilder::new("dropout", 1);
    let x = builder.input("x", TensorType::f32([rows, cols])).unwrap();
    let seed = builder
        .input("seed", TensorType::i32(Vec::<usize>::new()))
        .unwrap();
    let y = dropout(&mut builder, x, p, seed).unwrap();
    builder.output("y", y).unwrap();
    let loss = builder.graph().reduce_sum(y, &[0, 1]).unwrap();
    builder.output("loss", loss).unwrap();
    let model = builder.finish().unwrap();

    let options = PipelineOptions {
        loss: Some("loss".to_string()),
        grad_inputs: vec!["x".to_string()],
        ..PipelineOptions::default()
    };
    let mut exe =
        kiln::compile::compile_with(model.graph(), pipeline::GRADIENTS, &options).unwrap();
    let x: Vec<f32> = (0..rows * cols).map(|i| 1.0 + (i % 7) as f32).collect();
    exe.run(&[("x", Arg::F32(&x)), ("seed", Arg::I32(&[11]))])
        .unwrap();
    let y = exe.output_f32("y").unwrap().to_vec();
    let gradient = exe.output_f32("grad.x").unwrap().to_vec();
    let scale = (1.0 / (1.0 - p)) as f32;
    let mut dropped = 0;
    for ((&x, &y), &g) in x.iter().zip(&y).zip(&gradient) {
        if y == 0.0 {
            dropped += 1;
            assert_eq!(g, 0.0);
        } else {
            assert_eq!(y, x * scale);
            assert_eq!(g, scale);
        }
    }
    let fraction = dropped as f64 / (rows * cols) as f64;
    // 2112 elements: the standard error of the fraction is 0.01.
    assert!((fraction - p).abs() < 0.05, "dropped {fraction}");

    // The interpreter on the differentiated graph agrees bit for bit.
    let (backward, _) =
        pipeline::run(model.graph(), &[Step::Autodiff], &options, &mut |_, _| {}).unwrap();
    let mut feeds = Feeds::new();
    feeds.insert("x".into(), Tensor::f32([rows, cols], &x).unwrap());
    feeds.insert("seed".into(), seed_feed(11));
    let expected = evaluate(&backward, &feeds, Precision::F32).unwrap();
    let want: Vec<f32> = expected.outputs["grad.x"]
        .data()
        .iter()
        .map(|&v| v as f32)
        .collect();
    assert_eq!(gradient, want);
}

#[test]
fn dropout_rejects_probabilities_outside_the_unit_interval() {
    let mut builder = ModelBuilder::new("dropout", 1);
    let x = builder.input("x", TensorType::f32([2])).unwrap();
    let seed = builder
        .input("seed", TensorType::i32(Vec::<usize>::new()))
        .unwrap();
    let err = dropout(&mut builder, x, 1.5, seed).unwrap_err().to_string();
    assert_eq!(err, "dropout: the probability p = 1.5 must be in [0, 1]");
    assert_eq!(dropout(&mut builder, x, 0.0, seed).unwrap(), x);
}

#[test]
fn in_evaluation_mode_dropout_is_the_identity() {
    let mut builder = ModelBuilder::new("eval", 1);
    builder.set_evaluation(true);
    let x = builder.input("x", TensorType::f32([3])).unwrap();
    let seed = builder
        .input("seed", TensorType::i32(Vec::<usize>::new()))
        .unwrap();
    assert_eq!(dropout(&mut builder, x, 0.5, seed).unwrap(), x);
}

#[test]
fn the_trainer_feeds_a_seed_input_a_fresh_seed_every_step() {
    use kiln::frontend::lang::{self, ElaborateOptions};
    use kiln::{Dataset, Optimizer, Trainer, TrainerConfig};
    let source = "model M(B = 4) {
  input x: f32[B, 3]
  input labels: i32[B]
  input seed: i32[]
  fc = Linear(3, 2)
  forward {
    logits = fc(x)
    kept = dropout(x * 0.0 + 1.0, seed, p = 0.5)
    loss = cross_entropy(logits, labels)
    output logits, loss, kept
  }
}
";
    let file = lang::load(source, &ElaborateOptions::default()).unwrap();
    let features: Vec<f32> = (0..24).map(|i| (i % 5) as f32 - 2.0).collect();
    let labels: Vec<i32> = (0..8).map(|i| i % 2).collect();
    let data = Dataset::new(features, labels, 3, 2).unwrap();
    let config = TrainerConfig::new(Optimizer::sgd(0.1).unwrap())
        .unwrap()
        .with_seed_input("seed");
    let mut trainer = Trainer::new(&file.model, config).unwrap();
    // The mask of the last step of each epoch: a function of the seed alone, so
    // equal masks would mean a repeated seed (a chance of 2^-12 otherwise).
    let mut masks = Vec::new();
    for _ in 0..2 {
        trainer.epoch(&data).unwrap();
        let kept = trainer.step().output_f32("kept").unwrap().to_vec();
        assert!(kept.iter().all(|&k| k == 0.0 || k == 2.0), "{kept:?}");
        masks.push(kept);
    }
    assert_ne!(masks[0], masks[1]);
    // A seed input of the wrong type is refused by name.
    let config = TrainerConfig::new(Optimizer::sgd(0.1).unwrap())
        .unwrap()
        .with_seed_input("labels");
    let err = Trainer::new(&file.model, config).err().unwrap().to_string();
    assert!(
        err.contains("labels") && err.contains("i32[] (a seed)"),
        "{err}"
    );
}
