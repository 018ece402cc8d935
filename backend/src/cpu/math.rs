//! `exp` and `log` on f32 as inline Cranelift IR, on `f32` and on `f32x4` alike: the
//! algorithms of `kiln_ir::scalar::exp_f32` and `log_f32` (documented there, with
//! their error bounds), emitted operation for operation with the same constants, so
//! compiled code equals the interpreter and the constant folders bit for bit.
//!
//! Each Rust operation there has one Cranelift counterpart with the same IEEE or
//! two's-complement meaning: `+ - *` are `fadd`/`fsub`/`fmul`, `mul_add` is `fma`
//! (one `vfmadd` on an FMA host), `as f32` on an i32 is `fcvt_from_sint`, `to_bits`
//! and `from_bits` are `bitcast`, wrapping integer arithmetic is `iadd`/`isub`,
//! `>>` on i32 is `sshr`, and an `if` on a float comparison is `fcmp` and a select.
//! Constants are emitted at their use: Cranelift's optimising mid-end hoists them out
//! of loops, and there are few (about a dozen per call).
//!
//! The special functions of `kiln_ir::scalar` (expm1, log1p, tanh, sigmoid,
//! softplus, erf, pow) follow at the end, emitted the same way; `a / b` is `fdiv`,
//! `abs` is `fabs` (both clear the sign bit alone), and `&`, `|` and `!` on
//! comparison results are `band`, `bor` and `band_not` on flags or lane masks.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, Endianness, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::scalar::{
    EXP_MAX, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO, LOG2_E, LOG_POLY, ROUNDING_SHIFTER, SQRT_HALF_BITS,
    TWO_POW_23,
};
// The special functions built on exp and log (appended below `Lanes`).
use kiln_ir::scalar::{
    ERF_MAX, ERF_SMALL_POLY, ERF_SPLIT, ERF_TAIL_POLY, EXPM1_MIN, EXPM1_SPLIT_K, TANH_MAX,
    TANH_POLY, TANH_SPLIT,
};
// The random numbers (at the end of the file).
use kiln_ir::scalar::{
    ERFINV_CENTRAL, ERFINV_SPLIT, ERFINV_TAIL, ONE_BITS, THREEFRY_PARITY, THREEFRY_ROTATIONS,
    TWO_POW_23_INT, TWO_POW_MINUS_23,
};
use kiln_ir::Distribution;

/// `exp(x)` for an `f32` or `f32x4` value `x`, as `kiln_ir::scalar::exp_f32`.
pub fn emit_exp(builder: &mut FunctionBuilder, x: Value) -> Value {
    let mut m = Lanes::new(builder, x);
    let exp_max = m.float(EXP_MAX);
    let above = m.b.ins().fcmp(FloatCC::GreaterThan, x, exp_max);
    let x = m.select(above, exp_max, x);
    let exp_min = m.float(EXP_MIN);
    let below = m.b.ins().fcmp(FloatCC::LessThan, x, exp_min);
    let x = m.select(below, exp_min, x);

    let log2_e = m.float(LOG2_E);
    let shifter = m.float(ROUNDING_SHIFTER);
    let shifted = m.b.ins().fma(x, log2_e, shifter);
    let k_float = m.b.ins().fsub(shifted, shifter);
    let minus_k = m.b.ins().fneg(k_float);
    let ln2_hi = m.float(LN2_HI);
    let r = m.b.ins().fma(minus_k, ln2_hi, x);
    let ln2_lo = m.float(LN2_LO);
    let r = m.b.ins().fma(minus_k, ln2_lo, r);
    let poly = m.horner(&EXP_POLY, r);
    let r_squared = m.b.ins().fmul(r, r);
    let p = m.b.ins().fma(r_squared, poly, r);
    let one = m.float(1.0);
    let p = m.b.ins().fadd(p, one);

    let shifted_bits = m.bits_of(shifted);
    let shifter_bits = m.int(ROUNDING_SHIFTER.to_bits() as i32);
    let k = m.b.ins().isub(shifted_bits, shifter_bits);
    let one_bit = m.b.ins().iconst(types::I32, 1);
    let k_half = m.b.ins().sshr(k, one_bit);
    let k_rest = m.b.ins().isub(k, k_half);
    let scale_half = m.pow2(k_half);
    let scale_rest = m.pow2(k_rest);
    let y = m.b.ins().fmul(p, scale_half);
    m.b.ins().fmul(y, scale_rest)
}

