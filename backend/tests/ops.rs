//! Differential tests of every op: lowered, JIT-compiled and run, compared with the
//! reference interpreter (f32 rounding) on random data, at sizes that exercise the
//! vector loops' scalar remainders.

mod common;

use common::{check_graph, check_graph_feeds, random_feeds, ODD_SIZES};
use kiln_ir::kernel::{LoopKind, Stmt};
use kiln_ir::{BinaryOp, CmpOp, DType, Graph, ReduceOp, Tensor, TensorType, UnaryOp};

#[test]
fn unary_ops_match_the_interpreter_at_odd_sizes() {
    for (seed, &n) in ODD_SIZES.iter().enumerate() {
        let mut g = Graph::new(format!("unary_{n}"));
        let x = g.input("x", TensorType::f32([n])).unwrap();
        let positive = g.input("positive", TensorType::f32([n])).unwrap();
        let ints = g.input("ints", TensorType::i32([n])).unwrap();
        for op in UnaryOp::ALL {
            let y = g.unary(op, x).unwrap();
            g.set_output(op.name(), y).unwrap();
        }
        // log of a positive operand (and NaN for the negative ones above).
        let e = g.exp(positive).unwrap();
        let logged = g.log(e).unwrap();
        g.set_output("log_exp", logged).unwrap();
        for op in UnaryOp::ALL.into_iter().filter(|op| op.accepts_int()) {
            let y = g.unary(op, ints).unwrap();
            g.set_output(&format!("{}_i32", op.name()), y).unwrap();
        }
        check_graph(&g, seed as u64);
    }
}

#[test]
fn unary_ops_on_a_matrix_with_special_values() {
    let mut g = Graph::new("unary_special");
    let x = g.input("x", TensorType::f32([3, 7])).unwrap();
    for op in UnaryOp::ALL {
        let y = g.unary(op, x).unwrap();
        g.set_output(op.name(), y).unwrap();
    }
    let mut feeds = random_feeds(&g, 7);
    let special = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        88.0,
        -104.0,
        1e-30,
    ];
    feeds
        .get_mut("x")
        .unwrap()
        .edit(|data| {
            for (slot, value) in data.iter_mut().zip(special) {
                *slot = value;
            }
        })
        .unwrap();
    check_graph_feeds(&g, &feeds);
}

#[test]
fn binary_ops_match_on_f32_and_i32_with_nan_propagating_max() {
    for (seed, &n) in ODD_SIZES.iter().enumerate() {
        let mut g = Graph::new(format!("binary_{n}"));
        let a = g.input("a", TensorType::f32([n])).unwrap();
        let b = g.input("b", TensorType::f32([n])).unwrap();
        let ia = g.input("ia", TensorType::i32([n])).unwrap();
        let ib = g.input("ib", TensorType::i32([n])).unwrap();
        for op in BinaryOp::ALL {
            let y = g.binary(op, a, b).unwrap();
            g.set_output(op.name(), y).unwrap();
            if op.accepts_int() {
                let y = g.binary(op, ia, ib).unwrap();
                g.set_output(&format!("{}_i32", op.name()), y).unwrap();
            }
        }
        let mut feeds = random_feeds(&g, seed as u64);
        // NaN in either operand of max (and of everything else) in some lanes.
        let a = feeds.get_mut("a").unwrap();
        a.edit(|data| data[0] = f64::NAN).unwrap();
        if n > 2 {
            let b = feeds.get_mut("b").unwrap();
            b.edit(|data| data[2] = f64::NAN).unwrap();
        }
        check_graph_feeds(&g, &feeds);
    }
}

#[test]
fn integer_arithmetic_wraps_like_the_interpreter() {
    let mut g = Graph::new("wrap");
    let a = g.input("a", TensorType::i32([5])).unwrap();
    let b = g.input("b", TensorType::i32([5])).unwrap();
    let sum = g.add_(a, b).unwrap();
    let neg = g.neg(a).unwrap();
    g.set_output("sum", sum).unwrap();
    g.set_output("neg", neg).unwrap();
    let feeds = [
        (
            "a".to_string(),
            Tensor::i32([5], &[i32::MAX, -i32::MAX, -1, 7, -i32::MAX]).unwrap(),
        ),
        (
            "b".to_string(),
            Tensor::i32([5], &[1, -2, -i32::MAX, -7, 0]).unwrap(),
        ),
    ]
    .into_iter()
    .collect();
    check_graph_feeds(&g, &feeds);
}

