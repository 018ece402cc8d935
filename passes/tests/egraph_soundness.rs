//! Soundness of the passes: the interpreter in f32 (what compiled code computes) gives
//! the same outputs and updates before and after a pass, bit for bit except that any
//! NaN equals any NaN (`kiln_ir::scalar::same`; -0 is not +0), on
//!
//! - a graph per rule on which that rule fires, with random feeds (several seeds,
//!   small odd shapes) and with feeds full of NaN, infinities, signed zeros,
//!   subnormals and values near f32::MAX;
//! - random graphs from `kiln_ir::random`, as they are and with identities injected
//!   (x * 1, -0 + x, transpose pairs, reshapes, transposed matmul operands, ...) so
//!   that every rule fires on random surroundings;
//! - random graphs with awkward constants and empty tensors, through the e-graph
//!   pass, dce, the inference pipeline, and the train-step pipeline (autodiff and
//!   optimizer, then e-graph and dce, compared with autodiff and optimizer alone);
//! - a train step made by the real autodiff and optimizer passes.
//!
//! Alongside: the result verifies, keeps the signature, and never costs more than
//! the input; with identities injected it costs no more than the graph before
//! injection, so the extraction finds the identities' removal.

use kiln_ir::random::{
    self, random_awkward_feeds, random_feeds, random_graph, RandomGraphOptions, AWKWARD_F32,
};
use kiln_ir::{
    evaluate, scalar, text, verify, DType, Evaluation, Feeds, Graph, NodeId, Op, Precision, Rng,
    TensorType,
};
use kiln_passes::egraph::extract::graph_cost;
use kiln_passes::egraph::{self, EgraphOptions, EgraphReport};
use kiln_passes::pipeline::{self, PipelineOptions, Step};
use kiln_passes::{autodiff, dce, optimizer};
use std::collections::HashMap;

fn parse(body: &str) -> Graph {
    let src = format!("graph t {{\n{body}\n}}\n");
    text::parse(&src).unwrap_or_else(|err| panic!("{err}\n{src}"))
}

