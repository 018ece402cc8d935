//! The reference interpreter op by op, against values worked out by hand: every
//! other part of kiln is tested against the interpreter, so it is tested against
//! arithmetic done on paper.

use kiln_ir::{
    evaluate, CmpOp, DType, Evaluation, Feeds, Graph, InterpError, NodeId, Precision, Tensor,
    TensorType, UnaryOp,
};

fn tensor(ty: TensorType, data: &[f64]) -> Tensor {
    Tensor::new(ty, data.to_vec()).unwrap()
}

fn f32s(shape: &[usize], data: &[f64]) -> Tensor {
    tensor(TensorType::f32(shape), data)
}

fn i32s(shape: &[usize], data: &[f64]) -> Tensor {
    tensor(TensorType::i32(shape), data)
}

fn bools(shape: &[usize], data: &[f64]) -> Tensor {
    tensor(TensorType::bool(shape), data)
}

fn feeds(values: &[(&str, &Tensor)]) -> Feeds {
    values
        .iter()
        .map(|(name, value)| (name.to_string(), (*value).clone()))
        .collect()
}

fn run(graph: &Graph, values: &[(&str, &Tensor)]) -> Evaluation {
    evaluate(graph, &feeds(values), Precision::F64).unwrap()
}

/// Evaluates `build` applied to an input `x` holding `x`.
fn on_one(x: &Tensor, build: impl FnOnce(&mut Graph, NodeId) -> NodeId) -> Tensor {
    on_one_at(Precision::F64, x, build)
}

fn on_one_at(
    precision: Precision,
    x: &Tensor,
    build: impl FnOnce(&mut Graph, NodeId) -> NodeId,
) -> Tensor {
    let mut graph = Graph::new("one");
    let input = graph.input("x", x.ty()).unwrap();
    let y = build(&mut graph, input);
    graph.set_output("y", y).unwrap();
    evaluate(&graph, &feeds(&[("x", x)]), precision)
        .unwrap()
        .outputs["y"]
        .clone()
}

/// Evaluates `build` applied to inputs `a` and `b`.
fn on_two(
    a: &Tensor,
    b: &Tensor,
    build: impl FnOnce(&mut Graph, NodeId, NodeId) -> NodeId,
) -> Tensor {
    let mut graph = Graph::new("two");
    let a_id = graph.input("a", a.ty()).unwrap();
    let b_id = graph.input("b", b.ty()).unwrap();
    let y = build(&mut graph, a_id, b_id);
    graph.set_output("y", y).unwrap();
    run(&graph, &[("a", a), ("b", b)]).outputs["y"].clone()
}

/// Asserts the type and the exact values (NaN matches NaN).
fn assert_tensor(actual: &Tensor, ty: TensorType, expected: &[f64]) {
    assert_eq!(actual.ty(), ty, "type of {actual}");
    assert_eq!(actual.data().len(), expected.len(), "{actual}");
    for (index, (&a, &e)) in actual.data().iter().zip(expected).enumerate() {
        let same = a == e || (a.is_nan() && e.is_nan());
        assert!(same, "element {index}: {a} != {e} in {actual}");
    }
}

/// Asserts values of transcendental functions to within a few f64 ulps.
fn assert_near(actual: &Tensor, expected: &[f64]) {
    assert_eq!(actual.data().len(), expected.len());
    for (&a, &e) in actual.data().iter().zip(expected) {
        let same = a == e || (a - e).abs() <= 1e-15 * e.abs().max(1.0);
        assert!(same, "{a} != {e} in {actual}");
    }
}

// ---- unary ------------------------------------------------------------------------

#[test]
fn neg_flips_signs_of_floats_and_ints() {
    let y = on_one(&f32s(&[3], &[1.5, -2.0, 0.0]), |g, x| g.neg(x).unwrap());
    assert_tensor(&y, TensorType::f32([3]), &[-1.5, 2.0, 0.0]);
    let y = on_one(&i32s(&[2], &[7.0, -3.0]), |g, x| g.neg(x).unwrap());
    assert_tensor(&y, TensorType::i32([2]), &[-7.0, 3.0]);
}

#[test]
fn exp_of_known_points() {
    let e = std::f64::consts::E;
    let y = on_one(&f32s(&[4], &[0.0, 1.0, -1.0, 2.0f64.ln()]), |g, x| {
        g.exp(x).unwrap()
    });
    assert_eq!(y.ty(), TensorType::f32([4]));
    assert_near(&y, &[1.0, e, 1.0 / e, 2.0]);
    // Overflow is infinity, underflow is zero.
    let y = on_one(&f32s(&[2], &[1000.0, -1000.0]), |g, x| g.exp(x).unwrap());
    assert_tensor(&y, TensorType::f32([2]), &[f64::INFINITY, 0.0]);
}

#[test]
fn log_of_known_points_and_outside_its_domain() {
    let e = std::f64::consts::E;
    let y = on_one(&f32s(&[3], &[1.0, e, 0.5]), |g, x| g.log(x).unwrap());
    assert_near(&y, &[0.0, 1.0, -std::f64::consts::LN_2]);
    let y = on_one(&f32s(&[2], &[0.0, -1.0]), |g, x| g.log(x).unwrap());
    assert_tensor(&y, TensorType::f32([2]), &[f64::NEG_INFINITY, f64::NAN]);
}

#[test]
fn relu_zeroes_negatives_of_floats_and_ints() {
    let y = on_one(&f32s(&[4], &[-1.5, 0.0, 2.0, -0.0]), |g, x| {
        g.relu(x).unwrap()
    });
    assert_tensor(&y, TensorType::f32([4]), &[0.0, 0.0, 2.0, 0.0]);
    let y = on_one(&i32s(&[3], &[-4.0, 0.0, 9.0]), |g, x| {
        g.unary(UnaryOp::Relu, x).unwrap()
    });
    assert_tensor(&y, TensorType::i32([3]), &[0.0, 0.0, 9.0]);
}

/// The bits of `build` on `x` in both precisions (so the sign of a zero shows).
fn bits_in_both_precisions(
    x: &Tensor,
    build: impl Fn(&mut Graph, NodeId) -> NodeId,
) -> [Vec<u64>; 2] {
    [Precision::F64, Precision::F32].map(|precision| {
        on_one_at(precision, x, &build)
            .data()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    })
}

#[test]
fn sqrt_and_rsqrt_of_known_points_and_outside_their_domain() {
    let x = f32s(&[5], &[4.0, 0.25, 0.0, -0.0, f64::INFINITY]);
    let y = on_one(&x, |g, x| g.sqrt(x).unwrap());
    assert_tensor(
        &y,
        TensorType::f32([5]),
        &[2.0, 0.5, 0.0, -0.0, f64::INFINITY],
    );
    assert!(y.data()[3].is_sign_negative(), "sqrt(-0) is -0: {y}");
    let y = on_one(&x, |g, x| g.rsqrt(x).unwrap());
    let expected = [0.5, 2.0, f64::INFINITY, f64::NEG_INFINITY, 0.0];
    assert_tensor(&y, TensorType::f32([5]), &expected);
    for build in [Graph::sqrt, Graph::rsqrt] {
        let y = on_one(&f32s(&[2], &[-1.0, f64::NAN]), |g, x| build(g, x).unwrap());
        assert_tensor(&y, TensorType::f32([2]), &[f64::NAN, f64::NAN]);
    }
}

