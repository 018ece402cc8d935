//! The special functions of `scalar` (expm1, log1p, tanh, sigmoid, softplus, erf,
//! pow) against the true functions computed in f64 (std's `exp_m1`, `ln_1p`,
//! `tanh` and `powf`, `libm::erf`, and careful f64 forms of sigmoid and softplus,
//! all far more accurate than an f32 ulp): the ulp bounds stated in
//! `ir/src/scalar/special.rs` on every `STRIDE`th f32 bit pattern (the bounds
//! themselves were measured on every pattern in a release build), pow on a grid of
//! bases and exponents, and every special value exactly.

use kiln_ir::scalar::{
    erf_f32, expm1_f32, log1p_f32, pow_f32, sigmoid_f32, softplus_f32, tanh_f32,
};

/// The bounds documented in `ir/src/scalar/special.rs`.
const EXPM1_MAX_ULP: f64 = 1.1;
const LOG1P_MAX_ULP: f64 = 0.9;
const TANH_MAX_ULP: f64 = 1.5;
const SIGMOID_MAX_ULP: f64 = 0.8;
const SOFTPLUS_MAX_ULP: f64 = 1.7;
const ERF_MAX_ULP: f64 = 1.3;
/// pow's bound is `POW_BASE_ULP + POW_ULP_PER_LOG2 · |y·log2 x|`.
const POW_BASE_ULP: f64 = 1.0;
const POW_ULP_PER_LOG2: f64 = 0.2;

/// A prime stride: every exponent and many mantissa patterns, 2.1 million arguments
/// per function.
const STRIDE: usize = 1999;

#[path = "support/ulp.rs"]
mod ulp;
use ulp::ulp_error;

/// The largest ulp error of `f` against `exact` over every `STRIDE`th bit pattern.
fn max_error(f: fn(f32) -> f32, exact: fn(f64) -> f64) -> (f64, f32) {
    ulp::max_error(f, exact, STRIDE)
}

