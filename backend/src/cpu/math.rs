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

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, Endianness, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::scalar::{
    EXP_MAX, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO, LOG2_E, LOG_POLY, ROUNDING_SHIFTER, SQRT_HALF_BITS,
    TWO_POW_23,
};

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
    let min_positive = m.float(f32::MIN_POSITIVE);
    let subnormal = m.b.ins().fcmp(FloatCC::LessThan, x, min_positive);
    let two_pow_23 = m.float(TWO_POW_23);
    let scaled_up = m.b.ins().fmul(x, two_pow_23);
    let scaled = m.select(subnormal, scaled_up, x);
    let minus_23 = m.int(-23);
    let zero = m.int(0);
    let exponent_adjust = m.select(subnormal, minus_23, zero);

    let scaled_bits = m.bits_of(scaled);
    let sqrt_half_bits = m.int(SQRT_HALF_BITS);
    let offset = m.b.ins().isub(scaled_bits, sqrt_half_bits);
    let mantissa_shift = m.b.ins().iconst(types::I32, 23);
    let k = m.b.ins().sshr(offset, mantissa_shift);
    let k = m.b.ins().iadd(k, exponent_adjust);
    let mantissa_mask = m.int(0x007f_ffff);
    let mantissa = m.b.ins().band(offset, mantissa_mask);
    let m_bits = m.b.ins().iadd(mantissa, sqrt_half_bits);
    let mant = m.float_of_bits(m_bits);
    let one = m.float(1.0);
    let f = m.b.ins().fsub(mant, one);
    let k_float = m.b.ins().fcvt_from_sint(m.float_type, k);

    let ln2_hi = m.float(LN2_HI);
    let k_ln2_hi = m.b.ins().fmul(k_float, ln2_hi);
    let hi = m.b.ins().fadd(k_ln2_hi, f);
    let rounded_part = m.b.ins().fsub(hi, k_ln2_hi);
    let hi_error = m.b.ins().fsub(f, rounded_part);
    let ln2_lo = m.float(LN2_LO);
    let lo = m.b.ins().fma(k_float, ln2_lo, hi_error);
    let poly = m.horner(&LOG_POLY, f);
    let f_squared = m.b.ins().fmul(f, f);
    let lo = m.b.ins().fma(f_squared, poly, lo);
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