#[test]
fn compares_and_select_match_including_nan() {
    for (seed, &n) in ODD_SIZES.iter().enumerate() {
        let mut g = Graph::new(format!("cmp_{n}"));
        let a = g.input("a", TensorType::f32([n])).unwrap();
        let b = g.input("b", TensorType::f32([n])).unwrap();
        let ia = g.input("ia", TensorType::i32([n])).unwrap();
        let ib = g.input("ib", TensorType::i32([n])).unwrap();
        let mask = g.input("mask", TensorType::bool([n])).unwrap();
        for op in CmpOp::ALL {
            let y = g.compare(op, a, b).unwrap();
            g.set_output(op.name(), y).unwrap();
            let y = g.compare(op, ia, ib).unwrap();
            g.set_output(&format!("{}_i32", op.name()), y).unwrap();
        }
        let lt = g.compare(CmpOp::Lt, a, b).unwrap();
        let picked = g.select(lt, a, b).unwrap();
        g.set_output("select_f32", picked).unwrap();
        let picked = g.select(mask, ia, ib).unwrap();
        g.set_output("select_i32", picked).unwrap();
        let not_mask = g.compare(CmpOp::Eq, ia, ib).unwrap();
        let picked = g.select(mask, not_mask, mask).unwrap();
        g.set_output("select_bool", picked).unwrap();
        let mut feeds = random_feeds(&g, 100 + seed as u64);
        // Equal pairs and NaNs, so every predicate sees true, false and unordered.
        let b_values = feeds["b"].data().to_vec();
        let a = feeds.get_mut("a").unwrap();
        a.edit(|a_data| {
            for i in (0..n).step_by(3) {
                a_data[i] = b_values[i];
            }
            if n > 1 {
                a_data[1] = f64::NAN;
            }
        })
        .unwrap();
        check_graph_feeds(&g, &feeds);
    }
}

#[test]
fn casts_between_every_dtype_pair_follow_rust_as() {
    for (seed, &n) in [1usize, 7, 13].iter().enumerate() {
        let mut g = Graph::new(format!("cast_{n}"));
        let inputs = [
            g.input("f", TensorType::f32([n])).unwrap(),
            g.input("i", TensorType::i32([n])).unwrap(),
            g.input("b", TensorType::bool([n])).unwrap(),
        ];
        for (input, from) in inputs.into_iter().zip(DType::ALL) {
            for to in DType::ALL {
                let y = g.cast(input, to).unwrap();
                g.set_output(&format!("{from}_to_{to}"), y).unwrap();
            }
        }
        let mut feeds = random_feeds(&g, 200 + seed as u64);
        let special = [
            f64::NAN,
            3e9,
            -3e9,
            2.5,
            -2.5,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.75,
            -0.999,
            16777217.0,
            1e-40,
            2147483520.0,
        ];
        let f = feeds.get_mut("f").unwrap();
        f.edit(|data| {
            for (slot, value) in data.iter_mut().zip(special) {
                *slot = value as f32 as f64;
            }
        })
        .unwrap();
        let ints = [i32::MAX, -i32::MAX, 16777217, -16777219, 0, 1, -1];
        let i = feeds.get_mut("i").unwrap();
        i.edit(|data| {
            for (slot, value) in data.iter_mut().zip(ints) {
                *slot = f64::from(value);
            }
        })
        .unwrap();
        check_graph_feeds(&g, &feeds);
    }
}