/// (rule, a graph on which it fires). Shapes are odd and distinct, so a mix-up of
/// axes changes values or types.
const EXAMPLES: &[(&str, &str)] = &[
    ("mul-one-right", "%0 = input \"x\" : f32[3,5]\n%1 = const 1.0 : f32[1,5]\n%2 = broadcast %1 : f32[3,5]\n%3 = mul %0, %2 : f32[3,5]\noutput \"y\" = %3"),
    ("mul-one-left", "%0 = input \"x\" : f32[3,5]\n%1 = const 1.0 : f32[3,5]\n%2 = mul %1, %0 : f32[3,5]\n%3 = exp %2 : f32[3,5]\noutput \"y\" = %3"),
    ("add-zero-right", "%0 = input \"x\" : f32[7]\n%1 = const -0.0 : f32[7]\n%2 = add %0, %1 : f32[7]\noutput \"y\" = %2"),
    ("add-zero-left", "%0 = input \"x\" : f32[7]\n%1 = const -0.0 : f32[7]\n%2 = add %1, %0 : f32[7]\n%3 = log %2 : f32[7]\noutput \"y\" = %3"),
    ("sub-zero", "%0 = input \"x\" : f32[7]\n%1 = const 0.0 : f32[7]\n%2 = sub %0, %1 : f32[7]\noutput \"y\" = %2"),
    ("div-one", "%0 = input \"x\" : f32[3,1]\n%1 = const 1.0 : f32[3,1]\n%2 = div %0, %1 : f32[3,1]\n%3 = broadcast %2 : f32[3,5]\noutput \"y\" = %3"),
    ("neg-neg", "%0 = input \"x\" : f32[7]\n%1 = neg %0 : f32[7]\n%2 = neg %1 : f32[7]\n%3 = exp %2 : f32[7]\noutput \"y\" = %3\noutput \"n\" = %1"),
    ("transpose-inverse", "%0 = input \"x\" : f32[2,3,5]\n%1 = transpose %0 perm=[1,2,0] : f32[3,5,2]\n%2 = transpose %1 perm=[2,0,1] : f32[2,3,5]\n%3 = exp %2 : f32[2,3,5]\noutput \"y\" = %3"),
    ("reshape-reshape", "%0 = input \"x\" : f32[6,5]\n%1 = reshape %0 : f32[3,10]\n%2 = reshape %1 : f32[5,6]\n%3 = exp %2 : f32[5,6]\noutput \"y\" = %3"),
    ("reshape-identity", "%0 = input \"x\" : f32[6,5]\n%1 = reshape %0 : f32[6,5]\n%2 = exp %1 : f32[6,5]\noutput \"y\" = %2"),
    ("broadcast-identity", "%0 = input \"x\" : f32[6,5]\n%1 = broadcast %0 : f32[6,5]\n%2 = exp %1 : f32[6,5]\noutput \"y\" = %2"),
    ("cast-identity", "%0 = input \"x\" : f32[6,5]\n%1 = cast %0 : f32[6,5]\n%2 = exp %1 : f32[6,5]\noutput \"y\" = %2"),
    ("fold-transpose-lhs-nn", "%0 = input \"a\" : f32[2,5,3]\n%1 = input \"b\" : f32[2,5,4]\n%2 = transpose %0 perm=[0,2,1] : f32[2,3,5]\n%3 = matmul %2, %1 : f32[2,3,4]\noutput \"y\" = %3"),
    ("fold-transpose-rhs-nn", "%0 = input \"a\" : f32[3,5]\n%1 = input \"b\" : f32[4,5]\n%2 = transpose %1 perm=[1,0] : f32[5,4]\n%3 = matmul %0, %2 : f32[3,4]\noutput \"y\" = %3"),
    ("fold-transpose-lhs-tn", "%0 = input \"a\" : f32[3,5]\n%1 = input \"b\" : f32[5,4]\n%2 = transpose %0 perm=[1,0] : f32[5,3]\n%3 = matmul.tn %2, %1 : f32[3,4]\noutput \"y\" = %3"),
    ("fold-transpose-rhs-tn", "%0 = input \"a\" : f32[2,5,3]\n%1 = input \"b\" : f32[2,4,5]\n%2 = transpose %1 perm=[0,2,1] : f32[2,5,4]\n%3 = matmul.tn %0, %2 : f32[2,3,4]\noutput \"y\" = %3"),
    ("fold-transpose-lhs-nt", "%0 = input \"a\" : f32[5,3]\n%1 = input \"b\" : f32[4,5]\n%2 = transpose %0 perm=[1,0] : f32[3,5]\n%3 = matmul.nt %2, %1 : f32[3,4]\noutput \"y\" = %3"),
    ("fold-transpose-rhs-nt", "%0 = input \"a\" : f32[2,3,5]\n%1 = input \"b\" : f32[2,5,4]\n%2 = transpose %1 perm=[0,2,1] : f32[2,4,5]\n%3 = matmul.nt %0, %2 : f32[2,3,4]\noutput \"y\" = %3"),
    ("fold-transpose-lhs-tt", "%0 = input \"a\" : f32[3,5]\n%1 = input \"b\" : f32[4,5]\n%2 = transpose %0 perm=[1,0] : f32[5,3]\n%3 = matmul.tt %2, %1 : f32[3,4]\noutput \"y\" = %3"),
    ("fold-transpose-rhs-tt", "%0 = input \"a\" : f32[5,3]\n%1 = input \"b\" : f32[5,4]\n%2 = transpose %1 perm=[1,0] : f32[4,5]\n%3 = matmul.tt %0, %2 : f32[3,4]\noutput \"y\" = %3"),
];

/// Every output and update of `after` equals that of `before`, element for element.
fn assert_same_results(before: &Evaluation, after: &Evaluation, context: &str) {
    for (expected_map, actual_map) in [
        (&before.outputs, &after.outputs),
        (&before.updates, &after.updates),
    ] {
        let expected_names: Vec<&String> = expected_map.keys().collect();
        let actual_names: Vec<&String> = actual_map.keys().collect();
        assert_eq!(expected_names, actual_names, "{context}");
        for (name, expected) in expected_map {
            let actual = &actual_map[name];
            assert_eq!(actual.ty(), expected.ty(), "{context}: {name}");
            for (index, (a, e)) in actual.data().iter().zip(expected.data()).enumerate() {
                assert!(
                    scalar::same(*a, *e),
                    "{context}: {name}[{index}]: {a:?} after the pass, {e:?} before"
                );
            }
        }
    }
}

