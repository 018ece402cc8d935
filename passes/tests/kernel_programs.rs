//! Lowered and scheduled random graphs as kernel programs: their text form reads back
//! as the same program, and the kernel interpreter computes what the graph
//! interpreter computes in `Precision::F32`, bit for bit (any NaN equals any NaN).
//!
//! Each seed's graph (`kiln_ir::random`, a quarter well conditioned, the rest with
//! awkward constants and feeds and empty tensors, as the root differential test
//! draws them; every fifth also as an SGD train step, for parameter updates; and a
//! few long vectors, so that the schedule makes parallel loops) is
//! lowered and then scheduled for three targets: unscheduled, the baseline with two
//! threads, and AVX2/FMA with four; and for a GPU, with the loops the GPU schedule
//! hands to threads run backwards ([`reversed_thread_loops`]): threads may run those
//! iterations in any order and at once, so any order must give the same values. A
//! failure names the seed and prints the program.

use kiln_ir::kernel::{Expr, Index, Program, Scalar, Stmt, VarId};
use kiln_ir::random::{random_awkward_feeds, random_feeds, random_graph, RandomGraphOptions};
use kiln_ir::{
    evaluate, kernel_interp, kernel_text, random, scalar, BinaryOp, Feeds, GpuTarget, Graph,
    Launch, Precision, Rng, Target, Tensor,
};
use kiln_passes::optimizer::Optimizer;
use kiln_passes::pipeline::{self, PipelineOptions, Step};
use kiln_passes::{lower, schedule};
use std::collections::BTreeMap;

/// Small graphs, then a few large vectors: flat loops over 2^16 elements and more
/// are what the schedule splits into parallel tasks.
const SEEDS: std::ops::Range<u64> = 0..300;
const LARGE_SEEDS: std::ops::Range<u64> = 1000..1016;

fn seeds() -> impl Iterator<Item = u64> {
    SEEDS.chain(LARGE_SEEDS)
}

fn options(seed: u64) -> RandomGraphOptions {
    if LARGE_SEEDS.contains(&seed) {
        return RandomGraphOptions {
            max_nodes: 4,
            max_rank: 1,
            max_extent: 100_000,
            ..RandomGraphOptions::default()
        };
    }
    let awkward = !seed.is_multiple_of(4);
    RandomGraphOptions {
        max_nodes: 4 + (seed % 6) as usize,
        awkward_constants: awkward,
        zero_extents: awkward,
        ..RandomGraphOptions::default()
    }
}

/// The graph of `seed` (a train step for every fifth seed) and its feeds.
fn graph_and_feeds(seed: u64) -> (Graph, Feeds) {
    let options = options(seed);
    let mut graph = random_graph(&mut Rng::new(seed), &options);
    graph.name = format!("random_{seed}");
    if seed.is_multiple_of(5) {
        if let Some(forward) = random::with_sum_loss(&graph) {
            let pipeline_options = PipelineOptions {
                loss: Some("loss".to_string()),
                optimizer: Some(Optimizer::sgd(0.25).unwrap()),
                ..PipelineOptions::default()
            };
            let steps = [Step::Autodiff, Step::Optimizer];
            graph = pipeline::run(&forward, &steps, &pipeline_options, &mut |_, _| {})
                .unwrap_or_else(|err| panic!("seed {seed}: train step: {err}"))
                .0;
        }
    }
    let mut rng = Rng::new(seed ^ 0x5eed);
    let feeds = if options.awkward_constants {
        random_awkward_feeds(&graph, &mut rng)
    } else {
        random_feeds(&graph, &mut rng)
    };
    (graph, feeds)
}

/// The seed's program, unscheduled and scheduled for each target.
fn programs(seed: u64, graph: &Graph) -> Vec<(String, Program)> {
    let lowered = lower::lower(graph).unwrap_or_else(|err| panic!("seed {seed}: lowering: {err}"));
    let mut programs = vec![("unscheduled".to_string(), lowered.clone())];
    let avx2 = Target {
        avx2_fma: true,
        ..Target::baseline().with_threads(4)
    };
    for target in [Target::baseline().with_threads(2), avx2] {
        let scheduled = schedule::for_target(&lowered, &target)
            .unwrap_or_else(|err| panic!("seed {seed}: schedule for {target}: {err}"));
        programs.push((target.to_string(), scheduled));
    }
    let (fused, gpu) = schedule::for_gpu(&lowered, &GpuTarget::sm80())
        .unwrap_or_else(|err| panic!("seed {seed}: GPU schedule: {err}"));
    programs.push((
        "gpu, thread loops reversed".to_string(),
        reversed_thread_loops(&fused, &gpu.launches),
    ));
    programs
}

