//! One small test per e-graph rule, input IR to expected IR (compared as printed
//! text), inputs on which rules must not fire, constant folding, sharing and the
//! graph's signature through the round trip, and an MLP train step whose transposes
//! all fold into matmul flags.

use kiln_ir::{text, verify, Graph, Op, TensorType};
use kiln_passes::egraph::extract::graph_cost;
use kiln_passes::egraph::language::{add_op, KilnEGraph};
use kiln_passes::egraph::{self, EgraphOptions, EgraphReport};
use kiln_passes::{autodiff, optimizer};

fn parse(body: &str) -> Graph {
    let src = format!("graph t {{\n{body}\n}}\n");
    text::parse(&src).unwrap_or_else(|err| panic!("{err}\n{src}"))
}

fn run_rule(rule: &str, before: &Graph) -> (Graph, EgraphReport) {
    let rules: Vec<_> = egraph::rules()
        .into_iter()
        .filter(|rewrite| rewrite.name.as_str() == rule)
        .collect();
    assert_eq!(rules.len(), 1, "rule {rule} is in the default set once");
    egraph::run_with(before, &EgraphOptions::default(), &rules).unwrap()
}

/// `rule` alone, and the whole default set, rewrite `input` to `expected`; the rule
/// fires, the result verifies and costs less.
fn check_rule(rule: &str, input: &str, expected: &str) {
    let before = parse(input);
    let expected = text::print(&parse(expected));
    let (alone, report) = run_rule(rule, &before);
    verify(&alone).unwrap();
    assert_eq!(text::print(&alone), expected, "{rule} alone: {report}");
    assert!(report.saturated, "{rule}: {report}");
    assert!(
        report.rules_applied.get(rule).is_some_and(|&n| n > 0),
        "{rule} did not fire: {:?}",
        report.rules_applied
    );
    assert!(report.cost_after < report.cost_before, "{rule}: {report}");
    let (all, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    assert_eq!(
        text::print(&all),
        expected,
        "{rule} in the default set: {report}"
    );
}

/// The default rules leave `input` exactly as it is.
fn check_unchanged(input: &str) {
    let before = parse(input);
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    assert_eq!(text::print(&after), text::print(&before), "{report}");
    assert!(report.saturated, "{report}");
    assert_eq!(report.cost_after, report.cost_before, "{report}");
}

#[test]
fn mul_one_right() {
    check_rule(
        "mul-one-right",
        "%0 = input \"x\" : f32[3,5]\n%1 = const 1.0 : f32[3,5]\n%2 = mul %0, %1 : f32[3,5]\n%3 = exp %2 : f32[3,5]\noutput \"y\" = %3",
        "%0 = input \"x\" : f32[3,5]\n%1 = exp %0 : f32[3,5]\noutput \"y\" = %1",
    );
}

#[test]
fn mul_one_left() {
    check_rule(
        "mul-one-left",
        "%0 = input \"x\" : f32[3,5]\n%1 = const 1.0 : f32[3,5]\n%2 = mul %1, %0 : f32[3,5]\n%3 = exp %2 : f32[3,5]\noutput \"y\" = %3",
        "%0 = input \"x\" : f32[3,5]\n%1 = exp %0 : f32[3,5]\noutput \"y\" = %1",
    );
}

#[test]
fn mul_one_sees_a_broadcast_scalar_one() {
    // The analysis knows that a broadcast of a scalar splat is a splat.
    check_rule(
        "mul-one-right",
        "%0 = input \"x\" : f32[3,5]\n%1 = const 1.0 : f32[1,1]\n%2 = broadcast %1 : f32[3,5]\n%3 = mul %0, %2 : f32[3,5]\noutput \"y\" = %3",
        "%0 = input \"x\" : f32[3,5]\noutput \"y\" = %0",
    );
}

#[test]
fn add_zero_right() {
    check_rule(
        "add-zero-right",
        "%0 = input \"x\" : f32[7]\n%1 = const -0.0 : f32[7]\n%2 = add %0, %1 : f32[7]\n%3 = neg %2 : f32[7]\noutput \"y\" = %3",
        "%0 = input \"x\" : f32[7]\n%1 = neg %0 : f32[7]\noutput \"y\" = %1",
    );
}

#[test]
fn add_zero_left() {
    check_rule(
        "add-zero-left",
        "%0 = input \"x\" : i32[7]\n%1 = const 0.0 : i32[7]\n%2 = add %1, %0 : i32[7]\n%3 = neg %2 : i32[7]\noutput \"y\" = %3",
        "%0 = input \"x\" : i32[7]\n%1 = neg %0 : i32[7]\noutput \"y\" = %1",
    );
}

#[test]
fn sub_zero() {
    check_rule(
        "sub-zero",
        "%0 = input \"x\" : f32[7]\n%1 = const 0.0 : f32[7]\n%2 = sub %0, %1 : f32[7]\n%3 = exp %2 : f32[7]\noutput \"y\" = %3",
        "%0 = input \"x\" : f32[7]\n%1 = exp %0 : f32[7]\noutput \"y\" = %1",
    );
}

#[test]
fn div_one() {
    check_rule(
        "div-one",
        "%0 = input \"x\" : f32[7]\n%1 = const 1.0 : f32[7]\n%2 = div %0, %1 : f32[7]\n%3 = exp %2 : f32[7]\noutput \"y\" = %3",
        "%0 = input \"x\" : f32[7]\n%1 = exp %0 : f32[7]\noutput \"y\" = %1",
    );
}

#[test]
fn neg_neg() {
    check_rule(
        "neg-neg",
        "%0 = input \"x\" : f32[7]\n%1 = neg %0 : f32[7]\n%2 = neg %1 : f32[7]\n%3 = exp %2 : f32[7]\noutput \"y\" = %3",
        "%0 = input \"x\" : f32[7]\n%1 = exp %0 : f32[7]\noutput \"y\" = %1",
    );
}

#[test]
fn transpose_inverse() {
    check_rule(
        "transpose-inverse",
        "%0 = input \"x\" : f32[2,3,5]\n%1 = transpose %0 perm=[1,2,0] : f32[3,5,2]\n%2 = transpose %1 perm=[2,0,1] : f32[2,3,5]\n%3 = exp %2 : f32[2,3,5]\noutput \"y\" = %3",
        "%0 = input \"x\" : f32[2,3,5]\n%1 = exp %0 : f32[2,3,5]\noutput \"y\" = %1",
    );
    check_rule(
        "transpose-inverse",
        "%0 = input \"x\" : f32[3,5]\n%1 = transpose %0 perm=[1,0] : f32[5,3]\n%2 = transpose %1 perm=[1,0] : f32[3,5]\noutput \"y\" = %2",
        "%0 = input \"x\" : f32[3,5]\noutput \"y\" = %0",
    );
}

#[test]
fn reshape_reshape() {
    check_rule(
        "reshape-reshape",
        "%0 = input \"x\" : f32[6,5]\n%1 = reshape %0 : f32[3,10]\n%2 = reshape %1 : f32[30]\n%3 = exp %2 : f32[30]\noutput \"y\" = %3",
        "%0 = input \"x\" : f32[6,5]\n%1 = reshape %0 : f32[30]\n%2 = exp %1 : f32[30]\noutput \"y\" = %2",
    );
}

#[test]
fn reshape_identity() {
    check_rule(
        "reshape-identity",
        "%0 = input \"x\" : f32[6,5]\n%1 = reshape %0 : f32[6,5]\n%2 = exp %1 : f32[6,5]\noutput \"y\" = %2",
        "%0 = input \"x\" : f32[6,5]\n%1 = exp %0 : f32[6,5]\noutput \"y\" = %1",
    );
}

#[test]
fn reshape_there_and_back_is_identity() {
    // reshape-reshape makes reshape(x, type(x)), which reshape-identity removes.
    let before = parse("%0 = input \"x\" : f32[6,5]\n%1 = reshape %0 : f32[3,10]\n%2 = reshape %1 : f32[6,5]\n%3 = exp %2 : f32[6,5]\noutput \"y\" = %3");
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    let expected = parse("%0 = input \"x\" : f32[6,5]\n%1 = exp %0 : f32[6,5]\noutput \"y\" = %1");
    assert_eq!(text::print(&after), text::print(&expected), "{report}");
}

#[test]
fn broadcast_identity() {
    check_rule(
        "broadcast-identity",
        "%0 = input \"x\" : f32[6,5]\n%1 = broadcast %0 : f32[6,5]\n%2 = exp %1 : f32[6,5]\noutput \"y\" = %2",
        "%0 = input \"x\" : f32[6,5]\n%1 = exp %0 : f32[6,5]\noutput \"y\" = %1",
    );
}

#[test]
fn cast_identity() {
    check_rule(
        "cast-identity",
        "%0 = input \"x\" : i32[6,5]\n%1 = cast %0 : i32[6,5]\n%2 = neg %1 : i32[6,5]\noutput \"y\" = %2",
        "%0 = input \"x\" : i32[6,5]\n%1 = neg %0 : i32[6,5]\noutput \"y\" = %1",
    );
}

/// A matmul `op` of `a : f32[batch.., a_shape]` and `b : f32[batch.., b_shape]` with
/// the last two axes of operand `side` ("a" or "b") transposed first, rewritten by
/// `rule` into `folded` on the untransposed operands; rank 2 and batched.
fn check_fold(rule: &str, op: &str, side: &str, folded: &str, a: [usize; 2], b: [usize; 2]) {
    for batch in [vec![], vec![2], vec![2, 3]] {
        let shape = |dims: [usize; 2]| {
            let items: Vec<String> = batch.iter().chain(&dims).map(|d| d.to_string()).collect();
            format!("f32[{}]", items.join(","))
        };
        let swap = |dims: [usize; 2]| [dims[1], dims[0]];
        let rank = batch.len() + 2;
        let perm: Vec<String> = (0..rank - 2)
            .chain([rank - 1, rank - 2])
            .map(|axis| axis.to_string())
            .collect();
        let perm = perm.join(",");
        // The operand fed to `op` has shape `a`/`b`; the input is its transpose.
        let (a_in, b_in) = match side {
            "a" => (swap(a), b),
            _ => (a, swap(b)),
        };
        let operands = match side {
            "a" => "%2, %1",
            _ => "%0, %2",
        };
        let transposed = match side {
            "a" => format!("%2 = transpose %0 perm=[{perm}] : {}", shape(a)),
            _ => format!("%2 = transpose %1 perm=[{perm}] : {}", shape(b)),
        };
        let (m, n) = (
            if op.ends_with("tn") || op.ends_with("tt") {
                a[1]
            } else {
                a[0]
            },
            if op.ends_with("nt") || op.ends_with("tt") {
                b[0]
            } else {
                b[1]
            },
        );
        let out = shape([m, n]);
        let input = format!(
            "%0 = input \"a\" : {}\n%1 = input \"b\" : {}\n{transposed}\n%3 = {op} {operands} : {out}\noutput \"y\" = %3",
            shape(a_in),
            shape(b_in)
        );
        let expected = format!(
            "%0 = input \"a\" : {}\n%1 = input \"b\" : {}\n%2 = {folded} %0, %1 : {out}\noutput \"y\" = %2",
            shape(a_in),
            shape(b_in)
        );
        check_rule(rule, &input, &expected);
    }
}

#[test]
fn fold_transpose_lhs_nn() {
    check_fold(
        "fold-transpose-lhs-nn",
        "matmul",
        "a",
        "matmul.tn",
        [3, 5],
        [5, 4],
    );
}

#[test]
fn fold_transpose_rhs_nn() {
    check_fold(
        "fold-transpose-rhs-nn",
        "matmul",
        "b",
        "matmul.nt",
        [3, 5],
        [5, 4],
    );
}

#[test]
fn fold_transpose_lhs_tn() {
    check_fold(
        "fold-transpose-lhs-tn",
        "matmul.tn",
        "a",
        "matmul",
        [5, 3],
        [5, 4],
    );
}

#[test]
fn fold_transpose_rhs_tn() {
    check_fold(
        "fold-transpose-rhs-tn",
        "matmul.tn",
        "b",
        "matmul.tt",
        [5, 3],
        [5, 4],
    );
}

#[test]
fn fold_transpose_lhs_nt() {
    check_fold(
        "fold-transpose-lhs-nt",
        "matmul.nt",
        "a",
        "matmul.tt",
        [3, 5],
        [4, 5],
    );
}

#[test]
fn fold_transpose_rhs_nt() {
    check_fold(
        "fold-transpose-rhs-nt",
        "matmul.nt",
        "b",
        "matmul",
        [3, 5],
        [4, 5],
    );
}

#[test]
fn fold_transpose_lhs_tt() {
    check_fold(
        "fold-transpose-lhs-tt",
        "matmul.tt",
        "a",
        "matmul.nt",
        [5, 3],
        [4, 5],
    );
}

#[test]
fn fold_transpose_rhs_tt() {
    check_fold(
        "fold-transpose-rhs-tt",
        "matmul.tt",
        "b",
        "matmul.tn",
        [5, 3],
        [4, 5],
    );
}

#[test]
fn both_operands_fold_together() {
    let before = parse("%0 = input \"a\" : f32[2,5,3]\n%1 = input \"b\" : f32[2,4,5]\n%2 = transpose %0 perm=[0,2,1] : f32[2,3,5]\n%3 = transpose %1 perm=[0,2,1] : f32[2,5,4]\n%4 = matmul %2, %3 : f32[2,3,4]\noutput \"y\" = %4");
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    let expected = parse("%0 = input \"a\" : f32[2,5,3]\n%1 = input \"b\" : f32[2,4,5]\n%2 = matmul.tt %0, %1 : f32[2,3,4]\noutput \"y\" = %2");
    assert_eq!(text::print(&after), text::print(&expected), "{report}");
}

#[test]
fn every_rule_has_a_test_here() {
    // The names the tests above exercise; a new rule must get a test.
    let tested = [
        "mul-one-right",
        "mul-one-left",
        "add-zero-right",
        "add-zero-left",
        "sub-zero",
        "div-one",
        "neg-neg",
        "transpose-inverse",
        "reshape-reshape",
        "reshape-identity",
        "broadcast-identity",
        "cast-identity",
        "fold-transpose-lhs-nn",
        "fold-transpose-rhs-nn",
        "fold-transpose-lhs-tn",
        "fold-transpose-rhs-tn",
        "fold-transpose-lhs-nt",
        "fold-transpose-rhs-nt",
        "fold-transpose-lhs-tt",
        "fold-transpose-rhs-tt",
    ];
    let names: Vec<String> = egraph::rules()
        .iter()
        .map(|rule| rule.name.to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        names.len(),
        "rule names are unique: {names:?}"
    );
    for name in &names {
        assert!(tested.contains(&name.as_str()), "rule {name} has no test");
        let kebab = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        assert!(kebab, "rule name {name} is not kebab-case");
    }
    assert_eq!(names.len(), tested.len());
}

// ---- where rules must not fire -------------------------------------------------------

#[test]
fn multiplying_by_two_or_zero_is_kept() {
    // x * 2 is not x, and x * 0 is not 0 (NaN * 0 and inf * 0 are NaN).
    check_unchanged("%0 = input \"x\" : f32[4]\n%1 = const 2.0 : f32[4]\n%2 = mul %0, %1 : f32[4]\n%3 = const 0.0 : f32[4]\n%4 = mul %0, %3 : f32[4]\n%5 = mul %3, %0 : f32[4]\noutput \"a\" = %2\noutput \"b\" = %4\noutput \"c\" = %5");
}

#[test]
fn unmirrored_identities_are_kept() {
    // 0 - x is -x, 1 / x is not x, x + 1 is not x.
    check_unchanged("%0 = input \"x\" : f32[4]\n%1 = const 0.0 : f32[4]\n%2 = sub %1, %0 : f32[4]\n%3 = const 1.0 : f32[4]\n%4 = div %3, %0 : f32[4]\n%5 = add %0, %3 : f32[4]\noutput \"a\" = %2\noutput \"b\" = %4\noutput \"c\" = %5");
}

#[test]
fn adding_positive_zero_or_subtracting_negative_zero_is_kept() {
    // -0 + +0 is +0 and -0 - -0 is +0, so neither is the identity on f32 (x = -0
    // would come out +0); -0 is the additive identity and +0 the subtractive one.
    check_unchanged("%0 = input \"x\" : f32[4]\n%1 = const 0.0 : f32[4]\n%2 = add %0, %1 : f32[4]\n%3 = add %1, %0 : f32[4]\n%4 = const -0.0 : f32[4]\n%5 = sub %0, %4 : f32[4]\noutput \"a\" = %2\noutput \"b\" = %3\noutput \"c\" = %5");
    // The same through a broadcast splat (which folds into a constant of the full shape).
    let before = parse("%0 = input \"x\" : f32[3,4]\n%1 = const 0.0 : f32[1,1]\n%2 = broadcast %1 : f32[3,4]\n%3 = add %0, %2 : f32[3,4]\noutput \"a\" = %3");
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    let expected = parse("%0 = input \"x\" : f32[3,4]\n%1 = const 0.0 : f32[3,4]\n%2 = add %0, %1 : f32[3,4]\noutput \"a\" = %2");
    assert_eq!(text::print(&after), text::print(&expected), "{report}");
}

#[test]
fn signed_zero_identities_fire_with_the_right_zero() {
    let before = parse("%0 = input \"x\" : f32[4]\n%1 = const -0.0 : f32[4]\n%2 = add %1, %0 : f32[4]\n%3 = const 0.0 : f32[4]\n%4 = sub %2, %3 : f32[4]\noutput \"y\" = %4");
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    assert_eq!(
        text::print(&after),
        text::print(&parse("%0 = input \"x\" : f32[4]\noutput \"y\" = %0")),
        "{report}"
    );
}

#[test]
fn non_inverse_transposes_are_kept() {
    check_unchanged("%0 = input \"x\" : f32[2,3,5]\n%1 = transpose %0 perm=[1,2,0] : f32[3,5,2]\n%2 = transpose %1 perm=[1,2,0] : f32[5,2,3]\noutput \"y\" = %2");
    check_unchanged("%0 = input \"x\" : f32[2,3,5]\n%1 = transpose %0 perm=[1,0,2] : f32[3,2,5]\n%2 = transpose %1 perm=[0,2,1] : f32[3,5,2]\noutput \"y\" = %2");
}

#[test]
fn transposes_of_batch_axes_do_not_fold_into_matmul() {
    // Swapping a batch axis with a matrix axis is not a matmul flag.
    check_unchanged("%0 = input \"a\" : f32[3,2,5]\n%1 = input \"b\" : f32[2,5,4]\n%2 = transpose %0 perm=[1,0,2] : f32[2,3,5]\n%3 = matmul %2, %1 : f32[2,3,4]\noutput \"y\" = %3");
    // Reversing all three axes of a batched operand is not one either.
    check_unchanged("%0 = input \"a\" : f32[3,3,3]\n%1 = input \"b\" : f32[3,3,3]\n%2 = transpose %1 perm=[2,1,0] : f32[3,3,3]\n%3 = matmul %0, %2 : f32[3,3,3]\noutput \"y\" = %3");
}

#[test]
fn real_reshapes_and_broadcasts_are_kept() {
    check_unchanged("%0 = input \"x\" : f32[6,1]\n%1 = reshape %0 : f32[2,3]\n%2 = broadcast %0 : f32[6,4]\n%3 = cast %0 : i32[6,1]\noutput \"a\" = %1\noutput \"b\" = %2\noutput \"c\" = %3");
}

// ---- constant folding, sharing, signature ----------------------------------------------

#[test]
fn splat_constants_fold() {
    let before = parse("%0 = input \"x\" : f32[3]\n%1 = const 2.0 : f32[]\n%2 = reshape %1 : f32[1]\n%3 = broadcast %2 : f32[3]\n%4 = neg %3 : f32[3]\n%5 = const 0.5 : f32[3]\n%6 = add %4, %5 : f32[3]\n%7 = mul %0, %6 : f32[3]\noutput \"y\" = %7");
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    let expected = parse("%0 = input \"x\" : f32[3]\n%1 = const -1.5 : f32[3]\n%2 = mul %0, %1 : f32[3]\noutput \"y\" = %2");
    assert_eq!(text::print(&after), text::print(&expected), "{report}");
}

#[test]
fn integer_constants_fold_with_wrapping() {
    let before = parse("%0 = const 2147483647.0 : i32[2]\n%1 = const 1.0 : i32[2]\n%2 = add %0, %1 : i32[2]\n%3 = cmp.lt %2, %1 : bool[2]\noutput \"y\" = %2\noutput \"z\" = %3");
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    let expected = parse("%0 = const -2147483648.0 : i32[2]\n%1 = const 1.0 : bool[2]\noutput \"y\" = %0\noutput \"z\" = %1");
    assert_eq!(text::print(&after), text::print(&expected), "{report}");
}

#[test]
fn folding_rounds_to_f32_like_compiled_code() {
    // 16777217 is not an f32: the constant reads as 16777216, so c1 - c2 is 0 and
    // x + 0 stays an add (x = -0 gives +0). The old f64 folder made it x + 1.
    let before = parse("%0 = input \"x\" : f32[3]\n%1 = const 16777217.0 : f32[3]\n%2 = const 16777216.0 : f32[3]\n%3 = sub %1, %2 : f32[3]\n%4 = add %0, %3 : f32[3]\noutput \"y\" = %4");
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    let expected = parse("%0 = input \"x\" : f32[3]\n%1 = const 0.0 : f32[3]\n%2 = add %0, %1 : f32[3]\noutput \"y\" = %2");
    assert_eq!(text::print(&after), text::print(&expected), "{report}");
    // 1e39 overflows f32 to inf, so 1e39 - 1e39 is NaN, log(1e39) is inf (the class
    // of the constant 1e39 itself, which reads as inf), and a cast of the folded
    // 3e9 * 1 saturates at i32::MAX.
    let before = parse("%0 = const 1e39 : f32[2]\n%1 = sub %0, %0 : f32[2]\n%2 = log %0 : f32[2]\n%3 = const 3e9 : f32[2]\n%4 = const 1.0 : f32[2]\n%5 = mul %3, %4 : f32[2]\n%6 = cast %5 : i32[2]\noutput \"nan\" = %1\noutput \"log\" = %2\noutput \"cast\" = %6");
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    let expected = parse("%0 = const nan : f32[2]\n%1 = const 1e39 : f32[2]\n%2 = const 2147483647.0 : i32[2]\noutput \"nan\" = %0\noutput \"log\" = %1\noutput \"cast\" = %2");
    assert_eq!(text::print(&after), text::print(&expected), "{report}");
}

#[test]
fn reductions_over_empty_axes_fold_to_their_identity() {
    // NumPy's values: an empty sum is 0, an empty mean 0 / 0 = NaN; an empty max is
    // kiln's -inf (the identity of max), whatever the operand.
    let before = parse("%0 = input \"x\" : f32[0,3]\n%1 = reduce_sum %0 axes=[0] : f32[1,3]\n%2 = reduce_mean %0 axes=[0] : f32[1,3]\n%3 = reduce_max %0 axes=[0] : f32[1,3]\noutput \"sum\" = %1\noutput \"mean\" = %2\noutput \"max\" = %3");
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    let expected = parse("%0 = input \"x\" : f32[0,3]\n%1 = const 0.0 : f32[1,3]\n%2 = const nan : f32[1,3]\n%3 = const -inf : f32[1,3]\noutput \"sum\" = %1\noutput \"mean\" = %2\noutput \"max\" = %3");
    assert_eq!(text::print(&after), text::print(&expected), "{report}");
    // A splat broadcast to an empty axis has no elements: its max is still -inf.
    let before = parse("%0 = const 5.0 : f32[1]\n%1 = broadcast %0 : f32[0]\n%2 = reduce_max %1 axes=[0] : f32[1]\noutput \"max\" = %2");
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    let expected = parse("%0 = const -inf : f32[1]\noutput \"max\" = %0");
    assert_eq!(text::print(&after), text::print(&expected), "{report}");
}

#[test]
fn a_value_used_twice_stays_one_node() {
    let before = parse("%0 = input \"x\" : f32[3]\n%1 = const 1.0 : f32[3]\n%2 = mul %0, %1 : f32[3]\n%3 = exp %2 : f32[3]\n%4 = add %3, %3 : f32[3]\noutput \"a\" = %3\noutput \"b\" = %4\noutput \"c\" = %3");
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    let expected = parse("%0 = input \"x\" : f32[3]\n%1 = exp %0 : f32[3]\n%2 = add %1, %1 : f32[3]\noutput \"a\" = %1\noutput \"b\" = %2\noutput \"c\" = %1");
    assert_eq!(text::print(&after), text::print(&expected), "{report}");
    assert_eq!(report.nodes_after, 3);
    let exp_node = after.output_by_name("a").unwrap();
    assert_eq!(after.output_by_name("c"), Some(exp_node));
    assert_eq!(
        after.users(exp_node).len(),
        1,
        "one add reads the exp twice"
    );
}

#[test]
fn signature_outputs_and_updates_survive() {
    // Unused inputs and parameters stay, in declaration order; outputs and updates
    // keep names and order; the pass prints nothing else differently.
    let before = parse("%0 = input \"z\" : f32[2]\n%1 = input \"x\" : f32[3]\n%2 = param \"w\" : f32[3]\n%3 = param \"unused\" : f32[5]\n%4 = const 1.0 : f32[3]\n%5 = div %1, %4 : f32[3]\n%6 = mul %5, %2 : f32[3]\n%7 = sub %2, %6 : f32[3]\noutput \"second\" = %6\noutput \"first\" = %1\nupdate \"w\" = %7\nupdate \"unused\" = %3");
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    let expected = parse("%0 = input \"z\" : f32[2]\n%1 = input \"x\" : f32[3]\n%2 = param \"w\" : f32[3]\n%3 = param \"unused\" : f32[5]\n%4 = mul %1, %2 : f32[3]\n%5 = sub %2, %4 : f32[3]\noutput \"second\" = %4\noutput \"first\" = %1\nupdate \"w\" = %5\nupdate \"unused\" = %3");
    assert_eq!(text::print(&after), text::print(&expected), "{report}");
    assert_eq!(after.name, before.name);
}

#[test]
fn report_is_one_line() {
    let before = parse(
        "%0 = input \"x\" : f32[3]\n%1 = neg %0 : f32[3]\n%2 = neg %1 : f32[3]\noutput \"y\" = %2",
    );
    let (_, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    let line = report.to_string();
    assert!(line.starts_with("egraph: saturated after "), "{line}");
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("3 -> 1 nodes"), "{line}");
    assert_eq!(report.rules_applied.get("neg-neg"), Some(&1));
}

#[test]
fn an_iteration_limit_is_reported() {
    let before = parse("%0 = input \"x\" : f32[3]\n%1 = neg %0 : f32[3]\n%2 = neg %1 : f32[3]\n%3 = neg %2 : f32[3]\n%4 = neg %3 : f32[3]\noutput \"y\" = %4");
    let options = EgraphOptions {
        iter_limit: 1,
        ..EgraphOptions::default()
    };
    let (after, report) = egraph::run(&before, &options).unwrap();
    assert!(!report.saturated);
    assert_eq!(report.stop_reason, "iteration limit 1");
    // One iteration already removes both double negations.
    assert_eq!(
        text::print(&after),
        text::print(&parse("%0 = input \"x\" : f32[3]\noutput \"y\" = %0"))
    );
}

#[test]
fn the_header_example_holds() {
    check_rule(
        "fold-transpose-lhs-nn",
        "%0 = input \"a\" : f32[2,3]\n%1 = input \"b\" : f32[2,4]\n%2 = transpose %0 perm=[1,0] : f32[3,2]\n%3 = matmul %2, %1 : f32[3,4]\noutput \"y\" = %3",
        "%0 = input \"a\" : f32[2,3]\n%1 = input \"b\" : f32[2,4]\n%2 = matmul.tn %0, %1 : f32[3,4]\noutput \"y\" = %2",
    );
}

#[test]
#[should_panic(
    expected = "merged a class of type f32[2,3] with a class of type f32[3,2] (a kiln bug in a rewrite rule)"
)]
fn merging_classes_of_different_types_is_a_kiln_bug() {
    // What an unsound rule that changes a shape would do.
    let mut egraph = KilnEGraph::default();
    let a = add_op(
        &mut egraph,
        &Op::Input {
            name: "a".to_string(),
        },
        &[],
        &TensorType::f32([2, 3]),
    );
    let transposed = add_op(
        &mut egraph,
        &Op::Transpose { perm: vec![1, 0] },
        &[a],
        &TensorType::f32([3, 2]),
    );
    egraph.union(a, transposed);
}

