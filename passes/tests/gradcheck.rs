//! Gradient checks for the autodiff pass: every differentiable op, a two-layer MLP
//! with softmax cross-entropy, shared and unused parameters, and the pass's errors.
//!
//! Each op test builds a small graph with random odd shapes where parameters feed the
//! op and `loss = reshape(reduce_sum(op_output * weights, all axes), [])` with a random
//! fixed `weights` input, so every output element gets a different cotangent. The
//! gradients autodiff builds are evaluated in f64 and compared entry by entry with
//! central finite differences of the original graph.

use kiln_ir::{
    evaluate, verify, BinaryOp, CmpOp, DType, Feeds, Graph, NodeId, Op, Precision, ReduceOp, Rng,
    Tensor, TensorType, UnaryOp,
};
use kiln_passes::autodiff::{self, grad_name, AutodiffError, AutodiffOptions};
use std::collections::BTreeMap;

const EPS: f64 = 1e-6;
/// Relative to `max(1, |g|)`. Central differences in f64 with eps 1e-6 are accurate to
/// about 1e-9 on these losses; a wrong rule is off by order 1.
const TOLERANCE: f64 = 1e-6;
const SEEDS: [u64; 5] = [11, 22, 33, 44, 55];

/// How a parameter's random values are drawn, so that each op is checked away from
/// its kinks and outside its domain's edges.
#[derive(Clone, Copy)]
enum Values {
    /// Uniform in [-1, 1).
    Normal,
    /// Uniform in [0.5, 2): for `log` and divisors.
    Positive,
    /// At least 0.2 away from zero, either sign: for `relu` and divisors.
    AwayFromZero,
    /// Pairwise at least 0.2 apart: for `reduce_max`, so there are no near-ties.
    Distinct,
}

/// A graph under construction, with the feeds for its inputs and parameters.
struct Case {
    graph: Graph,
    feeds: Feeds,
    rng: Rng,
}

impl Case {
    fn new(seed: u64) -> Case {
        Case {
            graph: Graph::new("gradcheck"),
            feeds: Feeds::new(),
            rng: Rng::new(seed),
        }
    }

    /// An extent in 2..=5, so shapes are small, odd and mostly non-square.
    fn extent(&mut self) -> usize {
        2 + self.rng.below(4)
    }

    fn shape(&mut self, rank: usize) -> Vec<usize> {
        (0..rank).map(|_| self.extent()).collect()
    }

    fn values(&mut self, count: usize, values: Values) -> Vec<f64> {
        match values {
            Values::Normal => (0..count).map(|_| self.rng.uniform(-1.0, 1.0)).collect(),
            Values::Positive => (0..count).map(|_| self.rng.uniform(0.5, 2.0)).collect(),
            Values::AwayFromZero => (0..count)
                .map(|_| {
                    let magnitude = self.rng.uniform(0.2, 1.5);
                    if self.rng.below(2) == 0 {
                        magnitude
                    } else {
                        -magnitude
                    }
                })
                .collect(),
            Values::Distinct => {
                let mut ranks: Vec<usize> = (0..count).collect();
                self.rng.shuffle(&mut ranks);
                ranks
                    .into_iter()
                    .map(|rank| {
                        (rank as f64 - count as f64 / 2.0) * 0.25 + self.rng.uniform(0.0, 0.05)
                    })
                    .collect()
            }
        }
    }

    fn param_data(&mut self, name: &str, shape: &[usize], data: Vec<f64>) -> NodeId {
        let ty = TensorType::f32(shape.to_vec());
        let id = self.graph.parameter(name, ty.clone()).unwrap();
        self.feeds
            .insert(name.to_string(), Tensor::new(ty, data).unwrap());
        id
    }

    fn param(&mut self, name: &str, shape: &[usize], values: Values) -> NodeId {
        let data = self.values(shape.iter().product(), values);
        self.param_data(name, shape, data)
    }

    fn input_data(&mut self, name: &str, ty: TensorType, data: Vec<f64>) -> NodeId {
        let id = self.graph.input(name, ty.clone()).unwrap();
        self.feeds
            .insert(name.to_string(), Tensor::new(ty, data).unwrap());
        id
    }

    fn input(&mut self, name: &str, shape: &[usize]) -> NodeId {
        let data = self.values(shape.iter().product(), Values::Normal);
        self.input_data(name, TensorType::f32(shape.to_vec()), data)
    }

    /// Adds `loss = reshape(reduce_sum(out * weights, all axes), [])` with a random
    /// fixed input `weights`.
    fn finish(mut self, out: NodeId) -> (Graph, Feeds) {
        let shape = self.graph.ty(out).shape.clone();
        let weights = self.input("weights", &shape);
        let weighted = self.graph.mul(out, weights).unwrap();
        let all_axes: Vec<usize> = (0..shape.len()).collect();
        let sum = self.graph.reduce_sum(weighted, &all_axes).unwrap();
        let loss = self.graph.reshape(sum, Vec::new()).unwrap();
        self.graph.set_output("loss", loss).unwrap();
        (self.graph, self.feeds)
    }
}

fn loss_options() -> AutodiffOptions {
    AutodiffOptions::loss("loss")
}

fn eval_loss(graph: &Graph, feeds: &Feeds) -> f64 {
    let evaluation = evaluate(graph, feeds, Precision::F64).unwrap();
    evaluation.outputs["loss"].scalar().unwrap()
}

