//! kiln's f32 special functions and random numbers as algorithms over an abstract
//! instruction set, written once and emitted by every code generator: `cpu::math`
//! implements [`Arith`] with Cranelift instructions (on `f32` and `f32x4`), `ptx`
//! with PTX instructions on registers. Each algorithm is the operation-for-operation
//! image of its scalar definition in `kiln_ir::scalar` (`exp_f32`, `log_f32`,
//! `scalar/special.rs`, `scalar/random.rs`), where the algorithms, constants and
//! error bounds are documented; so compiled code on any backend equals the
//! interpreter and the constant folders bit for bit.
//!
//! Each [`Arith`] operation has one IEEE or two's-complement meaning that both
//! instruction sets provide exactly: `+ - * /` and `sqrt` rounded to nearest-even,
//! `fma` with one rounding, IEEE comparisons (false on NaN, except `Ne`), bit casts,
//! wrapping `i32` arithmetic, shifts and masks, and selects. A comparison yields a
//! condition (a Cranelift flag or lane mask, a PTX predicate) that only `select`,
//! `band`, `bor` and `band_not` consume.

use kiln_ir::scalar::{
    ERFINV_CENTRAL, ERFINV_SPLIT, ERFINV_TAIL, ERF_MAX, ERF_SMALL_POLY, ERF_SPLIT, ERF_TAIL_POLY,
    EXPM1_MIN, EXPM1_SPLIT_K, EXP_MAX, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO, LOG2_E, LOG_POLY,
    ONE_BITS, ROUNDING_SHIFTER, SQRT_HALF_BITS, TANH_MAX, TANH_POLY, TANH_SPLIT, THREEFRY_PARITY,
    THREEFRY_ROTATIONS, TWO_POW_23, TWO_POW_23_INT, TWO_POW_MINUS_23,
};
use kiln_ir::{CmpOp, Distribution};

/// The instructions the algorithms are written in. `V` is a value: an f32, an i32
/// or a condition (all lanes alike on a vector backend).
pub trait Arith {
    type V: Copy;