#[test]
#[should_panic(
    expected = "merged splats 0.0 and -0.0 of type f32[4] (a kiln bug in a rewrite rule)"
)]
fn merging_positive_and_negative_zero_is_a_kiln_bug() {
    // +0 and -0 compare equal but are different values (1 / x tells them apart), so
    // the analysis never lets one stand for the other.
    let mut egraph = KilnEGraph::default();
    let ty = TensorType::f32([4]);
    let plus = add_op(&mut egraph, &Op::Constant { value: 0.0 }, &[], &ty);
    let minus = add_op(&mut egraph, &Op::Constant { value: -0.0 }, &[], &ty);
    assert_ne!(egraph.find(plus), egraph.find(minus));
    egraph.union(plus, minus);
}

#[test]
fn signed_zeros_stay_apart_through_folding() {
    // 0 * -1 folds to -0 and 0 - 0 to +0: two constants, and x + -0 simplifies where
    // x + +0 does not.
    let before = parse("%0 = input \"x\" : f32[4]\n%1 = const 0.0 : f32[4]\n%2 = const -1.0 : f32[4]\n%3 = mul %1, %2 : f32[4]\n%4 = sub %1, %1 : f32[4]\n%5 = add %0, %3 : f32[4]\n%6 = add %0, %4 : f32[4]\n%7 = div %2, %3 : f32[4]\noutput \"a\" = %5\noutput \"b\" = %6\noutput \"c\" = %7");
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    let expected = parse("%0 = input \"x\" : f32[4]\n%1 = const 0.0 : f32[4]\n%2 = add %0, %1 : f32[4]\n%3 = const inf : f32[4]\noutput \"a\" = %0\noutput \"b\" = %2\noutput \"c\" = %3");
    assert_eq!(text::print(&after), text::print(&expected), "{report}");
}