/// Runs autodiff on `graph` (loss output "loss"), checks the result, and compares
/// every gradient entry with central finite differences. Returns the gradients by
/// parameter name.
fn check_gradients(graph: &Graph, feeds: &Feeds) -> BTreeMap<String, Tensor> {
    let result = autodiff::run(graph, &loss_options()).unwrap();
    verify(&result).unwrap();
    let evaluation = evaluate(&result, feeds, Precision::F64).unwrap();
    assert_eq!(
        evaluation.outputs["loss"].scalar().unwrap(),
        eval_loss(graph, feeds),
        "the forward graph is unchanged"
    );
    let mut grads = BTreeMap::new();
    for &param in graph.params() {
        let name = graph.leaf_name(param).unwrap().to_string();
        let grad = evaluation.outputs[&grad_name(&name)].clone();
        assert_eq!(grad.ty(), *graph.ty(param), "gradient type of {name}");
        for index in 0..grad.len() {
            let mut plus = feeds.clone();
            plus.get_mut(&name)
                .unwrap()
                .edit(|data| data[index] += EPS)
                .unwrap();
            let mut minus = feeds.clone();
            minus
                .get_mut(&name)
                .unwrap()
                .edit(|data| data[index] -= EPS)
                .unwrap();
            let numeric = (eval_loss(graph, &plus) - eval_loss(graph, &minus)) / (2.0 * EPS);
            let analytic = grad.data()[index];
            let error = (analytic - numeric).abs() / analytic.abs().max(1.0);
            assert!(
                error < TOLERANCE,
                "d loss / d {name}[{index}]: autodiff {analytic}, finite differences {numeric}\n{}",
                kiln_ir::text::print(&result)
            );
        }
        grads.insert(name, grad);
    }
    grads
}

/// The largest gradient entry in absolute value.
fn largest(grads: &BTreeMap<String, Tensor>) -> f64 {
    grads
        .values()
        .flat_map(|grad| grad.data().iter())
        .fold(0.0f64, |acc, v| acc.max(v.abs()))
}

/// Checks the gradients and that they are not all zero, so the comparison means something.
fn check_nonzero_gradients(graph: &Graph, feeds: &Feeds) {
    let grads = check_gradients(graph, feeds);
    assert!(
        largest(&grads) > 1e-3,
        "all gradients are (nearly) zero: {grads:?}"
    );
}

#[test]
fn unary_ops_match_finite_differences() {
    let cases = [
        (UnaryOp::Neg, Values::Normal),
        (UnaryOp::Exp, Values::Normal),
        (UnaryOp::Log, Values::Positive),
        (UnaryOp::Relu, Values::AwayFromZero),
        (UnaryOp::Sqrt, Values::Positive),
        (UnaryOp::Rsqrt, Values::Positive),
        (UnaryOp::Abs, Values::AwayFromZero),
        (UnaryOp::Sigmoid, Values::Normal),
        (UnaryOp::Tanh, Values::Normal),
        (UnaryOp::Softplus, Values::Normal),
        (UnaryOp::Expm1, Values::Normal),
        (UnaryOp::Log1p, Values::Positive),
        (UnaryOp::Erf, Values::Normal),
    ];
    for (op, values) in cases {
        // relu may see only negative inputs on a small shape, so the non-zero check
        // is over all seeds.
        let mut largest_gradient = 0.0f64;
        for seed in SEEDS {
            let mut case = Case::new(seed);
            let rank = 1 + case.rng.below(3);
            let shape = case.shape(rank);
            let x = case.param("x", &shape, values);
            let y = case.graph.unary(op, x).unwrap();
            let (graph, feeds) = case.finish(y);
            largest_gradient = largest_gradient.max(largest(&check_gradients(&graph, &feeds)));
        }
        assert!(largest_gradient > 1e-3, "{op:?}: all gradients are zero");
    }
}

#[test]
fn relu_gradient_is_zero_for_negative_inputs() {
    let mut case = Case::new(5);
    let x = case.param_data("x", &[4], vec![-1.0, 0.5, -0.25, 2.0]);
    let y = case.graph.relu(x).unwrap();
    let (graph, feeds) = case.finish(y);
    let grads = check_gradients(&graph, &feeds);
    let weights = feeds["weights"].data();
    assert_eq!(grads["x"].data(), vec![0.0, weights[1], 0.0, weights[3]]);
}

#[test]
fn binary_ops_match_finite_differences() {
    for op in BinaryOp::ALL {
        for seed in SEEDS {
            let mut case = Case::new(seed);
            let rank = 1 + case.rng.below(3);
            let shape = case.shape(rank);
            // pow's base is positive, so both of its gradients are finite.
            let base = if op == BinaryOp::Pow {
                Values::Positive
            } else {
                Values::Normal
            };
            let a = case.param("a", &shape, base);
            let count: usize = shape.iter().product();
            let b_data = match op {
                BinaryOp::Div => case.values(count, Values::AwayFromZero),
                // Keep max's and min's operands apart so no perturbation crosses a tie.
                BinaryOp::Max | BinaryOp::Min => {
                    let a_data = case.feeds["a"].data().to_vec();
                    let gaps = case.values(count, Values::AwayFromZero);
                    a_data.iter().zip(gaps).map(|(a, gap)| a + gap).collect()
                }
                _ => case.values(count, Values::Normal),
            };
            let b = case.param_data("b", &shape, b_data);
            let y = case.graph.binary(op, a, b).unwrap();
            let (graph, feeds) = case.finish(y);
            check_nonzero_gradients(&graph, &feeds);
        }
    }
}

