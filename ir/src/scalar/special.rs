//! The f32 special functions beyond `exp` and `log` (expm1, log1p, tanh, sigmoid,
//! softplus, erf, pow) as step-by-step algorithms under the contract of
//! [`exp_f32`] and [`log_f32`](super::log_f32) (the module docs of `scalar`, "exp
//! and log"): only operations that Rust and Cranelift define identically (f32
//! `+ - * /` and `mul_add`, bit casts, `abs` and sign bits as bit operations,
//! wrapping i32 arithmetic, shifts, masks, `i32` to `f32` conversion of small
//! integers, IEEE compares feeding selects; no `min`/`max`, which treat NaN
//! differently, and no branches), so `kiln_backend`'s `cpu::math` emits each one
//! operation for operation, on `f32` and `f32x4` alike, and compiled code equals
//! these functions bit for bit. Constants are Remez (minimax) fits, rounded to f32.
//!
//! ## Error bounds
//!
//! Against the true function (f64 `exp_m1`, `ln_1p`, `tanh`, `powf`, `libm::erf`,
//! careful f64 forms of sigmoid and softplus), in ulps of the exact value (2^-149
//! in the subnormal range), measured on every f32 bit pattern
//! (`ir/tests/special_fns.rs` walks every 1999th):
//!
//! | function | bound | measured maximum |
//! | --- | --- | --- |
//! | expm1 | 1.1 ulp | 1.0575 at 17.091547 |
//! | log1p | 0.9 ulp | 0.8508 at 0.4054828 |
//! | tanh | 1.5 ulp | 1.4984 at 3.812386 |
//! | sigmoid | 0.8 ulp | 0.7702 at -86.20924 |
//! | softplus | 1.7 ulp | 1.6827 at -1.2621197 |
//! | erf | 1.3 ulp | 1.2726 at 0.92318153 |
//! | pow | 1 + 0.2·\|y·log2 x\| ulp | 22.47 at 0.7378304^257.96365 (1 + 0.19·113) |
//!
//! pow was measured on every 16411th positive base and its negative against every
//! 300007th exponent pattern and the integers and halves up to 4, where
//! |y·log2 x| ≤ 127 (|y·ln x| ≤ 88, the finite results and some beyond). Its error
//! grows with |y·log2 x| because an error δ in `y·ln x` is a relative error δ of
//! the result; the extra precision carried through log and exp keeps it small
//! (measured at most 1.4 ulp for |y·log2 x| < 5, as for squares and square roots
//! of moderate numbers, 2.2 ulp below 10), and what remains comes mostly from
//! log's polynomial term for bases near 0.74 and 1.4 with large exponents.
//!
//! ## The algorithms
//!
//! `expm1(x)`: clamp x to [-18, 89] (beyond, the result rounds to -1 or overflows;
//! NaN passes the compares); `k = round(x·log2 e)` and `r = r_hi + r_lo` as in exp,
//! where `r_hi = x − k·LN2_HI` is exact and `r_lo = −k·LN2_LO`; `q = r²·P(r)` with
//! exp's P; then `2^k·(1 + r + q) − 1` as `(2^k − 1) + 2^k·r_hi` summed with its
//! rounding error recovered exactly (Fast2Sum), plus `2^k·(q + r_lo)` in one `fma`,
//! so the cancellation between 2^k and 1 for small k costs nothing. For k > 64 the
//! scale is applied as 2^(k−64) before and 2^64 after the sum (no scale overflows;
//! one rounding). A final select keeps expm1(-0) = -0.
//!
//! `log1p(x)`: `u = 1 + x` with its rounding error `c` recovered exactly (2Sum),
//! then log's steps on u (k and m from the bits, `f = m − 1`,
//! `k·LN2_HI + f + (f²·P(f) + k·LN2_LO)` with log's P and Fast2Sum), adding `c/u`
//! (one division: ln(u + c) = ln u + c/u to far below an ulp, |c/u| ≤ 2^-24) to the
//! small part. u is 0 only at x = -1 and never subnormal. Selects give
//! log1p(-1) = -inf, NaN below -1, log1p(±0) = ±0, log1p(+inf) = +inf.
//!
//! `tanh(x)`: on a = |x|, `a + a³·P(a²)` below 0.625 (P of degree 5), and
//! `e / (e + 2)` with `e = expm1(2a)` from there on (a clamped to 10: tanh rounds
//! to 1 from 9.01); the sign of x is then or-ed in, so tanh(-0) = -0 and
//! tanh(±inf) = ±1.
//!
//! `sigmoid(x)`: `e = exp(-|x|)` carried as a sum of two f32s (the steps of exp with
//! the rounding errors of `1 + r + r²·P(r)` kept by two Fast2Sums, then scaled),
//! the quotient `q = n/d` of `n = 1` (x ≥ 0) or `e` (x < 0) by `d = 1 + e`, and one
//! `fma` that adds the first-order effect of everything q lost: the division's
//! exact remainder `n − q·d`, the low part of e, and the rounding error of d
//! (Fast2Sum), scaled by 1/d (which is q, or 1 − q for x < 0, to the few bits a
//! correction needs). Neither form overflows; sigmoid(-inf) = +0 (then e = 0) and
//! sigmoid(+inf) = 1.
//!
//! `softplus(x)`: `(x > 0 ? x : 0) + log1p(exp(-|x|))`; the compare-and-select
//! `max` gives 0 for a NaN, whose NaN then comes from the log1p term. Far below zero
//! the result is exp(x) (log1p of a tiny e is e), far above it is x.
//!
//! `erf(x)`: `x + x·P(x²)` (P of degree 6, its constant 2/√π − 1) below |x| =
//! 0.921875, which keeps the sign and -0; from there `1 − exp(Q(t))` with
//! `t = |x|` clamped to 4 and Q of degree 6 fitted to ln erfc(t) for absolute
//! error in erfc, then the sign of x or-ed in; erf(±inf) = ±1.
//!
//! `pow(x, y)`: `exp(y·ln|x|)` with extra precision: ln|x| as `hi + lo` (log's steps,
//! the final sum's error kept by Fast2Sum), the product `y·hi` with its exact
//! rounding error from an `fma` plus `y·lo`, and exp of that pair (the low part
//! joins exp's reduced argument; the result carried as two f32s and rounded once
//! before the exact scaling). Then, branch-free (C99 Annex F.10.4.4): y is an
//! integer if |y| ≥ 2^23 or `(|y| + 2^23) − 2^23 == |y|`, odd if moreover
//! |y| < 2^24 and `|y|/2` is not an integer by the same test; an odd y gives the
//! result x's sign bit; a finite x < 0 with a non-integer y gives NaN;
//! pow(x, ±0) = 1 and pow(1, y) = 1 (NaN x or y included) and pow(-1, ±inf) = 1.
//! The rest of the annex follows from ln(±0) = -inf, ln(inf) = inf and exp's
//! saturation: pow(±0, y < 0) = +inf (-inf for odd y from -0), pow(±0, y > 0) =
//! +0 (-0 for odd y from -0), pow(x, ±inf) by |x| against 1, pow(±inf, y) by the
//! sign of y.
//!
//! Each function is built from the others exactly as `cpu::math` composes its
//! emitters: tanh calls expm1, softplus calls [`exp_f32`] and log1p, erf calls
//! [`exp_f32`]; sigmoid and pow use the two-part forms of exp (and pow of log)
//! that this file defines for them.