/// `program` with the leading `depth` loops of every kernel launched as
/// `Launch::Threads` run from the last iteration to the first: `v` becomes `n - 1 -
/// v` in every index and loop-index value under them.
fn reversed_thread_loops(program: &Program, launches: &[Launch]) -> Program {
    let mut program = program.clone();
    for (kernel, launch) in program.kernels.iter_mut().zip(launches) {
        let Launch::Threads { depth, .. } = *launch else {
            continue;
        };
        let mut flipped = Vec::new();
        let mut body = kernel.body.as_slice();
        for _ in 0..depth {
            let [Stmt::Loop {
                var,
                end,
                body: inner,
                ..
            }] = body
            else {
                panic!("{launch} of a kernel without {depth} leading loops:\n{program}");
            };
            flipped.push((*var, *end as i64));
            body = inner;
        }
        for stmt in &mut kernel.body {
            flip_stmt(stmt, &flipped);
        }
    }
    program
        .check()
        .unwrap_or_else(|err| panic!("reversed: {err}\n{program}"));
    program
}

fn flip_index(index: &Index, flipped: &[(VarId, i64)]) -> Index {
    let mut offset = index.offset;
    let terms =
        index.terms.iter().map(
            |&(var, stride)| match flipped.iter().find(|(v, _)| *v == var) {
                Some(&(_, trips)) => {
                    offset += stride * (trips - 1);
                    (var, -stride)
                }
                None => (var, stride),
            },
        );
    let terms: Vec<(VarId, i64)> = terms.collect();
    Index::new(terms, offset)
}

fn flip_expr(expr: &mut Expr, flipped: &[(VarId, i64)]) {
    match expr {
        Expr::Load { index, .. } => *index = flip_index(index, flipped),
        Expr::LoopIndex(var) => {
            if let Some(&(_, trips)) = flipped.iter().find(|(v, _)| v == var) {
                *expr = Expr::binary(
                    BinaryOp::Sub,
                    Expr::Const(Scalar::I32(trips as i32 - 1)),
                    Expr::LoopIndex(*var),
                );
            }
        }
        Expr::Gather(indirect) => {
            indirect.index = flip_index(&indirect.index, flipped);
            flip_expr(&mut indirect.at, flipped);
        }
        Expr::Const(_) | Expr::Local(_) => {}
        Expr::Unary(_, x) | Expr::Cast(_, x) | Expr::Splat(_, x) => flip_expr(x, flipped),
        Expr::Binary(_, a, b) | Expr::Compare(_, a, b) => {
            flip_expr(a, flipped);
            flip_expr(b, flipped);
        }
        Expr::Select(a, b, c) | Expr::Fma(a, b, c) | Expr::Random(_, a, b, c) => {
            flip_expr(a, flipped);
            flip_expr(b, flipped);
            flip_expr(c, flipped);
        }
    }
}

fn flip_stmt(stmt: &mut Stmt, flipped: &[(VarId, i64)]) {
    match stmt {
        Stmt::Loop { body, .. } => body.iter_mut().for_each(|s| flip_stmt(s, flipped)),
        Stmt::Store { index, value, .. } => {
            *index = flip_index(index, flipped);
            flip_expr(value, flipped);
        }
        Stmt::Assign { value, .. } => flip_expr(value, flipped),
        Stmt::ScatterAdd { target, value } => {
            target.index = flip_index(&target.index, flipped);
            flip_expr(&mut target.at, flipped);
            flip_expr(value, flipped);
        }
        Stmt::Call { .. } => {}
    }
}