/// Same signature, results equal bit for bit (any NaN equal to any NaN) on every feed,
/// computed as compiled code computes them.
fn check_sound(before: &Graph, after: &Graph, feeds: &[Feeds], context: &str) {
    verify(after).unwrap_or_else(|err| panic!("{context}: {err}\n{after}"));
    let signature = |graph: &Graph| -> Vec<(String, TensorType)> {
        graph
            .inputs()
            .iter()
            .chain(graph.params())
            .map(|&id| {
                (
                    graph.leaf_name(id).unwrap().to_string(),
                    graph.ty(id).clone(),
                )
            })
            .collect()
    };
    assert_eq!(signature(after), signature(before), "{context}");
    for (index, feed) in feeds.iter().enumerate() {
        let expected = evaluate(before, feed, Precision::F32).unwrap();
        let actual = evaluate(after, feed, Precision::F32).unwrap();
        assert_same_results(&expected, &actual, &format!("{context}, feed {index}"));
    }
}

fn random_feed_set(graph: &Graph, seeds: u64) -> Vec<Feeds> {
    (0..seeds)
        .map(|seed| random_feeds(graph, &mut Rng::new(seed)))
        .collect()
}

/// Feeds whose f32 values are all drawn from the awkward values (NaN, infinities,
/// signed zeros, subnormals, values near f32::MAX, 2^24 + 1), so identities that only
/// hold for ordinary numbers are caught.
fn special_feeds(graph: &Graph, seed: u64) -> Feeds {
    let mut rng = Rng::new(seed);
    let mut feeds = random_feeds(graph, &mut rng);
    for tensor in feeds.values_mut() {
        if tensor.dtype() == DType::F32 {
            tensor
                .edit(|data| {
                    for value in data {
                        *value = f64::from(AWKWARD_F32[rng.below(AWKWARD_F32.len())] as f32);
                    }
                })
                .unwrap();
        }
    }
    feeds
}

fn run_rule(rule: &str, graph: &Graph) -> (Graph, EgraphReport) {
    let rules: Vec<_> = egraph::rules()
        .into_iter()
        .filter(|rewrite| rewrite.name.as_str() == rule)
        .collect();
    assert_eq!(rules.len(), 1, "rule {rule} exists once");
    egraph::run_with(graph, &EgraphOptions::default(), &rules).unwrap()
}

#[test]
fn every_rule_is_sound_where_it_fires() {
    for (rule, body) in EXAMPLES {
        let before = parse(body);
        let mut feeds = random_feed_set(&before, 5);
        feeds.extend((0..5).map(|seed| special_feeds(&before, seed)));
        let (alone, report) = run_rule(rule, &before);
        assert!(
            report.rules_applied.get(*rule).is_some_and(|&n| n > 0),
            "{rule} must fire on its example: {report}"
        );
        assert!(report.cost_after < report.cost_before, "{rule}: {report}");
        check_sound(&before, &alone, &feeds, rule);
        let (all, _) = egraph::run(&before, &EgraphOptions::default()).unwrap();
        check_sound(&before, &all, &feeds, &format!("{rule} with all rules"));
    }
}

#[test]
fn every_rule_has_a_soundness_example() {
    for rule in egraph::rules() {
        assert!(
            EXAMPLES.iter().any(|(name, _)| *name == rule.name.as_str()),
            "rule {} has no soundness example",
            rule.name
        );
    }
}

#[test]
fn constant_folding_is_sound_on_special_values() {
    // Folding follows the interpreter's f32 mode, NaN, infinities, i32 wrap-around
    // and casts included.
    let before = parse(
        "%0 = input \"x\" : f32[3]\n\
         %1 = const 0.0 : f32[3]\n%2 = div %1, %1 : f32[3]\n\
         %3 = const 1.0 : f32[3]\n%4 = div %3, %1 : f32[3]\n%5 = neg %4 : f32[3]\n\
         %6 = log %1 : f32[3]\n%7 = max %2, %3 : f32[3]\n%8 = exp %4 : f32[3]\n\
         %9 = const 2147483647.0 : i32[3]\n%10 = const 3.0 : i32[3]\n%11 = mul %9, %10 : i32[3]\n\
         %12 = const -7.9 : f32[3]\n%13 = cast %12 : i32[3]\n%14 = cast %13 : bool[3]\n\
         %15 = cmp.ge %4, %5 : bool[3]\n%16 = select %15, %8, %2 : f32[3]\n\
         %17 = relu %12 : f32[3]\n%18 = reduce_max %16 axes=[0] : f32[1]\n%19 = transpose %18 perm=[0] : f32[1]\n\
         %20 = add %0, %2 : f32[3]\n\
         output \"nan\" = %2\noutput \"neg_inf\" = %5\noutput \"log0\" = %6\noutput \"max_nan\" = %7\n\
         output \"wrap\" = %11\noutput \"cast\" = %13\noutput \"bool\" = %14\noutput \"sel\" = %16\n\
         output \"relu\" = %17\noutput \"rmax\" = %19\noutput \"x_nan\" = %20",
    );
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    let printed = text::print(&after);
    // Everything but the input and the final add folds to constants.
    let ops: Vec<&Op> = after
        .node_ids()
        .into_iter()
        .map(|id| after.op(id))
        .collect();
    let non_constants = ops
        .iter()
        .filter(|op| !matches!(op, Op::Constant { .. } | Op::Input { .. }))
        .count();
    assert_eq!(non_constants, 1, "{report}\n{printed}");
    check_sound(&before, &after, &random_feed_set(&before, 2), "folding");
}