/// `ln(x)` for an `f32` or `f32x4` value `x`, as `kiln_ir::scalar::log_f32`.
pub fn emit_log(builder: &mut FunctionBuilder, x: Value) -> Value {
    let mut m = Lanes::new(builder, x);
    let (hi, lo) = m.log_terms(x);
    let y = m.b.ins().fadd(hi, lo);

    let zero = m.float(0.0);
    let is_zero = m.b.ins().fcmp(FloatCC::Equal, x, zero);
    let minus_inf = m.float(f32::NEG_INFINITY);
    let y = m.select(is_zero, minus_inf, y);
    let negative = m.b.ins().fcmp(FloatCC::LessThan, x, zero);
    let nan = m.float(f32::NAN);
    let y = m.select(negative, nan, y);
    let inf = m.float(f32::INFINITY);
    let finite = m.b.ins().fcmp(FloatCC::LessThan, x, inf);
    m.select(finite, y, x)
}

/// Emits scalar or four-lane operations, after the type of the argument.
struct Lanes<'a, 'f> {
    b: &'a mut FunctionBuilder<'f>,
    /// `f32` or `f32x4`.
    float_type: Type,
    /// `i32` or `i32x4`, the same lanes as integers.
    int_type: Type,
}

impl<'a, 'f> Lanes<'a, 'f> {
    fn new(b: &'a mut FunctionBuilder<'f>, x: Value) -> Self {
        let float_type = b.func.dfg.value_type(x);
        assert!(
            float_type == types::F32 || float_type == types::F32X4,
            "exp and log are emitted for f32 and f32x4, not {float_type}"
        );
        let int_type = float_type.as_int();
        Lanes {
            b,
            float_type,
            int_type,
        }
    }

    fn is_vector(&self) -> bool {
        self.float_type.is_vector()
    }

    fn float(&mut self, value: f32) -> Value {
        let scalar = self.b.ins().f32const(value);
        if self.is_vector() {
            self.b.ins().splat(self.float_type, scalar)
        } else {
            scalar
        }
    }

    fn int(&mut self, value: i32) -> Value {
        let scalar = self.b.ins().iconst(types::I32, i64::from(value as u32));
        if self.is_vector() {
            self.b.ins().splat(self.int_type, scalar)
        } else {
            scalar
        }
    }

    fn bits_of(&mut self, x: Value) -> Value {
        self.b.ins().bitcast(self.int_type, lane_flags(), x)
    }

    fn float_of_bits(&mut self, x: Value) -> Value {
        self.b.ins().bitcast(self.float_type, lane_flags(), x)
    }

    /// `2^e` from the exponent bits `(e + 127) << 23`, lane by lane.
    fn pow2(&mut self, e: Value) -> Value {
        let bias = self.int(127);
        let biased = self.b.ins().iadd(e, bias);
        let mantissa_bits = self.b.ins().iconst(types::I32, 23);
        let bits = self.b.ins().ishl(biased, mantissa_bits);
        self.float_of_bits(bits)
    }

    /// `poly[0]·x^n + ... + poly[n]`, one `fma` per coefficient as in `scalar`.
    fn horner(&mut self, poly: &[f32], x: Value) -> Value {
        let mut acc = self.float(poly[0]);
        for &coefficient in &poly[1..] {
            let coefficient = self.float(coefficient);
            acc = self.b.ins().fma(acc, x, coefficient);
        }
        acc
    }

    /// `condition ? on_true : on_false` for a comparison result: a scalar flag, or a
    /// lane mask (all ones or all zeros per lane) that `bitselect` applies bitwise.
    fn select(&mut self, condition: Value, on_true: Value, on_false: Value) -> Value {
        if !self.is_vector() {
            return self.b.ins().select(condition, on_true, on_false);
        }
        let ty = self.b.func.dfg.value_type(on_true);
        let mask = if self.b.func.dfg.value_type(condition) == ty {
            condition
        } else {
            self.b.ins().bitcast(ty, lane_flags(), condition)
        };
        self.b.ins().bitselect(mask, on_true, on_false)
    }
}

/// Lane-preserving reinterpretation between float and integer vectors.
fn lane_flags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