#[test]
fn broadcasts_along_each_axis_and_several() {
    let target = [3usize, 5, 7];
    let mut g = Graph::new("broadcast");
    for mask in 1u32..8 {
        let shape: Vec<usize> = (0..3)
            .map(|axis| {
                if mask & (1 << axis) != 0 {
                    1
                } else {
                    target[axis]
                }
            })
            .collect();
        let x = g
            .input(&format!("x{mask}"), TensorType::f32(shape))
            .unwrap();
        let y = g.broadcast(x, target.to_vec()).unwrap();
        g.set_output(&format!("b{mask}"), y).unwrap();
    }
    // Into an elementwise consumer, and an i32 broadcast.
    let bias = g.input("bias", TensorType::f32([1, 17])).unwrap();
    let rows = g.input("rows", TensorType::f32([13, 17])).unwrap();
    let wide = g.broadcast(bias, vec![13, 17]).unwrap();
    let sum = g.add_(rows, wide).unwrap();
    g.set_output("bias_add", sum).unwrap();
    let labels = g.input("labels", TensorType::i32([5, 1])).unwrap();
    let wide = g.broadcast(labels, vec![5, 6]).unwrap();
    g.set_output("labels", wide).unwrap();
    check_graph(&g, 3);
}

#[test]
fn reductions_over_each_axis_and_several() {
    let shape = [3usize, 5, 7];
    for op in ReduceOp::ALL {
        let mut g = Graph::new(op.name());
        let x = g.input("x", TensorType::f32(shape)).unwrap();
        let ints = g.input("ints", TensorType::i32(shape)).unwrap();
        let mask = g.input("mask", TensorType::bool([4, 9])).unwrap();
        for axes_mask in 1u32..8 {
            let axes: Vec<usize> = (0..3).filter(|a| axes_mask & (1 << a) != 0).collect();
            let y = g.reduce(op, x, &axes).unwrap();
            g.set_output(&format!("f32_{axes:?}"), y).unwrap();
            if op != ReduceOp::Mean {
                let y = g.reduce(op, ints, &axes).unwrap();
                g.set_output(&format!("i32_{axes:?}"), y).unwrap();
            }
        }
        if op == ReduceOp::Max {
            for axes in [vec![0], vec![1], vec![0, 1]] {
                let y = g.reduce(op, mask, &axes).unwrap();
                g.set_output(&format!("bool_{axes:?}"), y).unwrap();
            }
        }
        let mut feeds = random_feeds(&g, 300);
        // A NaN poisons its row, column and total under every reduction.
        let x = feeds.get_mut("x").unwrap();
        x.edit(|data| data[8] = f64::NAN).unwrap();
        check_graph_feeds(&g, &feeds);
    }
}

#[test]
fn reductions_at_odd_sizes_and_with_unit_axes() {
    for (seed, &n) in ODD_SIZES.iter().enumerate() {
        let mut g = Graph::new(format!("reduce_{n}"));
        let x = g.input("x", TensorType::f32([n, 1, n + 2])).unwrap();
        for op in ReduceOp::ALL {
            for axes in [vec![0], vec![1], vec![2], vec![0, 2], vec![1, 2]] {
                let y = g.reduce(op, x, &axes).unwrap();
                g.set_output(&format!("{}_{axes:?}", op.name()), y).unwrap();
            }
        }
        check_graph(&g, 400 + seed as u64);
    }
}

#[test]
fn transposes_of_rank_two_and_three() {
    let mut g = Graph::new("transpose");
    let m = g.input("m", TensorType::f32([5, 7])).unwrap();
    let t = g.transpose(m, &[1, 0]).unwrap();
    g.set_output("t2", t).unwrap();
    let x = g.input("x", TensorType::f32([3, 5, 7])).unwrap();
    let perms = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for perm in perms {
        let y = g.transpose(x, &perm).unwrap();
        g.set_output(&format!("t3_{perm:?}"), y).unwrap();
    }
    let ints = g.input("ints", TensorType::i32([4, 9])).unwrap();
    let t = g.transpose(ints, &[1, 0]).unwrap();
    g.set_output("t_i32", t).unwrap();
    check_graph(&g, 5);
}