#[test]
fn abs_and_sign_of_floats_keep_zeros_and_nan_and_wrap_on_ints() {
    let x = f32s(&[5], &[-2.5, 3.0, -0.0, 0.0, f64::NAN]);
    let y = on_one(&x, |g, x| g.abs(x).unwrap());
    assert_tensor(&y, TensorType::f32([5]), &[2.5, 3.0, 0.0, 0.0, f64::NAN]);
    let y = on_one(&x, |g, x| g.sign(x).unwrap());
    assert_tensor(&y, TensorType::f32([5]), &[-1.0, 1.0, -0.0, 0.0, f64::NAN]);
    // sign(-0) is -0, sign(+0) is +0, in both precisions.
    for bits in bits_in_both_precisions(&x, |g, x| g.sign(x).unwrap()) {
        assert_eq!(bits[2..4], [(-0.0f64).to_bits(), 0]);
    }
    let ints = i32s(&[4], &[-7.0, 0.0, 9.0, f64::from(i32::MIN)]);
    let y = on_one(&ints, |g, x| g.abs(x).unwrap());
    let wrapped = f64::from(i32::MIN);
    assert_tensor(&y, TensorType::i32([4]), &[7.0, 0.0, 9.0, wrapped]);
    let y = on_one(&ints, |g, x| g.sign(x).unwrap());
    assert_tensor(&y, TensorType::i32([4]), &[-1.0, 0.0, 1.0, -1.0]);
}

#[test]
fn smooth_activations_at_known_points() {
    let x = f32s(&[3], &[0.0, 1.0, -2.0]);
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    let y = on_one(&x, |g, x| g.sigmoid(x).unwrap());
    assert_near(&y, &[0.5, sigmoid(1.0), sigmoid(-2.0)]);
    let y = on_one(&x, |g, x| g.tanh(x).unwrap());
    assert_near(&y, &[0.0, 1f64.tanh(), (-2f64).tanh()]);
    let y = on_one(&x, |g, x| g.softplus(x).unwrap());
    let softplus = |v: f64| (1.0 + v.exp()).ln();
    assert_near(&y, &[std::f64::consts::LN_2, softplus(1.0), softplus(-2.0)]);
    let y = on_one(&x, |g, x| g.expm1(x).unwrap());
    assert_near(&y, &[0.0, 1f64.exp() - 1.0, (-2f64).exp() - 1.0]);
    let y = on_one(&f32s(&[3], &[0.0, 1.0, -0.5]), |g, x| g.log1p(x).unwrap());
    assert_near(&y, &[0.0, std::f64::consts::LN_2, 0.5f64.ln()]);
    // erf(1) and erf(-0.5) to 16 digits (Abramowitz and Stegun, table 7.1).
    let y = on_one(&f32s(&[3], &[0.0, 1.0, -0.5]), |g, x| g.erf(x).unwrap());
    assert_near(
        &y,
        &[0.0, 0.842_700_792_949_714_9, -0.520_499_877_813_046_5],
    );
    // The tails saturate without overflow: no NaN from inf / inf.
    let tails = f32s(&[2], &[-1000.0, 1000.0]);
    let y = on_one(&tails, |g, x| g.sigmoid(x).unwrap());
    assert_tensor(&y, TensorType::f32([2]), &[0.0, 1.0]);
    let y = on_one(&tails, |g, x| g.softplus(x).unwrap());
    assert_tensor(&y, TensorType::f32([2]), &[0.0, 1000.0]);
    let y = on_one(&tails, |g, x| g.tanh(x).unwrap());
    assert_tensor(&y, TensorType::f32([2]), &[-1.0, 1.0]);
}

// ---- binary -----------------------------------------------------------------------

fn binary_f32(build: impl FnOnce(&mut Graph, NodeId, NodeId) -> NodeId) -> Tensor {
    let a = f32s(&[2, 2], &[1.5, -2.0, 3.0, 0.25]);
    let b = f32s(&[2, 2], &[0.5, 4.0, -3.0, -0.5]);
    on_two(&a, &b, build)
}

#[test]
fn add_sub_mul_div_max_elementwise() {
    let ty = TensorType::f32([2, 2]);
    let y = binary_f32(|g, a, b| g.add_(a, b).unwrap());
    assert_tensor(&y, ty.clone(), &[2.0, 2.0, 0.0, -0.25]);
    let y = binary_f32(|g, a, b| g.sub(a, b).unwrap());
    assert_tensor(&y, ty.clone(), &[1.0, -6.0, 6.0, 0.75]);
    let y = binary_f32(|g, a, b| g.mul(a, b).unwrap());
    assert_tensor(&y, ty.clone(), &[0.75, -8.0, -9.0, -0.125]);
    let y = binary_f32(|g, a, b| g.div(a, b).unwrap());
    assert_tensor(&y, ty.clone(), &[3.0, -0.5, -1.0, -0.5]);
    let y = binary_f32(|g, a, b| g.max(a, b).unwrap());
    assert_tensor(&y, ty, &[1.5, 4.0, 3.0, 0.25]);
}

#[test]
fn operand_order_matters_for_sub_and_div() {
    let y = binary_f32(|g, a, b| g.sub(b, a).unwrap());
    assert_tensor(&y, TensorType::f32([2, 2]), &[-1.0, 6.0, -6.0, -0.75]);
    let y = binary_f32(|g, a, b| g.div(b, a).unwrap());
    assert_tensor(&y, TensorType::f32([2, 2]), &[1.0 / 3.0, -2.0, -1.0, -2.0]);
}

#[test]
fn division_by_zero_follows_ieee() {
    let a = f32s(&[3], &[1.0, -1.0, 0.0]);
    let b = f32s(&[3], &[0.0, 0.0, 0.0]);
    let y = on_two(&a, &b, |g, a, b| g.div(a, b).unwrap());
    assert_tensor(
        &y,
        TensorType::f32([3]),
        &[f64::INFINITY, f64::NEG_INFINITY, f64::NAN],
    );
}

#[test]
fn max_with_a_nan_operand_is_nan() {
    let a = f32s(&[3], &[f64::NAN, 1.0, f64::NAN]);
    let b = f32s(&[3], &[1.0, f64::NAN, f64::NAN]);
    let y = on_two(&a, &b, |g, a, b| g.max(a, b).unwrap());
    assert_tensor(&y, TensorType::f32([3]), &[f64::NAN, f64::NAN, f64::NAN]);
    // -0 and 0 compare equal, but max orders -0 below +0 (Cranelift's fmax), in
    // either operand order and in both precisions.
    let a = f32s(&[3], &[-5.0, -0.0, 0.0]);
    let b = f32s(&[3], &[-7.0, 0.0, -0.0]);
    for precision in [Precision::F64, Precision::F32] {
        let mut graph = Graph::new("max");
        let (a_id, b_id) = (
            graph.input("a", a.ty()).unwrap(),
            graph.input("b", b.ty()).unwrap(),
        );
        let y = graph.max(a_id, b_id).unwrap();
        graph.set_output("y", y).unwrap();
        let y = evaluate(&graph, &feeds(&[("a", &a), ("b", &b)]), precision).unwrap();
        let bits: Vec<u64> = y.outputs["y"].data().iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, [(-5.0f64).to_bits(), 0, 0], "{precision:?}");
    }
}

