//! The ulp error of an f32 function against its true value in f64, shared through
//! `#[path]` by exp_log.rs and special_fns.rs.

/// The error of `got` in ulps of `exact` (the f32 ulp at |exact|; 2^-149 in the
/// subnormal range). A result that must round to ±inf or is NaN has to match
/// exactly; a mismatch there is reported as an infinite error.
pub fn ulp_error(got: f32, exact: f64) -> f64 {
    if exact.is_nan() {
        return if got.is_nan() { 0.0 } else { f64::INFINITY };
    }
    let rounded = exact as f32;
    if rounded.is_infinite() || got.is_infinite() || got.is_nan() {
        return if got == rounded { 0.0 } else { f64::INFINITY };
    }
    let magnitude = exact.abs();
    let exponent = if magnitude < f64::from(f32::MIN_POSITIVE) {
        -149
    } else {
        magnitude.log2().floor() as i32 - 23
    };
    (f64::from(got) - exact).abs() / 2f64.powi(exponent)
}

/// The largest ulp error of `f` against `exact` over every `stride`th bit pattern,
/// and the argument where it occurs.
pub fn max_error(f: fn(f32) -> f32, exact: fn(f64) -> f64, stride: usize) -> (f64, f32) {
    let mut worst = (0.0, 0.0);
    for bits in (0..=u32::MAX).step_by(stride) {
        let x = f32::from_bits(bits);
        let error = ulp_error(f(x), exact(f64::from(x)));
        if error > worst.0 {
            worst = (error, x);
        }
    }
    worst
}