#[test]
fn random_graphs_stay_sound() {
    let options = RandomGraphOptions::default();
    for seed in 0..200 {
        let before = random_graph(&mut Rng::new(seed), &options);
        let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
        let context = format!("seed {seed}: {report}");
        assert!(report.saturated, "{context}");
        assert!(report.cost_after <= report.cost_before, "{context}");
        assert_eq!(report.cost_after, graph_cost(&after), "{context}");
        check_sound(&before, &after, &random_feed_set(&before, 3), &context);
    }
}

/// Random graphs with awkward constants (±0, subnormals, 2^24 ± 1, near and beyond
/// f32::MAX, ±inf, NaN) and empty tensors, fed awkward values too.
fn awkward_options() -> RandomGraphOptions {
    RandomGraphOptions {
        awkward_constants: true,
        zero_extents: true,
        ..RandomGraphOptions::default()
    }
}

fn awkward_feed_set(graph: &Graph, seed: u64) -> Vec<Feeds> {
    let mut feeds = vec![random_awkward_feeds(graph, &mut Rng::new(seed))];
    feeds.push(special_feeds(graph, seed));
    feeds.push(random_feeds(graph, &mut Rng::new(seed + 1)));
    feeds
}

#[test]
fn awkward_random_graphs_stay_sound_through_every_pass() {
    let options = awkward_options();
    let pipeline_options = PipelineOptions {
        loss: Some("loss".to_string()),
        optimizer: Some(optimizer::Optimizer::sgd(0.5).unwrap()),
        ..PipelineOptions::default()
    };
    let mut folded = 0;
    let mut trained = 0;
    for seed in 0..300 {
        let before = random_graph(&mut Rng::new(seed), &options);
        let feeds = awkward_feed_set(&before, seed);
        let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
        let context = format!("seed {seed}: {report}\n{before}");
        assert!(report.saturated, "{context}");
        check_sound(&before, &after, &feeds, &format!("egraph, {context}"));
        folded += usize::from(report.cost_after < report.cost_before);
        check_sound(
            &before,
            &dce::run(&before),
            &feeds,
            &format!("dce, {context}"),
        );
        let (inference, _) = pipeline::run(
            &before,
            pipeline::INFERENCE,
            &pipeline_options,
            &mut |_, _| {},
        )
        .unwrap();
        check_sound(
            &before,
            &inference,
            &feeds,
            &format!("inference, {context}"),
        );
        // A train step: autodiff and the optimizer make the graph that the e-graph
        // pass and dce must not change (the optimizer wants parameters without an
        // update of their own).
        if !before.updates().is_empty() {
            continue;
        }
        let Some(forward) = random::with_sum_loss(&before) else {
            continue;
        };
        let steps = [Step::Autodiff, Step::Optimizer];
        let (step, _) = pipeline::run(&forward, &steps, &pipeline_options, &mut |_, _| {})
            .unwrap_or_else(|err| panic!("{context}: {err}"));
        let (optimised, _) = pipeline::run(
            &step,
            &[Step::Egraph, Step::Dce],
            &pipeline_options,
            &mut |_, _| {},
        )
        .unwrap();
        let step_feeds = awkward_feed_set(&step, seed);
        check_sound(
            &step,
            &optimised,
            &step_feeds,
            &format!("train step, {context}"),
        );
        trained += 1;
    }
    assert!(folded >= 100, "only {folded} graphs simplified");
    assert!(trained >= 150, "only {trained} train steps");
}

