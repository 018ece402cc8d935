//! Every elementwise op on every pair of awkward values (±0, subnormals, 2^24 ± 1,
//! near and beyond f32::MAX, ±inf, NaN; i32::MIN and MAX), compiled without any pass
//! so the generated instructions compute them, in vector loops and their scalar
//! remainders, against the interpreter's f32 mode bit for bit (any NaN equal to any
//! NaN). This pins the element semantics of `kiln_ir::scalar` to what Cranelift emits:
//! `fmax` propagating NaN and ordering -0 below +0, `relu` as a compare and select,
//! saturating casts, wrapping i32 arithmetic, IEEE comparisons.

mod common;

use common::compile_graph;
use kiln_ir::random::{AWKWARD_F32, AWKWARD_I32};
use kiln_ir::{
    evaluate, scalar, BinaryOp, CmpOp, DType, Feeds, Graph, Op, Precision, Tensor, TensorType,
    UnaryOp,
};

/// All ordered pairs of `values` as two flat operands (n*n elements, so both the
/// vector loop and a scalar remainder run).
fn pairs(values: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut a = Vec::new();
    let mut b = Vec::new();
    for &x in values {
        for &y in values {
            a.push(x);
            b.push(y);
        }
    }
    (a, b)
}

/// Compiles `graph`, runs it on `feeds` and checks every output against the
/// interpreter; returns how many elements were compared.
fn check(graph: &Graph, feeds: &Feeds) -> usize {
    let mut exe = compile_graph(graph);
    let (outputs, _) = exe.run_feeds(feeds).unwrap();
    let expected = evaluate(graph, feeds, Precision::F32).unwrap();
    let mut compared = 0;
    for (name, want) in &expected.outputs {
        let got = &outputs[name];
        for (index, (a, e)) in got.data().iter().zip(want.data()).enumerate() {
            assert!(
                scalar::same(*a, *e),
                "{name}[{index}]: compiled {a:?}, interpreter {e:?} (operands {:?})",
                feeds
                    .values()
                    .map(|t| t.data().get(index).copied())
                    .collect::<Vec<_>>()
            );
            compared += 1;
        }
    }
    compared
}

#[test]
fn f32_ops_on_awkward_pairs_match_the_interpreter_bit_for_bit() {
    let values: Vec<f64> = AWKWARD_F32.iter().map(|&v| f64::from(v as f32)).collect();
    let (a_data, b_data) = pairs(&values);
    let n = a_data.len();
    let ty = TensorType::f32([n]);
    let mut g = Graph::new("awkward_f32");
    let a = g.input("a", ty.clone()).unwrap();
    let b = g.input("b", ty.clone()).unwrap();
    for op in BinaryOp::ALL {
        let y = g.add(Op::Binary(op), &[a, b]).unwrap();
        g.set_output(op.name(), y).unwrap();
    }
    for op in UnaryOp::ALL {
        let y = g.add(Op::Unary(op), &[a]).unwrap();
        g.set_output(op.name(), y).unwrap();
    }
    for op in CmpOp::ALL {
        let flag = g.add(Op::Compare(op), &[a, b]).unwrap();
        let picked = g.select(flag, a, b).unwrap();
        g.set_output(&format!("cmp.{}", op.name()), picked).unwrap();
    }
    for to in [DType::I32, DType::Bool] {
        let cast = g.cast(a, to).unwrap();
        let back = g.cast(cast, DType::F32).unwrap();
        g.set_output(&format!("cast.{to}"), back).unwrap();
    }
    let feeds: Feeds = [
        ("a".to_string(), Tensor::new(ty.clone(), a_data).unwrap()),
        ("b".to_string(), Tensor::new(ty, b_data).unwrap()),
    ]
    .into_iter()
    .collect();
    let compared = check(&g, &feeds);
    // Every binary and unary op, 6 compare-selects and 2 casts, on every pair.
    let ops = BinaryOp::ALL.len() + UnaryOp::ALL.len() + CmpOp::ALL.len() + 2;
    assert_eq!(compared, ops * n);
    // The values that pin the contract, spelled out.
    let mut exe = compile_graph(&g);
    let (out, _) = exe.run_feeds(&feeds).unwrap();
    let index = |x: f64, y: f64| {
        let position = |v: f64| values.iter().position(|&w| scalar::same(v, w)).unwrap();
        position(x) * values.len() + position(y)
    };
    let max = out["max"].data();
    assert_eq!(max[index(-0.0, 0.0)].to_bits(), 0);
    assert_eq!(max[index(0.0, -0.0)].to_bits(), 0);
    assert!(max[index(f64::NAN, f64::INFINITY)].is_nan());
    assert_eq!(out["relu"].data()[index(-0.0, 0.0)].to_bits(), 0);
    assert_eq!(out["relu"].data()[index(f64::NAN, 0.0)].to_bits(), 0);
    let sum = out["add"].data()[index(16_777_216.0, f64::from(1e-40_f32))];
    assert_eq!(sum, 16_777_216.0);
    assert_eq!(out["cast.i32"].data()[index(f64::NAN, 0.0)], 0.0);
    assert_eq!(
        out["cast.i32"].data()[index(f64::INFINITY, 0.0)],
        f64::from(i32::MAX as f32)
    );
}

