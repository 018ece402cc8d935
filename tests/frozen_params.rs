//! Frozen parameters (buffers) through a compiled training step: the optimizer trains
//! the other parameters, a buffer keeps its values or the update the model gives it,
//! and freezing part of a model trains the rest alone (a GAN's alternating steps).

use kiln::frontend::{Init, ModelBuilder};
use kiln::ir::{BinaryOp, NodeId, ReduceOp, TensorType};
use kiln::passes::optimizer::Optimizer;
use kiln::{compile_train_step, Arg};

/// The sum of a vector's elements, as a scalar.
fn sum(b: &mut ModelBuilder, x: NodeId) -> NodeId {
    let graph = b.graph();
    let total = graph.reduce(ReduceOp::Sum, x, &[0]).unwrap();
    graph.reshape(total, []).unwrap()
}

/// `loss = sum((x + table) * w)`, with `running` updated to `0.5 running + 0.5 x`.
fn model_with_buffers() -> kiln::frontend::Model {
    let mut b = ModelBuilder::new("buffers", 1);
    let x = b.input("x", TensorType::f32([3])).unwrap();
    let w = b.parameter("w", &[3], Init::Constant(1.0)).unwrap();
    let table = b.buffer("table", &[3], vec![1.0, 2.0, 3.0]).unwrap();
    let running = b.buffer("running", &[3], vec![4.0, 4.0, 4.0]).unwrap();
    let shifted = b.binary(BinaryOp::Add, x, table).unwrap();
    let product = b.binary(BinaryOp::Mul, shifted, w).unwrap();
    let loss = sum(&mut b, product);
    let half = b.scalar_like(0.5, running).unwrap();
    let decayed = b.binary(BinaryOp::Mul, running, half).unwrap();
    let fresh = b.binary(BinaryOp::Mul, x, half).unwrap();
    let next = b.binary(BinaryOp::Add, decayed, fresh).unwrap();
    b.set_update(running, next).unwrap();
    b.output("loss", loss).unwrap();
    b.finish().unwrap()
}

#[test]
fn a_train_step_leaves_buffers_to_the_model() {
    let model = model_with_buffers();
    let mut step = compile_train_step(&model, "loss", Optimizer::sgd(0.1).unwrap()).unwrap();
    let x = [2.0f32, -2.0, 0.0];
    step.run(&[("x", Arg::F32(&x))]).unwrap();
    // d loss / d w = x + table = [3, 0, 3]: w = 1 - 0.1 * that.
    assert_eq!(step.param("w").unwrap(), [0.7, 1.0, 0.7]);
    assert_eq!(step.param("table").unwrap(), [1.0, 2.0, 3.0]);
    assert_eq!(step.param("running").unwrap(), [3.0, 1.0, 2.0]);
    step.run(&[("x", Arg::F32(&x))]).unwrap();
    assert_eq!(step.param("table").unwrap(), [1.0, 2.0, 3.0]);
    assert_eq!(step.param("running").unwrap(), [2.5, -0.5, 1.0]);
}

#[test]
fn only_a_buffer_takes_the_models_own_update() {
    let mut b = ModelBuilder::new("m", 1);
    let w = b.parameter("w", &[2], Init::Constant(1.0)).unwrap();
    let err = b.set_update(w, w).unwrap_err();
    assert!(err.to_string().contains("only a buffer"), "{err}");
}

/// Two parameters in a product, `loss = sum(a * b * x)`.
fn two_part_model() -> kiln::frontend::Model {
    let mut b = ModelBuilder::new("parts", 1);
    let x = b.input("x", TensorType::f32([2])).unwrap();
    let first = b.parameter("first", &[2], Init::Constant(1.0)).unwrap();
    let second = b.parameter("second", &[2], Init::Constant(2.0)).unwrap();
    let ab = b.binary(BinaryOp::Mul, first, second).unwrap();
    let abx = b.binary(BinaryOp::Mul, ab, x).unwrap();
    let loss = sum(&mut b, abx);
    b.output("loss", loss).unwrap();
    b.finish().unwrap()
}

#[test]
fn freezing_one_part_trains_the_other_alone() {
    let x = [1.0f32, -1.0];
    for (frozen, trained, expected) in [
        ("second", "first", [0.9, 1.1]),
        ("first", "second", [1.9, 2.1]),
    ] {
        let mut model = two_part_model();
        model.freeze(frozen).unwrap();
        let adam = Optimizer::new(kiln::passes::optimizer::Rule::adam(0.1));
        let mut step = compile_train_step(&model, "loss", adam).unwrap();
        // Adam keeps no state for the frozen part.
        let state: Vec<String> = step.params().into_iter().map(|(name, _)| name).collect();
        assert!(
            !state
                .iter()
                .any(|name| name.starts_with(&format!("{frozen}."))),
            "{state:?}"
        );
        step.run(&[("x", Arg::F32(&x))]).unwrap();
        let values = step.param(trained).unwrap();
        for (value, want) in values.iter().zip(expected) {
            assert!((value - want).abs() < 1e-6, "{trained}: {values:?}");
        }
        assert_eq!(step.param(frozen).unwrap(), model.param(frozen).unwrap());
    }
    let err = two_part_model().freeze("nope").unwrap_err();
    assert_eq!(err.to_string(), "the graph has no parameter \"nope\"");
}
