//! Every e-graph rule, one at a time, on a graph where it fires: the rewritten graph
//! must compute what the input computed (interpreter in f64 on random feeds, NaN equal
//! to NaN), and the rule must really have fired. Then the whole rule set on random
//! graphs. A rule without an example here fails `every_rule_has_an_example`.

use kiln_ir::random::{random_feeds, random_graph, RandomGraphOptions};
use kiln_ir::{evaluate, text, verify, Evaluation, Graph, Precision, Rng};
use kiln_passes::egraph::{self, EgraphOptions};

/// (rule name, a graph on which it fires). Shapes are odd so that broadcasting or
/// axis mix-ups change values.
const EXAMPLES: &[(&str, &str)] = &[
    ("mul-one-right", "%0 = input \"x\" : f32[3,5]\n%1 = const 1.0 : f32[3,5]\n%2 = mul %0, %1 : f32[3,5]\noutput \"y\" = %2"),
    ("mul-one-left", "%0 = input \"x\" : f32[3,5]\n%1 = const 1.0 : f32[3,5]\n%2 = mul %1, %0 : f32[3,5]\noutput \"y\" = %2"),
    ("add-zero-right", "%0 = input \"x\" : f32[7]\n%1 = const 0.0 : f32[7]\n%2 = add %0, %1 : f32[7]\noutput \"y\" = %2"),
    ("add-zero-left", "%0 = input \"x\" : f32[7]\n%1 = const 0.0 : f32[7]\n%2 = add %1, %0 : f32[7]\noutput \"y\" = %2"),
    ("sub-zero", "%0 = input \"x\" : f32[7]\n%1 = const 0.0 : f32[7]\n%2 = sub %0, %1 : f32[7]\noutput \"y\" = %2"),
    ("div-one", "%0 = input \"x\" : f32[7]\n%1 = const 1.0 : f32[7]\n%2 = div %0, %1 : f32[7]\noutput \"y\" = %2"),
    ("neg-neg", "%0 = input \"x\" : f32[7]\n%1 = neg %0 : f32[7]\n%2 = neg %1 : f32[7]\n%3 = exp %2 : f32[7]\noutput \"y\" = %3"),
    ("transpose-inverse", "%0 = input \"x\" : f32[2,3,5]\n%1 = transpose %0 perm=[1,2,0] : f32[3,5,2]\n%2 = transpose %1 perm=[2,0,1] : f32[2,3,5]\n%3 = exp %2 : f32[2,3,5]\noutput \"y\" = %3"),
    ("reshape-reshape", "%0 = input \"x\" : f32[6,5]\n%1 = reshape %0 : f32[3,10]\n%2 = reshape %1 : f32[30]\n%3 = exp %2 : f32[30]\noutput \"y\" = %3"),
    ("reshape-identity", "%0 = input \"x\" : f32[6,5]\n%1 = reshape %0 : f32[6,5]\n%2 = exp %1 : f32[6,5]\noutput \"y\" = %2"),
    ("broadcast-identity", "%0 = input \"x\" : f32[6,5]\n%1 = broadcast %0 : f32[6,5]\n%2 = exp %1 : f32[6,5]\noutput \"y\" = %2"),
    ("cast-identity", "%0 = input \"x\" : f32[6,5]\n%1 = cast %0 : f32[6,5]\n%2 = exp %1 : f32[6,5]\noutput \"y\" = %2"),
    ("fold-transpose-lhs-nn", "%0 = input \"a\" : f32[5,3]\n%1 = input \"b\" : f32[5,4]\n%2 = transpose %0 perm=[1,0] : f32[3,5]\n%3 = matmul %2, %1 : f32[3,4]\noutput \"y\" = %3"),
    ("fold-transpose-rhs-nn", "%0 = input \"a\" : f32[3,5]\n%1 = input \"b\" : f32[4,5]\n%2 = transpose %1 perm=[1,0] : f32[5,4]\n%3 = matmul %0, %2 : f32[3,4]\noutput \"y\" = %3"),
    ("fold-transpose-lhs-tn", "%0 = input \"a\" : f32[3,5]\n%1 = input \"b\" : f32[5,4]\n%2 = transpose %0 perm=[1,0] : f32[5,3]\n%3 = matmul.tn %2, %1 : f32[3,4]\noutput \"y\" = %3"),
    ("fold-transpose-rhs-tn", "%0 = input \"a\" : f32[5,3]\n%1 = input \"b\" : f32[4,5]\n%2 = transpose %1 perm=[1,0] : f32[5,4]\n%3 = matmul.tn %0, %2 : f32[3,4]\noutput \"y\" = %3"),
    ("fold-transpose-lhs-nt", "%0 = input \"a\" : f32[5,3]\n%1 = input \"b\" : f32[4,5]\n%2 = transpose %0 perm=[1,0] : f32[3,5]\n%3 = matmul.nt %2, %1 : f32[3,4]\noutput \"y\" = %3"),
    ("fold-transpose-rhs-nt", "%0 = input \"a\" : f32[3,5]\n%1 = input \"b\" : f32[5,4]\n%2 = transpose %1 perm=[1,0] : f32[4,5]\n%3 = matmul.nt %0, %2 : f32[3,4]\noutput \"y\" = %3"),
    ("fold-transpose-lhs-tt", "%0 = input \"a\" : f32[3,5]\n%1 = input \"b\" : f32[4,5]\n%2 = transpose %0 perm=[1,0] : f32[5,3]\n%3 = matmul.tt %2, %1 : f32[3,4]\noutput \"y\" = %3"),
    ("fold-transpose-rhs-tt", "%0 = input \"a\" : f32[5,3]\n%1 = input \"b\" : f32[5,4]\n%2 = transpose %1 perm=[1,0] : f32[4,5]\n%3 = matmul.tt %0, %2 : f32[3,4]\noutput \"y\" = %3"),
];

