//! The digits MLP's train step (64-128-128-10, batch 32, softmax cross-entropy, SGD
//! 0.1, as in `examples/mlp_digits.rs`) computes the same bits on every schedule:
//! compiled for the AVX2 6x16 microkernel and for the portable f32x4 one, each on
//! one thread and on two (its first layer's products, 2^18 multiply-adds and more,
//! then run in row or column blocks on the pool), three steps on one batch of the real digits
//! leave every parameter and every step's loss bit-identical across the four, and
//! equal to the interpreter running the train-step graph (autodiff and the optimizer,
//! as `tests/differential.rs` builds it) three times, feeding each step's updates
//! back as the next step's parameters.

use kiln::compile::{compile_with, set_params};
use kiln::frontend::models::mlp_classifier;
use kiln::passes::pipeline::{self, PipelineOptions, Step};
use kiln::{Dataset, Optimizer};
use kiln_ir::kernel::MicroKernel;
use kiln_ir::{evaluate, Feeds, Precision, Target, Tensor, TensorType};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

#[path = "support/targets.rs"]
mod targets;
use targets::{matmul_calls, targets};

const SIZES: [usize; 4] = [64, 128, 128, 10];
const BATCH: usize = 32;
const STEPS: usize = 3;

fn options(target: Option<Target>) -> PipelineOptions {
    PipelineOptions {
        loss: Some("loss".to_string()),
        optimizer: Some(Optimizer::sgd(0.1).unwrap()),
        target,
        ..PipelineOptions::default()
    }
}

/// The loss of each step and the parameters after the last one.
#[derive(Debug, PartialEq)]
struct Trajectory {
    losses: Vec<u64>,
    params: BTreeMap<String, Vec<u64>>,
}

/// Bits of f32 values, every NaN alike (`kiln_ir::scalar::same`'s equality).
fn bits(values: impl IntoIterator<Item = f64>) -> Vec<u64> {
    values
        .into_iter()
        .map(|value| {
            if value.is_nan() {
                u64::MAX
            } else {
                value.to_bits()
            }
        })
        .collect()
}

#[test]
fn the_digits_train_step_is_bit_identical_on_every_target_and_the_interpreter() {
    let start = Instant::now();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    let digits = Dataset::from_csv(&path, 1.0 / 16.0).unwrap();
    // The first batch of the file: pixel values in [0, 1], many exactly 0.
    let batch: Vec<usize> = (0..BATCH).collect();
    let batch = digits.subset(&batch).unwrap();
    let model = mlp_classifier("digits_mlp", BATCH, &SIZES, true, 2026).unwrap();
    let mut inputs = Feeds::new();
    inputs.insert(
        "x".to_string(),
        Tensor::f32([BATCH, SIZES[0]], batch.features()).unwrap(),
    );
    let labels = batch
        .labels()
        .iter()
        .map(|&label| f64::from(label))
        .collect();
    inputs.insert(
        "labels".to_string(),
        Tensor::new(TensorType::i32([BATCH]), labels).unwrap(),
    );

    // The interpreter: the train-step graph as autodiff and the optimizer build it.
    let (step, _) = pipeline::run(
        model.graph(),
        &[Step::Autodiff, Step::Optimizer],
        &options(None),
        &mut |_, _| {},
    )
    .unwrap();
    let mut params: BTreeMap<String, Tensor> = model
        .params()
        .iter()
        .map(|(name, values)| {
            let ty = model.graph().ty(model.graph().param_by_name(name).unwrap());
            (name.clone(), Tensor::f32(ty.shape.clone(), values).unwrap())
        })
        .collect();
    let mut losses = Vec::new();
    for _ in 0..STEPS {
        let mut feeds = inputs.clone();
        feeds.extend(params.clone());
        let evaluation = evaluate(&step, &feeds, Precision::F32).unwrap();
        losses.extend(bits(evaluation.outputs["loss"].data().iter().copied()));
        assert_eq!(
            evaluation.updates.len(),
            params.len(),
            "every parameter steps"
        );
        params = evaluation.updates;
    }
    let expected = Trajectory {
        losses,
        params: params
            .iter()
            .map(|(name, tensor)| (name.clone(), bits(tensor.data().iter().copied())))
            .collect(),
    };
    let interpreted = start.elapsed();

    for (label, target) in targets() {
        let options = options(Some(target.clone()));
        // Which microkernel the schedule picks, read from the program `compile_with`
        // builds (the same steps for the same target).
        let (optimized, _) = pipeline::run(
            model.graph(),
            pipeline::TRAIN_STEP,
            &options,
            &mut |_, _| {},
        )
        .unwrap();
        let program = kiln::passes::lower::lower(&optimized).unwrap();
        let program = kiln::passes::schedule::for_target(&program, &target).unwrap();
        let calls = matmul_calls(&program);
        let kernels: Vec<MicroKernel> = calls.iter().map(|(call, _)| call.kernel).collect();
        let parallel_calls = calls.iter().filter(|(_, parallel)| *parallel).count();
        let microkernel = if target.avx512f {
            MicroKernel::Avx512F12x32
        } else if target.avx2_fma {
            MicroKernel::Avx2Fma6x16
        } else {
            MicroKernel::F32x4
        };
        // Forward: 3 products; backward: 3 weight gradients and 2 input gradients.
        assert!(
            kernels.len() >= 8,
            "{label}: {} matmul calls",
            kernels.len()
        );
        assert!(
            kernels.iter().all(|&kernel| kernel == microkernel),
            "{label}"
        );
        assert_eq!(
            parallel_calls > 0,
            target.threads > 1,
            "{label}: blocks on the pool"
        );

        let mut exe = compile_with(model.graph(), pipeline::TRAIN_STEP, &options).unwrap();
        set_params(&mut exe, &model).unwrap();
        assert_eq!(exe.threads(), target.threads, "{label}: the pool's threads");
        let mut losses = Vec::new();
        let mut updates = BTreeMap::new();
        for _ in 0..STEPS {
            // Parameters are not fed: the executable keeps its updated values.
            let (outputs, updated) = exe.run_feeds(&inputs).unwrap();
            losses.extend(bits(outputs["loss"].data().iter().copied()));
            updates = updated;
        }
        let compiled = Trajectory {
            losses,
            params: updates
                .iter()
                .map(|(name, tensor)| (name.clone(), bits(tensor.data().iter().copied())))
                .collect(),
        };
        assert_eq!(
            compiled.params.keys().collect::<Vec<_>>(),
            expected.params.keys().collect::<Vec<_>>(),
            "{label}: updated parameters"
        );
        assert_eq!(compiled.losses, expected.losses, "{label}: losses");
        for (name, want) in &expected.params {
            let got = &compiled.params[name];
            let first = got.iter().zip(want).position(|(g, w)| g != w);
            assert!(
                first.is_none(),
                "{label}: parameter {name}[{}] is {:?} compiled, {:?} in the interpreter",
                first.unwrap_or(0),
                f64::from_bits(got[first.unwrap_or(0)]),
                f64::from_bits(want[first.unwrap_or(0)]),
            );
        }
    }
    eprintln!(
        "interpreter {interpreted:?}; total {:?}; losses {:?}",
        start.elapsed(),
        expected
            .losses
            .iter()
            .map(|&loss| f64::from_bits(loss))
            .collect::<Vec<_>>()
    );
}
