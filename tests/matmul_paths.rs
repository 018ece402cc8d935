//! The scheduled matmul routine computes exactly what the interpreter computes, on
//! every path the schedule can pick: the AVX2/FMA 6x16 microkernel (the host target)
//! and the portable f32x4 one (the host without AVX2), each on one thread and on two,
//! and the AVX-512F one where the host has it; all four transpose variants; extents
//! that leave every tile and vector remainder, empty extents, products above
//! `PARALLEL_FLOPS` split into uneven row or column blocks, a contraction longer than
//! two KC blocks, more rows than one MC block, and batches; and the bias/relu
//! epilogues the schedule fuses into the call. Every output element must equal
//! `evaluate(.., Precision::F32)` bit for bit (any NaN equals any NaN), on random
//! values and on awkward ones (±0, subnormals, ±inf, NaN, values near f32::MAX).
//!
//! Each compilation's schedule is checked too, so the test cannot pass by taking a
//! different path: the program `compile_with` schedules (rebuilt here with the same
//! steps, options and target) calls the matmul routine with the target's
//! microkernel, in row or column blocks (columns when C has fewer rows than columns)
//! of a parallel loop exactly when the product is large and there are two threads,
//! and the executable then runs on a pool of two threads.

use kiln::compile::compile_with;
use kiln::passes::pipeline::{self, PipelineOptions};
use kiln::passes::schedule::{self, matmul::PARALLEL_FLOPS};
use kiln_ir::kernel::{MicroKernel, Program, Split};
use kiln_ir::random::AWKWARD_F32;
use kiln_ir::{evaluate, scalar, Feeds, Graph, Precision, Rng, Target, Tensor, TensorType};
use std::time::Instant;

#[path = "support/targets.rs"]
mod targets;
use targets::{matmul_calls, targets};

/// Extents that are 1, below, at and above the tiles' rows (6, 4) and columns (16,
/// 8) and the 4 vector lanes, and prime.
const SIZES: [usize; 9] = [1, 2, 5, 6, 7, 13, 16, 17, 33];

/// One matmul of a test graph: extents, batch count and transposes.
#[derive(Clone, Copy, Debug)]
struct Product {
    batches: usize,
    m: usize,
    n: usize,
    k: usize,
    /// Follow the products by relu(c + bias), c + bias, relu(c) and nothing (for the
    /// nn, tn, nt and tt variants), which become the calls' epilogues.
    epilogues: bool,
}

impl Product {
    fn new(m: usize, n: usize, k: usize) -> Product {
        Product {
            batches: 1,
            m,
            n,
            k,
            epilogues: false,
        }
    }

    /// The epilogue the variant's call should have: (bias, relu).
    fn epilogue(&self, trans_a: bool, trans_b: bool) -> (bool, bool) {
        if !self.epilogues {
            return (false, false);
        }
        match (trans_a, trans_b) {
            (false, false) => (true, true),
            (true, false) => (true, false),
            (false, true) => (false, true),
            (true, true) => (false, false),
        }
    }

    /// Stored shape of an operand: `rows × cols`, swapped when read transposed, with
    /// the batch axis in front when batched.
    fn shape(&self, rows: usize, cols: usize, transposed: bool) -> Vec<usize> {
        let mut shape = if self.batches > 1 {
            vec![self.batches]
        } else {
            Vec::new()
        };
        shape.extend(if transposed {
            [cols, rows]
        } else {
            [rows, cols]
        });
        shape
    }

    /// How the schedule should split the product over the target's threads: by
    /// columns (true) or rows (false), or not at all. The shorter of m and n stays
    /// whole, so that each thread repeats the packing of the smaller operand.
    fn split(&self, target: &Target) -> Option<bool> {
        let (kernel, ..) = schedule::matmul::blocking(target, self.m, self.n, self.k);
        let (mr, nr) = match kernel {
            MicroKernel::Avx512F12x32 => (12, 32),
            MicroKernel::Avx2Fma6x16 => (6, 16),
            MicroKernel::F32x4 => (5, 8),
        };
        if self.batches != 1 || target.threads < 2 || self.m * self.n * self.k < PARALLEL_FLOPS {
            return None;
        }
        match (self.m >= 2 * mr, self.n >= 2 * nr) {
            (true, true) => Some(self.m < self.n),
            (true, false) => Some(false),
            (false, true) => Some(true),
            (false, false) => None,
        }
    }
}