// The special functions of `kiln_ir::scalar` (`scalar/special.rs`, where the
// algorithms and their error bounds are documented), emitted operation for
// operation like exp and log above. Each composes the emitters it needs
// (`emit_tanh` calls `emit_expm1`, ...) exactly where the scalar function calls the
// scalar one.

/// The sign bit of an f32 lane.
const SIGN_BIT: i32 = i32::MIN;

/// `e^x − 1` for an `f32` or `f32x4` value `x`, as `kiln_ir::scalar::expm1_f32`.
pub fn emit_expm1(builder: &mut FunctionBuilder, x: Value) -> Value {
    let mut m = Lanes::new(builder, x);
    let exp_max = m.float(EXP_MAX);
    let above = m.b.ins().fcmp(FloatCC::GreaterThan, x, exp_max);
    let clamped = m.select(above, exp_max, x);
    let expm1_min = m.float(EXPM1_MIN);
    let below = m.b.ins().fcmp(FloatCC::LessThan, clamped, expm1_min);
    let clamped = m.select(below, expm1_min, clamped);

    let log2_e = m.float(LOG2_E);
    let shifter = m.float(ROUNDING_SHIFTER);
    let shifted = m.b.ins().fma(clamped, log2_e, shifter);
    let k_float = m.b.ins().fsub(shifted, shifter);
    let minus_k = m.b.ins().fneg(k_float);
    let ln2_hi = m.float(LN2_HI);
    let r_hi = m.b.ins().fma(minus_k, ln2_hi, clamped);
    let ln2_lo = m.float(LN2_LO);
    let r_lo = m.b.ins().fmul(minus_k, ln2_lo);
    let r = m.b.ins().fadd(r_hi, r_lo);
    let r_squared = m.b.ins().fmul(r, r);
    let poly = m.horner(&EXP_POLY, r);
    let q = m.b.ins().fmul(r_squared, poly);

    let shifted_bits = m.bits_of(shifted);
    let shifter_bits = m.int(ROUNDING_SHIFTER.to_bits() as i32);
    let k = m.b.ins().isub(shifted_bits, shifter_bits);
    let split_k = m.float(EXPM1_SPLIT_K);
    let large = m.b.ins().fcmp(FloatCC::GreaterThan, k_float, split_k);
    let sixty_four = m.int(64);
    let zero = m.int(0);
    let split = m.select(large, sixty_four, zero);
    let k_rest = m.b.ins().isub(k, split);
    let t = m.pow2(k_rest);
    let minus_split = m.b.ins().isub(zero, split);
    let unit = m.pow2(minus_split);
    let u = m.b.ins().fsub(t, unit);
    let t_r_hi = m.b.ins().fmul(t, r_hi);
    let a = m.b.ins().fadd(u, t_r_hi);
    let a_rest = m.b.ins().fsub(a, u);
    let e = m.b.ins().fsub(t_r_hi, a_rest);
    let q_and_r_lo = m.b.ins().fadd(q, r_lo);
    let small = m.b.ins().fma(t, q_and_r_lo, e);
    let sum = m.b.ins().fadd(a, small);
    let scale = m.pow2(split);
    let y = m.b.ins().fmul(sum, scale);

    let float_zero = m.float(0.0);
    let is_zero = m.b.ins().fcmp(FloatCC::Equal, x, float_zero);
    m.select(is_zero, x, y)
}

