//! Every activation of `kiln_frontend::activations`: its values against the formula
//! in f64, compiled code against the interpreter bit for bit (at a size with a
//! vector remainder, special values included), and its gradient against central
//! finite differences.

#[path = "support/finite_diff.rs"]
mod finite_diff;

use kiln::frontend::activations as act;
use kiln::frontend::{FrontendError, ModelBuilder};
use kiln::ir::{evaluate, scalar, Feeds, Graph, NodeId, Precision, Tensor, TensorType};
use kiln::passes::pipeline::{self, PipelineOptions};

type Build = fn(&mut ModelBuilder, NodeId) -> Result<NodeId, FrontendError>;
/// An activation's name, how the frontend builds it, and its meaning in f64.
type Activation = (&'static str, Build, fn(f64) -> f64);

/// Each activation with its meaning in f64 (PyTorch's defaults for the arguments).
fn activations() -> Vec<Activation> {
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    vec![
        ("relu", act::relu, |x| x.max(0.0)),
        ("sigmoid", act::sigmoid, sigmoid),
        ("tanh", act::tanh, f64::tanh),
        ("softplus", act::softplus, |x| x.exp().ln_1p()),
        (
            "elu",
            |b, x| act::elu(b, x, 1.0),
            |x| if x > 0.0 { x } else { x.exp_m1() },
        ),
        (
            "leaky_relu",
            |b, x| act::leaky_relu(b, x, 0.01),
            |x| if x > 0.0 { x } else { 0.01 * x },
        ),
        ("gelu", act::gelu, |x| {
            0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt()))
        }),
        ("gelu_tanh", act::gelu_tanh, |x| {
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + inner.tanh())
        }),
        (
            "heaviside",
            act::heaviside,
            |x| if x > 0.0 { 1.0 } else { 0.0 },
        ),
        (
            "clamp",
            |b, x| act::clamp(b, x, -0.5, 0.75),
            |x| x.clamp(-0.5, 0.75),
        ),
    ]
}

/// Thirteen points (a vector remainder of one), none at a kink.
const POINTS: [f64; 13] = [
    -3.0, -1.5, -0.9, -0.4, -0.1, -0.01, 0.02, 0.3, 0.6, 1.1, 1.7, 2.5, 4.0,
];

fn model(build: Build, n: usize) -> (Graph, NodeId) {
    let mut builder = ModelBuilder::new("activation", 0);
    let x = builder.input("x", TensorType::f32([n])).unwrap();
    let y = build(&mut builder, x).unwrap();
    builder.output("y", y).unwrap();
    let (graph, _) = builder.finish().unwrap().into_parts();
    (graph, y)
}

fn feeds(values: &[f64]) -> Feeds {
    let data = values.iter().map(|&v| f64::from(v as f32)).collect();
    let x = Tensor::new(TensorType::f32([values.len()]), data).unwrap();
    Feeds::from([("x".to_string(), x)])
}

#[test]
fn activations_match_their_formulas() {
    for (name, build, meaning) in activations() {
        let (graph, _) = model(build, POINTS.len());
        let feeds = feeds(&POINTS);
        let result = evaluate(&graph, &feeds, Precision::F64).unwrap();
        for (&x, &y) in feeds["x"].data().iter().zip(result.outputs["y"].data()) {
            let want = meaning(x);
            assert!(
                (y - want).abs() <= 1e-12 * want.abs().max(1.0),
                "{name}({x}) = {y}, expected {want}"
            );
        }
    }
}

#[test]
fn compiled_activations_equal_the_interpreter_bit_for_bit() {
    let mut values = POINTS.to_vec();
    values.extend([
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        1e-40,
        90.0,
    ]);
    for (name, build, _) in activations() {
        let (graph, _) = model(build, values.len());
        let feeds = feeds(&values);
        let expected = evaluate(&graph, &feeds, Precision::F32).unwrap();
        let options = PipelineOptions::default();
        let mut exe = kiln::compile::compile_with(&graph, pipeline::INFERENCE, &options).unwrap();
        exe.run_feeds(&feeds).unwrap();
        let got = exe.output("y").unwrap();
        let want = &expected.outputs["y"];
        for (index, (&a, &e)) in got.data().iter().zip(want.data()).enumerate() {
            assert!(
                scalar::same(a, e),
                "{name}({}): compiled {a:?}, interpreter {e:?}",
                values[index]
            );
        }
    }
}

