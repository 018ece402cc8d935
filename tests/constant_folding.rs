//! Regression tests for issue 5, point 1: an optimisation never changes a result.
//! Each graph folds to a constant somewhere (in the e-graph's analysis, or in
//! lowering's folder when the pipeline is skipped), and compiled code must give what
//! the interpreter's f32 mode gives, which is what the unfolded code computes: f32
//! rounding of every constant and result, i32 wrapping, Rust `as` casts. The old
//! e-graph folder computed in f64 and gave `x + 1`, `x`, 89.8 and 1 below.

use kiln::passes::pipeline::{PipelineOptions, Step};
use kiln_ir::{evaluate, scalar, text, Feeds, Graph, Precision, Tensor};

fn parse(body: &str) -> Graph {
    let src = format!("graph t {{\n{body}\n}}\n");
    text::parse(&src).unwrap_or_else(|err| panic!("{err}\n{src}"))
}

/// Runs `graph` on `feeds` compiled through `steps` and returns output `y`, after
/// checking that every output equals the interpreter's f32 result bit for bit.
fn compiled_y(graph: &Graph, feeds: &Feeds, steps: &[Step]) -> Vec<f64> {
    let mut exe = kiln::compile::compile_with(graph, steps, &PipelineOptions::default()).unwrap();
    let (outputs, _) = exe.run_feeds(feeds).unwrap();
    let expected = evaluate(graph, feeds, Precision::F32).unwrap();
    for (name, want) in &expected.outputs {
        let got = &outputs[name];
        let same = got
            .data()
            .iter()
            .zip(want.data())
            .all(|(a, e)| scalar::same(*a, *e));
        assert!(same, "{steps:?}: {name} = {got}, interpreter {want}");
    }
    outputs["y"].data().to_vec()
}

/// The results with the whole inference pipeline (`kiln::compile`) and with lowering's
/// folder alone; they must agree.
fn both_ways(graph: &Graph, feeds: &Feeds) -> Vec<f64> {
    let mut exe = kiln::compile(graph).unwrap();
    let (outputs, _) = exe.run_feeds(feeds).unwrap();
    let optimised = outputs["y"].data().to_vec();
    let plain = compiled_y(graph, feeds, &[]);
    let folded_by_egraph = compiled_y(graph, feeds, &[Step::Egraph, Step::Dce]);
    for (a, b) in optimised
        .iter()
        .zip(&plain)
        .chain(optimised.iter().zip(&folded_by_egraph))
    {
        assert!(
            scalar::same(*a, *b),
            "{optimised:?} vs {plain:?} vs {folded_by_egraph:?}"
        );
    }
    optimised
}

fn x_feeds(values: &[f32]) -> Feeds {
    let x = Tensor::f32([values.len()], values).unwrap();
    [("x".to_string(), x)].into_iter().collect()
}

#[test]
fn a_difference_of_constants_that_round_together_is_zero() {
    // 16777217 is not an f32: both constants read as 16777216, c1 - c2 is +0 and y
    // is x + 0, which keeps x (and turns -0 into +0). The f64 folder gave x + 1.
    let graph = parse("%0 = input \"x\" : f32[3]\n%1 = const 16777217.0 : f32[3]\n%2 = const 16777216.0 : f32[3]\n%3 = sub %1, %2 : f32[3]\n%4 = add %0, %3 : f32[3]\noutput \"y\" = %4");
    let y = both_ways(&graph, &x_feeds(&[5.0, -0.0, 1.5]));
    assert_eq!(y, [5.0, 0.0, 1.5]);
    assert!(y[1].is_sign_positive());
}

#[test]
fn constants_beyond_f32_overflow_before_folding() {
    // 1e39 reads as +inf, so 1e39 - 1e39 is NaN and so is x + NaN (the f64 folder
    // gave x + 0 = x).
    let graph = parse("%0 = input \"x\" : f32[2]\n%1 = const 1e39 : f32[2]\n%2 = sub %1, %1 : f32[2]\n%3 = add %0, %2 : f32[2]\noutput \"y\" = %3");
    let y = both_ways(&graph, &x_feeds(&[1.0, -2.0]));
    assert!(y.iter().all(|v| v.is_nan()), "{y:?}");
}