use super::{
    exp_f32, horner, log_terms, pow2_bits, EXP_MAX, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO, LOG2_E,
    LOG_POLY, ROUNDING_SHIFTER, SQRT_HALF_BITS, TWO_POW_23,
};

/// The sign bit of an f32.
const SIGN_BIT: u32 = 0x8000_0000;

/// [`expm1_f32`] clamps its argument from below to `EXPM1_MIN`: expm1(x) rounds to
/// -1 for every x below -17.33 (e^x < 2^-25), so the clamp changes no result and
/// keeps 2^k a normal number. From above it clamps to [`EXP_MAX`], as `exp` does.
pub const EXPM1_MIN: f32 = -18.0;
/// Above `k = EXPM1_SPLIT_K` (from x = 44.71 on) [`expm1_f32`] applies its scale 2^k in two
/// steps, 2^(k−64) and then 2^64, so that no scale overflows below exp's overflow
/// threshold.
pub const EXPM1_SPLIT_K: f32 = 64.0;
/// [`tanh_f32`] clamps |x| to `TANH_MAX`: tanh(x) rounds to 1 from x = 9.01 on.
pub const TANH_MAX: f32 = 10.0;
/// [`tanh_f32`] uses its polynomial below `TANH_SPLIT` and expm1 from there on.
pub const TANH_SPLIT: f32 = 0.625;
/// P in `tanh(a) ≈ a + a³·P(a²)` on a < [`TANH_SPLIT`], highest degree first.
pub const TANH_POLY: [f32; 6] = [
    f32::from_bits(0x3b16_a9d9),
    f32::from_bits(0xbc08_ce79),
    f32::from_bits(0x3cb2_5916),
    f32::from_bits(0xbd5d_04b0),
    f32::from_bits(0x3e08_8876),
    f32::from_bits(0xbeaa_aaab),
];
/// [`erf_f32`] uses its polynomial below `ERF_SPLIT` and 1 − exp(Q(|x|)) from
/// there on.
pub const ERF_SPLIT: f32 = 0.921_875;
/// [`erf_f32`] clamps |x| to `ERF_MAX`: erf(x) rounds to 1 from x = 3.9192 on, and
/// the tail fit ends here.
pub const ERF_MAX: f32 = 4.0;
/// P in `erf(x) ≈ x + x·P(x²)` on |x| < [`ERF_SPLIT`], highest degree first.
pub const ERF_SMALL_POLY: [f32; 7] = [
    f32::from_bits(0x38af_88a3),
    f32::from_bits(0xba55_74c4),
    f32::from_bits(0x3baa_6d6c),
    f32::from_bits(0xbcdc_083e),
    f32::from_bits(0x3de7_1710),
    f32::from_bits(0xbec0_93a2),
    f32::from_bits(0x3e03_75d4),
];
/// Q in `erfc(t) ≈ exp(Q(t))` on t in [[`ERF_SPLIT`], [`ERF_MAX`]], highest degree
/// first.
pub const ERF_TAIL_POLY: [f32; 7] = [
    f32::from_bits(0x394c_312d),
    f32::from_bits(0xbb46_ad8f),
    f32::from_bits(0x3cb5_b5a5),
    f32::from_bits(0xbdd4_a970),
    f32::from_bits(0xbf23_252b),
    f32::from_bits(0xbf90_55b4),
    f32::from_bits(0xb95c_1feb),
];
/// 2^24: from here on every f32 is an even integer.
const TWO_POW_24: f32 = 16_777_216.0;

