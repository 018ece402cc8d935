//! The differential run CI relies on: 10 000 random well-typed graphs from
//! `kiln_ir::random` (three in four with awkward constants and feeds: ±0, subnormals,
//! 2^24 ± 1, values near and beyond f32::MAX, ±inf, NaN; and with empty tensors; all
//! with odd extents and i32 and bool values) go through `kiln::compile` (the e-graph
//! pass, dce, lowering and the Cranelift JIT), and one in ten also as a train step
//! (autodiff, SGD, e-graph, dce, JIT). Every output and update must equal the
//! interpreter's `Precision::F32` result on the graph as built, bit for bit except
//! that any NaN equals any NaN (`kiln_ir::scalar::same`): that mode computes what
//! compiled code computes, accumulation order included, so 0 mismatches is the
//! contract, with no tolerance.
//!
//! A mismatch prints the seed, the options and the graph's text. Every failure found
//! stays as a regression case: its graph as a file in `tests/differential/`, or a
//! hand-written graph in [`REGRESSION_GRAPHS`].

use kiln::passes::pipeline;
use kiln_ir::random::{random_feeds, random_graph, AWKWARD_F32};
use kiln_ir::{evaluate, text, DType, Feeds, Graph, Precision, Rng};
use std::time::Instant;

#[path = "support/compare.rs"]
mod compare;
#[path = "support/sweep.rs"]
mod sweep;
use compare::{compare, or_panic};
use sweep::{feeds_for, options};

/// Graphs in the sweep.
const GRAPHS: u64 = 10_000;
/// The sweep runs on this many threads (CI machines have at least two cores).
const THREADS: u64 = 2;
/// Every this many seeds a graph is also compiled as a train step.
const TRAIN_EVERY: u64 = 10;

/// Graphs that once compiled to a wrong result, with what was wrong: issue 5's
/// folding examples and the signed-zero rules found when auditing the e-graph rules.
/// Each runs on awkward feeds through inference and train-step compilation.
const REGRESSION_GRAPHS: &[(&str, &str)] = &[
    (
        "f64 folding: 16777217 - 16777216 was 1, not 0",
        "%0 = input \"x\" : f32[18]\n%1 = const 16777217.0 : f32[18]\n%2 = const 16777216.0 : f32[18]\n%3 = sub %1, %2 : f32[18]\n%4 = add %0, %3 : f32[18]\noutput \"y\" = %4",
    ),
    (
        "f64 folding: 1e39 - 1e39 was 0, not NaN",
        "%0 = input \"x\" : f32[18]\n%1 = const 1e39 : f32[18]\n%2 = sub %1, %1 : f32[18]\n%3 = add %0, %2 : f32[18]\noutput \"y\" = %3",
    ),
    (
        "f64 folding: log(1e39) was 89.8, not inf",
        "%0 = input \"x\" : f32[18]\n%1 = const 1e39 : f32[18]\n%2 = log %1 : f32[18]\n%3 = mul %0, %2 : f32[18]\noutput \"y\" = %3",
    ),
    (
        "f64 folding: cast(16777217 - 16777216) was 1, not 0",
        "%0 = input \"x\" : f32[18]\n%1 = const 16777217.0 : f32[18]\n%2 = const 16777216.0 : f32[18]\n%3 = sub %1, %2 : f32[18]\n%4 = cast %3 : i32[18]\n%5 = cast %4 : f32[18]\n%6 = add %0, %5 : f32[18]\noutput \"y\" = %6",
    ),
    (
        "rule x + 0 == x kept -0 where -0 + 0 is +0 (and x - -0 likewise)",
        "%0 = input \"x\" : f32[18]\n%1 = const 0.0 : f32[18]\n%2 = add %0, %1 : f32[18]\n%3 = add %1, %0 : f32[18]\n%4 = const -0.0 : f32[18]\n%5 = sub %0, %4 : f32[18]\n%6 = const 1.0 : f32[18]\n%7 = div %6, %2 : f32[18]\n%8 = reduce_sum %0 axes=[0] : f32[1]\noutput \"y\" = %7\noutput \"a\" = %3\noutput \"b\" = %5\noutput \"loss\" = %8",
    ),
];

/// Feeds whose f32 elements run through every value of [`AWKWARD_F32`] in turn.
fn every_awkward_value(graph: &Graph) -> Feeds {
    let mut feeds = random_feeds(graph, &mut Rng::new(0));
    for tensor in feeds.values_mut() {
        if tensor.dtype() == DType::F32 {
            tensor
                .edit(|data| {
                    for (index, value) in data.iter_mut().enumerate() {
                        *value = f64::from(AWKWARD_F32[index % AWKWARD_F32.len()] as f32);
                    }
                })
                .expect("f32 tensors take any value");
        }
    }
    feeds
}

