//! Empty tensors lower, pass the kernel checker, compile and run, with NumPy's
//! results where NumPy has one: a sum over an empty axis is +0 (the accumulator's
//! start; kiln's sums start at +0, so the sign is always +), a mean is 0 / 0 = NaN, a
//! max is the identity of max (-inf, `i32::MIN`, false; NumPy refuses an empty max),
//! and a matmul with an empty contraction is +0. Each graph is lowered without any
//! pass, so lowering and the JIT compute these, not a constant folder; results are
//! compared bit for bit with the interpreter's f32 mode as well as with the values.

mod common;

use common::compile_graph;
use kiln_ir::{evaluate, scalar, DType, Feeds, Graph, Precision, Tensor, TensorType};

/// Compiles `graph`, runs it on `feeds`, checks every output against the interpreter
/// bit for bit (any NaN equal to any NaN) and returns the outputs.
fn run(graph: &Graph, feeds: &Feeds) -> std::collections::BTreeMap<String, Tensor> {
    let program = common::schedule(kiln_passes::lower::lower(graph).unwrap());
    program.check().unwrap();
    let mut exe = compile_graph(graph);
    let (outputs, _) = exe.run_feeds(feeds).unwrap();
    let expected = evaluate(graph, feeds, Precision::F32).unwrap();
    for (name, want) in &expected.outputs {
        let got = &outputs[name];
        assert_eq!(got.ty(), want.ty(), "{name}");
        let same = got
            .data()
            .iter()
            .zip(want.data())
            .all(|(a, e)| scalar::same(*a, *e));
        assert!(
            same,
            "{name}: compiled {got}, interpreter {want}\n{program}"
        );
    }
    outputs
}

fn feeds(values: Vec<(&str, Tensor)>) -> Feeds {
    values
        .into_iter()
        .map(|(name, tensor)| (name.to_string(), tensor))
        .collect()
}

#[test]
fn reductions_over_empty_axes_give_their_identities() {
    let mut g = Graph::new("empty_reduce");
    let x = g.input("x", TensorType::f32([3, 0, 2])).unwrap();
    let labels = g.input("labels", TensorType::i32([4, 0])).unwrap();
    let mask = g.input("mask", TensorType::bool([0])).unwrap();
    let sum = g.reduce_sum(x, &[1]).unwrap();
    let mean = g.reduce_mean(x, &[1]).unwrap();
    let max = g.reduce_max(x, &[1]).unwrap();
    // All axes, and the empty axis innermost (the local-accumulator kernel).
    let all = g.reduce_sum(x, &[0, 1, 2]).unwrap();
    let int_max = g.reduce_max(labels, &[1]).unwrap();
    let int_sum = g.reduce_sum(labels, &[1]).unwrap();
    let any = g.reduce_max(mask, &[0]).unwrap();
    for (name, id) in [
        ("sum", sum),
        ("mean", mean),
        ("max", max),
        ("all", all),
        ("int_max", int_max),
        ("int_sum", int_sum),
        ("any", any),
    ] {
        g.set_output(name, id).unwrap();
    }
    let out = run(
        &g,
        &feeds(vec![
            ("x", Tensor::f32([3, 0, 2], &[]).unwrap()),
            ("labels", Tensor::i32([4, 0], &[]).unwrap()),
            ("mask", Tensor::new(TensorType::bool([0]), vec![]).unwrap()),
        ]),
    );
    assert_eq!(out["sum"].shape(), [3, 1, 2]);
    assert!(out["sum"].data().iter().all(|v| v.to_bits() == 0));
    assert!(out["all"].data().iter().all(|v| v.to_bits() == 0));
    assert!(out["mean"].data().iter().all(|v| v.is_nan()));
    assert!(out["max"].data().iter().all(|&v| v == f64::NEG_INFINITY));
    assert_eq!(out["int_max"].data(), [f64::from(i32::MIN); 4]);
    assert_eq!(out["int_sum"].data(), [0.0; 4]);
    assert_eq!(out["any"].dtype(), DType::Bool);
    assert_eq!(out["any"].data(), [0.0]);
}

#[test]
fn empty_contractions_and_empty_values_compile_and_run() {
    let mut g = Graph::new("empty_values");
    let a = g.input("a", TensorType::f32([2, 0])).unwrap();
    let b = g.input("b", TensorType::f32([0, 3])).unwrap();
    let bt = g.input("bt", TensorType::f32([3, 0])).unwrap();
    let product = g.matmul(a, b).unwrap();
    // A transposed B is copied into panels first: an empty copy.
    let product_nt = g.matmul_t(a, bt, false, true).unwrap();
    let unit = g.input("unit", TensorType::f32([1, 2])).unwrap();
    let wide = g.broadcast(unit, [0, 2]).unwrap();
    let grown = g.exp(wide).unwrap();
    let labels = g.input("labels", TensorType::i32([0])).unwrap();
    let hot = g.one_hot(labels, 3).unwrap();
    let flat = g.reshape(grown, [0]).unwrap();
    let turned = g.transpose(grown, &[1, 0]).unwrap();
    for (name, id) in [
        ("product", product),
        ("product_nt", product_nt),
        ("grown", grown),
        ("hot", hot),
        ("flat", flat),
        ("turned", turned),
    ] {
        g.set_output(name, id).unwrap();
    }
    let out = run(
        &g,
        &feeds(vec![
            ("a", Tensor::f32([2, 0], &[]).unwrap()),
            ("b", Tensor::f32([0, 3], &[]).unwrap()),
            ("bt", Tensor::f32([3, 0], &[]).unwrap()),
            ("unit", Tensor::f32([1, 2], &[1.0, -0.0]).unwrap()),
            ("labels", Tensor::i32([0], &[]).unwrap()),
        ]),
    );
    for name in ["product", "product_nt"] {
        assert_eq!(out[name].shape(), [2, 3]);
        assert!(out[name].data().iter().all(|v| v.to_bits() == 0), "{name}");
    }
    assert_eq!(out["grown"].shape(), [0, 2]);
    assert_eq!(out["hot"].shape(), [0, 3]);
    assert_eq!(out["flat"].shape(), [0]);
    assert_eq!(out["turned"].shape(), [2, 0]);
}

#[test]
fn an_empty_parameter_is_updated_and_an_empty_constant_is_an_output() {
    let mut g = Graph::new("empty_param");
    let w = g.parameter("w", TensorType::f32([0, 4])).unwrap();
    let twice = g.add_(w, w).unwrap();
    g.set_update(w, twice).unwrap();
    let nothing = g.constant(7.0, TensorType::f32([4, 0])).unwrap();
    g.set_output("nothing", nothing).unwrap();
    g.set_output("twice", twice).unwrap();
    let out = run(&g, &feeds(vec![("w", Tensor::f32([0, 4], &[]).unwrap())]));
    assert_eq!(out["nothing"].shape(), [4, 0]);
    assert_eq!(out["twice"].shape(), [0, 4]);
}