#[test]
fn min_is_nan_propagating_and_orders_negative_zero_first() {
    let a = f32s(&[5], &[f64::NAN, 1.0, -5.0, -0.0, 0.0]);
    let b = f32s(&[5], &[1.0, f64::NAN, -7.0, 0.0, -0.0]);
    for precision in [Precision::F64, Precision::F32] {
        let mut graph = Graph::new("min");
        let (a_id, b_id) = (
            graph.input("a", a.ty()).unwrap(),
            graph.input("b", b.ty()).unwrap(),
        );
        let y = graph.min(a_id, b_id).unwrap();
        graph.set_output("y", y).unwrap();
        let y = evaluate(&graph, &feeds(&[("a", &a), ("b", &b)]), precision).unwrap();
        let data = y.outputs["y"].data();
        assert!(
            data[0].is_nan() && data[1].is_nan(),
            "{precision:?}: {data:?}"
        );
        let bits: Vec<u64> = data[2..].iter().map(|v| v.to_bits()).collect();
        let minus_zero = (-0.0f64).to_bits();
        assert_eq!(bits, [(-7.0f64).to_bits(), minus_zero, minus_zero]);
    }
    let y = on_two(
        &i32s(&[2], &[3.0, -4.0]),
        &i32s(&[2], &[-1.0, 2.0]),
        |g, a, b| g.min(a, b).unwrap(),
    );
    assert_tensor(&y, TensorType::i32([2]), &[-1.0, -4.0]);
}

#[test]
fn pow_of_known_points_and_c99_special_cases() {
    let a = f32s(&[8], &[2.0, 4.0, -2.0, -2.0, -2.0, f64::NAN, 1.0, 0.0]);
    let b = f32s(&[8], &[3.0, 0.5, 2.0, 3.0, 0.5, 0.0, f64::NAN, -1.0]);
    let expected = [8.0, 2.0, 4.0, -8.0, f64::NAN, 1.0, 1.0, f64::INFINITY];
    for precision in [Precision::F64, Precision::F32] {
        let mut graph = Graph::new("pow");
        let (a_id, b_id) = (
            graph.input("a", a.ty()).unwrap(),
            graph.input("b", b.ty()).unwrap(),
        );
        let y = graph.pow(a_id, b_id).unwrap();
        graph.set_output("y", y).unwrap();
        let y = evaluate(&graph, &feeds(&[("a", &a), ("b", &b)]), precision).unwrap();
        let y = &y.outputs["y"];
        assert_eq!(y.ty(), TensorType::f32([8]));
        // f32's pow is exp(b·log|a|), within a few ulps; the special cases are exact.
        for (index, (&got, &want)) in y.data().iter().zip(&expected).enumerate() {
            let close = (got - want).abs() <= 1e-6 * want.abs();
            let same = got == want || (got.is_nan() && want.is_nan());
            let ok = same || (precision == Precision::F32 && want.is_finite() && close);
            assert!(ok, "{precision:?} element {index}: {got} != {want}");
        }
    }
}

// ---- the f32 contract: what compiled code computes -----------------------------------

/// `build` on input `x` in f32 precision.
fn on_one_f32(x: &Tensor, build: impl FnOnce(&mut Graph, NodeId) -> NodeId) -> Tensor {
    on_one_at(Precision::F32, x, build)
}

#[test]
fn empty_reductions_give_numpy_identities() {
    // Sum over an empty axis is +0, mean is 0 / 0 = NaN, max is the identity of max:
    // -inf, i32::MIN, false (NumPy refuses an empty max; kiln defines it).
    let x = f32s(&[0, 2], &[]);
    for precision in [Precision::F64, Precision::F32] {
        let sum = on_one_at(precision, &x, |g, x| g.reduce_sum(x, &[0]).unwrap());
        assert_eq!(sum.data(), [0.0, 0.0]);
        assert!(sum.data().iter().all(|v| v.is_sign_positive()));
        let mean = on_one_at(precision, &x, |g, x| g.reduce_mean(x, &[0]).unwrap());
        assert!(mean.data().iter().all(|v| v.is_nan()), "{mean}");
        let max = on_one_at(precision, &x, |g, x| g.reduce_max(x, &[0]).unwrap());
        assert_eq!(max.data(), [f64::NEG_INFINITY; 2]);
    }
    let y = on_one_f32(&i32s(&[2, 0], &[]), |g, x| g.reduce_max(x, &[1]).unwrap());
    assert_tensor(&y, TensorType::i32([2, 1]), &[f64::from(i32::MIN); 2]);
    let y = on_one_f32(&i32s(&[2, 0], &[]), |g, x| g.reduce_sum(x, &[1]).unwrap());
    assert_tensor(&y, TensorType::i32([2, 1]), &[0.0; 2]);
    let y = on_one_f32(&bools(&[0], &[]), |g, x| g.reduce_max(x, &[0]).unwrap());
    assert_tensor(&y, TensorType::bool([1]), &[0.0]);
    // Everything else about an empty tensor is empty.
    let y = on_one_f32(&x, |g, x| {
        let e = g.exp(x).unwrap();
        g.transpose(e, &[1, 0]).unwrap()
    });
    assert_tensor(&y, TensorType::f32([2, 0]), &[]);
}

#[test]
fn f32_sums_accumulate_in_row_major_order_from_positive_zero() {
    // In order, MAX + MAX overflows to inf before -MAX comes: compiled code gives inf,
    // and so does the f32 mode; in f64 the sum is MAX.
    let max = f64::from(f32::MAX);
    let x = f32s(&[3], &[max, max, -max]);
    let y = on_one_f32(&x, |g, x| g.reduce_sum(x, &[0]).unwrap());
    assert_eq!(y.data(), [f64::INFINITY]);
    let y = on_one_at(Precision::F64, &x, |g, x| g.reduce_sum(x, &[0]).unwrap());
    assert_eq!(y.data(), [max]);
    // Each addition rounds: 1 + 2^-24 is 1 (a tie, to even), twice.
    let tiny = 2f64.powi(-24);
    let y = on_one_f32(&f32s(&[3], &[1.0, tiny, tiny]), |g, x| {
        g.reduce_sum(x, &[0]).unwrap()
    });
    assert_eq!(y.data(), [1.0]);
    // The accumulator starts at +0, so -0 terms sum to +0 (NumPy would keep -0).
    let y = on_one_f32(&f32s(&[2], &[-0.0, -0.0]), |g, x| {
        g.reduce_sum(x, &[0]).unwrap()
    });
    assert_eq!(y.data()[0].to_bits(), 0);
    // A mean divides the rounded sum by the count.
    let y = on_one_f32(&f32s(&[3], &[max, max, -max]), |g, x| {
        g.reduce_mean(x, &[0]).unwrap()
    });
    assert_eq!(y.data(), [f64::INFINITY]);
}

/// `a @ b` evaluated in `precision`.
fn matmul_at(precision: Precision, a: &Tensor, b: &Tensor) -> Vec<f64> {
    let mut graph = Graph::new("mm");
    let (a_id, b_id) = (
        graph.input("a", a.ty()).unwrap(),
        graph.input("b", b.ty()).unwrap(),
    );
    let y = graph.matmul(a_id, b_id).unwrap();
    graph.set_output("y", y).unwrap();
    let values = feeds(&[("a", a), ("b", b)]);
    evaluate(&graph, &values, precision).unwrap().outputs["y"]
        .data()
        .to_vec()
}

#[test]
fn f32_matmul_is_a_chain_of_fmas() {
    // Row [MAX, MAX, MAX] times column [1, 1, -1]: MAX, then fma to inf, which stays.
    let max = f64::from(f32::MAX);
    let a = f32s(&[1, 3], &[max, max, max]);
    let b = f32s(&[3, 1], &[1.0, 1.0, -1.0]);
    assert_eq!(matmul_at(Precision::F32, &a, &b), [f64::INFINITY]);
    assert_eq!(matmul_at(Precision::F64, &a, &b), [max]);
    // One rounding per step: -1 + (1 + 2^-12)^2 = 2^-11 + 2^-24 exactly with an fma,
    // where a rounded product (1 + 2^-11, a tie to even) would lose the 2^-24.
    let a = f32s(&[1, 2], &[-1.0, 1.0 + 2f64.powi(-12)]);
    let b = f32s(&[2, 1], &[1.0, 1.0 + 2f64.powi(-12)]);
    assert_eq!(
        matmul_at(Precision::F32, &a, &b),
        [2f64.powi(-11) + 2f64.powi(-24)]
    );
    // An empty contraction gives +0.
    let y = matmul_at(Precision::F32, &f32s(&[2, 0], &[]), &f32s(&[0, 1], &[]));
    assert_eq!(y, [0.0, 0.0]);
}

