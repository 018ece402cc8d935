//! The epilogue step (`schedule.epilogue`): a bias-add and/or relu that alone reads a
//! matmul's result becomes the matmul's epilogue, and only then. Each case is checked
//! for the kernels it leaves and, lowered, fused and fully scheduled, against the
//! graph interpreter bit for bit (awkward values included).

use kiln_ir::kernel::{KernelOp, MatmulOp, Program};
use kiln_ir::random::{random_awkward_feeds, random_feeds};
use kiln_ir::{
    evaluate, kernel_interp, scalar, BinaryOp, Feeds, Graph, NodeId, Precision, Rng, Target,
    TensorType,
};
use kiln_passes::{lower, schedule};

/// How the layer after the product is written.
#[derive(Clone, Copy, Debug)]
enum Layer {
    /// relu(x·w + broadcast(b)).
    BiasRelu,
    /// x·w + broadcast(b).
    Bias,
    /// relu(x·w).
    Relu,
    /// relu(broadcast(b) + x·w): the bias first.
    BiasFirst,
}

/// `layer` over an m×k input and k×n weights, with its output "y".
fn layer_graph(layer: Layer, m: usize, n: usize, k: usize) -> (Graph, NodeId) {
    let mut g = Graph::new("layer");
    let x = g.input("x", TensorType::f32([m, k])).unwrap();
    let w = g.input("w", TensorType::f32([k, n])).unwrap();
    let b = g.input("b", TensorType::f32([1, n])).unwrap();
    let product = g.matmul(x, w).unwrap();
    let bias = g.broadcast(b, vec![m, n]).unwrap();
    let y = match layer {
        Layer::BiasRelu => {
            let sum = g.add_(product, bias).unwrap();
            g.relu(sum).unwrap()
        }
        Layer::Bias => g.add_(product, bias).unwrap(),
        Layer::Relu => g.relu(product).unwrap(),
        Layer::BiasFirst => {
            let sum = g.add_(bias, product).unwrap();
            g.relu(sum).unwrap()
        }
    };
    g.set_output("y", y).unwrap();
    (g, product)
}

fn fused(graph: &Graph) -> Program {
    let lowered = lower::lower(graph).unwrap();
    let program = schedule::epilogue::run(&lowered, &Target::baseline());
    program.check().unwrap();
    program
}

/// The matmul's recorded epilogue: (bias buffer present, relu).
fn epilogues(program: &Program) -> Vec<(bool, bool)> {
    program
        .kernels
        .iter()
        .filter_map(|kernel| match &kernel.op {
            Some(KernelOp::Matmul(matmul)) => Some((matmul.bias.is_some(), matmul.relu)),
            _ => None,
        })
        .collect()
}

/// Every program the graph becomes (fused only, and fully scheduled for the
/// baseline on two threads and for AVX2 on one) computes what the graph interpreter
/// computes, bit for bit, on random and on awkward values.
fn assert_same_values(graph: &Graph, seed: u64) {
    let lowered = lower::lower(graph).unwrap();
    let avx2 = Target {
        avx2_fma: true,
        ..Target::baseline()
    };
    let programs = [
        schedule::epilogue::run(&lowered, &Target::baseline()),
        schedule::for_target(&lowered, &Target::baseline().with_threads(2)).unwrap(),
        schedule::for_target(&lowered, &avx2).unwrap(),
    ];
    for awkward in [false, true] {
        let mut rng = Rng::new(seed);
        let feeds: Feeds = if awkward {
            random_awkward_feeds(graph, &mut rng)
        } else {
            random_feeds(graph, &mut rng)
        };
        let want = evaluate(graph, &feeds, Precision::F32).unwrap().outputs;
        for program in &programs {
            let got = kernel_interp::run(program, &feeds, &mut Feeds::new()).unwrap();
            for (a, e) in got["y"].data().iter().zip(want["y"].data()) {
                assert!(scalar::same(*a, *e), "{a} vs {e}\n{program}");
            }
        }
    }
}

#[test]
fn bias_and_relu_after_a_matmul_become_its_epilogue() {
    let cases = [
        (Layer::BiasRelu, (true, true)),
        (Layer::Bias, (true, false)),
        (Layer::Relu, (false, true)),
        (Layer::BiasFirst, (true, true)),
    ];
    for (layer, expected) in cases {
        // 1 row, 1 column, odd sizes, and more than one tile and KC block.
        for (seed, (m, n, k)) in [(1, 7, 5), (9, 1, 3), (13, 17, 11), (37, 40, 300)]
            .into_iter()
            .enumerate()
        {
            let (graph, _) = layer_graph(layer, m, n, k);
            let program = fused(&graph);
            assert_eq!(program.kernels.len(), 1, "{layer:?} {m}x{n}x{k}\n{program}");
            assert_eq!(epilogues(&program), [expected], "{layer:?}\n{program}");
            assert_same_values(&graph, seed as u64);
        }
    }
}

