//! Fuzzes the evaluation of random well-typed graphs: the interpreter, the
//! inference pipeline (e-graph, dead-code elimination) and the Cranelift JIT must
//! agree and never panic.
//!
//! The bytes choose the generator's options and seed, and then steer its decisions
//! one byte each (`Rng::with_choices`), so that coverage feedback reaches the
//! generator, which may use awkward constants (±0, subnormals, 2^24 ± 1, near
//! f32::MAX, ±inf, NaN) and zero extents as a header bit says. Feeds come from
//! `random_feeds` (or `random_awkward_feeds` for awkward graphs) on the seed alone.
//! For each graph:
//!
//! - the interpreter in `Precision::F32` runs it;
//! - the `INFERENCE` pipeline rewrites it, and the interpreter's outputs and updates
//!   on the rewritten graph are bit-identical to the original's (or both NaN): an
//!   optimisation never changes a result;
//! - the JIT compiles the rewritten graph (or, as a bit of the bytes says, the
//!   original), and its results are the interpreter's bit for bit (any NaN equals
//!   any NaN): the numeric contract of the README, as in `tests/differential.rs`.

#![no_main]

use kiln_ir::random::{random_awkward_feeds, random_feeds, random_graph, RandomGraphOptions};
use kiln_ir::{evaluate, scalar, text, Graph, Precision, Rng, Tensor};
use kiln_passes::pipeline::{self, PipelineOptions, INFERENCE};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::time::Duration;

/// Graphs with a value of more elements are skipped, so that each run stays fast.
/// The options below keep every value far smaller; this only guards against a
/// generator change that lets shapes grow.
const MAX_ELEMENTS: usize = 1 << 16;

fuzz_target!(|bytes: &[u8]| {
    let header = |index: usize| bytes.get(index).copied().unwrap_or(0);
    let options = RandomGraphOptions {
        max_nodes: usize::from(header(0)) % 17,
        max_rank: 1 + usize::from(header(1)) % 4,
        max_extent: 1 + usize::from(header(2)) % 9,
        allow_int: header(3) & 1 == 0,
        awkward_constants: header(3) & 4 != 0,
        zero_extents: header(3) & 8 != 0,
    };
    let jit_original = header(3) & 2 != 0;
    let mut seed = [0u8; 8];
    for (index, byte) in seed.iter_mut().enumerate() {
        *byte = header(4 + index);
    }
    let seed = u64::from_le_bytes(seed);
    let choices = bytes.get(12..).unwrap_or(&[]);

    let graph = random_graph(&mut Rng::with_choices(seed, choices), &options);
    if graph
        .node_ids()
        .into_iter()
        .any(|id| graph.ty(id).num_elements() > MAX_ELEMENTS)
    {
        return;
    }
    let feeds = if options.awkward_constants {
        random_awkward_feeds(&graph, &mut Rng::new(seed))
    } else {
        random_feeds(&graph, &mut Rng::new(seed))
    };
    let expected = evaluate(&graph, &feeds, Precision::F32)
        .unwrap_or_else(|err| panic!("interpreter: {err}\n{graph}"));

    let pipeline_options = PipelineOptions {
        verify: true,
        egraph: kiln_passes::egraph::EgraphOptions {
            // The iteration and node limits bound the run; a time limit would make
            // the result depend on the machine's load.
            time_limit: Duration::from_secs(600),
            ..Default::default()
        },
        ..PipelineOptions::default()
    };
    let (optimised, _) = pipeline::run(&graph, INFERENCE, &pipeline_options, &mut |_, _| {})
        .unwrap_or_else(|err| panic!("pipeline: {err}\n{graph}"));
    let rewritten = evaluate(&optimised, &feeds, Precision::F32)
        .unwrap_or_else(|err| panic!("interpreter after the pipeline: {err}\n{optimised}"));
    let context = || format!("original:\n{graph}\noptimised:\n{optimised}");
    compare_results(
        "pipeline",
        &expected.outputs,
        &rewritten.outputs,
        &context,
        same_bits,
    );
    compare_results(
        "pipeline",
        &expected.updates,
        &rewritten.updates,
        &context,
        same_bits,
    );

    let compiled: &Graph = if jit_original { &graph } else { &optimised };
    let program = kiln_passes::lower::lower(compiled)
        .unwrap_or_else(|err| panic!("lower: {err}\n{}", text::print(compiled)));
    let mut exe =
        kiln_backend::compile(&program).unwrap_or_else(|err| panic!("compile: {err}\n{program}"));
    let (outputs, updates) = exe
        .run_feeds(&feeds)
        .unwrap_or_else(|err| panic!("run: {err}\n{}", text::print(compiled)));
    compare_results("jit", &expected.outputs, &outputs, &context, same_bits);
    compare_results("jit", &expected.updates, &updates, &context, same_bits);
});

/// Equal types and, element by element, the same bits or both NaN.
fn same_bits(actual: &Tensor, expected: &Tensor) -> bool {
    actual.ty() == expected.ty()
        && actual
            .data()
            .iter()
            .zip(expected.data())
            .all(|(&a, &e)| scalar::same(a, e))
}

/// Panics unless `actual` has exactly the names of `expected`, each with a value
/// that `agrees` with the expected one.
fn compare_results(
    what: &str,
    expected: &BTreeMap<String, Tensor>,
    actual: &BTreeMap<String, Tensor>,
    context: &dyn Fn() -> String,
    agrees: impl Fn(&Tensor, &Tensor) -> bool,
) {
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>(),
        "{what}: other result names\n{}",
        context()
    );
    for (name, wanted) in expected {
        let got = &actual[name];
        assert!(
            agrees(got, wanted),
            "{what}: {name} differs from the interpreter\n  got      {got}\n  expected {wanted}\n{}",
            context()
        );
    }
}