/// `ln(1 + x)` for an `f32` or `f32x4` value `x`, as `kiln_ir::scalar::log1p_f32`.
pub fn emit_log1p(builder: &mut FunctionBuilder, x: Value) -> Value {
    let mut m = Lanes::new(builder, x);
    let one = m.float(1.0);
    let u = m.b.ins().fadd(one, x);
    let x_part = m.b.ins().fsub(u, one);
    let one_part = m.b.ins().fsub(u, x_part);
    let one_error = m.b.ins().fsub(one, one_part);
    let x_error = m.b.ins().fsub(x, x_part);
    let c = m.b.ins().fadd(one_error, x_error);

    let u_bits = m.bits_of(u);
    let sqrt_half_bits = m.int(SQRT_HALF_BITS);
    let offset = m.b.ins().isub(u_bits, sqrt_half_bits);
    let mantissa_shift = m.b.ins().iconst(types::I32, 23);
    let k = m.b.ins().sshr(offset, mantissa_shift);
    let mantissa_mask = m.int(0x007f_ffff);
    let mantissa = m.b.ins().band(offset, mantissa_mask);
    let m_bits = m.b.ins().iadd(mantissa, sqrt_half_bits);
    let mant = m.float_of_bits(m_bits);
    let f = m.b.ins().fsub(mant, one);
    let k_float = m.b.ins().fcvt_from_sint(m.float_type, k);

    let ln2_hi = m.float(LN2_HI);
    let k_ln2_hi = m.b.ins().fmul(k_float, ln2_hi);
    let hi = m.b.ins().fadd(k_ln2_hi, f);
    let rounded_part = m.b.ins().fsub(hi, k_ln2_hi);
    let hi_error = m.b.ins().fsub(f, rounded_part);
    let ln2_lo = m.float(LN2_LO);
    let lo = m.b.ins().fma(k_float, ln2_lo, hi_error);
    let correction = m.b.ins().fdiv(c, u);
    let lo = m.b.ins().fadd(lo, correction);
    let poly = m.horner(&LOG_POLY, f);
    let f_squared = m.b.ins().fmul(f, f);
    let lo = m.b.ins().fma(f_squared, poly, lo);
    let y = m.b.ins().fadd(hi, lo);

    let zero = m.float(0.0);
    let u_is_zero = m.b.ins().fcmp(FloatCC::Equal, u, zero);
    let minus_inf = m.float(f32::NEG_INFINITY);
    let y = m.select(u_is_zero, minus_inf, y);
    let u_negative = m.b.ins().fcmp(FloatCC::LessThan, u, zero);
    let nan = m.float(f32::NAN);
    let y = m.select(u_negative, nan, y);
    let x_is_zero = m.b.ins().fcmp(FloatCC::Equal, x, zero);
    let y = m.select(x_is_zero, x, y);
    let inf = m.float(f32::INFINITY);
    let finite = m.b.ins().fcmp(FloatCC::LessThan, x, inf);
    m.select(finite, y, x)
}

/// `tanh(x)` for an `f32` or `f32x4` value `x`, as `kiln_ir::scalar::tanh_f32`.
pub fn emit_tanh(builder: &mut FunctionBuilder, x: Value) -> Value {
    let mut m = Lanes::new(builder, x);
    let a = m.b.ins().fabs(x);
    let a_squared = m.b.ins().fmul(a, a);
    let a_cubed = m.b.ins().fmul(a, a_squared);
    let poly = m.horner(&TANH_POLY, a_squared);
    let near_zero = m.b.ins().fma(a_cubed, poly, a);
    let tanh_max = m.float(TANH_MAX);
    let above = m.b.ins().fcmp(FloatCC::GreaterThan, a, tanh_max);
    let clamped = m.select(above, tanh_max, a);
    let two_a = m.b.ins().fadd(clamped, clamped);
    let e = emit_expm1(m.b, two_a);
    let two = m.float(2.0);
    let denominator = m.b.ins().fadd(e, two);
    let far = m.b.ins().fdiv(e, denominator);
    let tanh_split = m.float(TANH_SPLIT);
    let small = m.b.ins().fcmp(FloatCC::LessThan, a, tanh_split);
    let t = m.select(small, near_zero, far);
    m.with_sign_of(t, x)
}

/// The logistic function of an `f32` or `f32x4` value `x`, as
/// `kiln_ir::scalar::sigmoid_f32`.
pub fn emit_sigmoid(builder: &mut FunctionBuilder, x: Value) -> Value {
    let mut m = Lanes::new(builder, x);
    let a = m.b.ins().fabs(x);
    let minus_a = m.b.ins().fneg(a);
    let zero = m.float(0.0);
    let parts = m.exp_parts(minus_a, zero);
    let e_hi = m.b.ins().fmul(parts.hi, parts.scale_half);
    let e_hi = m.b.ins().fmul(e_hi, parts.scale_rest);
    let e_lo = m.b.ins().fmul(parts.lo, parts.scale_half);
    let e_lo = m.b.ins().fmul(e_lo, parts.scale_rest);
    let one = m.float(1.0);
    let d = m.b.ins().fadd(one, e_hi);
    let d_rest = m.b.ins().fsub(d, one);
    let d_error = m.b.ins().fsub(e_hi, d_rest);
    let negative = m.b.ins().fcmp(FloatCC::LessThan, x, zero);
    let n_hi = m.select(negative, e_hi, one);
    let n_lo = m.select(negative, e_lo, zero);
    let q = m.b.ins().fdiv(n_hi, d);
    let minus_q = m.b.ins().fneg(q);
    let remainder = m.b.ins().fma(minus_q, d, n_hi);
    let low_parts = m.b.ins().fadd(d_error, e_lo);
    let remainder = m.b.ins().fadd(remainder, n_lo);
    let numerator = m.b.ins().fma(minus_q, low_parts, remainder);
    let one_minus_q = m.b.ins().fsub(one, q);
    let reciprocal = m.select(negative, one_minus_q, q);
    m.b.ins().fma(numerator, reciprocal, q)
}