#[test]
fn log_of_an_out_of_range_constant_is_taken_in_f32() {
    // log(1e39) is log(inf) = inf in f32 (the f64 folder gave 89.8), and 1e-50 reads
    // as +0, so its log is -inf (not -115.1).
    let graph = parse("%0 = input \"x\" : f32[2]\n%1 = const 1e39 : f32[2]\n%2 = log %1 : f32[2]\n%3 = const 1e-50 : f32[2]\n%4 = log %3 : f32[2]\n%5 = add %2, %0 : f32[2]\n%6 = mul %4, %0 : f32[2]\noutput \"y\" = %5\noutput \"z\" = %6");
    let feeds = x_feeds(&[1.0, 2.0]);
    let y = both_ways(&graph, &feeds);
    assert_eq!(y, [f64::INFINITY; 2]);
    let mut exe = kiln::compile(&graph).unwrap();
    let (outputs, _) = exe.run_feeds(&feeds).unwrap();
    assert_eq!(outputs["z"].data(), [f64::NEG_INFINITY; 2]);
}

#[test]
fn a_cast_of_a_folded_value_sees_the_f32_value() {
    // (16777217 - 16777216) in f32 is 0, so the cast gives 0 (the f64 folder gave 1);
    // 3e9 * 1 saturates at i32::MAX; NaN casts to 0.
    let graph = parse("%0 = input \"x\" : i32[3]\n%1 = const 16777217.0 : f32[3]\n%2 = const 16777216.0 : f32[3]\n%3 = sub %1, %2 : f32[3]\n%4 = cast %3 : i32[3]\n%5 = add %0, %4 : i32[3]\n%6 = const 3e9 : f32[3]\n%7 = const 1.0 : f32[3]\n%8 = mul %6, %7 : f32[3]\n%9 = cast %8 : i32[3]\n%10 = const nan : f32[3]\n%11 = cast %10 : i32[3]\n%12 = add %9, %11 : i32[3]\noutput \"y\" = %5\noutput \"big\" = %12");
    let x = Tensor::i32([3], &[7, -1, 0]).unwrap();
    let feeds: Feeds = [("x".to_string(), x)].into_iter().collect();
    assert_eq!(both_ways(&graph, &feeds), [7.0, -1.0, 0.0]);
    let mut exe = kiln::compile(&graph).unwrap();
    let (outputs, _) = exe.run_feeds(&feeds).unwrap();
    assert_eq!(outputs["big"].data(), [f64::from(i32::MAX); 3]);
}

#[test]
fn folded_integer_arithmetic_wraps_and_signed_zeros_survive() {
    // i32::MAX + 1 wraps; max(-0, +0) is +0 and -0 * 1 stays -0, folded or not.
    let graph = parse("%0 = input \"x\" : f32[2]\n%1 = const -0.0 : f32[2]\n%2 = const 0.0 : f32[2]\n%3 = max %1, %2 : f32[2]\n%4 = max %2, %1 : f32[2]\n%5 = const 1.0 : f32[2]\n%6 = mul %1, %5 : f32[2]\n%7 = add %3, %4 : f32[2]\n%8 = mul %0, %7 : f32[2]\n%9 = add %8, %6 : f32[2]\n%10 = const 2147483647.0 : i32[2]\n%11 = const 1.0 : i32[2]\n%12 = add %10, %11 : i32[2]\noutput \"y\" = %9\noutput \"wrap\" = %12\noutput \"negzero\" = %6");
    let feeds = x_feeds(&[-1.0, 2.0]);
    // -1 * (+0 + +0) is -0, and -0 + -0 is -0; 2 * +0 + -0 is +0.
    let y = both_ways(&graph, &feeds);
    assert_eq!(
        y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        [(-0.0f64).to_bits(), 0]
    );
    let mut exe = kiln::compile(&graph).unwrap();
    let (outputs, _) = exe.run_feeds(&feeds).unwrap();
    assert_eq!(outputs["wrap"].data(), [f64::from(i32::MIN); 2]);
    assert!(outputs["negzero"]
        .data()
        .iter()
        .all(|v| v.is_sign_negative()));
}