/// Compiles and runs `graph` (and, when asked, its train step) and compares with the
/// interpreter.
fn check_graph(graph: &Graph, feeds: &Feeds, train: bool) -> Result<(), String> {
    let expected =
        evaluate(graph, feeds, Precision::F32).map_err(|err| format!("interpreter: {err}"))?;
    let mut exe = kiln::compile(graph).map_err(|err| format!("compile: {err}"))?;
    let (outputs, updates) = exe.run_feeds(feeds).map_err(|err| format!("run: {err}"))?;
    compare("inference", &expected, &outputs, &updates)?;
    if !train {
        return Ok(());
    }
    // The interpreter runs the train step as autodiff and the optimizer build it; the
    // executable goes through the whole train-step pipeline.
    let Some((forward, options, step)) = sweep::train_step(graph)? else {
        return Ok(());
    };
    let expected =
        evaluate(&step, feeds, Precision::F32).map_err(|err| format!("interpreter: {err}"))?;
    let mut exe = kiln::compile::compile_with(&forward, pipeline::TRAIN_STEP, &options)
        .map_err(|err| format!("compile train step: {err}"))?;
    let (outputs, updates) = exe
        .run_feeds(feeds)
        .map_err(|err| format!("run train step: {err}"))?;
    compare("train step", &expected, &outputs, &updates)
}

/// Builds and checks the graph of `seed`; the error names the seed, the options and
/// the graph's text, so it can become a regression case.
fn check_seed(seed: u64) -> Result<(), String> {
    let options = options(seed);
    let mut graph = random_graph(&mut Rng::new(seed), &options);
    graph.name = format!("random_{seed}");
    let feeds = feeds_for(&graph, seed, options.awkward_constants);
    let train = seed.is_multiple_of(TRAIN_EVERY);
    // A panic is a failure too: catch it so the report names the seed.
    let outcome = or_panic(|| check_graph(&graph, &feeds, train));
    outcome.map_err(|err| {
        format!(
            "seed {seed} ({options:?}): {err}\nfeeds: {feeds:?}\n{}",
            text::print(&graph)
        )
    })
}

#[test]
fn regression_graphs_match_the_interpreter() {
    for &(cause, body) in REGRESSION_GRAPHS {
        let graph = text::parse(&format!("graph regression {{\n{body}\n}}\n"))
            .unwrap_or_else(|err| panic!("{cause}: {err}"));
        let mut feed_sets = vec![every_awkward_value(&graph)];
        feed_sets.extend((0..4).map(|seed| feeds_for(&graph, seed, true)));
        for feeds in feed_sets {
            if let Err(err) = check_graph(&graph, &feeds, true) {
                panic!("regression ({cause}), feeds {feeds:?}: {err}");
            }
        }
    }
}

/// Graphs of the sweep that once failed, kept as text in `tests/differential/`: a
/// file `seed_<n>.kiln` is the graph of seed `n` (its first comment says what went
/// wrong), so the case survives changes to the generator. All were found by this
/// sweep against the e-graph's old f64 constant folder; none since the folders and
/// the interpreter share `kiln_ir::scalar`. Each runs on the feeds it failed with
/// (as far as the feed generator is unchanged) and on every awkward value.
#[test]
fn regression_seeds_match_the_interpreter() {
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/differential");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(folder)
        .expect("tests/differential holds the regression graphs")
        .map(|entry| entry.expect("a readable folder entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{} regression graphs", files.len());
    for path in files {
        let name = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or("");
        let seed: u64 = name
            .strip_prefix("seed_")
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| panic!("{} is not named seed_<n>.kiln", path.display()));
        let source = std::fs::read_to_string(&path).expect("a readable regression graph");
        let cause = source.lines().next().unwrap_or("");
        let graph = text::parse(&source).unwrap_or_else(|err| panic!("{name}: {err}"));
        let feed_sets = [feeds_for(&graph, seed, true), every_awkward_value(&graph)];
        for feeds in &feed_sets {
            if let Err(err) = check_graph(&graph, feeds, true) {
                panic!("regression {name} ({cause}), feeds {feeds:?}: {err}");
            }
        }
    }
}

#[test]
fn ten_thousand_random_graphs_match_the_interpreter() {
    let start = Instant::now();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                scope.spawn(move || {
                    (thread..GRAPHS)
                        .step_by(THREADS as usize)
                        .filter_map(|seed| check_seed(seed).err())
                        .collect::<Vec<String>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("workers catch panics"))
            .collect()
    });
    let elapsed = start.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {GRAPHS} graphs differ from the interpreter; the first:\n{}",
        failures.len(),
        failures[..failures.len().min(3)].join("\n\n")
    );
    eprintln!("{GRAPHS} graphs in {elapsed:?}");
}