fn parse(body: &str) -> Graph {
    let src = format!("graph t {{\n{body}\n}}\n");
    text::parse(&src).unwrap_or_else(|err| panic!("{err}\n{src}"))
}

fn assert_same_values(before: &Evaluation, after: &Evaluation, context: &str) {
    for (results_before, results_after) in [
        (&before.outputs, &after.outputs),
        (&before.updates, &after.updates),
    ] {
        assert_eq!(results_before.len(), results_after.len(), "{context}");
        for (name, expected) in results_before {
            let actual = &results_after[name];
            assert_eq!(actual.ty(), expected.ty(), "{context}: {name}");
            for (a, e) in actual.data.iter().zip(&expected.data) {
                let same = (a.is_nan() && e.is_nan()) || a == e || (a - e).abs() <= 1e-12 * e.abs();
                assert!(same, "{context}: {name}: {a} != {e}");
            }
        }
    }
}

fn check_sound(before: &Graph, after: &Graph, seeds: u64, context: &str) {
    verify(after).unwrap_or_else(|err| panic!("{context}: {err}"));
    for seed in 0..seeds {
        let feeds = random_feeds(before, &mut Rng::new(seed));
        let expected = evaluate(before, &feeds, Precision::F64).unwrap();
        let actual = evaluate(after, &feeds, Precision::F64).unwrap();
        assert_same_values(&expected, &actual, context);
    }
}

#[test]
fn every_rule_is_sound_where_it_fires() {
    let rules = egraph::rules();
    for (name, body) in EXAMPLES {
        let rule: Vec<_> = rules
            .iter()
            .filter(|rule| rule.name.as_str() == *name)
            .cloned()
            .collect();
        assert_eq!(rule.len(), 1, "rule {name} exists once");
        let before = parse(body);
        let (after, report) = egraph::run_with(&before, &EgraphOptions::default(), &rule).unwrap();
        assert!(report.saturated, "{name}: {report}");
        assert!(
            report.cost_after < report.cost_before,
            "{name} must fire and make the graph cheaper:\n{}",
            text::print(&after)
        );
        check_sound(&before, &after, 5, name);
    }
}

#[test]
fn every_rule_has_an_example() {
    for rule in egraph::rules() {
        assert!(
            EXAMPLES.iter().any(|(name, _)| *name == rule.name.as_str()),
            "rule {} has no soundness example",
            rule.name
        );
    }
}

#[test]
fn rules_do_not_fire_where_they_must_not() {
    let cases = [
        // x * 2 is not x; x * 0 is not 0 (NaN, inf).
        "%0 = input \"x\" : f32[4]\n%1 = const 2.0 : f32[4]\n%2 = mul %0, %1 : f32[4]\n%3 = const 0.0 : f32[4]\n%4 = mul %0, %3 : f32[4]\noutput \"a\" = %2\noutput \"b\" = %4",
        // Two transposes that do not compose to the identity.
        "%0 = input \"x\" : f32[2,3,5]\n%1 = transpose %0 perm=[1,2,0] : f32[3,5,2]\n%2 = transpose %1 perm=[1,2,0] : f32[5,2,3]\noutput \"y\" = %2",
        // A transpose of the batch axis does not fold into a batched matmul.
        "%0 = input \"a\" : f32[3,2,5]\n%1 = input \"b\" : f32[2,5,4]\n%2 = transpose %0 perm=[1,0,2] : f32[2,3,5]\n%3 = matmul %2, %1 : f32[2,3,4]\noutput \"y\" = %3",
    ];
    for body in cases {
        let before = parse(body);
        let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
        assert_eq!(text::print(&after), text::print(&before), "{report}");
    }
}

#[test]
fn batched_transposes_fold_into_matmul_flags() {
    let before = parse("%0 = input \"a\" : f32[2,5,3]\n%1 = input \"b\" : f32[2,4,5]\n%2 = transpose %0 perm=[0,2,1] : f32[2,3,5]\n%3 = transpose %1 perm=[0,2,1] : f32[2,5,4]\n%4 = matmul %2, %3 : f32[2,3,4]\noutput \"y\" = %4");
    let (after, _) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    assert!(
        text::print(&after).contains("%2 = matmul.tt %0, %1 : f32[2,3,4]"),
        "{after}"
    );
    check_sound(&before, &after, 3, "batched");
}

#[test]
fn all_rules_together_are_sound_on_random_graphs() {
    let options = RandomGraphOptions::default();
    for seed in 0..150 {
        let before = random_graph(&mut Rng::new(seed), &options);
        let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
        assert!(report.saturated, "seed {seed}: {report}");
        assert!(
            report.cost_after <= report.cost_before,
            "seed {seed}: {report}"
        );
        check_sound(&before, &after, 2, &format!("seed {seed}"));
    }
}

#[test]
fn sharing_and_signature_survive_the_round_trip() {
    // An unused input stays in the signature; a value used by two outputs stays one
    // node; update targets keep their names.
    let before = parse("%0 = input \"x\" : f32[3]\n%1 = input \"unused\" : f32[2]\n%2 = param \"w\" : f32[3]\n%3 = mul %0, %2 : f32[3]\n%4 = exp %3 : f32[3]\n%5 = add %4, %4 : f32[3]\noutput \"a\" = %4\noutput \"b\" = %5\nupdate \"w\" = %4");
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    assert_eq!(text::print(&after), text::print(&before), "{report}");
    assert_eq!(report.nodes_after, 6);
}