/// `ln(1 + e^x)` for an `f32` or `f32x4` value `x`, as
/// `kiln_ir::scalar::softplus_f32`.
pub fn emit_softplus(builder: &mut FunctionBuilder, x: Value) -> Value {
    let mut m = Lanes::new(builder, x);
    let zero = m.float(0.0);
    let positive = m.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
    let positive_part = m.select(positive, x, zero);
    let a = m.b.ins().fabs(x);
    let minus_a = m.b.ins().fneg(a);
    let e = emit_exp(m.b, minus_a);
    let tail = emit_log1p(m.b, e);
    m.b.ins().fadd(positive_part, tail)
}

/// `erf(x)` for an `f32` or `f32x4` value `x`, as `kiln_ir::scalar::erf_f32`.
pub fn emit_erf(builder: &mut FunctionBuilder, x: Value) -> Value {
    let mut m = Lanes::new(builder, x);
    let a = m.b.ins().fabs(x);
    let x_squared = m.b.ins().fmul(x, x);
    let poly = m.horner(&ERF_SMALL_POLY, x_squared);
    let near_zero = m.b.ins().fma(x, poly, x);
    let erf_max = m.float(ERF_MAX);
    let above = m.b.ins().fcmp(FloatCC::GreaterThan, a, erf_max);
    let t = m.select(above, erf_max, a);
    let q = m.horner(&ERF_TAIL_POLY, t);
    let erfc = emit_exp(m.b, q);
    let one = m.float(1.0);
    let tail = m.b.ins().fsub(one, erfc);
    let tail = m.with_sign_of(tail, x);
    let erf_split = m.float(ERF_SPLIT);
    let small = m.b.ins().fcmp(FloatCC::LessThan, a, erf_split);
    m.select(small, near_zero, tail)
}

/// `x^y` for `f32` or `f32x4` values `x` and `y` (the same type), as
/// `kiln_ir::scalar::pow_f32`.
pub fn emit_pow(builder: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    let mut m = Lanes::new(builder, x);
    let x_abs = m.b.ins().fabs(x);
    let (log_hi, log_lo) = m.log_parts(x_abs);
    let product = m.b.ins().fmul(y, log_hi);
    let minus_product = m.b.ins().fneg(product);
    let product_lo = m.b.ins().fma(y, log_hi, minus_product);
    let product_lo = m.b.ins().fma(y, log_lo, product_lo);
    let parts = m.exp_parts(product, product_lo);
    let magnitude = m.b.ins().fadd(parts.hi, parts.lo);
    let magnitude = m.b.ins().fmul(magnitude, parts.scale_half);
    let magnitude = m.b.ins().fmul(magnitude, parts.scale_rest);

    let y_abs = m.b.ins().fabs(y);
    let two_pow_23 = m.float(8_388_608.0);
    let two_pow_24 = m.float(16_777_216.0);
    let large =
        m.b.ins()
            .fcmp(FloatCC::GreaterThanOrEqual, y_abs, two_pow_23);
    let rounded = m.b.ins().fadd(y_abs, two_pow_23);
    let rounded = m.b.ins().fsub(rounded, two_pow_23);
    let whole = m.b.ins().fcmp(FloatCC::Equal, rounded, y_abs);
    let y_integer = m.b.ins().bor(large, whole);
    let half = m.float(0.5);
    let y_half = m.b.ins().fmul(half, y_abs);
    let half_rounded = m.b.ins().fadd(y_half, two_pow_23);
    let half_rounded = m.b.ins().fsub(half_rounded, two_pow_23);
    let half_fraction = m.b.ins().fcmp(FloatCC::NotEqual, half_rounded, y_half);
    let below_2_24 = m.b.ins().fcmp(FloatCC::LessThan, y_abs, two_pow_24);
    let y_odd = m.b.ins().band(y_integer, below_2_24);
    let y_odd = m.b.ins().band(y_odd, half_fraction);
    let signed = m.with_sign_of(magnitude, x);
    let z = m.select(y_odd, signed, magnitude);

    let zero = m.float(0.0);
    let negative = m.b.ins().fcmp(FloatCC::LessThan, x, zero);
    let minus_inf = m.float(f32::NEG_INFINITY);
    let above_minus_inf = m.b.ins().fcmp(FloatCC::GreaterThan, x, minus_inf);
    let negative_finite = m.b.ins().band(negative, above_minus_inf);
    let no_real_power = m.b.ins().band_not(negative_finite, y_integer);
    let nan = m.float(f32::NAN);
    let z = m.select(no_real_power, nan, z);
    let one = m.float(1.0);
    let y_is_zero = m.b.ins().fcmp(FloatCC::Equal, y, zero);
    let z = m.select(y_is_zero, one, z);
    let x_is_one = m.b.ins().fcmp(FloatCC::Equal, x, one);
    let z = m.select(x_is_one, one, z);
    let minus_one = m.float(-1.0);
    let x_is_minus_one = m.b.ins().fcmp(FloatCC::Equal, x, minus_one);
    let inf = m.float(f32::INFINITY);
    let y_infinite = m.b.ins().fcmp(FloatCC::Equal, y_abs, inf);
    let unit_power = m.b.ins().band(x_is_minus_one, y_infinite);
    m.select(unit_power, one, z)
}