/// `x` with the sign bit of `sign` (a bit operation, as Cranelift's `bor`/`band`).
fn with_sign_of(x: f32, sign: f32) -> f32 {
    f32::from_bits(x.to_bits() | (sign.to_bits() & SIGN_BIT))
}

/// `e^x − 1` on f32, accurate near 0 (see the module docs): expm1(±0) = ±0,
/// expm1(-inf) = -1, +inf above ~88.72, NaN to NaN.
pub fn expm1_f32(x: f32) -> f32 {
    let clamped = if x > EXP_MAX { EXP_MAX } else { x };
    let clamped = if clamped < EXPM1_MIN {
        EXPM1_MIN
    } else {
        clamped
    };
    let shifted = clamped.mul_add(LOG2_E, ROUNDING_SHIFTER);
    let k_float = shifted - ROUNDING_SHIFTER;
    // Exact: k·LN2_HI is exact and lies within 0.35 of `clamped`.
    let r_hi = (-k_float).mul_add(LN2_HI, clamped);
    let r_lo = -k_float * LN2_LO;
    let r = r_hi + r_lo;
    let q = (r * r) * horner(&EXP_POLY, r);
    let k = (shifted.to_bits() as i32).wrapping_sub(ROUNDING_SHIFTER.to_bits() as i32);
    // expm1(x) = 2^k·(1 + r + q) − 1 = 2^s·(t·(1 + r + q) − 2^-s) with t = 2^(k−s).
    let split: i32 = if k_float > EXPM1_SPLIT_K { 64 } else { 0 };
    let t = pow2_bits(k.wrapping_sub(split));
    let u = t - pow2_bits(-split);
    // t·r_hi is exact; `a + e` is exactly `u + t·r_hi` (Fast2Sum: |u| ≥ |t·r_hi|
    // or u = 0), so the cancellation between 2^k and 1 costs nothing.
    let t_r_hi = t * r_hi;
    let a = u + t_r_hi;
    let e = t_r_hi - (a - u);
    let small = t.mul_add(q + r_lo, e);
    let y = (a + small) * pow2_bits(split);
    // The sum above turns -0 into +0.
    if x == 0.0 {
        x
    } else {
        y
    }
}

