//! Shared helpers of the backend's differential tests: random feeds, and compiling
//! a graph and comparing every output and update with the reference interpreter.

#![allow(dead_code)]

use kiln_backend::{compile_with, CompileOptions, Executable};
use kiln_ir::{
    evaluate, max_relative_error, DType, Feeds, Graph, Precision, Rng, Tensor, TensorType,
};

/// The largest error allowed, relative to `max(1, |expected|)`.
pub const TOLERANCE: f64 = 1e-5;

/// Odd extents that leave every vector remainder length (and a single element).
pub const ODD_SIZES: [usize; 7] = [1, 3, 5, 7, 13, 17, 33];

/// Random values for a tensor type: f32 in [-2, 2), i32 in -3..=3, bool 0/1.
pub fn random_tensor(rng: &mut Rng, ty: &TensorType) -> Tensor {
    let data = (0..ty.num_elements())
        .map(|_| match ty.dtype {
            DType::F32 => rng.uniform(-2.0, 2.0) as f32 as f64,
            DType::I32 => rng.below(7) as f64 - 3.0,
            DType::Bool => rng.below(2) as f64,
        })
        .collect();
    Tensor::new(ty.clone(), data).expect("random data fits its type")
}

/// Random values for every input and parameter of `graph`.
pub fn random_feeds(graph: &Graph, seed: u64) -> Feeds {
    let mut rng = Rng::new(seed);
    graph
        .inputs()
        .iter()
        .chain(graph.params())
        .map(|&id| {
            let name = graph.leaf_name(id).unwrap().to_string();
            (name, random_tensor(&mut rng, graph.ty(id)))
        })
        .collect()
}

/// `program` scheduled for the host, as `kiln::compile` schedules it.
pub fn schedule(program: kiln_ir::kernel::Program) -> kiln_ir::kernel::Program {
    let target = kiln_backend::cpu::target::host_target(2);
    kiln_passes::schedule::for_target(&program, &target)
        .unwrap_or_else(|err| panic!("schedule: {err}\n{program}"))
}

pub fn compile_graph(graph: &Graph) -> Executable {
    compile_graph_with(graph, &CompileOptions::default())
}

pub fn compile_graph_with(graph: &Graph, options: &CompileOptions) -> Executable {
    let program =
        schedule(kiln_passes::lower::lower(graph).unwrap_or_else(|err| panic!("lower: {err}")));
    compile_with(&program, options).unwrap_or_else(|err| panic!("compile: {err}\n{program}"))
}

/// Asserts that `actual` matches `expected` within [`TOLERANCE`] (NaN equals NaN).
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor) {
    let error = max_relative_error(actual, expected).unwrap_or_else(|| {
        panic!(
            "{what}: type {} differs from {}",
            actual.ty(),
            expected.ty()
        )
    });
    assert!(
        error <= TOLERANCE,
        "{what}: relative error {error:e}\n  compiled    {:?}\n  interpreter {:?}",
        actual.data(),
        expected.data()
    );
}

/// Runs `exe` and the interpreter on `feeds` and compares every output and update.
pub fn assert_run_matches(graph: &Graph, exe: &mut Executable, feeds: &Feeds) {
    let expected = evaluate(graph, feeds, Precision::F32).unwrap();
    let (outputs, updates) = exe.run_feeds(feeds).unwrap();
    assert_eq!(
        outputs.len(),
        expected.outputs.len(),
        "{}: output count",
        graph.name
    );
    for (name, value) in &expected.outputs {
        assert_close(
            &format!("{} output {name}", graph.name),
            &outputs[name],
            value,
        );
    }
    assert_eq!(
        updates.len(),
        expected.updates.len(),
        "{}: update count",
        graph.name
    );
    for (name, value) in &expected.updates {
        assert_close(
            &format!("{} update {name}", graph.name),
            &updates[name],
            value,
        );
    }
}

/// Lowers, compiles and runs `graph` on random feeds, comparing with the interpreter.
pub fn check_graph(graph: &Graph, seed: u64) {
    let mut exe = compile_graph(graph);
    let feeds = random_feeds(graph, seed);
    assert_run_matches(graph, &mut exe, &feeds);
}

/// Like [`check_graph`] with given feeds.
pub fn check_graph_feeds(graph: &Graph, feeds: &Feeds) {
    let mut exe = compile_graph(graph);
    assert_run_matches(graph, &mut exe, feeds);
}