// ---- an MLP train step -------------------------------------------------------------

/// Forward, backward and SGD of a two-layer MLP with the transposes autodiff makes:
/// `dW = transpose(x) . g` and `dx = g . transpose(W)`.
fn mlp_train_step() -> Graph {
    let mut g = Graph::new("mlp");
    let x = g.input("x", TensorType::f32([8, 5])).unwrap();
    let target = g.input("target", TensorType::f32([8, 3])).unwrap();
    let w1 = g.parameter("w1", TensorType::f32([5, 7])).unwrap();
    let b1 = g.parameter("b1", TensorType::f32([1, 7])).unwrap();
    let w2 = g.parameter("w2", TensorType::f32([7, 3])).unwrap();
    // forward
    let xw = g.matmul(x, w1).unwrap();
    let bias = g.broadcast(b1, [8, 7]).unwrap();
    let z1 = g.add_(xw, bias).unwrap();
    let h = g.relu(z1).unwrap();
    let out = g.matmul(h, w2).unwrap();
    let diff = g.sub(out, target).unwrap();
    let sq = g.mul(diff, diff).unwrap();
    let loss = g.reduce_mean(sq, &[0, 1]).unwrap();
    g.set_output("loss", loss).unwrap();
    // backward
    let scale = g.constant(2.0 / 24.0, TensorType::f32([8, 3])).unwrap();
    let one = g.constant(1.0, TensorType::f32([8, 3])).unwrap();
    let seed = g.mul(one, diff).unwrap();
    let g_out = g.mul(seed, scale).unwrap();
    let h_t = g.transpose(h, &[1, 0]).unwrap();
    let d_w2 = g.matmul(h_t, g_out).unwrap();
    let w2_t = g.transpose(w2, &[1, 0]).unwrap();
    let d_h = g.matmul(g_out, w2_t).unwrap();
    let zero = g.constant(0.0, TensorType::f32([8, 7])).unwrap();
    let positive = g.compare(kiln_ir::CmpOp::Gt, z1, zero).unwrap();
    let d_z1 = g.select(positive, d_h, zero).unwrap();
    let x_t = g.transpose(x, &[1, 0]).unwrap();
    let d_w1 = g.matmul(x_t, d_z1).unwrap();
    let d_b1 = g.reduce_sum(d_z1, &[0]).unwrap();
    // dx, as a network with a layer below would need it, transposed back and forth
    let w1_t = g.transpose(w1, &[1, 0]).unwrap();
    let d_x = g.matmul(d_z1, w1_t).unwrap();
    let d_x_t = g.transpose(d_x, &[1, 0]).unwrap();
    let d_x_back = g.transpose(d_x_t, &[1, 0]).unwrap();
    g.set_output("dx", d_x_back).unwrap();
    // SGD
    for (param, grad) in [(w1, d_w1), (b1, d_b1), (w2, d_w2)] {
        let lr = g.constant_like(0.1, grad).unwrap();
        let step = g.mul(lr, grad).unwrap();
        let new = g.sub(param, step).unwrap();
        g.set_update(param, new).unwrap();
    }
    verify(&g).unwrap();
    g
}