/// `ln(1 + x)` on f32, accurate near 0 (see the module docs): log1p(±0) = ±0,
/// log1p(-1) = -inf, NaN below -1, +inf at +inf, NaN to NaN.
pub fn log1p_f32(x: f32) -> f32 {
    let u = 1.0 + x;
    // 2Sum: `c` is exactly (1 + x) − u, whatever the magnitudes.
    let x_part = u - 1.0;
    let one_part = u - x_part;
    let c = (1.0 - one_part) + (x - x_part);
    // log(u) as in `log_f32` (u is never subnormal: it is 0 or at least 2^-24).
    let offset = (u.to_bits() as i32).wrapping_sub(SQRT_HALF_BITS);
    let k = offset >> 23;
    let m = f32::from_bits((offset & 0x007f_ffff).wrapping_add(SQRT_HALF_BITS) as u32);
    let f = m - 1.0;
    let k_float = k as f32;
    let k_ln2_hi = k_float * LN2_HI;
    let hi = k_ln2_hi + f;
    let hi_error = f - (hi - k_ln2_hi);
    let lo = k_float.mul_add(LN2_LO, hi_error);
    // ln(u + c) = ln(u) + c/u to far below an ulp, since |c/u| ≤ 2^-24.
    let lo = lo + c / u;
    let lo = (f * f).mul_add(horner(&LOG_POLY, f), lo);
    let y = hi + lo;
    let y = if u == 0.0 { f32::NEG_INFINITY } else { y };
    let y = if u < 0.0 { f32::NAN } else { y };
    let y = if x == 0.0 { x } else { y };
    // Only +inf and NaN fail `x < inf`; both are their own log1p.
    if x < f32::INFINITY {
        y
    } else {
        x
    }
}

/// `tanh` on f32 with the sign of x, from |x|: `a + a³·P(a²)` below
/// [`TANH_SPLIT`], `expm1(2a) / (expm1(2a) + 2)` from there on (1 from a = 9.01
/// on); tanh(±0) = ±0, tanh(±inf) = ±1, NaN to NaN.
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let a_squared = a * a;
    let near_zero = (a * a_squared).mul_add(horner(&TANH_POLY, a_squared), a);
    let clamped = if a > TANH_MAX { TANH_MAX } else { a };
    let e = expm1_f32(clamped + clamped);
    let far = e / (e + 2.0);
    let t = if a < TANH_SPLIT { near_zero } else { far };
    with_sign_of(t, x)
}