#[test]
fn binary_ops_with_one_parameter_operand() {
    // Only one side needs a gradient; the other is a fed input.
    for op in BinaryOp::ALL {
        for param_first in [true, false] {
            let mut case = Case::new(7);
            let shape = case.shape(2);
            let values = if op == BinaryOp::Pow {
                Values::Positive
            } else {
                Values::AwayFromZero
            };
            let p = case.param("p", &shape, values);
            let x_data = case.values(shape.iter().product(), values);
            // Offset max's input so the parameter never ties with it.
            let x_data = x_data.iter().map(|v| v * 3.0).collect();
            let x = case.input_data("x", TensorType::f32(shape.clone()), x_data);
            let (a, b) = if param_first { (p, x) } else { (x, p) };
            let y = case.graph.binary(op, a, b).unwrap();
            let (graph, feeds) = case.finish(y);
            check_gradients(&graph, &feeds);
        }
    }
}

#[test]
fn max_gives_ties_to_the_first_operand() {
    let mut case = Case::new(3);
    let a = case.param_data("a", &[3], vec![1.0, 2.0, -1.0]);
    let b = case.param_data("b", &[3], vec![1.0, 1.0, 0.0]);
    let y = case.graph.max(a, b).unwrap();
    let (graph, feeds) = case.finish(y);
    let result = autodiff::run(&graph, &loss_options()).unwrap();
    let evaluation = evaluate(&result, &feeds, Precision::F64).unwrap();
    let w = feeds["weights"].data();
    assert_eq!(evaluation.outputs["grad.a"].data(), vec![w[0], w[1], 0.0]);
    assert_eq!(evaluation.outputs["grad.b"].data(), vec![0.0, 0.0, w[2]]);
}

#[test]
fn slices_pads_and_concatenations_match_finite_differences() {
    for seed in SEEDS {
        let mut case = Case::new(seed);
        let x = case.param("x", &[5, 7], Values::Normal);
        let y = case.param("y", &[4, 3], Values::Normal);
        // A strided slice, a pad with gaps (the slice's adjoint) and a concatenation,
        // chained so each one's gradient flows through the others.
        let sliced = case.graph.slice(x, &[1, 0], &[5, 7], &[2, 3]).unwrap();
        let padded = case
            .graph
            .pad(sliced, &[1, 0], &[0, 2], &[1, 0], 0.5)
            .unwrap();
        let joined = case.graph.concat(padded, y, 1).unwrap();
        let out = case.graph.tanh(joined).unwrap();
        let (graph, feeds) = case.finish(out);
        let grads = check_gradients(&graph, &feeds);
        // x's elements outside the slice get nothing.
        assert_eq!(grads["x"].data()[1], 0.0);
        assert!(largest(&grads) > 1e-3);
    }
}

#[test]
fn gathers_and_scatter_adds_match_finite_differences() {
    for seed in SEEDS {
        let mut case = Case::new(seed);
        let table = case.param("table", &[5, 3], Values::Normal);
        let logits = case.param("logits", &[4, 6], Values::Normal);
        let updates = case.param("updates", &[4], Values::Normal);
        // Repeated ids (the table's row 1 is read twice) and out-of-range ones (-1, 5).
        let ids = case.input_data(
            "ids",
            TensorType::i32([2, 3]),
            vec![1.0, 4.0, 1.0, -1.0, 0.0, 5.0],
        );
        let labels = case.input_data("labels", TensorType::i32([4]), vec![5.0, 0.0, 6.0, 2.0]);
        let rows = case.graph.gather(table, ids, 0, 0).unwrap();
        let rows = case.graph.tanh(rows).unwrap();
        let rows = case.graph.reshape(rows, vec![18]).unwrap();
        let picked = case.graph.gather(logits, labels, 1, 1).unwrap();
        let picked = case.graph.exp(picked).unwrap();
        let spread = case.graph.scatter_add(updates, labels, 1, 1, 6).unwrap();
        let spread = case.graph.sigmoid(spread).unwrap();
        let spread = case.graph.reshape(spread, vec![24]).unwrap();
        let both = case.graph.concat(rows, picked, 0).unwrap();
        let all = case.graph.concat(both, spread, 0).unwrap();
        let (graph, feeds) = case.finish(all);
        let grads = check_gradients(&graph, &feeds);
        // Row 2 of the table is never read; the label 6 is out of range, so row 2
        // of logits and row 2 of updates get nothing.
        assert_eq!(&grads["table"].data()[6..9], &[0.0; 3]);
        assert!(grads["logits"].data()[12..18].iter().all(|&g| g == 0.0));
        assert_eq!(grads["updates"].data()[2], 0.0);
        assert!(largest(&grads) > 1e-3);
    }
}

#[test]
fn min_gives_ties_to_the_first_operand() {
    let mut case = Case::new(3);
    let a = case.param_data("a", &[3], vec![1.0, 2.0, -1.0]);
    let b = case.param_data("b", &[3], vec![1.0, 1.0, 0.0]);
    let y = case.graph.min(a, b).unwrap();
    let (graph, feeds) = case.finish(y);
    let result = autodiff::run(&graph, &loss_options()).unwrap();
    let evaluation = evaluate(&result, &feeds, Precision::F64).unwrap();
    let w = feeds["weights"].data();
    assert_eq!(evaluation.outputs["grad.a"].data(), vec![w[0], 0.0, w[2]]);
    assert_eq!(evaluation.outputs["grad.b"].data(), vec![0.0, w[1], 0.0]);
}