#[test]
fn f32_constants_read_as_f32() {
    // 16777217 is not an f32: it reads as 16777216, so c1 - c2 is 0 (the e-graph's
    // f64 folder once made it 1); 1e39 reads as inf, so 1e39 - 1e39 is NaN.
    let mut graph = Graph::new("consts");
    let c1 = graph.constant(16_777_217.0, TensorType::f32([1])).unwrap();
    let c2 = graph.constant(16_777_216.0, TensorType::f32([1])).unwrap();
    let d = graph.sub(c1, c2).unwrap();
    let big = graph.constant(1e39, TensorType::f32([1])).unwrap();
    let nan = graph.sub(big, big).unwrap();
    let log = graph.log(big).unwrap();
    graph.set_output("d", d).unwrap();
    graph.set_output("nan", nan).unwrap();
    graph.set_output("log", log).unwrap();
    let y = evaluate(&graph, &Feeds::new(), Precision::F32).unwrap();
    assert_eq!(y.outputs["d"].data(), [0.0]);
    assert!(y.outputs["nan"].data()[0].is_nan());
    assert_eq!(y.outputs["log"].data(), [f64::INFINITY]);
}

#[test]
fn integer_binary_ops() {
    let a = i32s(&[3], &[7.0, -3.0, 5.0]);
    let b = i32s(&[3], &[2.0, 4.0, -6.0]);
    let ty = TensorType::i32([3]);
    assert_tensor(
        &on_two(&a, &b, |g, a, b| g.add_(a, b).unwrap()),
        ty.clone(),
        &[9.0, 1.0, -1.0],
    );
    assert_tensor(
        &on_two(&a, &b, |g, a, b| g.sub(a, b).unwrap()),
        ty.clone(),
        &[5.0, -7.0, 11.0],
    );
    assert_tensor(
        &on_two(&a, &b, |g, a, b| g.mul(a, b).unwrap()),
        ty.clone(),
        &[14.0, -12.0, -30.0],
    );
    assert_tensor(
        &on_two(&a, &b, |g, a, b| g.max(a, b).unwrap()),
        ty,
        &[7.0, 4.0, 5.0],
    );
}

#[test]
fn i32_arithmetic_wraps_around() {
    let max = f64::from(i32::MAX);
    let min = f64::from(i32::MIN);
    let ty = TensorType::i32([4]);
    let a = i32s(&[4], &[max, min, 65536.0, 100_000.0]);
    let b = i32s(&[4], &[1.0, 1.0, 65536.0, 100_000.0]);
    let y = on_two(&a, &b, |g, a, b| g.add_(a, b).unwrap());
    assert_tensor(&y, ty.clone(), &[min, min + 1.0, 131_072.0, 200_000.0]);
    let y = on_two(&a, &b, |g, a, b| g.sub(a, b).unwrap());
    assert_tensor(&y, ty.clone(), &[max - 1.0, max, 0.0, 0.0]);
    // 2^16 * 2^16 = 2^32 wraps to 0; 10^10 mod 2^32 = 1_410_065_408.
    let y = on_two(&a, &b, |g, a, b| g.mul(a, b).unwrap());
    assert_tensor(&y, ty, &[max, min, 0.0, 1_410_065_408.0]);
    // (2^31 - 1)^2 = 2^62 - 2^32 + 1 is not exact in f64; wrapped it is 1.
    let big = i32s(&[1], &[max]);
    let y = on_two(&big, &big, |g, a, b| g.mul(a, b).unwrap());
    assert_tensor(&y, TensorType::i32([1]), &[1.0]);
    // -i32::MIN wraps to itself, and a sum past i32::MAX wraps too.
    let y = on_one(&i32s(&[1], &[min]), |g, x| g.neg(x).unwrap());
    assert_tensor(&y, TensorType::i32([1]), &[min]);
    let y = on_one(&i32s(&[2], &[max, 2.0]), |g, x| {
        g.reduce_sum(x, &[0]).unwrap()
    });
    assert_tensor(&y, TensorType::i32([1]), &[min + 1.0]);
}

// ---- compare and select -------------------------------------------------------------

#[test]
fn six_comparisons() {
    let a = f32s(&[3], &[1.0, 2.0, 3.0]);
    let b = f32s(&[3], &[2.0, 2.0, 2.0]);
    let cases = [
        (CmpOp::Eq, [0.0, 1.0, 0.0]),
        (CmpOp::Ne, [1.0, 0.0, 1.0]),
        (CmpOp::Lt, [1.0, 0.0, 0.0]),
        (CmpOp::Le, [1.0, 1.0, 0.0]),
        (CmpOp::Gt, [0.0, 0.0, 1.0]),
        (CmpOp::Ge, [0.0, 1.0, 1.0]),
    ];
    for (op, expected) in cases {
        let y = on_two(&a, &b, |g, a, b| g.compare(op, a, b).unwrap());
        assert_tensor(&y, TensorType::bool([3]), &expected);
        let ints = on_two(
            &i32s(&[3], &[1.0, 2.0, 3.0]),
            &i32s(&[3], &[2.0, 2.0, 2.0]),
            |g, a, b| g.compare(op, a, b).unwrap(),
        );
        assert_tensor(&ints, TensorType::bool([3]), &expected);
    }
}

#[test]
fn comparisons_with_nan_are_false_except_ne() {
    let a = f32s(&[1], &[f64::NAN]);
    let b = f32s(&[1], &[1.0]);
    for op in CmpOp::ALL {
        let y = on_two(&a, &b, |g, a, b| g.compare(op, a, b).unwrap());
        let expected = if op == CmpOp::Ne { 1.0 } else { 0.0 };
        assert_tensor(&y, TensorType::bool([1]), &[expected]);
    }
}

#[test]
fn select_picks_per_element() {
    let mut graph = Graph::new("select");
    let cond = graph.input("c", TensorType::bool([2, 2])).unwrap();
    let on_true = graph.input("t", TensorType::f32([2, 2])).unwrap();
    let on_false = graph.input("f", TensorType::f32([2, 2])).unwrap();
    let y = graph.select(cond, on_true, on_false).unwrap();
    graph.set_output("y", y).unwrap();
    let c = bools(&[2, 2], &[1.0, 0.0, 0.0, 1.0]);
    let t = f32s(&[2, 2], &[10.0, 20.0, 30.0, 40.0]);
    let f = f32s(&[2, 2], &[-1.0, -2.0, -3.0, -4.0]);
    let result = run(&graph, &[("c", &c), ("t", &t), ("f", &f)]);
    assert_tensor(
        &result.outputs["y"],
        TensorType::f32([2, 2]),
        &[10.0, -2.0, -3.0, 40.0],
    );
}