#[test]
fn matmul_with_every_transpose_flag_and_odd_sizes() {
    let sizes = [
        (1, 1, 1),
        (3, 5, 7),
        (5, 13, 17),
        (7, 33, 4),
        (4, 3, 1),
        (1, 17, 33),
        (2, 1, 5),
    ];
    for (seed, &(m, k, n)) in sizes.iter().enumerate() {
        let mut g = Graph::new(format!("matmul_{m}x{k}x{n}"));
        for (transpose_a, transpose_b) in
            [(false, false), (true, false), (false, true), (true, true)]
        {
            let a_shape = if transpose_a { [k, m] } else { [m, k] };
            let b_shape = if transpose_b { [n, k] } else { [k, n] };
            let tag = format!("{}{}", u8::from(transpose_a), u8::from(transpose_b));
            let a = g
                .input(&format!("a{tag}"), TensorType::f32(a_shape))
                .unwrap();
            let b = g
                .input(&format!("b{tag}"), TensorType::f32(b_shape))
                .unwrap();
            let c = g.matmul_t(a, b, transpose_a, transpose_b).unwrap();
            g.set_output(&format!("c{tag}"), c).unwrap();
        }
        check_graph(&g, 500 + seed as u64);
    }
}

#[test]
fn batched_matmul_with_every_transpose_flag() {
    let (m, k, n) = (3, 5, 6);
    let mut g = Graph::new("batched");
    for (transpose_a, transpose_b) in [(false, false), (true, false), (false, true), (true, true)] {
        let a_shape = if transpose_a {
            [2, 3, k, m]
        } else {
            [2, 3, m, k]
        };
        let b_shape = if transpose_b {
            [2, 3, n, k]
        } else {
            [2, 3, k, n]
        };
        let tag = format!("{}{}", u8::from(transpose_a), u8::from(transpose_b));
        let a = g
            .input(&format!("a{tag}"), TensorType::f32(a_shape))
            .unwrap();
        let b = g
            .input(&format!("b{tag}"), TensorType::f32(b_shape))
            .unwrap();
        let c = g.matmul_t(a, b, transpose_a, transpose_b).unwrap();
        g.set_output(&format!("c{tag}"), c).unwrap();
    }
    let a = g
        .input("single_batch_a", TensorType::f32([1, 4, 9]))
        .unwrap();
    let b = g
        .input("single_batch_b", TensorType::f32([1, 9, 5]))
        .unwrap();
    let c = g.matmul(a, b).unwrap();
    g.set_output("single_batch", c).unwrap();
    check_graph(&g, 600);
}

#[test]
fn one_hot_rows_including_out_of_range_labels() {
    for depth in [1usize, 3, 5, 10] {
        let mut g = Graph::new(format!("one_hot_{depth}"));
        let labels = g.input("labels", TensorType::i32([7])).unwrap();
        let hot = g.one_hot(labels, depth).unwrap();
        g.set_output("hot", hot).unwrap();
        let grid = g.input("grid", TensorType::i32([2, 3])).unwrap();
        let hot = g.one_hot(grid, depth).unwrap();
        g.set_output("grid_hot", hot).unwrap();
        let d = depth as i32;
        let feeds = [
            (
                "labels".to_string(),
                Tensor::i32([7], &[0, d - 1, -1, d, d + 5, -i32::MAX, d / 2]).unwrap(),
            ),
            (
                "grid".to_string(),
                Tensor::i32([2, 3], &[d - 1, 0, 2, -3, 1, d]).unwrap(),
            ),
        ]
        .into_iter()
        .collect();
        check_graph_feeds(&g, &feeds);
    }
}

#[test]
fn reshapes_alias_and_constants_fold_or_fill() {
    let mut g = Graph::new("alias");
    let x = g.input("x", TensorType::f32([3, 4])).unwrap();
    let flat = g.reshape(x, vec![12]).unwrap();
    let square = g.reshape(flat, vec![2, 6]).unwrap();
    let doubled = g.add_(square, square).unwrap();
    g.set_output("flat", flat).unwrap();
    g.set_output("doubled", doubled).unwrap();
    g.set_output("x", x).unwrap();
    let half = g.constant(0.5, TensorType::f32([2, 6])).unwrap();
    let scaled = g.mul(doubled, half).unwrap();
    g.set_output("scaled", scaled).unwrap();
    g.set_output("half", half).unwrap();
    let three = g.constant(3.0, TensorType::i32([5])).unwrap();
    let nine = g.mul(three, three).unwrap();
    g.set_output("nine", nine).unwrap();
    let wide = g.constant(2.0, TensorType::f32([1, 3])).unwrap();
    let wide = g.broadcast(wide, vec![4, 3]).unwrap();
    let turned = g.transpose(wide, &[1, 0]).unwrap();
    let e = g.exp(turned).unwrap();
    g.set_output("exp_const", e).unwrap();
    let empty = g.input("empty", TensorType::f32([0, 3])).unwrap();
    let empty_sum = g.reduce(ReduceOp::Sum, empty, &[0]).unwrap();
    g.set_output("empty_sum", empty_sum).unwrap();
    let empty_max = g.reduce(ReduceOp::Max, empty, &[0]).unwrap();
    g.set_output("empty_max", empty_max).unwrap();
    check_graph(&g, 9);
}