#[test]
fn pow_gradients_follow_pytorch_at_zero_base_and_zero_exponent() {
    // d/da a^0 is 0 even at a = 0 (not 0 * 0^-1 = NaN); d/db 0^b is 0 for b >= 0
    // (the limit from the right), and a^b ln a elsewhere, NaN for a negative base.
    let mut case = Case::new(3);
    let a = case.param_data("a", &[4], vec![0.0, 0.0, 2.0, -2.0]);
    let b = case.param_data("b", &[4], vec![0.0, 2.0, 3.0, 2.0]);
    let y = case.graph.pow(a, b).unwrap();
    let (graph, feeds) = case.finish(y);
    let result = autodiff::run(&graph, &loss_options()).unwrap();
    let evaluation = evaluate(&result, &feeds, Precision::F64).unwrap();
    let w = feeds["weights"].data();
    let da = evaluation.outputs["grad.a"].data();
    assert_eq!(da[..3], [0.0, 0.0, w[2] * 3.0 * 4.0]);
    assert_eq!(da[3], w[3] * 2.0 * -2.0);
    let db = evaluation.outputs["grad.b"].data();
    assert_eq!(db[..2], [0.0, 0.0]);
    assert!((db[2] - w[2] * 8.0 * 2f64.ln()).abs() < 1e-12, "{db:?}");
    assert!(db[3].is_nan(), "{db:?}");
}

#[test]
fn select_and_compare_match_finite_differences() {
    for seed in SEEDS {
        let mut case = Case::new(seed);
        let shape = case.shape(2);
        let count = shape.iter().product();
        let cond_data = (0..count).map(|_| case.rng.below(2) as f64).collect();
        let cond = case.input_data("cond", TensorType::bool(shape.clone()), cond_data);
        let a = case.param("a", &shape, Values::Normal);
        let b = case.param("b", &shape, Values::AwayFromZero);
        let picked = case.graph.select(cond, a, b).unwrap();
        // A condition computed from a parameter: compare itself has no gradient.
        let zero = case.graph.constant_like(0.0, b).unwrap();
        let b_positive = case.graph.compare(CmpOp::Gt, b, zero).unwrap();
        let y = case.graph.select(b_positive, picked, a).unwrap();
        let (graph, feeds) = case.finish(y);
        check_nonzero_gradients(&graph, &feeds);
    }
}

#[test]
fn casts_through_integers_stop_the_gradient() {
    let mut case = Case::new(9);
    let shape = case.shape(2);
    let count: usize = shape.iter().product();
    // Keep values away from integers so truncation is locally constant.
    let data = (0..count)
        .map(|_| case.rng.below(5) as f64 - 2.0 + case.rng.uniform(0.2, 0.8))
        .collect();
    let p = case.param_data("p", &shape, data);
    let truncated = case.graph.cast(p, DType::I32).unwrap();
    let back = case.graph.cast(truncated, DType::F32).unwrap();
    let product = case.graph.mul(p, back).unwrap();
    let (graph, feeds) = case.finish(product);
    let grads = check_gradients(&graph, &feeds);
    // d(p * trunc(p)) / dp = trunc(p) away from integers.
    let w = feeds["weights"].data();
    let expected: Vec<f64> = feeds["p"]
        .data()
        .iter()
        .zip(w)
        .map(|(p, w)| p.trunc() * w)
        .collect();
    assert_eq!(grads["p"].data(), expected);
}

#[test]
fn an_f32_to_f32_cast_passes_the_gradient_through() {
    // The interpreter rounds at an f32 cast even in f64 mode, so finite differences
    // with eps 1e-6 would measure the rounding; the expected gradient is exact instead.
    let mut case = Case::new(10);
    let p = case.param("p", &[3, 2], Values::Normal);
    let same = case.graph.cast(p, DType::F32).unwrap();
    let (graph, feeds) = case.finish(same);
    let result = autodiff::run(&graph, &loss_options()).unwrap();
    verify(&result).unwrap();
    let evaluation = evaluate(&result, &feeds, Precision::F64).unwrap();
    assert_eq!(evaluation.outputs["grad.p"].data(), feeds["weights"].data());
}

#[test]
fn broadcast_of_several_axes_matches_finite_differences() {
    for seed in SEEDS {
        let mut case = Case::new(seed);
        let rank = 3 + case.rng.below(2);
        let target = case.shape(rank);
        // Stretch at least two axes, chosen at random.
        let mut axes: Vec<usize> = (0..rank).collect();
        case.rng.shuffle(&mut axes);
        let n_stretched = 2 + case.rng.below(rank - 1);
        let mut operand_shape = target.clone();
        for &axis in &axes[..n_stretched] {
            operand_shape[axis] = 1;
        }
        let x = case.param("x", &operand_shape, Values::Normal);
        let y = case.graph.broadcast(x, target).unwrap();
        let (graph, feeds) = case.finish(y);
        check_nonzero_gradients(&graph, &feeds);
    }
}

#[test]
fn reductions_over_one_and_several_axes_match_finite_differences() {
    let axis_sets: [&[usize]; 5] = [&[0], &[1], &[2], &[0, 2], &[0, 1, 2]];
    for op in ReduceOp::ALL {
        for axes in axis_sets {
            for seed in SEEDS {
                let mut case = Case::new(seed);
                let shape = case.shape(3);
                let values = match op {
                    ReduceOp::Max => Values::Distinct,
                    ReduceOp::Sum | ReduceOp::Mean => Values::Normal,
                };
                let x = case.param("x", &shape, values);
                let y = case.graph.reduce(op, x, axes).unwrap();
                let (graph, feeds) = case.finish(y);
                check_nonzero_gradients(&graph, &feeds);
            }
        }
    }
}

#[test]
fn reduce_max_gives_ties_the_cotangent() {
    let mut case = Case::new(4);
    let x = case.param_data("x", &[2, 3], vec![1.0, 3.0, 3.0, -1.0, -2.0, -1.5]);
    let y = case.graph.reduce_max(x, &[1]).unwrap();
    let (graph, feeds) = case.finish(y);
    let result = autodiff::run(&graph, &loss_options()).unwrap();
    let evaluation = evaluate(&result, &feeds, Precision::F64).unwrap();
    let w = feeds["weights"].data();
    assert_eq!(
        evaluation.outputs["grad.x"].data(),
        vec![0.0, w[0], w[0], w[1], 0.0, 0.0]
    );
}