/// A graph computing `product` in all four transpose variants, outputs `c_nn`,
/// `c_tn`, `c_nt` and `c_tt`, each from inputs of its own.
fn graph_of(product: Product) -> Graph {
    let Product { m, n, k, .. } = product;
    let mut graph = Graph::new(format!("mm_b{}_m{m}_n{n}_k{k}", product.batches));
    for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
        let tag = format!(
            "{}{}",
            if trans_a { "t" } else { "n" },
            if trans_b { "t" } else { "n" }
        );
        let a = graph
            .input(
                &format!("a_{tag}"),
                TensorType::f32(product.shape(m, k, trans_a)),
            )
            .unwrap();
        let b = graph
            .input(
                &format!("b_{tag}"),
                TensorType::f32(product.shape(k, n, trans_b)),
            )
            .unwrap();
        let mut c = graph.matmul_t(a, b, trans_a, trans_b).unwrap();
        let (bias, relu) = product.epilogue(trans_a, trans_b);
        if bias {
            let row = graph
                .input(&format!("bias_{tag}"), TensorType::f32([1, n]))
                .unwrap();
            let rows = graph.broadcast(row, vec![m, n]).unwrap();
            c = graph.add_(c, rows).unwrap();
        }
        if relu {
            c = graph.relu(c).unwrap();
        }
        graph.set_output(&format!("c_{tag}"), c).unwrap();
    }
    graph
}

/// Random values in [-2, 2); with `awkward`, one in three is an awkward value
/// instead, so NaN, infinities and overflow reach every part of the tiles.
fn feeds_for(graph: &Graph, seed: u64, awkward: bool) -> Feeds {
    let mut rng = Rng::new(seed);
    graph
        .inputs()
        .iter()
        .map(|&id| {
            let ty = graph.ty(id).clone();
            let data = (0..ty.num_elements())
                .map(|_| {
                    let value = if awkward && rng.below(3) == 0 {
                        AWKWARD_F32[rng.below(AWKWARD_F32.len())]
                    } else {
                        rng.uniform(-2.0, 2.0)
                    };
                    // Feeds hold f32 values: round as the executable's inputs do.
                    f64::from(value as f32)
                })
                .collect();
            let name = graph.leaf_name(id).unwrap().to_string();
            (name, Tensor::new(ty, data).unwrap())
        })
        .collect()
}

/// The program `compile_with` runs for `options`: the same pipeline, lowering and
/// schedule steps for the same target (compilation is deterministic).
fn scheduled(graph: &Graph, options: &PipelineOptions) -> Program {
    let (optimized, _) =
        pipeline::run(graph, pipeline::INFERENCE, options, &mut |_, _| {}).unwrap();
    let program = kiln::passes::lower::lower(&optimized).unwrap();
    schedule::for_target(&program, options.target.as_ref().unwrap()).unwrap()
}

/// Compiles `product` for every target and compares every output with the
/// interpreter bit for bit; checks the schedule took the expected path.
fn check(product: Product, seed: u64, awkward: bool) {
    let graph = graph_of(product);
    let feeds = feeds_for(&graph, seed, awkward);
    let expected = evaluate(&graph, &feeds, Precision::F32).unwrap();
    for (label, target) in targets() {
        let what = format!("{} on {label} ({product:?}, awkward {awkward})", graph.name);
        let options = PipelineOptions {
            target: Some(target.clone()),
            ..PipelineOptions::default()
        };
        let split = product.split(&target);
        let parallel = split.is_some();
        let microkernel = if target.avx512f {
            MicroKernel::Avx512F12x32
        } else if target.avx2_fma {
            MicroKernel::Avx2Fma6x16
        } else {
            MicroKernel::F32x4
        };
        // An empty product has nothing to multiply; lowering may leave it a loop
        // nest, so only non-empty ones must call the routine.
        let empty = product.m * product.n * product.k == 0;
        let calls = matmul_calls(&scheduled(&graph, &options));
        if !empty {
            assert_eq!(calls.len(), 4, "{what}: one routine call per variant");
            let mut variants: Vec<(bool, bool)> = calls
                .iter()
                .map(|(call, _)| (call.trans_a, call.trans_b))
                .collect();
            variants.sort();
            variants.dedup();
            assert_eq!(variants.len(), 4, "{what}: all four transpose variants");
        }
        for (call, in_parallel_loop) in &calls {
            assert_eq!(call.kernel, microkernel, "{what}: microkernel");
            let epilogue = product.epilogue(call.trans_a, call.trans_b);
            assert_eq!(
                (call.epilogue.bias, call.epilogue.relu),
                epilogue,
                "{what}: epilogue of {call:?}"
            );
            assert_eq!(*in_parallel_loop, parallel, "{what}: parallel loop");
            match (call.split, split) {
                (Split::All, None) => {}
                (Split::Rows { rows, .. }, Some(false)) => {
                    // Whole tiles per block, and more than one block.
                    assert_eq!(rows % call.tile().0, 0, "{what}: block of {rows} rows");
                    assert!(rows < product.m, "{what}: block of {rows} rows");
                }
                (Split::Cols { cols, .. }, Some(true)) => {
                    assert_eq!(cols % call.tile().1, 0, "{what}: block of {cols} columns");
                    assert!(cols < product.n, "{what}: block of {cols} columns");
                }
                (got, want) => panic!("{what}: split {got:?}, expected by columns: {want:?}"),
            }
        }
        let mut exe = compile_with(&graph, pipeline::INFERENCE, &options).unwrap();
        // The pool exists only for a program with a parallel loop.
        let threads = if parallel { target.threads } else { 1 };
        assert_eq!(exe.threads(), threads, "{what}: threads of the executable");
        let (outputs, _) = exe.run_feeds(&feeds).unwrap();
        assert_eq!(outputs.len(), expected.outputs.len(), "{what}");
        for (name, want) in &expected.outputs {
            let got = &outputs[name];
            assert_eq!(got.ty(), want.ty(), "{what}: {name} type");
            for (index, (g, w)) in got.data().iter().zip(want.data()).enumerate() {
                assert!(
                    scalar::same(*g, *w),
                    "{what}: {name}[{index}] is {g:?} compiled, {w:?} in the interpreter"
                );
            }
        }
    }
}