fn sigmoid_f64(x: f64) -> f64 {
    // e^-|x| never overflows, and neither form cancels.
    let e = (-x.abs()).exp();
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

fn softplus_f64(x: f64) -> f64 {
    let tail = (-x.abs()).exp().ln_1p();
    if x > 0.0 {
        x + tail
    } else {
        tail
    }
}

#[test]
fn expm1_is_within_its_ulp_bound_over_the_whole_f32_range() {
    let (error, at) = max_error(expm1_f32, f64::exp_m1);
    assert!(error <= EXPM1_MAX_ULP, "expm1: {error} ulp at {at:e}");
}

#[test]
fn log1p_is_within_its_ulp_bound_over_the_whole_f32_range() {
    let (error, at) = max_error(log1p_f32, f64::ln_1p);
    assert!(error <= LOG1P_MAX_ULP, "log1p: {error} ulp at {at:e}");
}

#[test]
fn tanh_is_within_its_ulp_bound_over_the_whole_f32_range() {
    let (error, at) = max_error(tanh_f32, f64::tanh);
    assert!(error <= TANH_MAX_ULP, "tanh: {error} ulp at {at:e}");
}

#[test]
fn sigmoid_is_within_its_ulp_bound_over_the_whole_f32_range() {
    let (error, at) = max_error(sigmoid_f32, sigmoid_f64);
    assert!(error <= SIGMOID_MAX_ULP, "sigmoid: {error} ulp at {at:e}");
}

#[test]
fn softplus_is_within_its_ulp_bound_over_the_whole_f32_range() {
    let (error, at) = max_error(softplus_f32, softplus_f64);
    assert!(error <= SOFTPLUS_MAX_ULP, "softplus: {error} ulp at {at:e}");
}

#[test]
fn erf_is_within_its_ulp_bound_over_the_whole_f32_range() {
    let (error, at) = max_error(erf_f32, libm::erf);
    assert!(error <= ERF_MAX_ULP, "erf: {error} ulp at {at:e}");
}

#[test]
fn pow_error_grows_at_most_linearly_with_y_log2_x() {
    // Bases: every 262147th positive pattern (subnormals to f32::MAX) and their
    // negatives; exponents: every 100000007th pattern of either sign plus small
    // integers and halves; kept where |y·log2 x| ≤ 127 (|y·ln x| ≤ 88).
    let mut ys: Vec<f32> = (0..=u32::MAX)
        .step_by(100_000_007)
        .map(f32::from_bits)
        .filter(|y| y.is_finite())
        .collect();
    ys.extend((-8..=8).map(|n| n as f32 * 0.5));
    let mut worst = (0.0, 0.0f32, 0.0f32);
    for x_bits in (1..0x7f80_0000u32).step_by(262_147) {
        for x in [f32::from_bits(x_bits), -f32::from_bits(x_bits)] {
            for &y in &ys {
                let log2_x = f64::from(x).abs().log2();
                let scale = (f64::from(y) * log2_x).abs();
                if scale > 127.0 || (x < 0.0 && y != y.trunc()) {
                    continue;
                }
                let exact = f64::from(x).powf(f64::from(y));
                let error = ulp_error(pow_f32(x, y), exact);
                let allowed = POW_BASE_ULP + POW_ULP_PER_LOG2 * scale;
                let excess = error / allowed;
                if excess > worst.0 {
                    worst = (excess, x, y);
                }
            }
        }
    }
    let (excess, x, y) = worst;
    assert!(
        excess <= 1.0,
        "pow({x:e}, {y:e}) = {:e}: {excess} times the bound",
        pow_f32(x, y)
    );
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Checks `f` on each `(argument, expected)` pair, bit for bit (any NaN equal).
fn check_exact(name: &str, f: fn(f32) -> f32, cases: &[(f32, f32)]) {
    for &(x, want) in cases {
        let got = f(x);
        assert!(same(got, want), "{name}({x:e}) = {got:e}, not {want:e}");
    }
}

const MIN_SUBNORMAL: f32 = f32::from_bits(1);
const MAX_SUBNORMAL: f32 = f32::from_bits(0x007f_ffff);
const NANS: [f32; 4] = [
    f32::NAN,
    f32::from_bits(0xffc0_0000),
    f32::from_bits(0x7f80_0001),
    f32::from_bits(0xffff_ffff),
];

/// NaN in, NaN out, for a function of one argument.
fn check_nans(name: &str, f: fn(f32) -> f32) {
    for x in NANS {
        assert!(f(x).is_nan(), "{name}({:#x}) = {:e}", x.to_bits(), f(x));
    }
}

#[test]
fn expm1_special_values_are_exact() {
    check_exact(
        "expm1",
        expm1_f32,
        &[
            (0.0, 0.0),
            (-0.0, -0.0),
            (MIN_SUBNORMAL, MIN_SUBNORMAL),
            (-MIN_SUBNORMAL, -MIN_SUBNORMAL),
            (MAX_SUBNORMAL, MAX_SUBNORMAL),
            (-MAX_SUBNORMAL, -MAX_SUBNORMAL),
            (1e-30, 1e-30),
            (-1e-30, -1e-30),
            (f32::INFINITY, f32::INFINITY),
            (f32::NEG_INFINITY, -1.0),
            (f32::MAX, f32::INFINITY),
            (-f32::MAX, -1.0),
            (89.0, f32::INFINITY),
            (-18.0, -1.0),
            (-104.0, -1.0),
        ],
    );
    check_nans("expm1", expm1_f32);
    // The largest argument whose expm1 is finite (the same as exp's), and the next.
    let last_finite = f32::from_bits(0x42b1_7217);
    assert_eq!(
        expm1_f32(last_finite),
        f64::from(last_finite).exp_m1() as f32
    );
    assert_eq!(expm1_f32(f32::from_bits(0x42b1_7218)), f32::INFINITY);
}

#[test]
fn log1p_special_values_are_exact() {
    check_exact(
        "log1p",
        log1p_f32,
        &[
            (0.0, 0.0),
            (-0.0, -0.0),
            (MIN_SUBNORMAL, MIN_SUBNORMAL),
            (-MIN_SUBNORMAL, -MIN_SUBNORMAL),
            (MAX_SUBNORMAL, MAX_SUBNORMAL),
            (-MAX_SUBNORMAL, -MAX_SUBNORMAL),
            (1e-30, 1e-30),
            (-1.0, f32::NEG_INFINITY),
            (-1.000_000_1, f32::NAN),
            (-2.0, f32::NAN),
            (-f32::MAX, f32::NAN),
            (f32::NEG_INFINITY, f32::NAN),
            (f32::INFINITY, f32::INFINITY),
            (1.0, std::f32::consts::LN_2),
        ],
    );
    check_nans("log1p", log1p_f32);
    // The largest finite argument: ln(f32::MAX) to within the bound.
    let error = ulp_error(log1p_f32(f32::MAX), f64::from(f32::MAX).ln_1p());
    assert!(error <= LOG1P_MAX_ULP, "log1p(f32::MAX): {error} ulp");
    // Just above -1 the argument 1 + x is exact and tiny.
    let just_above = f32::from_bits((-1.0f32).to_bits() - 1);
    let error = ulp_error(log1p_f32(just_above), f64::from(just_above).ln_1p());
    assert!(error <= LOG1P_MAX_ULP, "log1p({just_above:e}): {error} ulp");
}

#[test]
fn tanh_special_values_are_exact() {
    check_exact(
        "tanh",
        tanh_f32,
        &[
            (0.0, 0.0),
            (-0.0, -0.0),
            (MIN_SUBNORMAL, MIN_SUBNORMAL),
            (-MIN_SUBNORMAL, -MIN_SUBNORMAL),
            (MAX_SUBNORMAL, MAX_SUBNORMAL),
            (-MAX_SUBNORMAL, -MAX_SUBNORMAL),
            (1e-30, 1e-30),
            (-1e-30, -1e-30),
            (f32::INFINITY, 1.0),
            (f32::NEG_INFINITY, -1.0),
            (f32::MAX, 1.0),
            (-f32::MAX, -1.0),
            (9.1, 1.0),
            (-9.1, -1.0),
            (10.0, 1.0),
            (1e10, 1.0),
        ],
    );
    check_nans("tanh", tanh_f32);
}

#[test]
fn sigmoid_special_values_are_exact() {
    check_exact(
        "sigmoid",
        sigmoid_f32,
        &[
            (0.0, 0.5),
            (-0.0, 0.5),
            (MIN_SUBNORMAL, 0.5),
            (-MIN_SUBNORMAL, 0.5),
            (f32::INFINITY, 1.0),
            (f32::NEG_INFINITY, 0.0),
            (f32::MAX, 1.0),
            (-f32::MAX, 0.0),
            (-104.0, 0.0),
            (18.0, 1.0),
        ],
    );
    check_nans("sigmoid", sigmoid_f32);
    // Far below zero sigmoid(x) is e^x, down through the subnormals.
    assert_eq!(sigmoid_f32(-100.0), (-100.0f64).exp() as f32);
    assert_eq!(sigmoid_f32(-103.28), MIN_SUBNORMAL);
}

#[test]
fn softplus_special_values_are_exact() {
    check_exact(
        "softplus",
        softplus_f32,
        &[
            (0.0, std::f32::consts::LN_2),
            (-0.0, std::f32::consts::LN_2),
            (f32::INFINITY, f32::INFINITY),
            (f32::NEG_INFINITY, 0.0),
            (f32::MAX, f32::MAX),
            (-f32::MAX, 0.0),
            (20.0, 20.0),
            (1e10, 1e10),
            (-104.0, 0.0),
        ],
    );
    check_nans("softplus", softplus_f32);
    // Far below zero softplus(x) is e^x, down through the subnormals.
    assert_eq!(softplus_f32(-100.0), (-100.0f64).exp() as f32);
    assert_eq!(softplus_f32(-103.28), MIN_SUBNORMAL);
}

#[test]
fn erf_special_values_are_exact() {
    check_exact(
        "erf",
        erf_f32,
        &[
            (0.0, 0.0),
            (-0.0, -0.0),
            (f32::INFINITY, 1.0),
            (f32::NEG_INFINITY, -1.0),
            (f32::MAX, 1.0),
            (-f32::MAX, -1.0),
            (3.92, 1.0),
            (-3.92, -1.0),
            (4.0, 1.0),
            (100.0, 1.0),
        ],
    );
    check_nans("erf", erf_f32);
    // Subnormal arguments: erf(x) = 2x/√π, rounded once to the subnormal grid.
    for x in [MIN_SUBNORMAL, f32::from_bits(7), MAX_SUBNORMAL, 1e-30] {
        let want = (f64::from(x) * std::f64::consts::FRAC_2_SQRT_PI) as f32;
        assert!(same(erf_f32(x), want), "erf({x:e}) = {:e}", erf_f32(x));
        assert!(
            same(erf_f32(-x), -want),
            "erf({:e}) = {:e}",
            -x,
            erf_f32(-x)
        );
    }
    // The largest argument whose erf is below 1 rounds correctly, and the next one.
    let error = ulp_error(erf_f32(3.919), libm::erf(3.919));
    assert!(error <= ERF_MAX_ULP, "erf(3.919): {error} ulp");
}

#[test]
fn pow_special_values_follow_c99_annex_f() {
    let inf = f32::INFINITY;
    let nan = f32::NAN;
    let cases = [
        // pow(x, ±0) = 1 for every x, NaN included.
        (nan, 0.0, 1.0),
        (nan, -0.0, 1.0),
        (-inf, 0.0, 1.0),
        (0.0, 0.0, 1.0),
        (-3.0, -0.0, 1.0),
        // pow(+1, y) = 1 for every y, NaN included.
        (1.0, nan, 1.0),
        (1.0, inf, 1.0),
        (1.0, -inf, 1.0),
        (1.0, 12.5, 1.0),
        // pow(-1, ±inf) = 1.
        (-1.0, inf, 1.0),
        (-1.0, -inf, 1.0),
        // Otherwise NaN in, NaN out.
        (nan, 1.0, nan),
        (2.0, nan, nan),
        (-1.0, nan, nan),
        // A finite negative base with a finite non-integer exponent.
        (-2.0, 0.5, nan),
        (-2.0, -1.5, nan),
        (-MIN_SUBNORMAL, 0.5, nan),
        (-f32::MAX, 1e-3, nan),
        // ±0 bases.
        (0.0, -3.0, inf),
        (-0.0, -3.0, -inf),
        (0.0, -2.0, inf),
        (-0.0, -2.0, inf),
        (-0.0, -0.5, inf),
        (0.0, -inf, inf),
        (-0.0, -inf, inf),
        (0.0, 3.0, 0.0),
        (-0.0, 3.0, -0.0),
        (-0.0, 2.0, 0.0),
        (-0.0, 0.5, 0.0),
        (-0.0, inf, 0.0),
        // Infinite exponents.
        (0.5, -inf, inf),
        (-0.5, -inf, inf),
        (2.0, -inf, 0.0),
        (-2.0, -inf, 0.0),
        (0.5, inf, 0.0),
        (-0.5, inf, 0.0),
        (2.0, inf, inf),
        (-2.0, inf, inf),
        // Infinite bases.
        (-inf, -3.0, -0.0),
        (-inf, -2.0, 0.0),
        (-inf, -0.5, 0.0),
        (-inf, 3.0, -inf),
        (-inf, 2.0, inf),
        (-inf, 0.5, inf),
        (inf, -1.0, 0.0),
        (inf, -MIN_SUBNORMAL, 0.0),
        (inf, MIN_SUBNORMAL, inf),
        (inf, 2.5, inf),
        (inf, inf, inf),
        (inf, -inf, 0.0),
        // Parity of the exponent: large exponents are even, 2^24 − 1 is odd.
        (-1.0, 16_777_215.0, -1.0),
        (-1.0, 16_777_216.0, 1.0),
        (-1.0, 8_388_609.0, -1.0),
        (-1.0, 8_388_610.0, 1.0),
        (-1.0, 1e30, 1.0),
        (-1.0, -7.0, -1.0),
        (-2.0, 3.0, -8.0),
        (-2.0, -3.0, -0.125),
        (-2.0, 2.0, 4.0),
        // Overflow and underflow.
        (10.0, 40.0, inf),
        (-10.0, 41.0, -inf),
        (10.0, -50.0, 0.0),
        (-10.0, -51.0, -0.0),
    ];
    for (x, y, want) in cases {
        let got = pow_f32(x, y);
        assert!(same(got, want), "pow({x:e}, {y:e}) = {got:e}, not {want:e}");
    }
}