#[test]
fn reshape_matches_finite_differences() {
    for seed in SEEDS {
        let mut case = Case::new(seed);
        let shape = case.shape(3);
        let x = case.param("x", &shape, Values::Normal);
        let y = case
            .graph
            .reshape(x, vec![shape[2], shape[0] * shape[1]])
            .unwrap();
        let (graph, feeds) = case.finish(y);
        check_nonzero_gradients(&graph, &feeds);
    }
}

#[test]
fn rank3_transposes_match_finite_differences() {
    let perms: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for perm in perms {
        for seed in SEEDS {
            let mut case = Case::new(seed);
            let shape = case.shape(3);
            let x = case.param("x", &shape, Values::Normal);
            let y = case.graph.transpose(x, &perm).unwrap();
            let (graph, feeds) = case.finish(y);
            check_nonzero_gradients(&graph, &feeds);
        }
    }
}

/// `op(A) · op(B)` with parameters stored so that the flags make the shapes agree.
fn check_matmul(seed: u64, batch: &[usize], transpose_a: bool, transpose_b: bool) {
    let mut case = Case::new(seed);
    let (m, k, n) = (case.extent(), case.extent(), case.extent());
    let stored = |rows: usize, cols: usize, transposed: bool| {
        let mut shape = batch.to_vec();
        shape.extend(if transposed {
            [cols, rows]
        } else {
            [rows, cols]
        });
        shape
    };
    let a = case.param("a", &stored(m, k, transpose_a), Values::Normal);
    let b = case.param("b", &stored(k, n, transpose_b), Values::Normal);
    let c = case.graph.matmul_t(a, b, transpose_a, transpose_b).unwrap();
    let mut expected = batch.to_vec();
    expected.extend([m, n]);
    assert_eq!(case.graph.ty(c).shape, expected);
    let (graph, feeds) = case.finish(c);
    check_nonzero_gradients(&graph, &feeds);
}

#[test]
fn matmul_with_every_flag_combination_matches_finite_differences() {
    for transpose_a in [false, true] {
        for transpose_b in [false, true] {
            for seed in SEEDS {
                check_matmul(seed, &[], transpose_a, transpose_b);
            }
        }
    }
}

#[test]
fn batched_matmul_matches_finite_differences() {
    for transpose_a in [false, true] {
        for transpose_b in [false, true] {
            check_matmul(5, &[3], transpose_a, transpose_b);
            check_matmul(6, &[2, 3], transpose_a, transpose_b);
        }
    }
}

#[test]
fn matmul_gradients_use_explicit_transposes_and_plain_matmuls() {
    // C = Aᵀ·Bᵀ: dA = T(B)·T(G) and dB = T(G)·T(A), with T(G) built once. The
    // e-graph pass folds these transposes into `matmul.tt` flags.
    let src = r#"graph g {
  %0 = param "a" : f32[4,3]
  %1 = param "b" : f32[5,4]
  %2 = matmul.tt %0, %1 : f32[3,5]
  %3 = reduce_sum %2 axes=[0,1] : f32[1,1]
  output "loss" = %3
}"#;
    let graph = kiln_ir::text::parse(src).unwrap();
    let result = autodiff::run(&graph, &loss_options()).unwrap();
    verify(&result).unwrap();
    insta::assert_snapshot!(kiln_ir::text::print(&result), @r#"
    graph g {
      %0 = param "a" : f32[4,3]
      %1 = param "b" : f32[5,4]
      %2 = matmul.tt %0, %1 : f32[3,5]
      %3 = reduce_sum %2 axes=[0,1] : f32[1,1]
      %4 = const 1.0 : f32[1,1]
      %5 = broadcast %4 : f32[3,5]
      %6 = transpose %1 perm=[1,0] : f32[4,5]
      %7 = transpose %5 perm=[1,0] : f32[5,3]
      %8 = matmul %6, %7 : f32[4,3]
      %9 = transpose %0 perm=[1,0] : f32[3,4]
      %10 = matmul %7, %9 : f32[5,4]
      output "loss" = %3
      output "grad.a" = %8
      output "grad.b" = %10
    }
    "#);
}

/// `x -> relu(x·w1 + b1) -> ·w2 + b2 -> z`, and the mean softmax cross-entropy of `z`
/// against `labels` through log-sum-exp.
fn mlp(seed: u64) -> (Graph, Feeds, NodeId) {
    let (batch, features, hidden, classes) = (5, 4, 6, 3);
    let mut case = Case::new(seed);
    let x = case.input("x", &[batch, features]);
    let label_data = (0..batch).map(|_| case.rng.below(classes) as f64).collect();
    let labels = case.input_data("labels", TensorType::i32([batch]), label_data);
    let w1 = case.param("w1", &[features, hidden], Values::Normal);
    let b1 = case.param("b1", &[1, hidden], Values::Normal);
    let w2 = case.param("w2", &[hidden, classes], Values::Normal);
    let b2 = case.param("b2", &[1, classes], Values::Normal);
    let g = &mut case.graph;
    let xw1 = g.matmul(x, w1).unwrap();
    let b1_wide = g.broadcast(b1, vec![batch, hidden]).unwrap();
    let pre = g.add_(xw1, b1_wide).unwrap();
    let h = g.relu(pre).unwrap();
    let hw2 = g.matmul(h, w2).unwrap();
    let b2_wide = g.broadcast(b2, vec![batch, classes]).unwrap();
    let z = g.add_(hw2, b2_wide).unwrap();
    let m = g.reduce_max(z, &[1]).unwrap();
    let m_wide = g.broadcast(m, vec![batch, classes]).unwrap();
    let shifted = g.sub(z, m_wide).unwrap();
    let exps = g.exp(shifted).unwrap();
    let sum_exps = g.reduce_sum(exps, &[1]).unwrap();
    let lse = g.log(sum_exps).unwrap();
    let one_hot = g.one_hot(labels, classes).unwrap();
    let picked_all = g.mul(one_hot, shifted).unwrap();
    let picked = g.reduce_sum(picked_all, &[1]).unwrap();
    let per_example = g.sub(lse, picked).unwrap();
    let mean = g.reduce_mean(per_example, &[0, 1]).unwrap();
    let loss = g.reshape(mean, Vec::new()).unwrap();
    g.set_output("loss", loss).unwrap();
    (case.graph, case.feeds, z)
}