#[test]
fn activation_gradients_match_finite_differences() {
    const EPS: f64 = 1e-6;
    for (name, build, _) in activations() {
        // The input as a parameter, so that autodiff differentiates with respect to it.
        let mut builder = ModelBuilder::new("activation", 0);
        let x = builder
            .parameter("x", &[POINTS.len()], kiln::frontend::Init::Zeros)
            .unwrap();
        let y = build(&mut builder, x).unwrap();
        let graph = builder.graph();
        let sum = graph.reduce_sum(y, &[0]).unwrap();
        let loss = graph.reshape(sum, Vec::new()).unwrap();
        builder.output("loss", loss).unwrap();
        let (graph, _) = builder.finish().unwrap().into_parts();
        let base = feeds(&POINTS);
        let derivatives = finite_diff::derivatives(&graph, &base, "x", EPS);
        for (index, (analytic, numeric)) in derivatives.into_iter().enumerate() {
            assert!(
                (analytic - numeric).abs() <= 1e-6 * analytic.abs().max(1.0),
                "d {name}/dx at {}: autodiff {analytic}, finite differences {numeric}",
                base["x"].data()[index]
            );
        }
    }
}

#[test]
fn softmax_and_log_softmax_along_each_axis() {
    let data: Vec<f64> = (0..24)
        .map(|i| f64::from((i * 7 % 11) as f32) * 0.25 - 1.0)
        .collect();
    let shape = [2usize, 3, 4];
    for axis in -3isize..3 {
        let mut builder = ModelBuilder::new("softmax", 0);
        let x = builder.input("x", TensorType::f32(shape)).unwrap();
        let soft = act::softmax(&mut builder, x, axis).unwrap();
        let log_soft = act::log_softmax(&mut builder, x, axis).unwrap();
        builder.output("soft", soft).unwrap();
        builder.output("log_soft", log_soft).unwrap();
        let (graph, _) = builder.finish().unwrap().into_parts();
        let x = Tensor::new(TensorType::f32(shape), data.clone()).unwrap();
        let feeds = Feeds::from([("x".to_string(), x)]);
        let result = evaluate(&graph, &feeds, Precision::F64).unwrap();
        let along = axis.rem_euclid(3) as usize;
        let strides = [12usize, 4, 1];
        for (flat, (&s, &l)) in result.outputs["soft"]
            .data()
            .iter()
            .zip(result.outputs["log_soft"].data())
            .enumerate()
        {
            // The other elements along the axis through `flat`.
            let position = flat / strides[along] % shape[along];
            let start = flat - position * strides[along];
            let line: Vec<f64> = (0..shape[along])
                .map(|i| data[start + i * strides[along]])
                .collect();
            let total: f64 = line.iter().map(|v| v.exp()).sum();
            let want = data[flat].exp() / total;
            assert!((s - want).abs() < 1e-12, "softmax axis {axis} [{flat}]");
            assert!(
                (l - want.ln()).abs() < 1e-12,
                "log_softmax axis {axis} [{flat}]"
            );
        }
    }
    let mut builder = ModelBuilder::new("softmax", 0);
    let x = builder.input("x", TensorType::f32([2, 3])).unwrap();
    let err = act::softmax(&mut builder, x, 2).unwrap_err().to_string();
    assert_eq!(
        err,
        "softmax: expected a tensor with an axis 2 (rank ≥ 1, axis in -2..2), found f32[2,3]"
    );
}

#[test]
fn maxout_takes_the_maximum_of_each_group() {
    let mut builder = ModelBuilder::new("maxout", 0);
    let x = builder.input("x", TensorType::f32([2, 6])).unwrap();
    let y = act::maxout(&mut builder, x, 3).unwrap();
    assert_eq!(builder.ty(y).unwrap(), &TensorType::f32([2, 2]));
    builder.output("y", y).unwrap();
    let err = act::maxout(&mut builder, x, 4).unwrap_err().to_string();
    assert_eq!(
        err,
        "maxout: expected a last axis divisible into groups of 4 (pieces ≥ 1), found f32[2,6]"
    );
    let (graph, _) = builder.finish().unwrap().into_parts();
    let data = vec![
        1.0, 5.0, 2.0, -1.0, -3.0, -2.0, 0.0, 0.0, 7.0, 4.0, 8.0, 9.0,
    ];
    let x = Tensor::new(TensorType::f32([2, 6]), data).unwrap();
    let feeds = Feeds::from([("x".to_string(), x)]);
    let result = evaluate(&graph, &feeds, Precision::F64).unwrap();
    assert_eq!(result.outputs["y"].data(), [5.0, -1.0, 7.0, 9.0]);
}

#[test]
fn clamp_refuses_bounds_out_of_order() {
    let mut builder = ModelBuilder::new("clamp", 0);
    let x = builder.input("x", TensorType::f32([2])).unwrap();
    let err = act::clamp(&mut builder, x, 1.0, -1.0)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "clamp: bounds [1, -1] must be ordered numbers");
}