#[test]
fn select_on_integers() {
    let mut graph = Graph::new("select_i32");
    let a = graph.input("a", TensorType::i32([3])).unwrap();
    let b = graph.input("b", TensorType::i32([3])).unwrap();
    // max(a, b) spelled with a comparison.
    let cond = graph.compare(CmpOp::Gt, a, b).unwrap();
    let y = graph.select(cond, a, b).unwrap();
    graph.set_output("y", y).unwrap();
    let result = run(
        &graph,
        &[
            ("a", &i32s(&[3], &[5.0, -1.0, 2.0])),
            ("b", &i32s(&[3], &[3.0, 4.0, 2.0])),
        ],
    );
    assert_tensor(&result.outputs["y"], TensorType::i32([3]), &[5.0, 4.0, 2.0]);
}

// ---- casts --------------------------------------------------------------------------

#[test]
fn cast_f32_to_i32_truncates_saturates_and_maps_nan_to_zero() {
    let x = f32s(
        &[8],
        &[2.7, -2.7, 0.5, -0.5, 3e9, -3e9, f64::NAN, 2_147_483_520.0],
    );
    let y = on_one(&x, |g, x| g.cast(x, DType::I32).unwrap());
    assert_tensor(
        &y,
        TensorType::i32([8]),
        &[
            2.0,
            -2.0,
            0.0,
            0.0,
            f64::from(i32::MAX),
            f64::from(i32::MIN),
            0.0,
            2_147_483_520.0,
        ],
    );
    let y = on_one(&f32s(&[2], &[f64::INFINITY, f64::NEG_INFINITY]), |g, x| {
        g.cast(x, DType::I32).unwrap()
    });
    assert_tensor(
        &y,
        TensorType::i32([2]),
        &[f64::from(i32::MAX), f64::from(i32::MIN)],
    );
}

#[test]
fn cast_i32_to_f32_rounds_to_nearest_f32_at_f32_precision() {
    // 2^24 + 1 has no f32; it rounds to the even neighbour 2^24, and i32::MAX to 2^31.
    let x = i32s(&[3], &[-5.0, 16_777_217.0, f64::from(i32::MAX)]);
    let y = on_one_at(Precision::F32, &x, |g, x| g.cast(x, DType::F32).unwrap());
    assert_tensor(
        &y,
        TensorType::f32([3]),
        &[-5.0, 16_777_216.0, 2_147_483_648.0],
    );
    // At f64 precision nothing is rounded: the values stay exact.
    let y = on_one_at(Precision::F64, &x, |g, x| g.cast(x, DType::F32).unwrap());
    assert_tensor(
        &y,
        TensorType::f32([3]),
        &[-5.0, 16_777_217.0, f64::from(i32::MAX)],
    );
}

#[test]
fn cast_to_bool_is_nonzero_and_back_is_zero_or_one() {
    let x = f32s(&[5], &[0.0, -0.0, 0.5, -3.0, f64::NAN]);
    let y = on_one(&x, |g, x| g.cast(x, DType::Bool).unwrap());
    assert_tensor(&y, TensorType::bool([5]), &[0.0, 0.0, 1.0, 1.0, 1.0]);
    let y = on_one(&i32s(&[3], &[0.0, -3.0, 1.0]), |g, x| {
        g.cast(x, DType::Bool).unwrap()
    });
    assert_tensor(&y, TensorType::bool([3]), &[0.0, 1.0, 1.0]);
    let y = on_one(&bools(&[2], &[1.0, 0.0]), |g, x| {
        g.cast(x, DType::F32).unwrap()
    });
    assert_tensor(&y, TensorType::f32([2]), &[1.0, 0.0]);
    let y = on_one(&bools(&[2], &[1.0, 0.0]), |g, x| {
        g.cast(x, DType::I32).unwrap()
    });
    assert_tensor(&y, TensorType::i32([2]), &[1.0, 0.0]);
}

// ---- movement -----------------------------------------------------------------------