#[test]
fn mlp_with_softmax_cross_entropy_matches_finite_differences() {
    for seed in SEEDS {
        let (graph, feeds, z) = mlp(seed);
        let grads = check_gradients(&graph, &feeds);
        // The bias of the last layer gets mean(softmax(z) - one_hot(labels)) over the batch.
        let result = autodiff::run(&graph, &loss_options()).unwrap();
        let evaluation = evaluate(&result, &feeds, Precision::F64).unwrap();
        let logits = &evaluation.values[&z];
        let (batch, classes) = (logits.shape()[0], logits.shape()[1]);
        let mut expected = vec![0.0; classes];
        for row in 0..batch {
            let zs = &logits.data()[row * classes..(row + 1) * classes];
            let max = zs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = zs.iter().map(|v| (v - max).exp()).sum();
            let label = feeds["labels"].data()[row] as usize;
            for class in 0..classes {
                let softmax = (zs[class] - max).exp() / total;
                let target = if class == label { 1.0 } else { 0.0 };
                expected[class] += (softmax - target) / batch as f64;
            }
        }
        for (got, want) in grads["b2"].data().iter().zip(&expected) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
    }
}

#[test]
fn a_parameter_used_twice_gets_the_summed_gradient() {
    let mut case = Case::new(2);
    let a = case.param("a", &[3], Values::Normal);
    let x = case.input("x", &[3]);
    let scaled = case.graph.mul(a, x).unwrap();
    let grown = case.graph.exp(a).unwrap();
    let squared = case.graph.mul(a, a).unwrap();
    let partial = case.graph.add_(scaled, grown).unwrap();
    let y = case.graph.add_(partial, squared).unwrap();
    let (graph, feeds) = case.finish(y);
    let grads = check_gradients(&graph, &feeds);
    let (a, x, w) = (
        feeds["a"].data(),
        feeds["x"].data(),
        feeds["weights"].data(),
    );
    for i in 0..3 {
        let expected = w[i] * (x[i] + a[i].exp() + 2.0 * a[i]);
        assert!((grads["a"].data()[i] - expected).abs() < 1e-12);
    }
}

#[test]
fn an_unused_parameter_gets_zeros_of_its_type() {
    let mut case = Case::new(8);
    let a = case.param("a", &[2, 3], Values::Normal);
    let unused = case.param("unused", &[4, 1], Values::Normal);
    // Used, but only through integers: no gradient flows.
    let steps_ty = TensorType::f32([2, 3]);
    let steps = case.param_data("steps", &[2, 3], vec![1.5; 6]);
    let truncated = case.graph.cast(steps, DType::I32).unwrap();
    let truncated = case.graph.cast(truncated, DType::F32).unwrap();
    let y = case.graph.mul(a, truncated).unwrap();
    // An output that depends on `unused` but not on the loss.
    let doubled = case.graph.add_(unused, unused).unwrap();
    case.graph.set_output("doubled", doubled).unwrap();
    let (graph, feeds) = case.finish(y);
    let grads = check_gradients(&graph, &feeds);
    assert_eq!(
        grads["unused"],
        Tensor::full(&TensorType::f32([4, 1]), 0.0).unwrap()
    );
    assert_eq!(grads["steps"], Tensor::full(&steps_ty, 0.0).unwrap());
    assert!(grads["a"].data().iter().all(|&g| g != 0.0));
}

#[test]
fn a_loss_without_parameters_gives_zero_gradients() {
    let mut graph = Graph::new("constant_loss");
    let p = graph.parameter("p", TensorType::f32([2])).unwrap();
    let x = graph.input("x", TensorType::f32([])).unwrap();
    let loss = graph.exp(x).unwrap();
    graph.set_output("loss", loss).unwrap();
    let result = autodiff::run(&graph, &loss_options()).unwrap();
    verify(&result).unwrap();
    let grad = result.output_by_name("grad.p").unwrap();
    assert_eq!(result.op(grad), &kiln_ir::Op::Constant { value: 0.0 });
    assert_eq!(result.ty(grad), graph.ty(p));
}

#[test]
fn outputs_and_updates_are_kept_and_gradients_follow_in_parameter_order() {
    let mut graph = Graph::new("kept");
    let second = graph.parameter("second", TensorType::f32([3])).unwrap();
    let first = graph.parameter("first", TensorType::f32([3])).unwrap();
    let product = graph.mul(first, second).unwrap();
    let sum = graph.reduce_sum(product, &[0]).unwrap();
    graph.set_output("prediction", product).unwrap();
    graph.set_output("loss", sum).unwrap();
    let next = graph.neg(second).unwrap();
    graph.set_update(second, next).unwrap();
    let result = autodiff::run(&graph, &loss_options()).unwrap();
    let names: Vec<&str> = result.outputs().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["prediction", "loss", "grad.second", "grad.first"]);
    assert_eq!(result.updates(), graph.updates());
    assert_eq!(result.output_by_name("loss"), Some(sum));
}