/// `kiln_ir::scalar::ExpParts` as emitted values.
struct ExpParts {
    hi: Value,
    lo: Value,
    scale_half: Value,
    scale_rest: Value,
}

impl Lanes<'_, '_> {
    /// `kiln_ir::scalar::exp_parts(x, tail)`.
    fn exp_parts(&mut self, x: Value, tail: Value) -> ExpParts {
        let exp_max = self.float(EXP_MAX);
        let zero = self.float(0.0);
        let above = self.b.ins().fcmp(FloatCC::GreaterThan, x, exp_max);
        let x = self.select(above, exp_max, x);
        let tail = self.select(above, zero, tail);
        let exp_min = self.float(EXP_MIN);
        let below = self.b.ins().fcmp(FloatCC::LessThan, x, exp_min);
        let x = self.select(below, exp_min, x);
        let tail = self.select(below, zero, tail);

        let log2_e = self.float(LOG2_E);
        let shifter = self.float(ROUNDING_SHIFTER);
        let shifted = self.b.ins().fma(x, log2_e, shifter);
        let k_float = self.b.ins().fsub(shifted, shifter);
        let minus_k = self.b.ins().fneg(k_float);
        let ln2_hi = self.float(LN2_HI);
        let r_hi = self.b.ins().fma(minus_k, ln2_hi, x);
        let ln2_lo = self.float(LN2_LO);
        let r_lo = self.b.ins().fma(minus_k, ln2_lo, tail);
        let r = self.b.ins().fadd(r_hi, r_lo);
        let r_squared = self.b.ins().fmul(r, r);
        let poly = self.horner(&EXP_POLY, r);
        let small = self.b.ins().fma(r_squared, poly, r_lo);
        let one = self.float(1.0);
        let one_r = self.b.ins().fadd(one, r_hi);
        let one_r_rest = self.b.ins().fsub(one_r, one);
        let one_r_error = self.b.ins().fsub(r_hi, one_r_rest);
        let hi = self.b.ins().fadd(one_r, small);
        let hi_rest = self.b.ins().fsub(hi, one_r);
        let small_error = self.b.ins().fsub(small, hi_rest);
        let lo = self.b.ins().fadd(small_error, one_r_error);

        let shifted_bits = self.bits_of(shifted);
        let shifter_bits = self.int(ROUNDING_SHIFTER.to_bits() as i32);
        let k = self.b.ins().isub(shifted_bits, shifter_bits);
        let one_bit = self.b.ins().iconst(types::I32, 1);
        let k_half = self.b.ins().sshr(k, one_bit);
        let k_rest = self.b.ins().isub(k, k_half);
        ExpParts {
            hi,
            lo,
            scale_half: self.pow2(k_half),
            scale_rest: self.pow2(k_rest),
        }
    }