#[test]
fn slices_pads_and_concatenations_at_odd_sizes() {
    for (seed, &n) in ODD_SIZES.iter().enumerate() {
        let mut g = Graph::new(format!("relayout_{n}"));
        let x = g.input("x", TensorType::f32([n, 5])).unwrap();
        let ints = g.input("ints", TensorType::i32([n, 5])).unwrap();
        // Strided slices of a buffer, of a fused value and of an i32 value.
        let strided = g.slice(x, &[n / 2, 1], &[n, 5], &[2, 3]).unwrap();
        g.set_output("strided", strided).unwrap();
        let e = g.exp(x).unwrap();
        let of_fused = g.slice(e, &[0, 2], &[n, 4], &[1, 1]).unwrap();
        g.set_output("of_fused", of_fused).unwrap();
        let int_rows = g.slice(ints, &[0, 0], &[n, 5], &[2, 1]).unwrap();
        g.set_output("int_rows", int_rows).unwrap();
        // Pads with borders, interior gaps and a non-zero (and an infinite) value.
        let padded = g.pad(x, &[1, 0], &[2, 3], &[1, 2], -1.5).unwrap();
        g.set_output("padded", padded).unwrap();
        let neg_inf = g
            .pad(e, &[0, 1], &[1, 0], &[0, 0], f64::NEG_INFINITY)
            .unwrap();
        g.set_output("neg_inf", neg_inf).unwrap();
        let int_pad = g.pad(ints, &[2, 0], &[0, 1], &[0, 1], 7.0).unwrap();
        g.set_output("int_pad", int_pad).unwrap();
        // Concatenations along each axis, of buffers and of constants, read further.
        let rows = g.concat(x, e, 0).unwrap();
        let relu = g.relu(rows).unwrap();
        g.set_output("rows", relu).unwrap();
        let half = g.constant(0.5, TensorType::f32([n, 2])).unwrap();
        let cols = g.concat(half, x, 1).unwrap();
        g.set_output("cols", cols).unwrap();
        check_graph(&g, seed as u64);
    }
}

#[test]
fn relayouts_of_constants_and_empty_results() {
    let mut g = Graph::new("relayout_consts");
    let c = g.constant(2.0, TensorType::f32([4, 3])).unwrap();
    let sliced = g.slice(c, &[1, 0], &[4, 3], &[2, 1]).unwrap();
    g.set_output("sliced", sliced).unwrap();
    // Padding a splat with its own value stays a splat; -0 with +0 does not.
    let same = g.pad(c, &[1, 1], &[1, 1], &[1, 1], 2.0).unwrap();
    g.set_output("same", same).unwrap();
    let minus_zero = g.constant(-0.0, TensorType::f32([2, 2])).unwrap();
    let plus_around = g.pad(minus_zero, &[1, 0], &[0, 1], &[0, 0], 0.0).unwrap();
    g.set_output("plus_around", plus_around).unwrap();
    let x = g.input("x", TensorType::f32([3, 4])).unwrap();
    let empty = g.slice(x, &[2, 0], &[2, 4], &[1, 1]).unwrap();
    g.set_output("empty", empty).unwrap();
    let grown = g.pad(empty, &[1, 0], &[0, 0], &[3, 0], 1.0).unwrap();
    g.set_output("grown", grown).unwrap();
    check_graph(&g, 3);
}