#[test]
fn random_graphs_with_injected_identities_stay_sound_and_lose_them() {
    let options = RandomGraphOptions {
        max_nodes: 20,
        ..RandomGraphOptions::default()
    };
    let mut fired: HashMap<String, usize> = HashMap::new();
    for seed in 0..120 {
        let original = random_graph(&mut Rng::new(seed), &options);
        let before = inject_identities(&original, &mut Rng::new(seed + 1000));
        verify(&before).unwrap();
        let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
        let context = format!("seed {seed}: {report}");
        assert!(report.saturated, "{context}");
        for (rule, count) in &report.rules_applied {
            *fired.entry(rule.clone()).or_insert(0) += count;
        }
        let mut feeds = random_feed_set(&before, 3);
        feeds.push(special_feeds(&before, seed));
        check_sound(&before, &after, &feeds, &context);
        check_sound(&original, &after, &feeds[..3], &context);
        assert!(
            graph_cost(&after) <= graph_cost(&original),
            "{context}: the extraction kept an injected identity\nbefore injection:\n{original}\nafter the pass:\n{after}"
        );
    }
    for rule in egraph::rules() {
        assert!(
            fired.get(rule.name.as_str()).is_some_and(|&n| n > 0),
            "rule {} never fired on the injected graphs: {fired:?}",
            rule.name
        );
    }
}

#[test]
fn autodiff_train_step_stays_sound() {
    let forward = parse("%0 = input \"x\" : f32[5,3]\n%1 = input \"t\" : f32[5,2]\n%2 = param \"w\" : f32[3,7]\n%3 = param \"b\" : f32[1,7]\n%4 = param \"v\" : f32[7,2]\n%5 = matmul %0, %2 : f32[5,7]\n%6 = broadcast %3 : f32[5,7]\n%7 = add %5, %6 : f32[5,7]\n%8 = relu %7 : f32[5,7]\n%9 = matmul %8, %4 : f32[5,2]\n%10 = sub %9, %1 : f32[5,2]\n%11 = mul %10, %10 : f32[5,2]\n%12 = reduce_mean %11 axes=[0,1] : f32[1,1]\n%13 = reshape %12 : f32[]\noutput \"loss\" = %13");
    let grads = autodiff::run(&forward, &autodiff::AutodiffOptions::loss("loss")).unwrap();
    let before = optimizer::run(&grads, &optimizer::Optimizer::sgd(0.1).unwrap()).unwrap();
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    assert!(report.saturated, "{report}");
    assert!(!text::print(&after).contains("transpose"), "{after}");
    check_sound(&before, &after, &random_feed_set(&before, 4), "train step");
}