#[test]
fn the_pass_is_deterministic() {
    let (graph, _, _) = mlp(1);
    let first = kiln_ir::text::print(&autodiff::run(&graph, &loss_options()).unwrap());
    let second = kiln_ir::text::print(&autodiff::run(&graph, &loss_options()).unwrap());
    assert_eq!(first, second);
}

#[test]
fn a_loss_that_is_not_an_output_is_rejected() {
    let (graph, _, _) = mlp(1);
    let options = AutodiffOptions::loss("cost");
    let err = autodiff::run(&graph, &options).unwrap_err();
    assert_eq!(err, AutodiffError::LossNotAnOutput("cost".to_string()));
    assert_eq!(
        err.to_string(),
        "loss \"cost\" is not an output of the graph"
    );
}

#[test]
fn input_gradients_match_finite_differences_and_parameters_keep_theirs() {
    // loss = Σ w · tanh(x·p): d/dx for an adversarial step, d/dp as before.
    let mut case = Case::new(11);
    let x = case.input("x", &[3, 4]);
    let p = case.param("p", &[4, 2], Values::Normal);
    let product = case.graph.matmul(x, p).unwrap();
    let y = case.graph.tanh(product).unwrap();
    let (graph, feeds) = case.finish(y);
    let options = AutodiffOptions {
        loss: "loss".to_string(),
        inputs: vec!["x".to_string()],
    };
    let result = autodiff::run(&graph, &options).unwrap();
    verify(&result).unwrap();
    let evaluation = evaluate(&result, &feeds, Precision::F64).unwrap();
    let by_parameters_only = evaluate(
        &autodiff::run(&graph, &loss_options()).unwrap(),
        &feeds,
        Precision::F64,
    )
    .unwrap();
    assert_eq!(
        evaluation.outputs["grad.p"],
        by_parameters_only.outputs["grad.p"]
    );
    assert!(!by_parameters_only.outputs.contains_key("grad.x"));
    let grad = &evaluation.outputs["grad.x"];
    assert_eq!(grad.ty(), TensorType::f32([3, 4]));
    for index in 0..grad.len() {
        let nudged = |delta: f64| {
            let mut moved = feeds.clone();
            moved
                .get_mut("x")
                .unwrap()
                .edit(|data| data[index] += delta)
                .unwrap();
            eval_loss(&graph, &moved)
        };
        let numeric = (nudged(EPS) - nudged(-EPS)) / (2.0 * EPS);
        let analytic = grad.data()[index];
        assert!(
            (analytic - numeric).abs() < TOLERANCE * analytic.abs().max(1.0),
            "d loss / d x[{index}]: autodiff {analytic}, finite differences {numeric}"
        );
    }
}