#[test]
fn mlp_train_step_folds_every_transpose() {
    let before = mlp_train_step();
    let (after, report) = egraph::run(&before, &EgraphOptions::default()).unwrap();
    verify(&after).unwrap();
    let printed = text::print(&after);
    assert!(report.saturated, "{report}");
    assert!(!printed.contains("transpose"), "{printed}");
    assert_eq!(printed.matches("matmul.tn").count(), 2, "{printed}");
    assert_eq!(printed.matches("matmul.nt").count(), 2, "{printed}");
    assert!(
        !printed.contains("const 1.0"),
        "the seed * 1 is gone: {printed}"
    );
    assert!(report.cost_after < report.cost_before, "{report}");
    assert_eq!(report.cost_after, graph_cost(&after));
    assert_eq!(
        report.nodes_before - report.nodes_after,
        8,
        "{report}\n{printed}"
    );
}

#[test]
fn autodiff_output_folds_every_transpose() {
    // The real autodiff and optimizer passes on a linear layer with a relu.
    let before = parse("%0 = input \"x\" : f32[4,3]\n%1 = param \"w\" : f32[3,5]\n%2 = param \"v\" : f32[5,2]\n%3 = matmul %0, %1 : f32[4,5]\n%4 = relu %3 : f32[4,5]\n%5 = matmul %4, %2 : f32[4,2]\n%6 = mul %5, %5 : f32[4,2]\n%7 = reduce_sum %6 axes=[0,1] : f32[1,1]\n%8 = reshape %7 : f32[]\noutput \"loss\" = %8");
    let grads = autodiff::run(&before, &autodiff::AutodiffOptions::loss("loss")).unwrap();
    let step = optimizer::run(&grads, &optimizer::Optimizer::sgd(0.1).unwrap()).unwrap();
    assert!(
        text::print(&step).contains("transpose"),
        "autodiff makes transposes"
    );
    let (after, report) = egraph::run(&step, &EgraphOptions::default()).unwrap();
    let printed = text::print(&after);
    assert!(report.saturated, "{report}");
    assert!(!printed.contains("transpose"), "{printed}");
    assert!(report.cost_after < report.cost_before, "{report}");
}