#[test]
fn every_extent_in_every_role_matches_the_interpreter() {
    let start = Instant::now();
    // Each size appears as m, as n and as k, with partners taken from other
    // positions of the list, so every extent meets small, tile-sized and odd ones.
    for (index, &size) in SIZES.iter().enumerate() {
        let other = |shift: usize| SIZES[(index + shift) % SIZES.len()];
        let products = [
            Product::new(size, other(4), other(7)),
            Product::new(other(2), size, other(5)),
            Product::new(other(8), other(3), size),
        ];
        for (offset, product) in products.into_iter().enumerate() {
            let seed = (index * 3 + offset) as u64;
            // Every third product also runs on awkward values.
            check(product, seed, false);
            if offset == 1 {
                check(product, seed + 100, true);
            }
        }
    }
    eprintln!("small extents: {:?}", start.elapsed());
}

#[test]
fn empty_extents_match_the_interpreter() {
    // k = 0: every element is the empty sum, +0. m = 0 and n = 0: nothing at all.
    for product in [
        Product::new(5, 7, 0),
        Product::new(17, 33, 0),
        Product::new(0, 5, 3),
        Product::new(4, 0, 3),
    ] {
        check(product, 1, false);
    }
}

#[test]
fn large_products_split_into_uneven_row_or_column_blocks_exactly() {
    // Primes, so blocks are uneven. 129 x 67: more rows than columns, split by rows
    // (72 + 57 with the 6-row tile); 67 x 129: split by columns (80 + 49 with the
    // 16-column tile). 613 653 multiply-adds each.
    for product in [Product::new(129, 67, 71), Product::new(67, 129, 71)] {
        assert!(product.m * product.n * product.k >= PARALLEL_FLOPS);
        check(product, 7, false);
        check(product, 8, true);
    }
}

#[test]
fn long_contractions_and_tall_products_cross_the_cache_blocks_exactly() {
    // The blocking depends on the target (tile, caches) and on k, which is split into
    // equal blocks: take the largest KC and MC of the four for a long k, so every
    // target's blocks are crossed.
    let blockings: Vec<(usize, usize)> = targets()
        .iter()
        .map(|(_, target)| {
            let (_, mc, kc, _) = schedule::matmul::blocking(target, 1, 1, 1 << 20);
            (mc, kc)
        })
        .collect();
    let mc_most = blockings.iter().map(|&(mc, _)| mc).max().unwrap();
    let kc_most = blockings.iter().map(|&(_, kc)| kc).max().unwrap();
    let k = (2 * kc_most + 13).max(700);
    eprintln!(
        "blockings (mc, kc) {blockings:?}: testing k = {k}, m = {}",
        mc_most + 7
    );
    // Several KC blocks accumulate into C, on one thread and (large enough) on two.
    check(Product::new(5, 3, k), 11, false);
    check(Product::new(37, 21, k), 12, false);
    check(Product::new(37, 21, k), 13, true);
    // More rows than one MC panel of A, with a ragged last panel.
    check(Product::new(mc_most + 7, 17, 5), 14, false);
}

#[test]
fn batched_products_match_the_interpreter() {
    check(
        Product {
            batches: 3,
            ..Product::new(7, 17, 13)
        },
        21,
        false,
    );
    check(
        Product {
            batches: 2,
            ..Product::new(13, 5, 33)
        },
        22,
        true,
    );
    // Batches never split over threads, however large.
    check(
        Product {
            batches: 2,
            ..Product::new(67, 33, 129)
        },
        23,
        false,
    );
}

#[test]
fn bias_and_relu_epilogues_match_the_interpreter() {
    // Odd sizes, one row, one column, several KC blocks, and a product large enough
    // to split over two threads; awkward values reach the bias and relu as well.
    let with = |m, n, k| Product {
        epilogues: true,
        ..Product::new(m, n, k)
    };
    for (seed, product) in [
        with(13, 17, 7),
        with(1, 33, 5),
        with(7, 1, 16),
        with(5, 21, 700),
        with(67, 129, 71),
    ]
    .into_iter()
    .enumerate()
    {
        check(product, 30 + seed as u64, false);
        check(product, 40 + seed as u64, true);
    }
}