#[test]
fn a_result_read_elsewhere_or_shown_keeps_its_own_kernel() {
    // The product also an output: it must keep its value without the bias.
    let (mut graph, product) = layer_graph(Layer::BiasRelu, 5, 6, 7);
    graph.set_output("product", product).unwrap();
    let program = fused(&graph);
    assert_eq!(epilogues(&program), [(false, false)], "{program}");
    assert_same_values(&graph, 1);

    // The sum read twice (relu and another use): the add is fused, relu is not.
    let mut g = Graph::new("twice");
    let x = g.input("x", TensorType::f32([5, 7])).unwrap();
    let w = g.input("w", TensorType::f32([7, 6])).unwrap();
    let b = g.input("b", TensorType::f32([1, 6])).unwrap();
    let product = g.matmul(x, w).unwrap();
    let bias = g.broadcast(b, vec![5, 6]).unwrap();
    let sum = g.add_(product, bias).unwrap();
    let y = g.relu(sum).unwrap();
    let twice = g.binary(BinaryOp::Mul, sum, sum).unwrap();
    g.set_output("y", y).unwrap();
    g.set_output("twice", twice).unwrap();
    let program = fused(&g);
    assert_eq!(epilogues(&program), [(true, false)], "{program}");
    assert_same_values(&g, 2);
}

#[test]
fn a_bias_along_the_other_axis_or_a_full_matrix_is_not_a_row_bias() {
    // Square, so that shapes alone cannot tell the axes apart: a column vector
    // broadcast along the rows, and a full matrix added element by element.
    let n = 6;
    for column in [true, false] {
        let mut g = Graph::new("not_a_row");
        let x = g.input("x", TensorType::f32([n, n])).unwrap();
        let w = g.input("w", TensorType::f32([n, n])).unwrap();
        let product = g.matmul(x, w).unwrap();
        let other = if column {
            let b = g.input("b", TensorType::f32([n, 1])).unwrap();
            g.broadcast(b, vec![n, n]).unwrap()
        } else {
            g.input("d", TensorType::f32([n, n])).unwrap()
        };
        let sum = g.add_(product, other).unwrap();
        let y = g.relu(sum).unwrap();
        g.set_output("y", y).unwrap();
        let program = fused(&g);
        assert_eq!(program.kernels.len(), 2, "{program}");
        assert_eq!(epilogues(&program), [(false, false)], "{program}");
        assert_same_values(&g, 3);
    }
}

/// `w - 0.01 * (xᵀ·g)` (or `(xᵀ·g) * 0.01`), the SGD step of a weight whose gradient
/// is a matmul over a batch of `batch` rows.
fn descent_graph(batch: usize, m: usize, n: usize, scale_first: bool) -> Graph {
    let mut g = Graph::new("descent");
    let x = g.input("x", TensorType::f32([batch, m])).unwrap();
    let grad_out = g.input("g", TensorType::f32([batch, n])).unwrap();
    let w = g.input("w", TensorType::f32([m, n])).unwrap();
    let grad = g.matmul_t(x, grad_out, true, false).unwrap();
    let lr = g.constant(0.01, TensorType::f32([m, n])).unwrap();
    let step = if scale_first {
        g.binary(BinaryOp::Mul, lr, grad).unwrap()
    } else {
        g.binary(BinaryOp::Mul, grad, lr).unwrap()
    };
    let new = g.binary(BinaryOp::Sub, w, step).unwrap();
    g.set_output("y", new).unwrap();
    g
}

#[test]
fn a_descent_step_after_a_gradient_matmul_becomes_its_epilogue() {
    for (seed, (batch, m, n)) in [
        (7, 5, 3),
        (32, 13, 17),
        (1, 9, 40),
        (128, 37, 33),
        (0, 5, 3),
    ]
    .into_iter()
    .enumerate()
    {
        for scale_first in [true, false] {
            let graph = descent_graph(batch, m, n, scale_first);
            let program = fused(&graph);
            assert_eq!(program.kernels.len(), 1, "{program}");
            let Some(KernelOp::Matmul(MatmulOp { update, .. })) = program.kernels[0].op else {
                panic!("{program}");
            };
            assert_eq!(update.map(|(_, scale)| f32::from_bits(scale)), Some(0.01));
            assert_same_values(&graph, seed as u64);
        }
    }
}

#[test]
fn a_descent_step_over_more_than_one_kc_block_keeps_its_own_kernel() {
    // k = 5000 rows of the batch: more than one KC block on any target.
    let graph = descent_graph(5000, 3, 4, true);
    let program = fused(&graph);
    assert_eq!(program.kernels.len(), 2, "{program}");
    assert_same_values(&graph, 9);
}
