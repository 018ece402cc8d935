//! The losses of `kiln_frontend::loss` beyond softmax cross-entropy and MSE: their
//! values against the formulas in f64, compiled code against the interpreter bit for
//! bit, and their gradients (with respect to the prediction) against central finite
//! differences.

#[path = "support/compiled.rs"]
mod compiled;
#[path = "support/finite_diff.rs"]
mod finite_diff;

use kiln::frontend::loss;
use kiln::frontend::{FrontendError, ModelBuilder};
use kiln::ir::{evaluate, Feeds, Graph, NodeId, Precision, Tensor, TensorType};

type Build = fn(&mut ModelBuilder, NodeId, NodeId) -> Result<NodeId, FrontendError>;
/// A loss's name, how the frontend builds it, and its meaning in f64 on rows of
/// (prediction, target).
type Loss = (&'static str, Build, fn(&[f64], &[f64]) -> f64);

const ROWS: usize = 3;
const COLS: usize = 4;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn losses() -> Vec<Loss> {
    vec![
        (
            "binary_cross_entropy_with_logits",
            loss::binary_cross_entropy_with_logits,
            |z, y| {
                let terms = z
                    .iter()
                    .zip(y)
                    .map(|(&z, &y)| -(y * sigmoid(z).ln() + (1.0 - y) * (1.0 - sigmoid(z)).ln()));
                terms.sum::<f64>() / z.len() as f64
            },
        ),
        (
            "soft_cross_entropy",
            |b, z, y| loss::soft_cross_entropy(b, z, y, 2.0),
            |z, y| {
                let rows = z.chunks(COLS).zip(y.chunks(COLS)).map(|(z, p)| {
                    let scaled: Vec<f64> = z.iter().map(|v| v / 2.0).collect();
                    let log_sum = scaled.iter().map(|v| v.exp()).sum::<f64>().ln();
                    -p.iter()
                        .zip(&scaled)
                        .map(|(p, v)| p * (v - log_sum))
                        .sum::<f64>()
                });
                rows.sum::<f64>() / ROWS as f64
            },
        ),
        ("hinge_loss", loss::hinge_loss, |s, y| {
            let terms = s.iter().zip(y).map(|(s, y)| (1.0 - y * s).max(0.0));
            terms.sum::<f64>() / s.len() as f64
        }),
        ("perceptron_loss", loss::perceptron_loss, |s, y| {
            let terms = s.iter().zip(y).map(|(s, y)| (-y * s).max(0.0));
            terms.sum::<f64>() / s.len() as f64
        }),
    ]
}

/// Predictions away from the hinges' kinks (|y·s| ≠ 1, s ≠ 0).
const PREDICTIONS: [f64; ROWS * COLS] = [
    -2.5, -0.7, 0.3, 1.6, 0.45, -1.2, 2.2, -0.15, 0.8, -3.1, 0.05, 1.3,
];

/// Targets each loss reads: probabilities for the cross-entropies (rows summing to
/// one for the soft one), ±1 for the margin losses.
fn targets(name: &str) -> [f64; ROWS * COLS] {
    match name {
        "binary_cross_entropy_with_logits" => {
            [0.0, 1.0, 0.25, 0.9, 1.0, 0.0, 0.5, 0.1, 0.6, 0.3, 1.0, 0.0]
        }
        "soft_cross_entropy" => [
            0.1, 0.2, 0.3, 0.4, 0.25, 0.25, 0.25, 0.25, 0.7, 0.1, 0.1, 0.1,
        ],
        _ => [
            1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0,
        ],
    }
}

/// `loss(x, t)` with `x` a parameter (so autodiff differentiates it) and `t` an input.
fn model(build: Build) -> Graph {
    let mut builder = ModelBuilder::new("loss", 0);
    let x = builder
        .parameter("x", &[ROWS, COLS], kiln::frontend::Init::Zeros)
        .unwrap();
    let t = builder.input("t", TensorType::f32([ROWS, COLS])).unwrap();
    let value = build(&mut builder, x, t).unwrap();
    builder.output("loss", value).unwrap();
    builder.finish().unwrap().into_parts().0
}

fn feeds(x: &[f64], t: &[f64]) -> Feeds {
    let tensor = |data: &[f64]| Tensor::new(TensorType::f32([ROWS, COLS]), data.to_vec()).unwrap();
    Feeds::from([("x".to_string(), tensor(x)), ("t".to_string(), tensor(t))])
}

#[test]
fn losses_match_their_formulas_and_compile_bit_for_bit() {
    for (name, build, meaning) in losses() {
        let graph = model(build);
        let t = targets(name);
        let feeds = feeds(&PREDICTIONS, &t);
        let value = evaluate(&graph, &feeds, Precision::F64).unwrap().outputs["loss"]
            .scalar()
            .unwrap();
        // The feeds are f32 values; the formula reads them as given.
        let x: Vec<f64> = feeds["x"].data().to_vec();
        let t: Vec<f64> = feeds["t"].data().to_vec();
        let expected = meaning(&x, &t);
        assert!(
            (value - expected).abs() <= 1e-12 * expected.abs().max(1.0),
            "{name}: {value}, formula {expected}"
        );
        assert!(value > 0.0, "{name}: a loss that is zero checks nothing");
        compiled::assert_compiled_matches(&graph, &feeds);
    }
}

#[test]
fn loss_gradients_match_finite_differences() {
    const EPS: f64 = 1e-6;
    for (name, build, _) in losses() {
        let graph = model(build);
        let base = feeds(&PREDICTIONS, &targets(name));
        let mut largest = 0.0f64;
        let derivatives = finite_diff::derivatives(&graph, &base, "x", EPS);
        for (index, (analytic, numeric)) in derivatives.into_iter().enumerate() {
            largest = largest.max(analytic.abs());
            assert!(
                (analytic - numeric).abs() <= 1e-6 * analytic.abs().max(1.0),
                "d {name}/dx[{index}]: autodiff {analytic}, finite differences {numeric}"
            );
        }
        assert!(largest > 1e-3, "{name}: all gradients are nearly zero");
    }
}

#[test]
fn mismatched_targets_and_bad_temperatures_are_errors() {
    let mut builder = ModelBuilder::new("bad", 0);
    let x = builder.input("x", TensorType::f32([2, 3])).unwrap();
    let t = builder.input("t", TensorType::f32([3, 2])).unwrap();
    let err = loss::hinge_loss(&mut builder, x, t).unwrap_err();
    assert_eq!(
        err.to_string(),
        "hinge_loss: expected a target of the prediction's type f32[2,3] (f32), found f32[3,2]"
    );
    let err = loss::soft_cross_entropy(&mut builder, x, x, 0.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "soft_cross_entropy: the temperature 0 must be a positive number"
    );
}