#[test]
fn i32_ops_on_extreme_pairs_wrap_like_the_interpreter() {
    let (a_data, b_data) = pairs(&AWKWARD_I32);
    let n = a_data.len();
    let ty = TensorType::i32([n]);
    let mut g = Graph::new("awkward_i32");
    let a = g.input("a", ty.clone()).unwrap();
    let b = g.input("b", ty.clone()).unwrap();
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Max] {
        let y = g.add(Op::Binary(op), &[a, b]).unwrap();
        g.set_output(op.name(), y).unwrap();
    }
    for op in [UnaryOp::Neg, UnaryOp::Relu] {
        let y = g.add(Op::Unary(op), &[a]).unwrap();
        g.set_output(op.name(), y).unwrap();
    }
    let as_f32 = g.cast(a, DType::F32).unwrap();
    g.set_output("to_f32", as_f32).unwrap();
    let lt = g.compare(CmpOp::Lt, a, b).unwrap();
    g.set_output("lt", lt).unwrap();
    let feeds: Feeds = [
        ("a".to_string(), Tensor::new(ty.clone(), a_data).unwrap()),
        ("b".to_string(), Tensor::new(ty, b_data).unwrap()),
    ]
    .into_iter()
    .collect();
    check(&g, &feeds);
    let mut exe = compile_graph(&g);
    let (out, _) = exe.run_feeds(&feeds).unwrap();
    // i32::MAX + 1 wraps; neg(i32::MIN) is i32::MIN; 2^24 + 1 rounds to 2^24 in f32.
    let index = |x: f64, y: f64| {
        let position = |v: f64| AWKWARD_I32.iter().position(|&w| w == v).unwrap();
        position(x) * AWKWARD_I32.len() + position(y)
    };
    let min = f64::from(i32::MIN);
    assert_eq!(out["add"].data()[index(f64::from(i32::MAX), 1.0)], min);
    assert_eq!(out["neg"].data()[index(min, 0.0)], min);
    assert_eq!(out["to_f32"].data()[index(16_777_217.0, 0.0)], 16_777_216.0);
}

#[test]
fn accumulation_order_near_f32_max_is_the_interpreters() {
    // Sums fold in row-major order from +0 with one rounding per step, in both
    // reduction kernels (the reduced axis innermost, accumulating in a register, and
    // outermost, accumulating in place in a vector loop) and in matmul's fma chain:
    // MAX + MAX overflows to inf before -MAX arrives, and -0 terms sum to +0.
    let max = f64::from(f32::MAX);
    let mut g = Graph::new("order");
    let rows = g.input("rows", TensorType::f32([5, 3])).unwrap();
    let cols = g.input("cols", TensorType::f32([3, 5])).unwrap();
    let ones = g.input("ones", TensorType::f32([3, 1])).unwrap();
    let by_row = g.reduce_sum(rows, &[1]).unwrap();
    let by_col = g.reduce_sum(cols, &[0]).unwrap();
    let mean = g.reduce_mean(cols, &[0]).unwrap();
    let product = g.matmul(rows, ones).unwrap();
    for (name, id) in [
        ("by_row", by_row),
        ("by_col", by_col),
        ("mean", mean),
        ("product", product),
    ] {
        g.set_output(name, id).unwrap();
    }
    // Row i of `rows` (column i of `cols`): [MAX, MAX, -MAX], [-0, -0, -0],
    // [1, 2^-24, 2^-24], [-MAX, MAX, MAX], [3, -3, -0].
    let tiny = 2f64.powi(-24);
    let lines = [
        [max, max, -max],
        [-0.0, -0.0, -0.0],
        [1.0, tiny, tiny],
        [-max, max, max],
        [3.0, -3.0, -0.0],
    ];
    let row_data: Vec<f64> = lines.iter().flatten().copied().collect();
    let col_data: Vec<f64> = (0..3)
        .flat_map(|j| lines.iter().map(move |line| line[j]))
        .collect();
    let feeds: Feeds = [
        ("rows", TensorType::f32([5, 3]), row_data),
        ("cols", TensorType::f32([3, 5]), col_data),
        ("ones", TensorType::f32([3, 1]), vec![1.0; 3]),
    ]
    .into_iter()
    .map(|(name, ty, data)| (name.to_string(), Tensor::new(ty, data).unwrap()))
    .collect();
    check(&g, &feeds);
    let mut exe = compile_graph(&g);
    let (out, _) = exe.run_feeds(&feeds).unwrap();
    let expected = [f64::INFINITY, 0.0, 1.0, max, 0.0];
    for name in ["by_row", "by_col", "product"] {
        let bits: Vec<u64> = out[name].data().iter().map(|v| v.to_bits()).collect();
        let want: Vec<u64> = expected.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, want, "{name}: {:?}", out[name].data());
    }
    assert_eq!(out["mean"].data()[0], f64::INFINITY);
}