#[test]
fn broadcast_along_axis_0() {
    let y = on_one(&f32s(&[1, 3], &[1.0, 2.0, 3.0]), |g, x| {
        g.broadcast(x, [2, 3]).unwrap()
    });
    assert_tensor(&y, TensorType::f32([2, 3]), &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
}

#[test]
fn broadcast_along_axis_1() {
    let y = on_one(&f32s(&[2, 1], &[1.0, 2.0]), |g, x| {
        g.broadcast(x, [2, 3]).unwrap()
    });
    assert_tensor(&y, TensorType::f32([2, 3]), &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
}

#[test]
fn broadcast_along_both_axes_and_a_middle_axis() {
    let y = on_one(&f32s(&[1, 1], &[5.0]), |g, x| {
        g.broadcast(x, [2, 3]).unwrap()
    });
    assert_tensor(&y, TensorType::f32([2, 3]), &[5.0; 6]);
    let y = on_one(&i32s(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]), |g, x| {
        g.broadcast(x, [2, 3, 2]).unwrap()
    });
    assert_tensor(
        &y,
        TensorType::i32([2, 3, 2]),
        &[1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0, 3.0, 4.0],
    );
}

#[test]
fn reshape_keeps_row_major_order() {
    let data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let y = on_one(&f32s(&[2, 3], &data), |g, x| g.reshape(x, [3, 2]).unwrap());
    assert_tensor(&y, TensorType::f32([3, 2]), &data);
    let y = on_one(&f32s(&[6], &data), |g, x| g.reshape(x, [1, 6, 1]).unwrap());
    assert_tensor(&y, TensorType::f32([1, 6, 1]), &data);
}

#[test]
fn transpose_2d() {
    let x = f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = on_one(&x, |g, x| g.transpose(x, &[1, 0]).unwrap());
    assert_tensor(&y, TensorType::f32([3, 2]), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
}

#[test]
fn transpose_3d_permutations() {
    // x[i][j][k] = 4i + 2j + k; with perm [1, 2, 0], y[a][b][c] = x[c][a][b].
    let x = f32s(&[2, 2, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    let y = on_one(&x, |g, x| g.transpose(x, &[1, 2, 0]).unwrap());
    assert_tensor(
        &y,
        TensorType::f32([2, 2, 2]),
        &[0.0, 4.0, 1.0, 5.0, 2.0, 6.0, 3.0, 7.0],
    );
    // Unequal extents: [2, 1, 3] with perm [2, 0, 1] is [3, 2, 1], y[a][b][0] = x[b][0][a].
    let x = f32s(&[2, 1, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let y = on_one(&x, |g, x| g.transpose(x, &[2, 0, 1]).unwrap());
    assert_tensor(
        &y,
        TensorType::f32([3, 2, 1]),
        &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0],
    );
    // [2, 3, 4] with perm [2, 0, 1]: y[a][b][c] = x[b][c][a] = 12b + 4c + a.
    let x = f32s(&[2, 3, 4], &(0..24).map(f64::from).collect::<Vec<_>>());
    let y = on_one(&x, |g, x| g.transpose(x, &[2, 0, 1]).unwrap());
    let mut expected = Vec::new();
    for a in 0..4 {
        for b in 0..2 {
            for c in 0..3 {
                expected.push(f64::from(12 * b + 4 * c + a));
            }
        }
    }
    assert_tensor(&y, TensorType::f32([4, 2, 3]), &expected);
}

// ---- reductions ---------------------------------------------------------------------

fn two_by_three() -> Tensor {
    f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
}

#[test]
fn reduce_over_one_axis_keeps_it_with_extent_one() {
    let x = two_by_three();
    let y = on_one(&x, |g, x| g.reduce_sum(x, &[0]).unwrap());
    assert_tensor(&y, TensorType::f32([1, 3]), &[5.0, 7.0, 9.0]);
    let y = on_one(&x, |g, x| g.reduce_sum(x, &[1]).unwrap());
    assert_tensor(&y, TensorType::f32([2, 1]), &[6.0, 15.0]);
    let y = on_one(&x, |g, x| g.reduce_max(x, &[1]).unwrap());
    assert_tensor(&y, TensorType::f32([2, 1]), &[3.0, 6.0]);
    let y = on_one(&x, |g, x| g.reduce_max(x, &[0]).unwrap());
    assert_tensor(&y, TensorType::f32([1, 3]), &[4.0, 5.0, 6.0]);
    let y = on_one(&x, |g, x| g.reduce_mean(x, &[0]).unwrap());
    assert_tensor(&y, TensorType::f32([1, 3]), &[2.5, 3.5, 4.5]);
    let y = on_one(&x, |g, x| g.reduce_mean(x, &[1]).unwrap());
    assert_tensor(&y, TensorType::f32([2, 1]), &[2.0, 5.0]);
}

#[test]
fn reduce_over_several_axes() {
    // x[i][j][k] = 6i + 3j + k over [2, 2, 3]; summing i and k leaves j:
    // j = 0: (0+1+2) + (6+7+8) = 24, j = 1: (3+4+5) + (9+10+11) = 42.
    let x = f32s(&[2, 2, 3], &(0..12).map(f64::from).collect::<Vec<_>>());
    let y = on_one(&x, |g, x| g.reduce_sum(x, &[0, 2]).unwrap());
    assert_tensor(&y, TensorType::f32([1, 2, 1]), &[24.0, 42.0]);
    let y = on_one(&x, |g, x| g.reduce_mean(x, &[0, 2]).unwrap());
    assert_tensor(&y, TensorType::f32([1, 2, 1]), &[4.0, 7.0]);
    let y = on_one(&x, |g, x| g.reduce_max(x, &[0, 2]).unwrap());
    assert_tensor(&y, TensorType::f32([1, 2, 1]), &[8.0, 11.0]);
    // Summing i and j leaves k: k + (k+3) + (k+6) + (k+9) = 4k + 18.
    let y = on_one(&x, |g, x| g.reduce_sum(x, &[0, 1]).unwrap());
    assert_tensor(&y, TensorType::f32([1, 1, 3]), &[18.0, 22.0, 26.0]);
}

#[test]
fn reduce_over_all_axes() {
    let x = two_by_three();
    let y = on_one(&x, |g, x| g.reduce_sum(x, &[0, 1]).unwrap());
    assert_tensor(&y, TensorType::f32([1, 1]), &[21.0]);
    let y = on_one(&x, |g, x| g.reduce_mean(x, &[0, 1]).unwrap());
    assert_tensor(&y, TensorType::f32([1, 1]), &[3.5]);
    let y = on_one(&x, |g, x| g.reduce_max(x, &[0, 1]).unwrap());
    assert_tensor(&y, TensorType::f32([1, 1]), &[6.0]);
}

#[test]
fn reduce_max_of_negatives_nan_and_integers() {
    // The maximum starts below every value, not at 0.
    let y = on_one(&f32s(&[3], &[-3.0, -1.0, -2.0]), |g, x| {
        g.reduce_max(x, &[0]).unwrap()
    });
    assert_tensor(&y, TensorType::f32([1]), &[-1.0]);
    let y = on_one(&f32s(&[2, 2], &[1.0, f64::NAN, 3.0, 4.0]), |g, x| {
        g.reduce_max(x, &[1]).unwrap()
    });
    assert_tensor(&y, TensorType::f32([2, 1]), &[f64::NAN, 4.0]);
    let y = on_one(&i32s(&[2, 2], &[-7.0, -9.0, 5.0, 2.0]), |g, x| {
        g.reduce_max(x, &[1]).unwrap()
    });
    assert_tensor(&y, TensorType::i32([2, 1]), &[-7.0, 5.0]);
    let y = on_one(&i32s(&[2, 2], &[-7.0, -9.0, 5.0, 2.0]), |g, x| {
        g.reduce_sum(x, &[0]).unwrap()
    });
    assert_tensor(&y, TensorType::i32([1, 2]), &[-2.0, -7.0]);
}

// ---- matmul -------------------------------------------------------------------------

// A = [[1, 2, 3], [4, 5, 6]], B = [[7, 8], [9, 10], [11, 12]]:
// AB = [[1*7 + 2*9 + 3*11, 1*8 + 2*10 + 3*12], [4*7 + 5*9 + 6*11, 4*8 + 5*10 + 6*12]]
//    = [[58, 64], [139, 154]].
const A: [f64; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
const A_T: [f64; 6] = [1.0, 4.0, 2.0, 5.0, 3.0, 6.0];
const B: [f64; 6] = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
const B_T: [f64; 6] = [7.0, 9.0, 11.0, 8.0, 10.0, 12.0];
const AB: [f64; 4] = [58.0, 64.0, 139.0, 154.0];

fn matmul_case(a: Tensor, b: Tensor, transpose_a: bool, transpose_b: bool) -> Tensor {
    on_two(&a, &b, |g, a, b| {
        g.matmul_t(a, b, transpose_a, transpose_b).unwrap()
    })
}

#[test]
fn matmul_plain() {
    let y = matmul_case(f32s(&[2, 3], &A), f32s(&[3, 2], &B), false, false);
    assert_tensor(&y, TensorType::f32([2, 2]), &AB);
    // BA is 3x3: row 0 of B times A = [7+32, 14+40, 21+48].
    let y = matmul_case(f32s(&[3, 2], &B), f32s(&[2, 3], &A), false, false);
    assert_eq!(y.ty(), TensorType::f32([3, 3]));
    assert_eq!(&y.data()[..3], &[39.0, 54.0, 69.0]);
}

#[test]
fn matmul_tn_reads_the_first_operand_transposed() {
    let y = matmul_case(f32s(&[3, 2], &A_T), f32s(&[3, 2], &B), true, false);
    assert_tensor(&y, TensorType::f32([2, 2]), &AB);
}

#[test]
fn matmul_nt_reads_the_second_operand_transposed() {
    let y = matmul_case(f32s(&[2, 3], &A), f32s(&[2, 3], &B_T), false, true);
    assert_tensor(&y, TensorType::f32([2, 2]), &AB);
}

#[test]
fn matmul_tt_reads_both_operands_transposed() {
    let y = matmul_case(f32s(&[3, 2], &A_T), f32s(&[2, 3], &B_T), true, true);
    assert_tensor(&y, TensorType::f32([2, 2]), &AB);
}

#[test]
fn matmul_batched_over_a_leading_axis() {
    // Batch 1 multiplies [[1, 0, 0], [0, 1, 0]] by B: the first two rows of B.
    let second_a = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    let a: Vec<f64> = A.iter().chain(&second_a).copied().collect();
    let second_b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b: Vec<f64> = B.iter().chain(&second_b).copied().collect();
    let y = matmul_case(f32s(&[2, 2, 3], &a), f32s(&[2, 3, 2], &b), false, false);
    assert_tensor(
        &y,
        TensorType::f32([2, 2, 2]),
        &[58.0, 64.0, 139.0, 154.0, 1.0, 2.0, 3.0, 4.0],
    );
    // The same product with the second operand stored transposed per batch.
    let second_b_t = [1.0, 3.0, 5.0, 2.0, 4.0, 6.0];
    let b_t: Vec<f64> = B_T.iter().chain(&second_b_t).copied().collect();
    let y = matmul_case(f32s(&[2, 2, 3], &a), f32s(&[2, 2, 3], &b_t), false, true);
    assert_tensor(
        &y,
        TensorType::f32([2, 2, 2]),
        &[58.0, 64.0, 139.0, 154.0, 1.0, 2.0, 3.0, 4.0],
    );
}

// ---- one_hot and constants -------------------------------------------------------------

#[test]
fn one_hot_with_out_of_range_labels() {
    let labels = i32s(&[4], &[0.0, 2.0, -1.0, 3.0]);
    let y = on_one(&labels, |g, x| g.one_hot(x, 3).unwrap());
    assert_tensor(
        &y,
        TensorType::f32([4, 3]),
        &[
            1.0, 0.0, 0.0, //
            0.0, 0.0, 1.0, //
            0.0, 0.0, 0.0, // -1 is out of range
            0.0, 0.0, 0.0, // 3 is out of range
        ],
    );
    let labels = i32s(&[2, 1], &[1.0, 0.0]);
    let y = on_one(&labels, |g, x| g.one_hot(x, 2).unwrap());
    assert_tensor(&y, TensorType::f32([2, 1, 2]), &[0.0, 1.0, 1.0, 0.0]);
}

// ---- gather and scatter_add -----------------------------------------------------------

#[test]
fn gather_looks_up_embedding_rows() {
    // W[4, 2] by ids[2, 3] along axis 0: [2, 3, 2], rows of W; 7 and -1 are out of
    // range and read zeros.
    let w = f32s(&[4, 2], &[0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]);
    let ids = i32s(&[2, 3], &[3.0, 0.0, 3.0, 7.0, -1.0, 1.0]);
    let y = on_two(&w, &ids, |g, w, ids| g.gather(w, ids, 0, 0).unwrap());
    assert_tensor(
        &y,
        TensorType::f32([2, 3, 2]),
        &[
            3.0, 3.5, 0.0, 0.5, 3.0, 3.5, //
            0.0, 0.0, 0.0, 0.0, 1.0, 1.5,
        ],
    );
}

#[test]
fn gather_with_a_batch_axis_indexes_each_row_by_its_label() {
    // logits[3, 4] by labels[3] along axis 1 with one batch axis: logits[b, labels[b]].
    let logits = f32s(
        &[3, 4],
        &[0., 1., 2., 3., 10., 11., 12., 13., 20., 21., 22., 23.],
    );
    let labels = i32s(&[3], &[2.0, 0.0, 4.0]);
    let y = on_two(&logits, &labels, |g, x, l| g.gather(x, l, 1, 1).unwrap());
    assert_tensor(&y, TensorType::f32([3]), &[2.0, 10.0, 0.0]);
}

#[test]
fn gather_keeps_the_axes_around_the_gathered_one_and_any_dtype() {
    // x[2, 3, 2] (i32) along axis 1 by [2]: [2, 2, 2] with x[a, idx[j], c].
    let x = i32s(
        &[2, 3, 2],
        &[0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11.],
    );
    let idx = i32s(&[2], &[2.0, 0.0]);
    let y = on_two(&x, &idx, |g, x, i| g.gather(x, i, 1, 0).unwrap());
    assert_tensor(
        &y,
        TensorType::i32([2, 2, 2]),
        &[4., 5., 0., 1., 10., 11., 6., 7.],
    );
    // A batch axis before the gathered one, with two gathered indices per batch.
    let idx = i32s(&[2, 2], &[1.0, 1.0, 0.0, 2.0]);
    let y = on_two(&x, &idx, |g, x, i| g.gather(x, i, 1, 1).unwrap());
    assert_tensor(
        &y,
        TensorType::i32([2, 2, 2]),
        &[2., 3., 2., 3., 6., 7., 10., 11.],
    );
}

#[test]
fn scatter_add_accumulates_repeated_indices_and_drops_out_of_range_ones() {
    let updates = f32s(&[5, 2], &[1., 2., 3., 4., 5., 6., 7., 8., 9., 10.]);
    let ids = i32s(&[5], &[2.0, 0.0, 2.0, -1.0, 3.0]);
    let y = on_two(&updates, &ids, |g, u, i| {
        g.scatter_add(u, i, 0, 0, 3).unwrap()
    });
    // Row 2 gets rows 0 and 2; row 3 (= extent) and -1 are dropped.
    assert_tensor(&y, TensorType::f32([3, 2]), &[3., 4., 0., 0., 6., 8.]);
    // Per-row labels: scatter [3] into [3, 4] at column labels[b].
    let values = i32s(&[3], &[5.0, 6.0, 7.0]);
    let labels = i32s(&[3], &[1.0, 3.0, 9.0]);
    let y = on_two(&values, &labels, |g, u, l| {
        g.scatter_add(u, l, 1, 1, 4).unwrap()
    });
    assert_tensor(
        &y,
        TensorType::i32([3, 4]),
        &[0., 5., 0., 0., 0., 0., 0., 6., 0., 0., 0., 0.],
    );
}

#[test]
fn f32_scatter_add_sums_in_row_major_order_of_the_updates() {
    // 1 + 2^-24 + 2^-24: each step rounds back to 1 in f32, while 2^-24 + 2^-24 + 1
    // would not; the updates land in their row-major order.
    let tiny = 2f64.powi(-24);
    let updates = f32s(&[3], &[1.0, tiny, tiny]);
    let ids = i32s(&[3], &[0.0, 0.0, 0.0]);
    let mut graph = Graph::new("scatter");
    let u = graph.input("u", updates.ty()).unwrap();
    let i = graph.input("i", ids.ty()).unwrap();
    let y = graph.scatter_add(u, i, 0, 0, 1).unwrap();
    graph.set_output("y", y).unwrap();
    let feeds = feeds(&[("u", &updates), ("i", &ids)]);
    let f32_sum = evaluate(&graph, &feeds, Precision::F32).unwrap().outputs["y"].clone();
    assert_tensor(&f32_sum, TensorType::f32([1]), &[1.0]);
    let f64_sum = evaluate(&graph, &feeds, Precision::F64).unwrap().outputs["y"].clone();
    assert_tensor(&f64_sum, TensorType::f32([1]), &[1.0 + 2.0 * tiny]);
}

#[test]
fn constants_fill_their_type() {
    let mut graph = Graph::new("consts");
    let f = graph.constant(2.5, TensorType::f32([2, 2])).unwrap();
    let i = graph.constant(-7.0, TensorType::i32([3])).unwrap();
    let b = graph.constant(1.0, TensorType::bool([1])).unwrap();
    let x = graph.input("x", TensorType::f32([2, 2])).unwrap();
    let sum = graph.add_(x, f).unwrap();
    graph.set_output("f", f).unwrap();
    graph.set_output("i", i).unwrap();
    graph.set_output("b", b).unwrap();
    graph.set_output("sum", sum).unwrap();
    let result = run(&graph, &[("x", &f32s(&[2, 2], &[1.0, -1.0, 0.5, 0.0]))]);
    assert_tensor(&result.outputs["f"], TensorType::f32([2, 2]), &[2.5; 4]);
    assert_tensor(&result.outputs["i"], TensorType::i32([3]), &[-7.0; 3]);
    assert_tensor(&result.outputs["b"], TensorType::bool([1]), &[1.0]);
    assert_tensor(
        &result.outputs["sum"],
        TensorType::f32([2, 2]),
        &[3.5, 1.5, 3.0, 2.5],
    );
}

// ---- precision ------------------------------------------------------------------------

fn add_graph() -> Graph {
    let mut graph = Graph::new("add");
    let a = graph.input("a", TensorType::f32([1])).unwrap();
    let b = graph.input("b", TensorType::f32([1])).unwrap();
    let y = graph.add_(a, b).unwrap();
    graph.set_output("y", y).unwrap();
    graph
}

#[test]
fn f32_precision_rounds_every_result() {
    let graph = add_graph();
    let values = feeds(&[
        ("a", &f32s(&[1], &[f64::from(0.1f32)])),
        ("b", &f32s(&[1], &[f64::from(0.2f32)])),
    ]);
    // The f32 values nearest 0.1 and 0.2 sum to 0.30000000447034836 exactly in f64;
    // rounded to f32 that is 0.30000001192092896, the f32 nearest 0.3.
    let wide = evaluate(&graph, &values, Precision::F64).unwrap();
    assert_eq!(wide.outputs["y"].data(), vec![0.300_000_004_470_348_36]);
    let narrow = evaluate(&graph, &values, Precision::F32).unwrap();
    assert_eq!(narrow.outputs["y"].data(), vec![0.300_000_011_920_928_96]);
    assert_eq!(narrow.outputs["y"].data(), vec![f64::from(0.3f32)]);
}

#[test]
fn f32_precision_rounds_between_ops() {
    // (1 + 2^-24) - 1: in f32 the sum rounds back to 1 (a tie, to even), so the
    // difference is 0; in f64 it is 2^-24.
    let mut graph = Graph::new("chain");
    let x = graph.input("x", TensorType::f32([1])).unwrap();
    let tiny = graph
        .constant(2f64.powi(-24), TensorType::f32([1]))
        .unwrap();
    let sum = graph.add_(x, tiny).unwrap();
    let y = graph.sub(sum, x).unwrap();
    graph.set_output("y", y).unwrap();
    let values = feeds(&[("x", &f32s(&[1], &[1.0]))]);
    let wide = evaluate(&graph, &values, Precision::F64).unwrap();
    assert_eq!(wide.outputs["y"].data(), vec![2f64.powi(-24)]);
    let narrow = evaluate(&graph, &values, Precision::F32).unwrap();
    assert_eq!(narrow.outputs["y"].data(), vec![0.0]);
    // Fed values are rounded too: 0.1 (an f64) is read as the f32 nearest 0.1.
    let values = feeds(&[("a", &f32s(&[1], &[0.1])), ("b", &f32s(&[1], &[0.0]))]);
    let narrow = evaluate(&add_graph(), &values, Precision::F32).unwrap();
    assert_eq!(narrow.outputs["y"].data(), vec![f64::from(0.1f32)]);
}

// ---- feeds, outputs and updates ---------------------------------------------------------

fn training_graph() -> Graph {
    let mut graph = Graph::new("train");
    let x = graph.input("x", TensorType::f32([2])).unwrap();
    let w = graph.parameter("w", TensorType::f32([2])).unwrap();
    let product = graph.mul(x, w).unwrap();
    let total = graph.reduce_sum(product, &[0]).unwrap();
    let step = graph.constant(0.5, TensorType::f32([2])).unwrap();
    let scaled = graph.mul(x, step).unwrap();
    let new_w = graph.sub(w, scaled).unwrap();
    graph.set_output("total", total).unwrap();
    graph.set_output("product", product).unwrap();
    graph.set_output("echo", x).unwrap();
    graph.set_update(w, new_w).unwrap();
    graph
}

#[test]
fn outputs_and_updates_are_named_maps() {
    let graph = training_graph();
    let x = f32s(&[2], &[2.0, -4.0]);
    let w = f32s(&[2], &[3.0, 0.5]);
    let result = run(&graph, &[("x", &x), ("w", &w)]);
    assert_eq!(
        result.outputs.keys().collect::<Vec<_>>(),
        vec!["echo", "product", "total"]
    );
    assert_tensor(
        &result.outputs["product"],
        TensorType::f32([2]),
        &[6.0, -2.0],
    );
    assert_tensor(&result.outputs["total"], TensorType::f32([1]), &[4.0]);
    assert_tensor(&result.outputs["echo"], TensorType::f32([2]), &[2.0, -4.0]);
    // w - 0.5 x = [3 - 1, 0.5 + 2].
    assert_eq!(result.updates.keys().collect::<Vec<_>>(), vec!["w"]);
    assert_tensor(&result.updates["w"], TensorType::f32([2]), &[2.0, 2.5]);
    // Every node has a value, the parameter its fed one.
    assert_eq!(result.values.len(), graph.node_count());
    let w_id = graph.param_by_name("w").unwrap();
    assert_eq!(result.values[&w_id], w);
}

#[test]
fn a_missing_input_or_parameter_is_an_error() {
    let graph = training_graph();
    let x = f32s(&[2], &[1.0, 2.0]);
    let err = evaluate(&graph, &feeds(&[("x", &x)]), Precision::F64).unwrap_err();
    assert_eq!(
        err,
        InterpError::Missing {
            kind: "parameter",
            name: "w".to_string()
        }
    );
    assert_eq!(err.to_string(), "no value fed for parameter \"w\"");
    let err = evaluate(&graph, &feeds(&[("w", &x)]), Precision::F64).unwrap_err();
    assert_eq!(
        err,
        InterpError::Missing {
            kind: "input",
            name: "x".to_string()
        }
    );
}

#[test]
fn a_feed_of_the_wrong_shape_or_dtype_is_an_error() {
    let graph = training_graph();
    let w = f32s(&[2], &[1.0, 2.0]);
    let wrong_shape = f32s(&[3], &[1.0, 2.0, 3.0]);
    let err = evaluate(
        &graph,
        &feeds(&[("x", &wrong_shape), ("w", &w)]),
        Precision::F64,
    )
    .unwrap_err();
    assert_eq!(
        err,
        InterpError::WrongType {
            name: "x".to_string(),
            expected: TensorType::f32([2]),
            found: TensorType::f32([3]),
        }
    );
    assert_eq!(err.to_string(), "\"x\" expects f32[2], fed f32[3]");
    let wrong_dtype = i32s(&[2], &[1.0, 2.0]);
    let err = evaluate(
        &graph,
        &feeds(&[("x", &wrong_dtype), ("w", &w)]),
        Precision::F64,
    )
    .unwrap_err();
    assert!(matches!(err, InterpError::WrongType { found, .. } if found == TensorType::i32([2])));
}

#[test]
fn a_feed_with_an_unknown_name_is_an_error() {
    let graph = training_graph();
    let value = f32s(&[2], &[1.0, 2.0]);
    let err = evaluate(
        &graph,
        &feeds(&[("x", &value), ("w", &value), ("bias", &value)]),
        Precision::F64,
    )
    .unwrap_err();
    assert_eq!(
        err,
        InterpError::Unknown {
            name: "bias".to_string()
        }
    );
    assert_eq!(
        err.to_string(),
        "\"bias\" is neither an input nor a parameter of the graph"
    );
}

#[test]
fn iota_counts_along_its_axis_and_checks_the_axis() {
    let mut g = Graph::new("iota");
    let rows = g
        .add(
            kiln_ir::Op::Iota {
                axis: 0,
                shape: vec![2, 3],
            },
            &[],
        )
        .unwrap();
    let cols = g
        .add(
            kiln_ir::Op::Iota {
                axis: 1,
                shape: vec![2, 3],
            },
            &[],
        )
        .unwrap();
    g.set_output("rows", rows).unwrap();
    g.set_output("cols", cols).unwrap();
    let out = evaluate(&g, &Feeds::new(), Precision::F32).unwrap();
    assert_eq!(out.outputs["rows"].data(), [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    assert_eq!(out.outputs["cols"].data(), [0.0, 1.0, 2.0, 0.0, 1.0, 2.0]);
    assert_eq!(out.outputs["rows"].ty(), TensorType::i32([2, 3]));
    let err = g
        .add(
            kiln_ir::Op::Iota {
                axis: 2,
                shape: vec![2, 3],
            },
            &[],
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "iota: axis 2 is not an axis of the shape [2, 3]"
    );
}
