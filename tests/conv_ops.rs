//! The window ops — convolution (`conv`, `conv_input_grad`, `conv_filter_grad`) and
//! pooling (`max_pool`, `avg_pool` and their gradients): their expansion into
//! im2col and matmuls (or, for the implicit GEMM, into unpadded ops the contraction
//! kernel lowers) or into combined windows computes the interpreter's meaning
//! bit for bit, and the compiled code equals the interpreter bit for bit, at random
//! odd sizes in one, two and three spatial dimensions with strides, dilations,
//! uneven padding and groups (and ties, for the maximum); a kernel that does not fit
//! is a type error naming what is wrong.

#[path = "support/conv_cases.rs"]
mod conv_cases;

use conv_cases::{graph_of, random_case};
use kiln::ir::op::{ConvSpec, PoolKind, PoolSpec};
use kiln::ir::{evaluate, scalar, Feeds, Graph, Op, Precision, Rng, Tensor, TensorType};
use kiln::passes::expand::{self, ConvForm};
use kiln::passes::pipeline::{self, PipelineOptions};

fn random_tensor(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let data: Vec<f64> = (0..shape.iter().product())
        .map(|_| f64::from(rng.uniform(-2.0, 2.0) as f32))
        .collect();
    Tensor::new(TensorType::f32(shape.to_vec()), data).unwrap()
}

fn assert_same(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.ty(), want.ty(), "{what}");
    for (index, (a, e)) in got.data().iter().zip(want.data()).enumerate() {
        assert!(scalar::same(*a, *e), "{what}[{index}]: {a} against {e}");
    }
}

/// Evaluates `graph` by its meaning, through both its expansions (im2col, and the
/// unpadded ops the implicit GEMM lowers) and compiled in both forms (the CPU's
/// matmul routine on the patch matrix; the contraction kernel's loop nest), and
/// asserts all agree bit for bit.
fn check_three_ways(graph: &Graph, feeds: &Feeds, what: &str) {
    let meaning = evaluate(graph, feeds, Precision::F32).unwrap();
    for form in [ConvForm::Im2col, ConvForm::Implicit] {
        let expanded = expand::run(graph, form).unwrap();
        assert!(!expand::needed(&expanded, form));
        let through_expansion = evaluate(&expanded, feeds, Precision::F32).unwrap();
        let options = PipelineOptions {
            conv: form,
            ..PipelineOptions::default()
        };
        let mut exe = kiln::compile::compile_with(graph, pipeline::INFERENCE, &options).unwrap();
        let (compiled, _) = exe.run_feeds(feeds).unwrap();
        for (name, want) in &meaning.outputs {
            let expanded = &through_expansion.outputs[name];
            assert_same(&format!("{form:?} expanded {what}, {name}"), expanded, want);
            assert_same(
                &format!("{form:?} compiled {what}, {name}"),
                &compiled[name],
                want,
            );
        }
    }
}

#[test]
fn pooling_expansion_and_compiled_code_equal_the_meaning_bit_for_bit() {
    let mut rng = Rng::new(77);
    for round in 0..40 {
        let rank = 1 + rng.below(3);
        let mut spec = PoolSpec::default();
        let mut x_shape = vec![1 + rng.below(2), 1 + rng.below(3)];
        for _ in 0..rank {
            let window = 1 + rng.below(3);
            let n = window + rng.below(4);
            spec.window.push(window);
            spec.stride.push(1 + rng.below(3));
            spec.low.push(rng.below(window / 2 + 1));
            spec.high.push(rng.below(window / 2 + 1));
            x_shape.push(n);
        }
        for kind in PoolKind::ALL {
            let mut g = Graph::new("pool");
            let x = g.input("x", TensorType::f32(x_shape.clone())).unwrap();
            let pool = Op::Pool {
                kind,
                spec: spec.clone(),
            };
            let y = g.add(pool, &[x]).unwrap();
            let y_shape = g.ty(y).shape.clone();
            let dy = g.input("dy", TensorType::f32(y_shape.clone())).unwrap();
            let grad = Op::PoolGrad {
                kind,
                spec: spec.clone(),
            };
            let dx = g.add(grad, &[x, dy]).unwrap();
            g.set_output("y", y).unwrap();
            g.set_output("dx", dx).unwrap();
            let mut feeds = Feeds::new();
            // Few distinct values (signed zeros among them), so windows have ties.
            let choices = [-1.0, -0.0, 0.0, 0.5, 1.0];
            let x_data: Vec<f64> = (0..x_shape.iter().product())
                .map(|_| choices[rng.below(choices.len())])
                .collect();
            feeds.insert(
                "x".into(),
                Tensor::new(TensorType::f32(x_shape.clone()), x_data).unwrap(),
            );
            feeds.insert("dy".into(), random_tensor(&mut rng, &y_shape));
            check_three_ways(&g, &feeds, &format!("round {round}, {kind:?} {spec:?}"));
        }
    }
}

#[test]
fn expansion_and_compiled_code_equal_the_meaning_bit_for_bit() {
    let mut rng = Rng::new(2026);
    for round in 0..40 {
        let case = random_case(&mut rng);
        let graph = graph_of(&case);
        let mut feeds = Feeds::new();
        for (name, shape) in [("x", &case.x), ("w", &case.w), ("dy", &case.y)] {
            feeds.insert(name.into(), random_tensor(&mut rng, shape));
        }
        check_three_ways(&graph, &feeds, &format!("round {round}, {:?}", case.spec));
        // Products that round to -0: a sum's sign then shows every term it took
        // (padding's +0 products, a tap that reads nothing adding +0).
        let tiny = |shape: &[usize], value: f64| {
            Tensor::full(&TensorType::f32(shape.to_vec()), value).unwrap()
        };
        let feeds = Feeds::from([
            ("x".to_string(), tiny(&case.x, -1e-30)),
            ("w".to_string(), tiny(&case.w, 1e-30)),
            ("dy".to_string(), tiny(&case.y, -1e-30)),
        ]);
        check_three_ways(&graph, &feeds, &format!("round {round}, tiny values"));
    }
}

#[test]
fn a_kernel_that_does_not_fit_and_mismatched_operands_are_type_errors() {
    let mut g = Graph::new("bad");
    let x = g.input("x", TensorType::f32([1, 4, 5])).unwrap();
    let w = g.input("w", TensorType::f32([3, 2, 7])).unwrap();
    let spec = ConvSpec {
        stride: vec![1],
        low: vec![0],
        high: vec![1],
        dilation: vec![1],
        groups: 2,
    };
    let err = g.add(Op::Conv(spec.clone()), &[x, w]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv: a weight for f32[1,4,5] in 2 group(s) is [O, 2, taps…] with O divisible by 2 and at least one tap per axis, found f32[3,2,7]"
    );
    let w = g.input("w2", TensorType::f32([4, 2, 7])).unwrap();
    let err = g.add(Op::Conv(spec), &[x, w]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv: a kernel of 7 taps with dilation 1 does not fit axis 0 of 5 elements padded by 0 and 1"
    );
}