#[test]
fn a_hundred_node_graph_takes_milliseconds() {
    let options = RandomGraphOptions {
        max_nodes: 60,
        ..RandomGraphOptions::default()
    };
    let mut worst = std::time::Duration::ZERO;
    for seed in 0..5 {
        let original = random_graph(&mut Rng::new(seed), &options);
        let before = inject_identities(&original, &mut Rng::new(seed));
        let (_, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
        assert!(report.nodes_before >= 60, "{report}");
        assert!(report.saturated, "{report}");
        worst = worst.max(report.elapsed);
    }
    // A few milliseconds with optimisations; the bound leaves room for a debug build
    // of this crate on a busy machine.
    assert!(worst.as_millis() < 250, "worst run took {worst:?}");
}

// ---- injecting identities --------------------------------------------------------------

/// Rebuilds `graph` through the checked builder, wrapping about half of its values in
/// an identity the rules remove, and feeding some matmuls a transposed operand with
/// the flag flipped.
fn inject_identities(graph: &Graph, rng: &mut Rng) -> Graph {
    let mut out = Graph::new(graph.name.clone());
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    for &id in graph.inputs() {
        let new = out
            .input(graph.leaf_name(id).unwrap(), graph.ty(id).clone())
            .unwrap();
        map.insert(id, new);
    }
    for &id in graph.params() {
        let new = out
            .parameter(graph.leaf_name(id).unwrap(), graph.ty(id).clone())
            .unwrap();
        map.insert(id, new);
    }
    for id in graph.topo_order() {
        if map.contains_key(&id) {
            continue;
        }
        let operands: Vec<NodeId> = graph.operands(id).iter().map(|o| map[o]).collect();
        let value = match graph.op(id) {
            Op::Constant { value } => out.constant(*value, graph.ty(id).clone()).unwrap(),
            Op::MatMul {
                transpose_a,
                transpose_b,
            } if rng.below(2) == 0 => {
                let (mut a, mut b) = (operands[0], operands[1]);
                let (mut flag_a, mut flag_b) = (*transpose_a, *transpose_b);
                let side = rng.below(3);
                if side != 1 {
                    a = transpose_last_two(&mut out, a);
                    flag_a = !flag_a;
                }
                if side != 0 {
                    b = transpose_last_two(&mut out, b);
                    flag_b = !flag_b;
                }
                out.matmul_t(a, b, flag_a, flag_b).unwrap()
            }
            op => out.add(op.clone(), &operands).unwrap(),
        };
        let value = if rng.below(2) == 0 {
            wrap_in_identity(&mut out, value, rng)
        } else {
            value
        };
        map.insert(id, value);
    }
    for (name, id) in graph.outputs() {
        out.set_output(name, map[id]).unwrap();
    }
    for (param, value) in graph.updates() {
        let name = graph.leaf_name(*param).unwrap();
        let param = out.param_by_name(name).unwrap();
        out.set_update(param, map[value]).unwrap();
    }
    out
}

fn transpose_last_two(graph: &mut Graph, x: NodeId) -> NodeId {
    let rank = graph.ty(x).rank();
    let perm: Vec<usize> = (0..rank - 2).chain([rank - 1, rank - 2]).collect();
    graph.transpose(x, &perm).unwrap()
}

/// `x` through an identity that fits its type: `x * 1`, `1 * x` (the one sometimes a
/// broadcast scalar), `x + -0`, `-0 + x`, `x - 0`, `x / 1`, `-(-x)`, a transpose and its
/// inverse, a reshape there and back, a broadcast or cast to its own type.
fn wrap_in_identity(graph: &mut Graph, x: NodeId, rng: &mut Rng) -> NodeId {
    let ty = graph.ty(x).clone();
    let numeric = ty.dtype != DType::Bool;
    let float = ty.dtype == DType::F32;
    let splat = |graph: &mut Graph, value: f64, rng: &mut Rng| -> NodeId {
        if ty.rank() > 0 && rng.below(2) == 0 {
            let unit = graph
                .constant(value, ty.with_shape(vec![1; ty.rank()]))
                .unwrap();
            graph.broadcast(unit, ty.shape.clone()).unwrap()
        } else {
            graph.constant(value, ty.clone()).unwrap()
        }
    };
    match rng.below(10) {
        0 if numeric => {
            let one = splat(graph, 1.0, rng);
            graph.mul(x, one).unwrap()
        }
        1 if numeric => {
            let one = splat(graph, 1.0, rng);
            graph.mul(one, x).unwrap()
        }
        // -0 is the f32 additive identity (+0 would turn -0 into +0).
        2 if numeric => {
            let zero = splat(graph, -0.0, rng);
            graph.add_(x, zero).unwrap()
        }
        3 if numeric => {
            let zero = splat(graph, -0.0, rng);
            graph.add_(zero, x).unwrap()
        }
        4 if numeric => {
            let zero = splat(graph, 0.0, rng);
            graph.sub(x, zero).unwrap()
        }
        5 if float => {
            let one = splat(graph, 1.0, rng);
            graph.div(x, one).unwrap()
        }
        6 if numeric => {
            let negated = graph.neg(x).unwrap();
            graph.neg(negated).unwrap()
        }
        7 if ty.rank() >= 2 => {
            let mut perm: Vec<usize> = (0..ty.rank()).collect();
            rng.shuffle(&mut perm);
            let mut inverse = vec![0; perm.len()];
            for (i, &axis) in perm.iter().enumerate() {
                inverse[axis] = i;
            }
            let moved = graph.transpose(x, &perm).unwrap();
            graph.transpose(moved, &inverse).unwrap()
        }
        8 => {
            let flat = graph.reshape(x, vec![ty.num_elements()]).unwrap();
            graph.reshape(flat, ty.shape.clone()).unwrap()
        }
        _ => {
            if rng.below(2) == 0 {
                graph.broadcast(x, ty.shape.clone()).unwrap()
            } else {
                graph.cast(x, ty.dtype).unwrap()
            }
        }
    }
}