/// Index values that repeat and fall outside `0..extent` on both sides (and at the
/// ends of i32), `n` of them.
fn awkward_indices(n: usize, extent: usize) -> Vec<i32> {
    let e = extent as i32;
    let pattern = [0, e - 1, -1, e, 1, i32::MIN, e / 2, i32::MAX, 0, e + 3];
    (0..n).map(|i| pattern[i % pattern.len()]).collect()
}

#[test]
fn gathers_and_scatter_adds_with_repeated_and_out_of_range_indices() {
    for (seed, &n) in ODD_SIZES.iter().enumerate() {
        let mut g = Graph::new(format!("gather_{n}"));
        let table = g.input("table", TensorType::f32([n, 5])).unwrap();
        let ints = g.input("ints", TensorType::i32([3, n])).unwrap();
        let ids = g.input("ids", TensorType::i32([2, 7])).unwrap();
        let labels = g.input("labels", TensorType::i32([3])).unwrap();
        // An embedding lookup [n, 5] by [2, 7]: [2, 7, 5], and its adjoint.
        let rows = g.gather(table, ids, 0, 0).unwrap();
        g.set_output("rows", rows).unwrap();
        let back = g.scatter_add(rows, ids, 0, 0, n).unwrap();
        g.set_output("rows_back", back).unwrap();
        // Columns of a fused value, of an i32 value, and of a constant.
        let e = g.exp(table).unwrap();
        let cols = g.gather(e, labels, 1, 0).unwrap();
        g.set_output("exp_cols", cols).unwrap();
        let int_cols = g.gather(ints, ids, 1, 0).unwrap();
        g.set_output("int_cols", int_cols).unwrap();
        let int_back = g.scatter_add(int_cols, ids, 1, 0, n).unwrap();
        g.set_output("int_back", int_back).unwrap();
        let half = g.constant(0.5, TensorType::f32([4, n])).unwrap();
        let of_const = g.gather(half, labels, 0, 0).unwrap();
        g.set_output("of_const", of_const).unwrap();
        // One label per row: ints[b, labels[b]], and back into [3, n].
        let picked = g.gather(ints, labels, 1, 1).unwrap();
        g.set_output("picked", picked).unwrap();
        let x = g.input("x", TensorType::f32([3])).unwrap();
        let spread = g.scatter_add(x, labels, 1, 1, n).unwrap();
        g.set_output("spread", spread).unwrap();
        let mut feeds = random_feeds(&g, seed as u64);
        for (name, shape, extent) in [("ids", vec![2, 7], n), ("labels", vec![3], n)] {
            let count = shape.iter().product();
            let values = awkward_indices(count, extent);
            feeds.insert(name.to_string(), Tensor::i32(shape, &values).unwrap());
        }
        check_graph_feeds(&g, &feeds);
    }
}

#[test]
fn large_gathers_run_in_parallel_and_scatters_to_one_element_stay_exact() {
    // Enough elements for the parallel and vector steps to look at both kernels: the
    // gather may be split over threads, the scatter (every update to one of four
    // elements, in order) must not be.
    let n = 70_001;
    let mut g = Graph::new("gather_large");
    let table = g.input("table", TensorType::f32([4])).unwrap();
    let ids = g.input("ids", TensorType::i32([n])).unwrap();
    let rows = g.gather(table, ids, 0, 0).unwrap();
    g.set_output("rows", rows).unwrap();
    let x = g.input("x", TensorType::f32([n])).unwrap();
    let sums = g.scatter_add(x, ids, 0, 0, 4).unwrap();
    g.set_output("sums", sums).unwrap();
    let program = common::schedule(kiln_passes::lower::lower(&g).unwrap());
    let parallel = |name: &str| {
        let kernel = program.kernels.iter().find(|k| k.name == name).unwrap();
        matches!(
            kernel.body.as_slice(),
            [
                Stmt::Loop {
                    kind: LoopKind::Parallel,
                    ..
                },
                ..
            ]
        )
    };
    assert!(parallel("gather"), "{program}");
    assert!(!parallel("scatter_add"), "{program}");
    let mut feeds = random_feeds(&g, 5);
    let values = awkward_indices(n, 4);
    feeds.insert("ids".into(), Tensor::i32([n], &values).unwrap());
    check_graph_feeds(&g, &feeds);
}