    /// An f32 constant.
    fn float(&mut self, value: f32) -> Self::V;
    /// An i32 constant.
    fn int(&mut self, value: i32) -> Self::V;
    fn fadd(&mut self, a: Self::V, b: Self::V) -> Self::V;
    fn fsub(&mut self, a: Self::V, b: Self::V) -> Self::V;
    fn fmul(&mut self, a: Self::V, b: Self::V) -> Self::V;
    fn fdiv(&mut self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c` with one rounding.
    fn fma(&mut self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Flips the sign bit (NaN payloads kept).
    fn fneg(&mut self, x: Self::V) -> Self::V;
    /// Clears the sign bit.
    fn fabs(&mut self, x: Self::V) -> Self::V;
    fn sqrt(&mut self, x: Self::V) -> Self::V;
    /// An IEEE comparison of two f32 values: a condition.
    fn fcmp(&mut self, op: CmpOp, a: Self::V, b: Self::V) -> Self::V;
    /// `condition ? on_true : on_false`, for f32 or i32 values.
    fn select(&mut self, condition: Self::V, on_true: Self::V, on_false: Self::V) -> Self::V;
    /// Bitwise on i32 values, logical on conditions.
    fn band(&mut self, a: Self::V, b: Self::V) -> Self::V;
    fn bor(&mut self, a: Self::V, b: Self::V) -> Self::V;
    /// `a & !b` on conditions.
    fn band_not(&mut self, a: Self::V, b: Self::V) -> Self::V;
    fn bxor(&mut self, a: Self::V, b: Self::V) -> Self::V;
    /// Wrapping i32 addition and subtraction.
    fn iadd(&mut self, a: Self::V, b: Self::V) -> Self::V;
    fn isub(&mut self, a: Self::V, b: Self::V) -> Self::V;
    /// Arithmetic shift right of an i32 by a constant below 32.
    fn sshr(&mut self, x: Self::V, bits: u32) -> Self::V;
    /// Logical shifts of an i32 by a constant below 32.
    fn ishl(&mut self, x: Self::V, bits: u32) -> Self::V;
    fn ushr(&mut self, x: Self::V, bits: u32) -> Self::V;
    /// The bits of an f32 as an i32, and back.
    fn bits_of(&mut self, x: Self::V) -> Self::V;
    fn float_of_bits(&mut self, x: Self::V) -> Self::V;
    /// An i32 converted to the nearest f32.
    fn int_to_float(&mut self, x: Self::V) -> Self::V;
}

/// The sign bit of an f32.
const SIGN_BIT: i32 = i32::MIN;

/// `exp(x)`, as `kiln_ir::scalar::exp_f32`.
pub fn exp<A: Arith>(m: &mut A, x: A::V) -> A::V {
    let exp_max = m.float(EXP_MAX);
    let above = m.fcmp(CmpOp::Gt, x, exp_max);
    let x = m.select(above, exp_max, x);
    let exp_min = m.float(EXP_MIN);
    let below = m.fcmp(CmpOp::Lt, x, exp_min);
    let x = m.select(below, exp_min, x);

    let log2_e = m.float(LOG2_E);
    let shifter = m.float(ROUNDING_SHIFTER);
    let shifted = m.fma(x, log2_e, shifter);
    let k_float = m.fsub(shifted, shifter);
    let minus_k = m.fneg(k_float);
    let ln2_hi = m.float(LN2_HI);
    let r = m.fma(minus_k, ln2_hi, x);
    let ln2_lo = m.float(LN2_LO);
    let r = m.fma(minus_k, ln2_lo, r);
    let poly = horner(m, &EXP_POLY, r);
    let r_squared = m.fmul(r, r);
    let p = m.fma(r_squared, poly, r);
    let one = m.float(1.0);
    let p = m.fadd(p, one);

    let k = exponent_of(m, shifted);
    let (scale_half, scale_rest) = split_scale(m, k);
    let y = m.fmul(p, scale_half);
    m.fmul(y, scale_rest)
}

/// `ln(x)`, as `kiln_ir::scalar::log_f32`.
pub fn log<A: Arith>(m: &mut A, x: A::V) -> A::V {
    let (hi, lo) = log_terms(m, x);
    let y = m.fadd(hi, lo);

    let zero = m.float(0.0);
    let is_zero = m.fcmp(CmpOp::Eq, x, zero);
    let minus_inf = m.float(f32::NEG_INFINITY);
    let y = m.select(is_zero, minus_inf, y);
    let negative = m.fcmp(CmpOp::Lt, x, zero);
    let nan = m.float(f32::NAN);
    let y = m.select(negative, nan, y);
    let inf = m.float(f32::INFINITY);
    let finite = m.fcmp(CmpOp::Lt, x, inf);
    m.select(finite, y, x)
}

/// The integer `k` that `shifted = x·log2 e + 1.5·2^23` rounded: the difference of
/// the two values' bits (both lie in one binade, so it is exact).
fn exponent_of<A: Arith>(m: &mut A, shifted: A::V) -> A::V {
    let shifted_bits = m.bits_of(shifted);
    let shifter_bits = m.int(ROUNDING_SHIFTER.to_bits() as i32);
    m.isub(shifted_bits, shifter_bits)
}

/// `2^(k>>1)` and `2^(k - (k>>1))`, whose product is `2^k` even where `2^k` itself
/// is not a finite f32.
fn split_scale<A: Arith>(m: &mut A, k: A::V) -> (A::V, A::V) {
    let k_half = m.sshr(k, 1);
    let k_rest = m.isub(k, k_half);
    (pow2(m, k_half), pow2(m, k_rest))
}

/// `2^e` from the exponent bits `(e + 127) << 23`.
fn pow2<A: Arith>(m: &mut A, e: A::V) -> A::V {
    let bias = m.int(127);
    let biased = m.iadd(e, bias);
    let bits = m.ishl(biased, 23);
    m.float_of_bits(bits)
}

/// `poly[0]·x^n + ... + poly[n]`, one `fma` per coefficient as in `scalar`.
fn horner<A: Arith>(m: &mut A, poly: &[f32], x: A::V) -> A::V {
    let mut acc = m.float(poly[0]);
    for &coefficient in &poly[1..] {
        let coefficient = m.float(coefficient);
        acc = m.fma(acc, x, coefficient);
    }
    acc
}

/// `e^x − 1`, as `kiln_ir::scalar::expm1_f32`.
pub fn expm1<A: Arith>(m: &mut A, x: A::V) -> A::V {
    let exp_max = m.float(EXP_MAX);
    let above = m.fcmp(CmpOp::Gt, x, exp_max);
    let clamped = m.select(above, exp_max, x);
    let expm1_min = m.float(EXPM1_MIN);
    let below = m.fcmp(CmpOp::Lt, clamped, expm1_min);
    let clamped = m.select(below, expm1_min, clamped);

    let log2_e = m.float(LOG2_E);
    let shifter = m.float(ROUNDING_SHIFTER);
    let shifted = m.fma(clamped, log2_e, shifter);
    let k_float = m.fsub(shifted, shifter);
    let minus_k = m.fneg(k_float);
    let ln2_hi = m.float(LN2_HI);
    let r_hi = m.fma(minus_k, ln2_hi, clamped);
    let ln2_lo = m.float(LN2_LO);
    let r_lo = m.fmul(minus_k, ln2_lo);
    let r = m.fadd(r_hi, r_lo);
    let r_squared = m.fmul(r, r);
    let poly = horner(m, &EXP_POLY, r);
    let q = m.fmul(r_squared, poly);

    let k = exponent_of(m, shifted);
    let split_k = m.float(EXPM1_SPLIT_K);
    let large = m.fcmp(CmpOp::Gt, k_float, split_k);
    let sixty_four = m.int(64);
    let zero = m.int(0);
    let split = m.select(large, sixty_four, zero);
    let k_rest = m.isub(k, split);
    let t = pow2(m, k_rest);
    let minus_split = m.isub(zero, split);
    let unit = pow2(m, minus_split);
    let u = m.fsub(t, unit);
    let t_r_hi = m.fmul(t, r_hi);
    let a = m.fadd(u, t_r_hi);
    let a_rest = m.fsub(a, u);
    let e = m.fsub(t_r_hi, a_rest);
    let q_and_r_lo = m.fadd(q, r_lo);
    let small = m.fma(t, q_and_r_lo, e);
    let sum = m.fadd(a, small);
    let scale = pow2(m, split);
    let y = m.fmul(sum, scale);

    let float_zero = m.float(0.0);
    let is_zero = m.fcmp(CmpOp::Eq, x, float_zero);
    m.select(is_zero, x, y)
}

/// `ln(1 + x)`, as `kiln_ir::scalar::log1p_f32`.
pub fn log1p<A: Arith>(m: &mut A, x: A::V) -> A::V {
    let one = m.float(1.0);
    let u = m.fadd(one, x);
    let x_part = m.fsub(u, one);
    let one_part = m.fsub(u, x_part);
    let one_error = m.fsub(one, one_part);
    let x_error = m.fsub(x, x_part);
    let c = m.fadd(one_error, x_error);

    let u_bits = m.bits_of(u);
    let sqrt_half_bits = m.int(SQRT_HALF_BITS);
    let offset = m.isub(u_bits, sqrt_half_bits);
    let k = m.sshr(offset, 23);
    let mantissa_mask = m.int(0x007f_ffff);
    let mantissa = m.band(offset, mantissa_mask);
    let m_bits = m.iadd(mantissa, sqrt_half_bits);
    let mant = m.float_of_bits(m_bits);
    let f = m.fsub(mant, one);
    let k_float = m.int_to_float(k);

    let ln2_hi = m.float(LN2_HI);
    let k_ln2_hi = m.fmul(k_float, ln2_hi);
    let hi = m.fadd(k_ln2_hi, f);
    let rounded_part = m.fsub(hi, k_ln2_hi);
    let hi_error = m.fsub(f, rounded_part);
    let ln2_lo = m.float(LN2_LO);
    let lo = m.fma(k_float, ln2_lo, hi_error);
    let correction = m.fdiv(c, u);
    let lo = m.fadd(lo, correction);
    let poly = horner(m, &LOG_POLY, f);
    let f_squared = m.fmul(f, f);
    let lo = m.fma(f_squared, poly, lo);
    let y = m.fadd(hi, lo);

    let zero = m.float(0.0);
    let u_is_zero = m.fcmp(CmpOp::Eq, u, zero);
    let minus_inf = m.float(f32::NEG_INFINITY);
    let y = m.select(u_is_zero, minus_inf, y);
    let u_negative = m.fcmp(CmpOp::Lt, u, zero);
    let nan = m.float(f32::NAN);
    let y = m.select(u_negative, nan, y);
    let x_is_zero = m.fcmp(CmpOp::Eq, x, zero);
    let y = m.select(x_is_zero, x, y);
    let inf = m.float(f32::INFINITY);
    let finite = m.fcmp(CmpOp::Lt, x, inf);
    m.select(finite, y, x)
}

/// `tanh(x)`, as `kiln_ir::scalar::tanh_f32`.
pub fn tanh<A: Arith>(m: &mut A, x: A::V) -> A::V {
    let a = m.fabs(x);
    let a_squared = m.fmul(a, a);
    let a_cubed = m.fmul(a, a_squared);
    let poly = horner(m, &TANH_POLY, a_squared);
    let near_zero = m.fma(a_cubed, poly, a);
    let tanh_max = m.float(TANH_MAX);
    let above = m.fcmp(CmpOp::Gt, a, tanh_max);
    let clamped = m.select(above, tanh_max, a);
    let two_a = m.fadd(clamped, clamped);
    let e = expm1(m, two_a);
    let two = m.float(2.0);
    let denominator = m.fadd(e, two);
    let far = m.fdiv(e, denominator);
    let tanh_split = m.float(TANH_SPLIT);
    let small = m.fcmp(CmpOp::Lt, a, tanh_split);
    let t = m.select(small, near_zero, far);
    with_sign_of(m, t, x)
}

/// The logistic function, as `kiln_ir::scalar::sigmoid_f32`.
pub fn sigmoid<A: Arith>(m: &mut A, x: A::V) -> A::V {
    let a = m.fabs(x);
    let minus_a = m.fneg(a);
    let zero = m.float(0.0);
    let parts = exp_parts(m, minus_a, zero);
    let e_hi = m.fmul(parts.hi, parts.scale_half);
    let e_hi = m.fmul(e_hi, parts.scale_rest);
    let e_lo = m.fmul(parts.lo, parts.scale_half);
    let e_lo = m.fmul(e_lo, parts.scale_rest);
    let one = m.float(1.0);
    let d = m.fadd(one, e_hi);
    let d_rest = m.fsub(d, one);
    let d_error = m.fsub(e_hi, d_rest);
    let negative = m.fcmp(CmpOp::Lt, x, zero);
    let n_hi = m.select(negative, e_hi, one);
    let n_lo = m.select(negative, e_lo, zero);
    let q = m.fdiv(n_hi, d);
    let minus_q = m.fneg(q);
    let remainder = m.fma(minus_q, d, n_hi);
    let low_parts = m.fadd(d_error, e_lo);
    let remainder = m.fadd(remainder, n_lo);
    let numerator = m.fma(minus_q, low_parts, remainder);
    let one_minus_q = m.fsub(one, q);
    let reciprocal = m.select(negative, one_minus_q, q);
    m.fma(numerator, reciprocal, q)
}

/// `ln(1 + e^x)`, as `kiln_ir::scalar::softplus_f32`.
pub fn softplus<A: Arith>(m: &mut A, x: A::V) -> A::V {
    let zero = m.float(0.0);
    let positive = m.fcmp(CmpOp::Gt, x, zero);
    let positive_part = m.select(positive, x, zero);
    let a = m.fabs(x);
    let minus_a = m.fneg(a);
    let e = exp(m, minus_a);
    let tail = log1p(m, e);
    m.fadd(positive_part, tail)
}

/// `erf(x)`, as `kiln_ir::scalar::erf_f32`.
pub fn erf<A: Arith>(m: &mut A, x: A::V) -> A::V {
    let a = m.fabs(x);
    let x_squared = m.fmul(x, x);
    let poly = horner(m, &ERF_SMALL_POLY, x_squared);
    let near_zero = m.fma(x, poly, x);
    let erf_max = m.float(ERF_MAX);
    let above = m.fcmp(CmpOp::Gt, a, erf_max);
    let t = m.select(above, erf_max, a);
    let q = horner(m, &ERF_TAIL_POLY, t);
    let erfc = exp(m, q);
    let one = m.float(1.0);
    let tail = m.fsub(one, erfc);
    let tail = with_sign_of(m, tail, x);
    let erf_split = m.float(ERF_SPLIT);
    let small = m.fcmp(CmpOp::Lt, a, erf_split);
    m.select(small, near_zero, tail)
}

/// `x^y`, as `kiln_ir::scalar::pow_f32`.
pub fn pow<A: Arith>(m: &mut A, x: A::V, y: A::V) -> A::V {
    let x_abs = m.fabs(x);
    let (log_hi, log_lo) = log_parts(m, x_abs);
    let product = m.fmul(y, log_hi);
    let minus_product = m.fneg(product);
    let product_lo = m.fma(y, log_hi, minus_product);
    let product_lo = m.fma(y, log_lo, product_lo);
    let parts = exp_parts(m, product, product_lo);
    let magnitude = m.fadd(parts.hi, parts.lo);
    let magnitude = m.fmul(magnitude, parts.scale_half);
    let magnitude = m.fmul(magnitude, parts.scale_rest);

    let y_abs = m.fabs(y);
    let two_pow_23 = m.float(8_388_608.0);
    let two_pow_24 = m.float(16_777_216.0);
    let large = m.fcmp(CmpOp::Ge, y_abs, two_pow_23);
    let rounded = m.fadd(y_abs, two_pow_23);
    let rounded = m.fsub(rounded, two_pow_23);
    let whole = m.fcmp(CmpOp::Eq, rounded, y_abs);
    let y_integer = m.bor(large, whole);
    let half = m.float(0.5);
    let y_half = m.fmul(half, y_abs);
    let half_rounded = m.fadd(y_half, two_pow_23);
    let half_rounded = m.fsub(half_rounded, two_pow_23);
    let half_fraction = m.fcmp(CmpOp::Ne, half_rounded, y_half);
    let below_2_24 = m.fcmp(CmpOp::Lt, y_abs, two_pow_24);
    let y_odd = m.band(y_integer, below_2_24);
    let y_odd = m.band(y_odd, half_fraction);
    let signed = with_sign_of(m, magnitude, x);
    let z = m.select(y_odd, signed, magnitude);

    let zero = m.float(0.0);
    let negative = m.fcmp(CmpOp::Lt, x, zero);
    let minus_inf = m.float(f32::NEG_INFINITY);
    let above_minus_inf = m.fcmp(CmpOp::Gt, x, minus_inf);
    let negative_finite = m.band(negative, above_minus_inf);
    let no_real_power = m.band_not(negative_finite, y_integer);
    let nan = m.float(f32::NAN);
    let z = m.select(no_real_power, nan, z);
    let one = m.float(1.0);
    let y_is_zero = m.fcmp(CmpOp::Eq, y, zero);
    let z = m.select(y_is_zero, one, z);
    let x_is_one = m.fcmp(CmpOp::Eq, x, one);
    let z = m.select(x_is_one, one, z);
    let minus_one = m.float(-1.0);
    let x_is_minus_one = m.fcmp(CmpOp::Eq, x, minus_one);
    let inf = m.float(f32::INFINITY);
    let y_infinite = m.fcmp(CmpOp::Eq, y_abs, inf);
    let unit_power = m.band(x_is_minus_one, y_infinite);
    m.select(unit_power, one, z)
}

/// `kiln_ir::scalar::ExpParts` as values.
struct ExpParts<V> {
    hi: V,
    lo: V,
    scale_half: V,
    scale_rest: V,
}

/// `kiln_ir::scalar::exp_parts(x, tail)`.
fn exp_parts<A: Arith>(m: &mut A, x: A::V, tail: A::V) -> ExpParts<A::V> {
    let exp_max = m.float(EXP_MAX);
    let zero = m.float(0.0);
    let above = m.fcmp(CmpOp::Gt, x, exp_max);
    let x = m.select(above, exp_max, x);
    let tail = m.select(above, zero, tail);
    let exp_min = m.float(EXP_MIN);
    let below = m.fcmp(CmpOp::Lt, x, exp_min);
    let x = m.select(below, exp_min, x);
    let tail = m.select(below, zero, tail);

    let log2_e = m.float(LOG2_E);
    let shifter = m.float(ROUNDING_SHIFTER);
    let shifted = m.fma(x, log2_e, shifter);
    let k_float = m.fsub(shifted, shifter);
    let minus_k = m.fneg(k_float);
    let ln2_hi = m.float(LN2_HI);
    let r_hi = m.fma(minus_k, ln2_hi, x);
    let ln2_lo = m.float(LN2_LO);
    let r_lo = m.fma(minus_k, ln2_lo, tail);
    let r = m.fadd(r_hi, r_lo);
    let r_squared = m.fmul(r, r);
    let poly = horner(m, &EXP_POLY, r);
    let small = m.fma(r_squared, poly, r_lo);
    let one = m.float(1.0);
    let one_r = m.fadd(one, r_hi);
    let one_r_rest = m.fsub(one_r, one);
    let one_r_error = m.fsub(r_hi, one_r_rest);
    let hi = m.fadd(one_r, small);
    let hi_rest = m.fsub(hi, one_r);
    let small_error = m.fsub(small, hi_rest);
    let lo = m.fadd(small_error, one_r_error);

    let k = exponent_of(m, shifted);
    let (scale_half, scale_rest) = split_scale(m, k);
    ExpParts {
        hi,
        lo,
        scale_half,
        scale_rest,
    }
}

/// `ln(x) ≈ hi + lo` before the final sum, as `kiln_ir::scalar`'s `log_terms`:
/// [`log`] rounds the sum, `log_parts` keeps its rounding error too.
fn log_terms<A: Arith>(m: &mut A, x: A::V) -> (A::V, A::V) {
    let min_positive = m.float(f32::MIN_POSITIVE);
    let subnormal = m.fcmp(CmpOp::Lt, x, min_positive);
    let two_pow_23 = m.float(TWO_POW_23);
    let scaled_up = m.fmul(x, two_pow_23);
    let scaled = m.select(subnormal, scaled_up, x);
    let minus_23 = m.int(-23);
    let int_zero = m.int(0);
    let exponent_adjust = m.select(subnormal, minus_23, int_zero);

    let scaled_bits = m.bits_of(scaled);
    let sqrt_half_bits = m.int(SQRT_HALF_BITS);
    let offset = m.isub(scaled_bits, sqrt_half_bits);
    let k = m.sshr(offset, 23);
    let k = m.iadd(k, exponent_adjust);
    let mantissa_mask = m.int(0x007f_ffff);
    let mantissa = m.band(offset, mantissa_mask);
    let m_bits = m.iadd(mantissa, sqrt_half_bits);
    let mant = m.float_of_bits(m_bits);
    let one = m.float(1.0);
    let f = m.fsub(mant, one);
    let k_float = m.int_to_float(k);

    let ln2_hi = m.float(LN2_HI);
    let k_ln2_hi = m.fmul(k_float, ln2_hi);
    let hi = m.fadd(k_ln2_hi, f);
    let rounded_part = m.fsub(hi, k_ln2_hi);
    let hi_error = m.fsub(f, rounded_part);
    let ln2_lo = m.float(LN2_LO);
    let lo = m.fma(k_float, ln2_lo, hi_error);
    let poly = horner(m, &LOG_POLY, f);
    let f_squared = m.fmul(f, f);
    let lo = m.fma(f_squared, poly, lo);
    (hi, lo)
}

/// `kiln_ir::scalar::log_parts(x)`, as `(hi, lo)`.
fn log_parts<A: Arith>(m: &mut A, x: A::V) -> (A::V, A::V) {
    let (hi, lo) = log_terms(m, x);
    let sum = m.fadd(hi, lo);
    let sum_rest = m.fsub(sum, hi);
    let sum_error = m.fsub(lo, sum_rest);

    let zero = m.float(0.0);
    let is_zero = m.fcmp(CmpOp::Eq, x, zero);
    let minus_inf = m.float(f32::NEG_INFINITY);
    let special = m.select(is_zero, minus_inf, x);
    let positive = m.fcmp(CmpOp::Gt, x, zero);
    let inf = m.float(f32::INFINITY);
    let finite = m.fcmp(CmpOp::Lt, x, inf);
    let regular = m.band(positive, finite);
    let hi = m.select(regular, sum, special);
    let lo = m.select(regular, sum_error, zero);
    (hi, lo)
}

/// `x` with the sign bit of `sign` set when that one has it: `x | (sign & SIGN)` on
/// the bits, as `scalar`'s `with_sign_of`.
fn with_sign_of<A: Arith>(m: &mut A, x: A::V, sign: A::V) -> A::V {
    let x_bits = m.bits_of(x);
    let sign_bits = m.bits_of(sign);
    let sign_bit = m.int(SIGN_BIT);
    let sign_only = m.band(sign_bits, sign_bit);
    let bits = m.bor(x_bits, sign_only);
    m.float_of_bits(bits)
}

// The counter-based random numbers of `kiln_ir::scalar` (`scalar/random.rs`):
// Threefry-2x32-20 on i32 values (wrapping adds, xors, and rotations as two shifts
// and an or), then the uniform and normal transforms as in `uniform_from_bits` and
// `normal_from_bits`.

/// `random.<dist>(key0, key1, counter)` on i32 operands, as
/// `kiln_ir::Distribution::sample`: an f32 sample.
pub fn random<A: Arith>(m: &mut A, dist: Distribution, key: [A::V; 2], counter: A::V) -> A::V {
    let bits = threefry(m, key, counter);
    match dist {
        Distribution::Uniform => uniform(m, bits),
        Distribution::Normal => normal(m, bits),
    }
}

/// The first word of Threefry-2x32-20 of the counter `(counter, 0)`, as
/// `kiln_ir::scalar::threefry2x32`.
fn threefry<A: Arith>(m: &mut A, key: [A::V; 2], counter: A::V) -> A::V {
    let parity = m.int(THREEFRY_PARITY as i32);
    let mixed = m.bxor(key[0], key[1]);
    let schedule = [key[0], key[1], m.bxor(mixed, parity)];
    let mut x0 = m.iadd(counter, schedule[0]);
    // The counter's second word is 0, so it starts as the key word itself.
    let mut x1 = schedule[1];
    for group in 0..5u32 {
        for &rotation in &THREEFRY_ROTATIONS[group as usize % 2] {
            x0 = m.iadd(x0, x1);
            let left = m.ishl(x1, rotation);
            let right = m.ushr(x1, 32 - rotation);
            let rotated = m.bor(left, right);
            x1 = m.bxor(rotated, x0);
        }
        let injection = group as usize + 1;
        x0 = m.iadd(x0, schedule[injection % 3]);
        x1 = m.iadd(x1, schedule[(injection + 1) % 3]);
        let count = m.int(group as i32 + 1);
        x1 = m.iadd(x1, count);
    }
    x0
}

/// As `kiln_ir::scalar::uniform_from_bits`.
fn uniform<A: Arith>(m: &mut A, bits: A::V) -> A::V {
    let mantissa = m.ushr(bits, 9);
    let one_bits = m.int(ONE_BITS as i32);
    let in_one_two = m.bor(mantissa, one_bits);
    let in_one_two = m.float_of_bits(in_one_two);
    let one = m.float(1.0);
    m.fsub(in_one_two, one)
}

/// As `kiln_ir::scalar::normal_from_bits`.
fn normal<A: Arith>(m: &mut A, bits: A::V) -> A::V {
    let mantissa = m.ushr(bits, 9);
    let doubled = m.ishl(mantissa, 1);
    let one = m.int(1);
    let odd = m.bor(doubled, one);
    let centre = m.int(TWO_POW_23_INT);
    let odd = m.isub(odd, centre);
    let odd = m.int_to_float(odd);
    let scale = m.float(TWO_POW_MINUS_23);
    let v = m.fmul(odd, scale);
    let inverse = erfinv(m, v);
    let sqrt_2 = m.float(std::f32::consts::SQRT_2);
    m.fmul(sqrt_2, inverse)
}

/// As `kiln_ir::scalar::erfinv_f32`.
fn erfinv<A: Arith>(m: &mut A, x: A::V) -> A::V {
    let one = m.float(1.0);
    let below = m.fsub(one, x);
    let above = m.fadd(one, x);
    let product = m.fmul(below, above);
    let log = log(m, product);
    let w = m.fneg(log);
    let centre = m.float(2.5);
    let central_at = m.fsub(w, centre);
    let central = horner(m, &ERFINV_CENTRAL, central_at);
    let root = m.sqrt(w);
    let three = m.float(3.0);
    let tail_at = m.fsub(root, three);
    let tail = horner(m, &ERFINV_TAIL, tail_at);
    let split = m.float(ERFINV_SPLIT);
    let is_central = m.fcmp(CmpOp::Lt, w, split);
    let p = m.select(is_central, central, tail);
    m.fmul(p, x)
}