#[test]
fn input_gradients_of_unused_missing_and_integer_inputs() {
    let mut graph = Graph::new("inputs");
    let x = graph.input("x", TensorType::f32([2])).unwrap();
    graph.input("unused", TensorType::f32([3])).unwrap();
    graph.input("labels", TensorType::i32([2])).unwrap();
    let y = graph.exp(x).unwrap();
    let sum = graph.reduce_sum(y, &[0]).unwrap();
    graph.set_output("loss", sum).unwrap();
    let options = |inputs: &[&str]| AutodiffOptions {
        loss: "loss".to_string(),
        inputs: inputs.iter().map(|name| name.to_string()).collect(),
    };
    // An input the loss does not read gets zeros, as an unused parameter does.
    let result = autodiff::run(&graph, &options(&["unused", "x"])).unwrap();
    let feeds: Feeds = [
        (
            "x",
            Tensor::new(TensorType::f32([2]), vec![0.0, 1.0]).unwrap(),
        ),
        (
            "unused",
            Tensor::new(TensorType::f32([3]), vec![1.0; 3]).unwrap(),
        ),
        (
            "labels",
            Tensor::new(TensorType::i32([2]), vec![0.0; 2]).unwrap(),
        ),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect();
    let evaluation = evaluate(&result, &feeds, Precision::F64).unwrap();
    assert_eq!(evaluation.outputs["grad.unused"].data(), [0.0; 3]);
    assert_eq!(
        evaluation.outputs["grad.x"].data(),
        [1.0, std::f64::consts::E]
    );
    let err = autodiff::run(&graph, &options(&["image"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"image\" is not an input of the graph, so it has no gradient"
    );
    let err = autodiff::run(&graph, &options(&["labels"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input \"labels\" must be f32 to have a gradient, found i32[2]"
    );
}

#[test]
fn a_loss_with_four_elements_is_rejected() {
    let mut graph = Graph::new("wide_loss");
    let p = graph.parameter("p", TensorType::f32([2, 2])).unwrap();
    let loss = graph.exp(p).unwrap();
    graph.set_output("loss", loss).unwrap();
    let err = autodiff::run(&graph, &loss_options()).unwrap_err();
    assert!(
        matches!(err, AutodiffError::LossNotScalar { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "loss \"loss\" must have exactly one element, found f32[2,2]"
    );
}

#[test]
fn an_integer_loss_is_rejected() {
    let mut graph = Graph::new("int_loss");
    let p = graph.parameter("p", TensorType::f32([1])).unwrap();
    let loss = graph.cast(p, DType::I32).unwrap();
    graph.set_output("loss", loss).unwrap();
    let err = autodiff::run(&graph, &loss_options()).unwrap_err();
    assert!(matches!(err, AutodiffError::LossNotF32 { .. }), "{err:?}");
    assert_eq!(err.to_string(), "loss \"loss\" must be f32, found i32[1]");
}

#[test]
fn a_taken_gradient_name_is_reported() {
    let mut graph = Graph::new("taken");
    let p = graph.parameter("p", TensorType::f32([])).unwrap();
    let loss = graph.exp(p).unwrap();
    graph.set_output("loss", loss).unwrap();
    graph.set_output("grad.p", p).unwrap();
    let err = autodiff::run(&graph, &loss_options()).unwrap_err();
    assert!(matches!(err, AutodiffError::Ir(_)), "{err:?}");
    assert!(err.to_string().contains("\"grad.p\""), "{err}");
}

/// 1-D and 2-D convolutions with strides, dilations, uneven padding and groups:
/// `(x spatial, taps, stride, low, high, dilation, groups)`.
type ConvCase = (
    Vec<usize>,
    Vec<usize>,
    Vec<usize>,
    Vec<usize>,
    Vec<usize>,
    Vec<usize>,
    usize,
);

fn conv_cases() -> Vec<ConvCase> {
    vec![
        (vec![7], vec![3], vec![2], vec![1], vec![0], vec![1], 1),
        (
            vec![6, 5],
            vec![2, 3],
            vec![1, 2],
            vec![0, 1],
            vec![2, 0],
            vec![2, 1],
            2,
        ),
        (
            vec![5, 4],
            vec![3, 1],
            vec![3, 1],
            vec![1, 0],
            vec![1, 0],
            vec![1, 1],
            1,
        ),
    ]
}

#[test]
fn convolutions_and_their_two_gradients_match_finite_differences() {
    use kiln_ir::op::ConvSpec;
    for (index, (spatial, taps, stride, low, high, dilation, groups)) in
        conv_cases().into_iter().enumerate()
    {
        let spec = ConvSpec {
            stride,
            low,
            high,
            dilation,
            groups,
        };
        let (batch, c, o) = (2, 2 * groups, 3 * groups);
        let x_shape: Vec<usize> = [batch, c].into_iter().chain(spatial.clone()).collect();
        let w_shape: Vec<usize> = [o, c / groups].into_iter().chain(taps.clone()).collect();
        let out: Vec<usize> = (0..spatial.len())
            .map(|a| spec.out_extent(a, spatial[a], taps[a]).unwrap())
            .collect();
        let dy_shape: Vec<usize> = [batch, o].into_iter().chain(out).collect();
        let seed = 100 + index as u64;
        // The convolution: its rule builds both gradient ops.
        let mut case = Case::new(seed);
        let x = case.param("x", &x_shape, Values::Normal);
        let w = case.param("w", &w_shape, Values::Normal);
        let y = case.graph.add(Op::Conv(spec.clone()), &[x, w]).unwrap();
        let (graph, feeds) = case.finish(y);
        check_nonzero_gradients(&graph, &feeds);
        // Each gradient op differentiated in turn (second-order rules).
        let mut case = Case::new(seed + 1);
        let dy = case.param("dy", &dy_shape, Values::Normal);
        let w = case.param("w", &w_shape, Values::Normal);
        let input = Op::ConvInputGrad {
            spec: spec.clone(),
            input: spatial.clone(),
        };
        let dx = case.graph.add(input, &[dy, w]).unwrap();
        assert_eq!(case.graph.ty(dx).shape, x_shape);
        let (graph, feeds) = case.finish(dx);
        check_nonzero_gradients(&graph, &feeds);
        let mut case = Case::new(seed + 2);
        let x = case.param("x", &x_shape, Values::Normal);
        let dy = case.param("dy", &dy_shape, Values::Normal);
        let filter = Op::ConvFilterGrad {
            spec: spec.clone(),
            taps: taps.clone(),
        };
        let dw = case.graph.add(filter, &[x, dy]).unwrap();
        assert_eq!(case.graph.ty(dw).shape, w_shape);
        let (graph, feeds) = case.finish(dw);
        check_nonzero_gradients(&graph, &feeds);
    }
}

#[test]
fn poolings_and_their_gradients_match_finite_differences() {
    use kiln_ir::op::{PoolKind, PoolSpec};
    let specs = [
        (
            vec![7],
            PoolSpec {
                window: vec![3],
                stride: vec![2],
                low: vec![1],
                high: vec![1],
            },
        ),
        (
            vec![5, 6],
            PoolSpec {
                window: vec![2, 3],
                stride: vec![1, 2],
                low: vec![0, 1],
                high: vec![1, 0],
            },
        ),
    ];
    for (index, (spatial, spec)) in specs.into_iter().enumerate() {
        for kind in PoolKind::ALL {
            let seed = 200 + index as u64;
            let x_shape: Vec<usize> = [2, 3].into_iter().chain(spatial.clone()).collect();
            // Distinct values: no ties, so the maximum is differentiable.
            let mut case = Case::new(seed);
            let x = case.param("x", &x_shape, Values::Distinct);
            let pool = Op::Pool {
                kind,
                spec: spec.clone(),
            };
            let y = case.graph.add(pool, &[x]).unwrap();
            let y_shape = case.graph.ty(y).shape.clone();
            let (graph, feeds) = case.finish(y);
            check_nonzero_gradients(&graph, &feeds);
            // The gradient op, differentiated with respect to its output gradient
            // (x is an input: the choice of maxima has no gradient).
            let mut case = Case::new(seed + 1);
            let data = case.values(x_shape.iter().product(), Values::Distinct);
            let x = case.input_data("x", TensorType::f32(x_shape.clone()), data);
            let dy = case.param("dy", &y_shape, Values::Normal);
            let grad = Op::PoolGrad {
                kind,
                spec: spec.clone(),
            };
            let dx = case.graph.add(grad, &[x, dy]).unwrap();
            assert_eq!(case.graph.ty(dx).shape, x_shape);
            let (graph, feeds) = case.finish(dx);
            check_nonzero_gradients(&graph, &feeds);
        }
    }
}