    /// `ln(x) ≈ hi + lo` before the final sum, as `kiln_ir::scalar`'s `log_terms`:
    /// `emit_log` rounds the sum, `log_parts` keeps its rounding error too.
    fn log_terms(&mut self, x: Value) -> (Value, Value) {
        let min_positive = self.float(f32::MIN_POSITIVE);
        let subnormal = self.b.ins().fcmp(FloatCC::LessThan, x, min_positive);
        let two_pow_23 = self.float(TWO_POW_23);
        let scaled_up = self.b.ins().fmul(x, two_pow_23);
        let scaled = self.select(subnormal, scaled_up, x);
        let minus_23 = self.int(-23);
        let int_zero = self.int(0);
        let exponent_adjust = self.select(subnormal, minus_23, int_zero);

        let scaled_bits = self.bits_of(scaled);
        let sqrt_half_bits = self.int(SQRT_HALF_BITS);
        let offset = self.b.ins().isub(scaled_bits, sqrt_half_bits);
        let mantissa_shift = self.b.ins().iconst(types::I32, 23);
        let k = self.b.ins().sshr(offset, mantissa_shift);
        let k = self.b.ins().iadd(k, exponent_adjust);
        let mantissa_mask = self.int(0x007f_ffff);
        let mantissa = self.b.ins().band(offset, mantissa_mask);
        let m_bits = self.b.ins().iadd(mantissa, sqrt_half_bits);
        let mant = self.float_of_bits(m_bits);
        let one = self.float(1.0);
        let f = self.b.ins().fsub(mant, one);
        let k_float = self.b.ins().fcvt_from_sint(self.float_type, k);

        let ln2_hi = self.float(LN2_HI);
        let k_ln2_hi = self.b.ins().fmul(k_float, ln2_hi);
        let hi = self.b.ins().fadd(k_ln2_hi, f);
        let rounded_part = self.b.ins().fsub(hi, k_ln2_hi);
        let hi_error = self.b.ins().fsub(f, rounded_part);
        let ln2_lo = self.float(LN2_LO);
        let lo = self.b.ins().fma(k_float, ln2_lo, hi_error);
        let poly = self.horner(&LOG_POLY, f);
        let f_squared = self.b.ins().fmul(f, f);
        let lo = self.b.ins().fma(f_squared, poly, lo);
        (hi, lo)
    }

    /// `kiln_ir::scalar::log_parts(x)`, as `(hi, lo)`.
    fn log_parts(&mut self, x: Value) -> (Value, Value) {
        let (hi, lo) = self.log_terms(x);
        let sum = self.b.ins().fadd(hi, lo);
        let sum_rest = self.b.ins().fsub(sum, hi);
        let sum_error = self.b.ins().fsub(lo, sum_rest);

        let zero = self.float(0.0);
        let is_zero = self.b.ins().fcmp(FloatCC::Equal, x, zero);
        let minus_inf = self.float(f32::NEG_INFINITY);
        let special = self.select(is_zero, minus_inf, x);
        let positive = self.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
        let inf = self.float(f32::INFINITY);
        let finite = self.b.ins().fcmp(FloatCC::LessThan, x, inf);
        let regular = self.b.ins().band(positive, finite);
        let hi = self.select(regular, sum, special);
        let lo = self.select(regular, sum_error, zero);
        (hi, lo)
    }

    /// `x` with the sign bit of `sign` set when that one has it: `x | (sign & SIGN)`
    /// on the bits, as `scalar`'s `with_sign_of`.
    fn with_sign_of(&mut self, x: Value, sign: Value) -> Value {
        let x_bits = self.bits_of(x);
        let sign_bits = self.bits_of(sign);
        let sign_bit = self.int(SIGN_BIT);
        let sign_only = self.b.ins().band(sign_bits, sign_bit);
        let bits = self.b.ins().bor(x_bits, sign_only);
        self.float_of_bits(bits)
    }
}

// The counter-based random numbers of `kiln_ir::scalar` (`scalar/random.rs`):
// Threefry-2x32-20 on i32 or i32x4 lanes (wrapping `iadd`, `bxor`, and rotations as
// two shifts and an or, which x86 has for vectors too), then the uniform and normal
// transforms as in `uniform_from_bits` and `normal_from_bits`.