/// The logistic function `1 / (1 + e^-x)` on f32, without overflow: with
/// `e = exp(-|x|)`, `1 / (1 + e)` for x ≥ 0 and `e / (1 + e)` below, where e and
/// the quotient carry their rounding errors to one correcting `fma` (module docs);
/// sigmoid(-inf) = +0, sigmoid(+inf) = 1, NaN to NaN.
pub fn sigmoid_f32(x: f32) -> f32 {
    let parts = exp_parts(-x.abs(), 0.0);
    let e_hi = parts.hi * parts.scale_half * parts.scale_rest;
    let e_lo = parts.lo * parts.scale_half * parts.scale_rest;
    let d = 1.0 + e_hi;
    let d_error = e_hi - (d - 1.0);
    let negative = x < 0.0;
    let n_hi = if negative { e_hi } else { 1.0 };
    let n_lo = if negative { e_lo } else { 0.0 };
    let q = n_hi / d;
    // The exact remainder of the division, and the first-order effect of the low
    // parts of the numerator and the denominator: n_hi + n_lo over d + d_error + e_lo.
    let remainder = (-q).mul_add(d, n_hi);
    let numerator = (-q).mul_add(d_error + e_lo, remainder + n_lo);
    // 1/d, to the few bits the correction needs: q itself, or 1 − e/(1 + e).
    let reciprocal = if negative { 1.0 - q } else { q };
    numerator.mul_add(reciprocal, q)
}

/// `ln(1 + e^x)` on f32, as `max(x, 0) + log1p(exp(-|x|))` (the max by a compare, so
/// a NaN reaches the sum): softplus(-inf) = +0, softplus(+inf) = +inf, NaN to NaN.
pub fn softplus_f32(x: f32) -> f32 {
    let positive_part = if x > 0.0 { x } else { 0.0 };
    positive_part + log1p_f32(exp_f32(-x.abs()))
}

/// The error function on f32: `x + x·P(x²)` below [`ERF_SPLIT`], `1 − exp(Q(|x|))`
/// with the sign of x from there on (|x| clamped to [`ERF_MAX`]); erf(±0) = ±0,
/// erf(±inf) = ±1, NaN to NaN.
pub fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let near_zero = x.mul_add(horner(&ERF_SMALL_POLY, x * x), x);
    let t = if a > ERF_MAX { ERF_MAX } else { a };
    let tail = with_sign_of(1.0 - exp_f32(horner(&ERF_TAIL_POLY, t)), x);
    if a < ERF_SPLIT {
        near_zero
    } else {
        tail
    }
}

/// `x^y` on f32 as `exp(y·log|x|)` with the sign and special cases of C99 Annex
/// F.10.4.4, all by selects: pow(x, ±0) = 1 and pow(1, y) = 1 even for NaN,
/// pow(-1, ±inf) = 1, a negative base gives the sign by the parity of an integer
/// y and NaN for a finite non-integer y, and zeros and infinities follow from
/// log(0) = -inf and log(inf) = inf. The error grows with |y·log x| (module docs).
pub fn pow_f32(x: f32, y: f32) -> f32 {
    let (log_hi, log_lo) = log_parts(x.abs());
    // y·(log_hi + log_lo) as product + product_lo: the first fma gives the
    // product's rounding error exactly.
    let product = y * log_hi;
    let product_lo = y.mul_add(log_hi, -product);
    let product_lo = y.mul_add(log_lo, product_lo);
    let parts = exp_parts(product, product_lo);
    let magnitude = (parts.hi + parts.lo) * parts.scale_half * parts.scale_rest;
    let y_abs = y.abs();
    // From 2^23 up every f32 is an integer; below, adding and subtracting 2^23
    // rounds to an integer, which is y itself only if y is one.
    let y_integer = (y_abs >= TWO_POW_23) | ((y_abs + TWO_POW_23) - TWO_POW_23 == y_abs);
    let y_half = 0.5 * y_abs;
    let y_odd = y_integer & (y_abs < TWO_POW_24) & ((y_half + TWO_POW_23) - TWO_POW_23 != y_half);
    let z = if y_odd {
        with_sign_of(magnitude, x)
    } else {
        magnitude
    };
    let negative_finite = (x < 0.0) & (x > f32::NEG_INFINITY);
    let z = if negative_finite & !y_integer {
        f32::NAN
    } else {
        z
    };
    let z = if y == 0.0 { 1.0 } else { z };
    let z = if x == 1.0 { 1.0 } else { z };
    if (x == -1.0) & (y_abs == f32::INFINITY) {
        1.0
    } else {
        z
    }
}

