//! `scalar::exp_f32` and `scalar::log_f32` against the true functions (f64 `exp` and
//! `ln`, far more accurate than an f32 ulp): the ulp bounds stated in `scalar.rs` on
//! every 499th f32 bit pattern (all signs, subnormals, infinities and NaNs among
//! them; the bounds themselves were measured on every pattern, which takes minutes
//! in a release build), and every special value exactly.

use kiln_ir::scalar::{exp_f32, log_f32};

/// The bounds documented in `ir/src/scalar.rs` ("exp and log").
const EXP_MAX_ULP: f64 = 0.99;
const LOG_MAX_ULP: f64 = 0.85;

/// A prime stride, so the walk visits every exponent and many mantissa patterns
/// (8.6 million arguments per function, about 2 s in a debug build).
const STRIDE: usize = 499;

#[path = "support/ulp.rs"]
mod ulp;
use ulp::ulp_error;

/// The largest ulp error of `f` against `exact` over every `STRIDE`th bit pattern.
fn max_error(f: fn(f32) -> f32, exact: fn(f64) -> f64) -> (f64, f32) {
    ulp::max_error(f, exact, STRIDE)
}

#[test]
fn exp_is_within_its_ulp_bound_over_the_whole_f32_range() {
    let (error, at) = max_error(exp_f32, f64::exp);
    assert!(error <= EXP_MAX_ULP, "exp: {error} ulp at {at:e}");
}

#[test]
fn log_is_within_its_ulp_bound_over_the_whole_f32_range() {
    let (error, at) = max_error(log_f32, f64::ln);
    assert!(error <= LOG_MAX_ULP, "log: {error} ulp at {at:e}");
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn exp_special_values_are_exact() {
    let min_subnormal = f32::from_bits(1);
    let cases = [
        (0.0, 1.0),
        (-0.0, 1.0),
        (f32::INFINITY, f32::INFINITY),
        (f32::NEG_INFINITY, 0.0),
        (f32::NAN, f32::NAN),
        (-f32::NAN, f32::NAN),
        (f32::from_bits(0x7f80_0001), f32::NAN),
        (f32::from_bits(0xffff_ffff), f32::NAN),
        (89.0, f32::INFINITY),
        (88.8, f32::INFINITY),
        (f32::MAX, f32::INFINITY),
        (-f32::MAX, 0.0),
        (-104.0, 0.0),
        (-200.0, 0.0),
        (min_subnormal, 1.0),
        (-min_subnormal, 1.0),
        (1e-8, 1.0),
    ];
    for (x, want) in cases {
        assert!(same(exp_f32(x), want), "exp({x:e}) = {:e}", exp_f32(x));
    }
    // The largest argument whose exp is finite, and the next one.
    let last_finite = f32::from_bits(0x42b1_7217);
    assert_eq!(exp_f32(last_finite), f64::from(last_finite).exp() as f32);
    assert_eq!(exp_f32(f32::from_bits(0x42b1_7218)), f32::INFINITY);
    // Gradual underflow: exp(ln 2^-149) is the smallest subnormal, and each value in
    // between rounds once to the subnormal grid.
    assert_eq!(exp_f32(-103.28), min_subnormal);
    assert_eq!(exp_f32(-100.0), f64::exp(-100.0) as f32);
    assert!(exp_f32(-90.0) > 0.0 && exp_f32(-90.0) < f32::MIN_POSITIVE);
}

#[test]
fn exp_is_one_near_zero_and_monotone_near_the_thresholds() {
    // Arguments too small to matter give exactly 1 (every 1009th pattern below 2^-25).
    for bits in (0..0x3300_0000u32).step_by(1009) {
        let x = f32::from_bits(bits);
        assert_eq!(exp_f32(x), 1.0, "exp({x:e})");
        assert_eq!(exp_f32(-x), 1.0, "exp(-{x:e})");
    }
    // Around overflow and underflow the results never decrease.
    for (from, to) in [(88.0f32, 89.5f32), (-104.5, -86.0)] {
        let mut previous = exp_f32(from);
        let mut x = from;
        while x < to {
            x = f32::from_bits(x.to_bits().wrapping_add(if x > 0.0 { 1 } else { u32::MAX }));
            let y = exp_f32(x);
            assert!(y >= previous, "exp({x:e}) = {y:e} < {previous:e}");
            previous = y;
        }
    }
}

#[test]
fn log_special_values_are_exact() {
    let cases = [
        (0.0, f32::NEG_INFINITY),
        (-0.0, f32::NEG_INFINITY),
        (1.0, 0.0),
        (f32::INFINITY, f32::INFINITY),
        (f32::NEG_INFINITY, f32::NAN),
        (-1.0, f32::NAN),
        (-f32::from_bits(1), f32::NAN),
        (-f32::MAX, f32::NAN),
        (f32::NAN, f32::NAN),
        (-f32::NAN, f32::NAN),
        (f32::from_bits(0x7f80_0001), f32::NAN),
    ];
    for (x, want) in cases {
        assert!(same(log_f32(x), want), "log({x:e}) = {:e}", log_f32(x));
    }
    // log(1) is +0, not -0.
    assert_eq!(log_f32(1.0).to_bits(), 0);
    // Subnormal arguments are scaled by 2^23 first, so they are as accurate as the
    // rest: the smallest one is -149 ln 2.
    let smallest = log_f32(f32::from_bits(1));
    assert!(ulp_error(smallest, -149.0 * std::f64::consts::LN_2) <= LOG_MAX_ULP);
    for bits in (1..0x0080_0000u32).step_by(7) {
        let x = f32::from_bits(bits);
        let error = ulp_error(log_f32(x), f64::from(x).ln());
        assert!(error <= LOG_MAX_ULP, "log({x:e}): {error} ulp");
    }
}

#[test]
fn log_is_exact_at_powers_of_two_near_one_and_monotone() {
    assert_eq!(log_f32(2.0), std::f32::consts::LN_2);
    assert_eq!(log_f32(0.5), -std::f32::consts::LN_2);
    let mut previous = log_f32(f32::from_bits(1));
    for bits in (2..0x7f80_0000u32).step_by(4099) {
        let y = log_f32(f32::from_bits(bits));
        assert!(y >= previous, "log is not monotone at {bits:#x}");
        previous = y;
    }
}
