//! Reduced versions of the canon's generative families (`examples/canon/generative.rs`):
//! each model file, built with a small batch, trains a few steps from its `train`
//! statement and its loss falls.

use kiln::frontend::lang::ElaborateOptions;
use kiln::ir::Rng;
use kiln::model_file::{self, ModelFile};
use kiln::{compile_train_step, Arg, Dataset, Executable};
use std::collections::BTreeMap;
use std::path::Path;

/// `examples/models/<name>.kiln` with the given dimensions.
fn load(name: &str, dims: &[(&str, usize)]) -> ModelFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/models")
        .join(format!("{name}.kiln"));
    let options = ElaborateOptions {
        dims: dims
            .iter()
            .map(|&(dim, value)| (dim.to_string(), value))
            .collect::<BTreeMap<_, _>>(),
        seed: 3,
        ..ElaborateOptions::default()
    };
    model_file::load(&path, &options).unwrap_or_else(|err| panic!("{}", err.render(false)))
}

/// The compiled train step of the file's `train` statement.
fn train_step(file: &ModelFile) -> Executable {
    let spec = file.train.as_ref().expect("a canon model trains");
    let optimizer = model_file::optimizer(spec).unwrap();
    compile_train_step(&file.model, &spec.loss, optimizer).unwrap()
}

/// The first `count` digits, pixels scaled to [0, 1].
fn digits(count: usize) -> Vec<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    let digits = Dataset::from_csv(&path, 1.0 / 16.0).unwrap();
    digits.features()[..count * 64].to_vec()
}

/// Runs `steps` steps of the file's train step on the same feeds and returns its
/// loss in the first run (the initial parameters) and in one more run after them
/// (the trained ones).
fn losses(
    file: &ModelFile,
    step: &mut Executable,
    feeds: &[(&str, Arg<'_>)],
    steps: usize,
) -> (f32, f32) {
    let name = &file.train.as_ref().expect("a canon model trains").loss;
    let mut loss = || {
        step.run(feeds).unwrap();
        step.output_f32(name).unwrap()[0]
    };
    let first = loss();
    for _ in 1..steps {
        loss();
    }
    (first, loss())
}

#[test]
fn the_linear_autoencoders_reconstruction_error_falls() {
    let file = load("autoencoder", &[("B", 16)]);
    let mut step = train_step(&file);
    let x = digits(16);
    let (first, last) = losses(&file, &mut step, &[("x", Arg::F32(&x))], 20);
    assert!(last < 0.7 * first, "loss {first} -> {last}");
}

#[test]
fn the_vaes_negative_elbo_falls_at_a_fixed_noise_seed() {
    let file = load("vae", &[("B", 16)]);
    let mut step = train_step(&file);
    let x = digits(16);
    // One seed throughout: the noise is the same in the first and last run.
    let feeds = [("x", Arg::F32(&x)), ("seed", Arg::I32(&[7]))];
    let (first, last) = losses(&file, &mut step, &feeds, 20);
    // An untrained decoder's Bernoulli logits are near 0: about 64 ln 2 = 44 nats.
    assert!(
        (30.0..60.0).contains(&first),
        "initial negative ELBO {first}"
    );
    assert!(last < 0.9 * first, "negative ELBO {first} -> {last}");
}

#[test]
fn the_planar_flows_negative_log_likelihood_falls() {
    let file = load("planar_flow", &[("B", 32), ("K", 4)]);
    let mut step = train_step(&file);
    // A noisy arc, far from the standard normal the flow starts near.
    let mut rng = Rng::new(11);
    let x: Vec<f32> = (0..32)
        .flat_map(|_| {
            let t = rng.uniform(0.0, std::f64::consts::PI);
            [
                (2.0 * t.cos() + 0.1 * rng.normal()) as f32,
                (2.0 * t.sin() - 1.0 + 0.1 * rng.normal()) as f32,
            ]
        })
        .collect();
    let (first, last) = losses(&file, &mut step, &[("x", Arg::F32(&x))], 30);
    assert!(
        last < first - 0.2,
        "negative log-likelihood {first} -> {last}"
    );
}

#[test]
fn the_gans_discriminator_learns_against_a_frozen_generator() {
    let mut file = load("gan", &[("B", 32), ("Z", 4)]);
    let generator: Vec<String> = file
        .model
        .params()
        .keys()
        .filter(|name| name.starts_with("generator."))
        .cloned()
        .collect();
    for name in &generator {
        file.model.freeze(name).unwrap();
    }
    let mut step = train_step(&file);
    let mut rng = Rng::new(5);
    // Real points on a circle of radius 2; the untrained generator's lie near 0.
    let x: Vec<f32> = (0..32)
        .flat_map(|_| {
            let angle = rng.uniform(0.0, 2.0 * std::f64::consts::PI);
            [(2.0 * angle.cos()) as f32, (2.0 * angle.sin()) as f32]
        })
        .collect();
    let z: Vec<f32> = (0..32 * 4).map(|_| rng.normal() as f32).collect();
    let feeds = [("x", Arg::F32(&x)), ("z", Arg::F32(&z))];
    let (first, last) = losses(&file, &mut step, &feeds, 10);
    // Two cross-entropies of an undecided discriminator: about 2 ln 2 = 1.39.
    assert!((1.0..1.8).contains(&first), "initial d_loss {first}");
    assert!(last < 0.8 * first, "d_loss {first} -> {last}");
    for name in &generator {
        assert_eq!(
            step.param(name).unwrap(),
            file.model.param(name).unwrap(),
            "{name} moved"
        );
    }
}