/// A NaN constant prints without its payload and is unequal to itself, so before
/// comparing programs every NaN constant becomes one marker value.
fn mark_nans(program: &mut Program) {
    fn expr(e: &mut Expr) {
        match e {
            Expr::Const(Scalar::F32(value)) if value.is_nan() => {
                *e = Expr::Const(Scalar::I32(0x7fc0_0bad));
            }
            Expr::Load { .. } | Expr::Const(_) | Expr::LoopIndex(_) | Expr::Local(_) => {}
            Expr::Unary(_, x) | Expr::Cast(_, x) | Expr::Splat(_, x) => expr(x),
            Expr::Binary(_, a, b) | Expr::Compare(_, a, b) => {
                expr(a);
                expr(b);
            }
            Expr::Select(a, b, c) | Expr::Fma(a, b, c) | Expr::Random(_, a, b, c) => {
                expr(a);
                expr(b);
                expr(c);
            }
            Expr::Gather(indirect) => expr(&mut indirect.at),
        }
    }
    fn stmts(body: &mut [Stmt]) {
        for stmt in body {
            match stmt {
                Stmt::Loop { body, .. } => stmts(body),
                Stmt::Store { value, .. } | Stmt::Assign { value, .. } => expr(value),
                Stmt::ScatterAdd { target, value } => {
                    expr(&mut target.at);
                    expr(value);
                }
                Stmt::Call { .. } => {}
            }
        }
    }
    for kernel in &mut program.kernels {
        stmts(&mut kernel.body);
    }
}

#[test]
fn printing_then_parsing_lowered_programs_gives_them_back() {
    let (mut calls, mut vector_loops, mut parallel_loops) = (0, 0, 0);
    for seed in seeds() {
        let (graph, _) = graph_and_feeds(seed);
        for (what, program) in programs(seed, &graph) {
            let text = program.to_string();
            let mut parsed = kernel_text::parse(&text)
                .unwrap_or_else(|err| panic!("seed {seed} ({what}): {err}\n{text}"));
            assert_eq!(parsed.to_string(), text, "seed {seed} ({what})");
            let mut expected = program.clone();
            mark_nans(&mut parsed);
            mark_nans(&mut expected);
            assert!(
                parsed == expected,
                "seed {seed} ({what}) reads back differently:\n{text}"
            );
            calls += text.matches("call matmul").count();
            vector_loops += text.matches(" vec4 {").count();
            parallel_loops += text.matches(" parallel {").count();
        }
    }
    // The sweep must reach what the schedule makes: routine calls, vector loops and
    // parallel loops.
    println!("{calls} calls, {vector_loops} vector loops, {parallel_loops} parallel loops");
    assert!(
        calls > 0 && vector_loops > 0 && parallel_loops > 0,
        "the schedule left every program plain"
    );
}

/// The first element where the kernel interpreter and the graph interpreter differ.
fn compare(
    kind: &str,
    want: &BTreeMap<String, Tensor>,
    got: &BTreeMap<String, Tensor>,
) -> Result<(), String> {
    let want_names: Vec<&String> = want.keys().collect();
    let got_names: Vec<&String> = got.keys().collect();
    if want_names != got_names {
        return Err(format!(
            "{kind} names {got_names:?}, graph interpreter {want_names:?}"
        ));
    }
    for (name, value) in want {
        let actual = &got[name];
        if actual.ty() != value.ty() {
            return Err(format!(
                "{kind} {name} is {}, graph interpreter {}",
                actual.ty(),
                value.ty()
            ));
        }
        for (index, (a, e)) in actual.data().iter().zip(value.data()).enumerate() {
            if !scalar::same(*a, *e) {
                return Err(format!(
                    "{kind} {name}[{index}] is {a:?}, graph interpreter {e:?}"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn kernel_interpreter_matches_the_graph_interpreter() {
    for seed in seeds() {
        let (graph, feeds) = graph_and_feeds(seed);
        let expected = evaluate(&graph, &feeds, Precision::F32)
            .unwrap_or_else(|err| panic!("seed {seed}: graph interpreter: {err}"));
        for (what, program) in programs(seed, &graph) {
            let (mut inputs, mut params) = (Feeds::new(), Feeds::new());
            for (name, tensor) in &feeds {
                if program.inputs().iter().any(|(input, _)| input == name) {
                    inputs.insert(name.clone(), tensor.clone());
                } else if program.param_buffer(name).is_some() {
                    params.insert(name.clone(), tensor.clone());
                }
            }
            let result = kernel_interp::run(&program, &inputs, &mut params);
            // Only updated parameters are compared: the graph interpreter reports no
            // others.
            params.retain(|name, _| expected.updates.contains_key(name));
            let outcome = result.map_err(|err| err.to_string()).and_then(|outputs| {
                compare("output", &expected.outputs, &outputs)?;
                compare("update", &expected.updates, &params)
            });
            if let Err(err) = outcome {
                panic!("seed {seed} ({what}): {err}\nfeeds: {feeds:?}\n{graph}\n{program}");
            }
        }
    }
}