/// `random.<dist>(key0, key1, counter)` for `i32` or `i32x4` operands (all of one
/// type), as `kiln_ir::Distribution::sample`: an `f32` or `f32x4` sample.
pub fn emit_random(
    builder: &mut FunctionBuilder,
    dist: Distribution,
    key: [Value; 2],
    counter: Value,
) -> Value {
    let int_type = builder.func.dfg.value_type(counter);
    let float_type = if int_type.is_vector() {
        types::F32X4
    } else {
        types::F32
    };
    let mut m = Lanes {
        b: builder,
        float_type,
        int_type,
    };
    let bits = m.threefry(key, counter);
    match dist {
        Distribution::Uniform => m.uniform(bits),
        Distribution::Normal => m.normal(bits),
    }
}

impl Lanes<'_, '_> {
    /// The first word of Threefry-2x32-20 of the counter `(counter, 0)`, as
    /// `kiln_ir::scalar::threefry2x32`.
    fn threefry(&mut self, key: [Value; 2], counter: Value) -> Value {
        let parity = self.int(THREEFRY_PARITY as i32);
        let mixed = self.b.ins().bxor(key[0], key[1]);
        let schedule = [key[0], key[1], self.b.ins().bxor(mixed, parity)];
        let mut x0 = self.b.ins().iadd(counter, schedule[0]);
        // The counter's second word is 0, so it starts as the key word itself.
        let mut x1 = schedule[1];
        for group in 0..5u32 {
            for &rotation in &THREEFRY_ROTATIONS[group as usize % 2] {
                x0 = self.b.ins().iadd(x0, x1);
                let left = self.b.ins().ishl_imm_u(x1, i64::from(rotation));
                let right = self.b.ins().ushr_imm_u(x1, i64::from(32 - rotation));
                let rotated = self.b.ins().bor(left, right);
                x1 = self.b.ins().bxor(rotated, x0);
            }
            let injection = group as usize + 1;
            x0 = self.b.ins().iadd(x0, schedule[injection % 3]);
            x1 = self.b.ins().iadd(x1, schedule[(injection + 1) % 3]);
            let count = self.int(group as i32 + 1);
            x1 = self.b.ins().iadd(x1, count);
        }
        x0
    }

    /// As `kiln_ir::scalar::uniform_from_bits`.
    fn uniform(&mut self, bits: Value) -> Value {
        let mantissa = self.b.ins().ushr_imm_u(bits, 9);
        let one_bits = self.int(ONE_BITS as i32);
        let in_one_two = self.b.ins().bor(mantissa, one_bits);
        let in_one_two = self.float_of_bits(in_one_two);
        let one = self.float(1.0);
        self.b.ins().fsub(in_one_two, one)
    }

    /// As `kiln_ir::scalar::normal_from_bits`.
    fn normal(&mut self, bits: Value) -> Value {
        let mantissa = self.b.ins().ushr_imm_u(bits, 9);
        let doubled = self.b.ins().ishl_imm_u(mantissa, 1);
        let one = self.int(1);
        let odd = self.b.ins().bor(doubled, one);
        let centre = self.int(TWO_POW_23_INT);
        let odd = self.b.ins().isub(odd, centre);
        let odd = self.b.ins().fcvt_from_sint(self.float_type, odd);
        let scale = self.float(TWO_POW_MINUS_23);
        let v = self.b.ins().fmul(odd, scale);
        let inverse = self.erfinv(v);
        let sqrt_2 = self.float(std::f32::consts::SQRT_2);
        self.b.ins().fmul(sqrt_2, inverse)
    }

    /// As `kiln_ir::scalar::erfinv_f32`.
    fn erfinv(&mut self, x: Value) -> Value {
        let one = self.float(1.0);
        let below = self.b.ins().fsub(one, x);
        let above = self.b.ins().fadd(one, x);
        let product = self.b.ins().fmul(below, above);
        let log = emit_log(self.b, product);
        let w = self.b.ins().fneg(log);
        let centre = self.float(2.5);
        let central_at = self.b.ins().fsub(w, centre);
        let central = self.horner(&ERFINV_CENTRAL, central_at);
        let root = self.b.ins().sqrt(w);
        let three = self.float(3.0);
        let tail_at = self.b.ins().fsub(root, three);
        let tail = self.horner(&ERFINV_TAIL, tail_at);
        let split = self.float(ERFINV_SPLIT);
        let is_central = self.b.ins().fcmp(FloatCC::LessThan, w, split);
        let p = self.select(is_central, central, tail);
        self.b.ins().fmul(p, x)
    }
}