/// `exp(x + tail)` for a small `tail` as `(hi + lo)·scale_half·scale_rest`: the
/// steps of [`exp_f32`] with the rounding error of `1 + r + r²·P(r)` kept in `lo`
/// (|lo| ≤ 2^-24·|hi|, hi + lo within about 2^-28 of exp(r)), for the functions
/// whose own roundings would otherwise add to exp's.
struct ExpParts {
    hi: f32,
    lo: f32,
    scale_half: f32,
    scale_rest: f32,
}

/// See [`ExpParts`]. The tail is dropped where x is clamped (it may be NaN there,
/// from an infinite x).
fn exp_parts(x: f32, tail: f32) -> ExpParts {
    let above = x > EXP_MAX;
    let x = if above { EXP_MAX } else { x };
    let tail = if above { 0.0 } else { tail };
    let below = x < EXP_MIN;
    let x = if below { EXP_MIN } else { x };
    let tail = if below { 0.0 } else { tail };
    let shifted = x.mul_add(LOG2_E, ROUNDING_SHIFTER);
    let k_float = shifted - ROUNDING_SHIFTER;
    // Exact: k·LN2_HI is exact and lies within 0.35 of x.
    let r_hi = (-k_float).mul_add(LN2_HI, x);
    let r_lo = (-k_float).mul_add(LN2_LO, tail);
    let r = r_hi + r_lo;
    let small = (r * r).mul_add(horner(&EXP_POLY, r), r_lo);
    // 1 + r_hi + small by two Fast2Sums (1 ≥ |r_hi|, |1 + r_hi| ≥ |small|).
    let one_r = 1.0 + r_hi;
    let one_r_error = r_hi - (one_r - 1.0);
    let hi = one_r + small;
    let lo = (small - (hi - one_r)) + one_r_error;
    let k = (shifted.to_bits() as i32).wrapping_sub(ROUNDING_SHIFTER.to_bits() as i32);
    let k_half = k >> 1;
    ExpParts {
        hi,
        lo,
        scale_half: pow2_bits(k_half),
        scale_rest: pow2_bits(k.wrapping_sub(k_half)),
    }
}

/// `ln(x)` for x ≥ 0 (or NaN) as `hi + lo`: the steps of
/// [`log_f32`](super::log_f32) with the final sum's rounding error kept in `lo`
/// (Fast2Sum: |hi| ≥ |lo| there). Zero, infinity and NaN give -inf, +inf and NaN
/// in `hi` and 0 in `lo`.
fn log_parts(x: f32) -> (f32, f32) {
    let (hi, lo) = log_terms(x);
    let sum = hi + lo;
    let sum_error = lo - (sum - hi);
    let special = if x == 0.0 { f32::NEG_INFINITY } else { x };
    // Only zero, +inf and NaN fail `0 < x < inf`.
    let regular = (x > 0.0) & (x < f32::INFINITY);
    if regular {
        (sum, sum_error)
    } else {
        (special, 0.0)
    }
}
