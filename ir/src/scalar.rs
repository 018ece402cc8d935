//! The value of every elementwise op on one element, in a dtype, exactly as kiln's
//! generated code computes it: the one definition that the interpreter's
//! `Precision::F32` mode, both constant folders (the e-graph analysis and lowering)
//! and the CPU backend's emitted `exp`/`log` share, so an optimisation can never
//! change a result.
//!
//! Elements are passed as `f64` (as [`crate::Tensor`] stores them); every function
//! expects values of its dtype (an f32 value exactly representable in f32, an i32
//! value a whole number in range, a bool 0 or 1) and returns one. The rules:
//!
//! - **f32**: IEEE single precision, rounded to nearest-even after every op, as the
//!   generated `fadd`/`fsub`/`fmul`/`fdiv` do. A constant is rounded to f32 when it is
//!   read (`const 16777217.0 : f32` is 16777216). `exp` and `log` are the f32
//!   polynomial algorithms of [`exp_f32`] and [`log_f32`] (within 1 ulp of the true
//!   function; see "exp and log" below), which the backend emits instruction for
//!   instruction.
//!   `max` is Cranelift's `fmax`: NaN if either operand is NaN, and -0 < +0, so
//!   `max(-0, +0)` is +0 in either order. `relu(x)` is `x > 0 ? x : +0`, so relu of
//!   NaN and of -0 is +0. Comparisons are IEEE: false on NaN except `ne`, and -0 == +0.
//! - **i32**: two's complement, wrapping (`neg(i32::MIN)` is `i32::MIN`); `max` is signed.
//! - **bool**: 0 or 1; `max` is `or` (a `reduce_max` over a mask).
//! - **casts** follow Rust's `as`: f32 to i32 truncates toward zero and saturates, NaN
//!   becomes 0; i32 to f32 rounds to nearest; anything to bool is `x != 0` (NaN is true).
//! - **reductions** start from [`reduce_init`] (+0 for sums, -inf, `i32::MIN` or false
//!   for max) and fold the elements in row-major order with [`binary`] (one rounding
//!   per addition); a mean divides the sum by the element count rounded to f32.
//!   Matmul accumulates `fma(a, b, acc)` over the contraction index in increasing order,
//!   from +0, with one rounding per step ([`fma_f32`]).
//!
//! Consequences worth knowing (tested in `ir/tests/interp_ops.rs`): a sum over an empty
//! axis is +0, a mean over one is NaN (0 / 0) and a max is -inf (`i32::MIN`, false):
//! NumPy's values, except that NumPy refuses an empty max. Because accumulators start
//! at +0, a sum whose terms are all -0 is +0 (NumPy keeps -0). The order is part of the
//! meaning: `[f32::MAX, f32::MAX, -f32::MAX]` sums to +inf, in the interpreter's f32
//! mode and in compiled code alike, while `Precision::F64` gives `f32::MAX`.
//!
//! ## exp and log
//!
//! [`exp_f32`] and [`log_f32`] are step-by-step f32 algorithms, not calls to a libm:
//! `kiln_backend`'s `cpu::math` emits the same sequence of operations as Cranelift IR
//! (on `f32` and on `f32x4` lanes), so the interpreter, both constant folders and
//! compiled code agree bit for bit. They use only operations that Rust and Cranelift
//! define identically: f32 `+ - *` rounded to nearest-even, `mul_add` (Cranelift's
//! `fma`, one rounding), `i32` to `f32` conversion of small integers (exact), bit
//! casts, wrapping `i32` adds, shifts and masks, and IEEE compares feeding selects.
//! Their error against the true function (f64 `exp`/`ln`, whose own error is far
//! below an f32 ulp), measured on every f32 bit pattern (`ir/tests/exp_log.rs` walks
//! every 499th): **exp ≤ 0.99 ulp, log ≤ 0.85 ulp** (measured maxima 0.9876 at
//! 59.275005 and 0.8404 at 1.2721652) (an ulp of the exact value; in the
//! subnormal range an ulp is 2^-149). The polynomials are Chebyshev fits (mpmath
//! `chebyfit`, near-minimax) rounded to f32.
//!
//! `exp(x)`: clamp x to [-104, 89] (beyond these the result is 0 or +inf anyway; NaN
//! passes through the compares); `k = round(x·log2 e)` by adding and subtracting
//! 1.5·2^23 in one `fma` (ties to even); `r = x − k·ln2` with ln2 split Cody–Waite
//! style into `LN2_HI` (15 significant bits, so `k·LN2_HI` is exact) and `LN2_LO`, two
//! `fma`s, |r| ≤ 0.347; `exp(r) ≈ 1 + (r + r²·P(r))` with P of degree 5; then
//! `× 2^(k>>1) × 2^(k−(k>>1))`, two scalings built from exponent bits so that 2^k
//! never has to be representable: the first product is exact and the second rounds
//! once, which gives +inf above ~88.72 and gradual underflow (correctly rounded
//! from the polynomial's value) down to 0 below ~-103.97. NaN stays NaN through the
//! arithmetic (the integer bits it produces are discarded by the NaN product);
//! exp(±0) = 1 exactly.
//!
//! `log(x)`: a subnormal x is first scaled by 2^23 (and 23 taken off the exponent);
//! `x = 2^k·m` with m in [√½, √2) by integer arithmetic on the bits (subtract the bits
//! of √½, shift out k, add them back to the mantissa); `f = m − 1` (exact); `log(x) ≈
//! k·LN2_HI + f + (f²·P(f) + k·LN2_LO)` with P of degree 9, where `k·LN2_HI + f` is
//! rounded once and its rounding error recovered exactly (Fast2Sum: |k·LN2_HI| ≥
//! |f| whenever k ≠ 0) and added to the small part, so the cancellation for x just
//! below 2 or just above ½ costs no accuracy. Selects give log(±0) = -inf,
//! log(x < 0) = NaN (-inf included), log(+inf) = +inf and log(NaN) = NaN; log(1) = +0.
//!
//! The special functions built on these (expm1, log1p, tanh, sigmoid, softplus, erf
//! and pow) live in `scalar/special.rs` under the same contract, with their own
//! measured bounds.

use crate::op::{BinaryOp, CmpOp, Op, ReduceOp, UnaryOp};
use crate::types::DType;

mod random;
mod special;
pub use random::*;
pub use special::*;

/// `value` as a value of `dtype`: rounded to f32, converted to i32 with Rust's `as`
/// (truncating, saturating, NaN to 0), or to bool as `value != 0`. This is how a
/// constant, a fed value and a cast result become values of their dtype.
pub fn to_dtype(value: f64, dtype: DType) -> f64 {
    match dtype {
        DType::F32 => f64::from(value as f32),
        DType::I32 => f64::from(value as i32),
        DType::Bool => f64::from(u8::from(value != 0.0)),
    }
}

/// A cast of `value` (a value of any dtype) to `to`.
pub fn cast(value: f64, to: DType) -> f64 {
    to_dtype(value, to)
}

/// log2(e) rounded to f32: `k = round(x * LOG2_E)` in [`exp_f32`].
pub const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// 1.5 * 2^23: adding it to a float of magnitude below 2^22 rounds that float to an
/// integer (ties to even) and leaves the integer in the low mantissa bits.
pub const ROUNDING_SHIFTER: f32 = 12_582_912.0;
/// The high part of ln 2, 0.693145751953125 (0x1.62e4p-1): 15 significant bits, so
/// `k * LN2_HI` is exact for every |k| < 2^9 that exp and log produce.
pub const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
/// ln 2 − [`LN2_HI`], rounded to f32.
pub const LN2_LO: f32 = 1.428_606_8e-6;
/// [`exp_f32`] clamps its argument to `[EXP_MIN, EXP_MAX]`: exp(89) overflows f32 and
/// exp(-104) rounds to 0, so the clamp changes no result and keeps `k` small.
pub const EXP_MAX: f32 = 89.0;
/// See [`EXP_MAX`].
pub const EXP_MIN: f32 = -104.0;
/// P in `exp(r) ≈ 1 + r + r²·P(r)` on |r| ≤ 0.3473, highest degree first (Horner).
pub const EXP_POLY: [f32; 6] = [
    f32::from_bits(0x3950_92fb),
    f32::from_bits(0x3ab6_a225),
    f32::from_bits(0x3c08_8870),
    f32::from_bits(0x3d2a_aa74),
    f32::from_bits(0x3e2a_aaab),
    f32::from_bits(0x3f00_0000),
];
/// The bits of √½ rounded to f32: [`log_f32`] splits `x = 2^k·m` with m from √½ up.
pub const SQRT_HALF_BITS: i32 = 0x3f35_04f3;
/// 2^23, the scale that makes a subnormal [`log_f32`] argument normal.
pub const TWO_POW_23: f32 = 8_388_608.0;
/// P in `log(1 + f) ≈ f + f²·P(f)` on f in [√½ − 1, √2 − 1], highest degree first.
pub const LOG_POLY: [f32; 10] = [
    f32::from_bits(0x3d8a_a12e),
    f32::from_bits(0xbdec_b179),
    f32::from_bits(0x3df1_e99d),
    f32::from_bits(0xbdfe_60d7),
    f32::from_bits(0x3e11_bd2b),
    f32::from_bits(0xbe2a_acf3),
    f32::from_bits(0x3e4c_d098),
    f32::from_bits(0xbe80_0004),
    f32::from_bits(0x3eaa_aaa7),
    f32::from_bits(0xbf00_0000),
];

/// `poly[0]·x^n + ... + poly[n]` by Horner's rule with one `fma` per step, as the
/// backend emits it.
fn horner(poly: &[f32], x: f32) -> f32 {
    poly[1..]
        .iter()
        .fold(poly[0], |acc, &coefficient| acc.mul_add(x, coefficient))
}

/// `2^e` for e in [-126, 127], from its exponent bits (`e + 127` wraps harmlessly
/// outside that range: only a NaN product ever sees such a scale).
fn pow2_bits(e: i32) -> f32 {
    f32::from_bits((e.wrapping_add(127) << 23) as u32)
}

/// `exp` on f32, as every part of kiln computes it (the algorithm is in the module
/// docs, "exp and log"): within 0.99 ulp of the true value, +inf above ~88.72,
/// gradual underflow to +0 below ~-103.97, exp(±0) = 1, exp(-inf) = +0, NaN to NaN.
pub fn exp_f32(x: f32) -> f32 {
    let x = if x > EXP_MAX { EXP_MAX } else { x };
    let x = if x < EXP_MIN { EXP_MIN } else { x };
    let shifted = x.mul_add(LOG2_E, ROUNDING_SHIFTER);
    let k_float = shifted - ROUNDING_SHIFTER;
    let r = (-k_float).mul_add(LN2_HI, x);
    let r = (-k_float).mul_add(LN2_LO, r);
    let p = (r * r).mul_add(horner(&EXP_POLY, r), r) + 1.0;
    // k sits in the low mantissa bits of `shifted`; the difference of the bit
    // patterns is k itself (as an i32, negative ones included).
    let k = (shifted.to_bits() as i32).wrapping_sub(ROUNDING_SHIFTER.to_bits() as i32);
    let k_half = k >> 1;
    p * pow2_bits(k_half) * pow2_bits(k.wrapping_sub(k_half))
}

/// `ln` on f32, as every part of kiln computes it (the algorithm is in the module
/// docs, "exp and log"): within 0.85 ulp of the true value, -inf at ±0, NaN below
/// zero, +inf at +inf, NaN to NaN, log(1) = +0.
pub fn log_f32(x: f32) -> f32 {
    let (hi, lo) = log_terms(x);
    let y = hi + lo;
    let y = if x == 0.0 { f32::NEG_INFINITY } else { y };
    let y = if x < 0.0 { f32::NAN } else { y };
    // Only +inf and NaN fail `x < inf`; both are their own logarithm.
    if x < f32::INFINITY {
        y
    } else {
        x
    }
}

/// `ln(x) ≈ hi + lo` for a positive finite `x`, before the final sum (see "exp and
/// log" above): [`log_f32`] rounds the sum, and `special::log_parts` keeps its
/// rounding error too.
fn log_terms(x: f32) -> (f32, f32) {
    let subnormal = x < f32::MIN_POSITIVE;
    let scaled = if subnormal { x * TWO_POW_23 } else { x };
    let exponent_adjust: i32 = if subnormal { -23 } else { 0 };
    let offset = (scaled.to_bits() as i32).wrapping_sub(SQRT_HALF_BITS);
    let k = (offset >> 23).wrapping_add(exponent_adjust);
    let m = f32::from_bits((offset & 0x007f_ffff).wrapping_add(SQRT_HALF_BITS) as u32);
    let f = m - 1.0;
    let k_float = k as f32;
    let k_ln2_hi = k_float * LN2_HI;
    let hi = k_ln2_hi + f;
    let hi_error = f - (hi - k_ln2_hi);
    let lo = k_float.mul_add(LN2_LO, hi_error);
    let lo = (f * f).mul_add(horner(&LOG_POLY, f), lo);
    (hi, lo)
}

/// `a * b + c` on f32 with one rounding, as the generated `fma` computes it.
pub fn fma_f32(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// Cranelift's `fmax` on f32: NaN-propagating, and -0 < +0.
pub fn max_f32(a: f32, b: f32) -> f32 {
    // `max_f64` only compares and picks an operand, so on f32 values widened exactly
    // it gives the f32 answer.
    max_f64(f64::from(a), f64::from(b)) as f32
}

/// [`max_f32`]'s rule in f64 (also the interpreter's `Precision::F64` mode).
pub fn max_f64(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        // Equal values differ at most in the sign of a zero; +0 is the larger.
        if a.is_sign_positive() {
            a
        } else {
            b
        }
    } else if a > b {
        a
    } else {
        b
    }
}

/// Cranelift's `fmin` on f32: NaN-propagating, and -0 < +0.
pub fn min_f32(a: f32, b: f32) -> f32 {
    min_f64(f64::from(a), f64::from(b)) as f32
}

/// [`min_f32`]'s rule in f64 (also the interpreter's `Precision::F64` mode).
pub fn min_f64(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        // Equal values differ at most in the sign of a zero; -0 is the smaller.
        if a.is_sign_negative() {
            a
        } else {
            b
        }
    } else if a < b {
        a
    } else {
        b
    }
}

/// kiln's `sign`: -1 below zero, +1 above, and the operand itself for ±0 and NaN
/// (on f32 and, widened exactly, in f64).
pub fn sign_f64(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

/// The logistic function in f64 (the interpreter's `Precision::F64` mode), without
/// overflow: `exp` is only taken of `-|x|`.
pub fn sigmoid_f64(x: f64) -> f64 {
    let e = (-x.abs()).exp();
    if x < 0.0 {
        e / (1.0 + e)
    } else {
        1.0 / (1.0 + e)
    }
}

/// `ln(1 + exp(x))` in f64 (the interpreter's `Precision::F64` mode), as
/// `max(x, 0) + ln(1 + exp(-|x|))` so that neither tail overflows or cancels.
pub fn softplus_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Unary `op` on an element of `dtype` (f32, or i32 for `neg`, `relu`, `abs` and
/// `sign`).
pub fn unary(op: UnaryOp, dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::F32 => f64::from(unary_f32(op, x as f32)),
        DType::I32 | DType::Bool => {
            let x = x as i32;
            f64::from(match op {
                UnaryOp::Neg => x.wrapping_neg(),
                UnaryOp::Relu => x.max(0),
                UnaryOp::Abs => x.wrapping_abs(),
                UnaryOp::Sign => x.signum(),
                // The typing rules keep the other ops to f32; the value is what the
                // generated code would compute on the integer read as f32.
                _ => unary_f32(op, x as f32) as i32,
            })
        }
    }
}

/// Unary `op` on an f32 element, as compiled code computes it.
pub fn unary_f32(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => exp_f32(x),
        UnaryOp::Log => log_f32(x),
        UnaryOp::Relu => {
            if x > 0.0 {
                x
            } else {
                0.0
            }
        }
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Sign => sign_f64(f64::from(x)) as f32,
        UnaryOp::Sigmoid => sigmoid_f32(x),
        UnaryOp::Tanh => tanh_f32(x),
        UnaryOp::Softplus => softplus_f32(x),
        UnaryOp::Expm1 => expm1_f32(x),
        UnaryOp::Log1p => log1p_f32(x),
        UnaryOp::Erf => erf_f32(x),
    }
}

/// Binary `op` on two elements of `dtype`.
pub fn binary(op: BinaryOp, dtype: DType, a: f64, b: f64) -> f64 {
    match dtype {
        DType::F32 => {
            let (a, b) = (a as f32, b as f32);
            f64::from(match op {
                BinaryOp::Add => a + b,
                BinaryOp::Sub => a - b,
                BinaryOp::Mul => a * b,
                BinaryOp::Div => a / b,
                BinaryOp::Max => max_f32(a, b),
                BinaryOp::Min => min_f32(a, b),
                BinaryOp::Pow => pow_f32(a, b),
            })
        }
        DType::I32 => {
            let (a, b) = (a as i32, b as i32);
            f64::from(match op {
                BinaryOp::Add => a.wrapping_add(b),
                BinaryOp::Sub => a.wrapping_sub(b),
                BinaryOp::Mul => a.wrapping_mul(b),
                // Integer division is rejected by the typing rules (it could trap).
                BinaryOp::Div | BinaryOp::Pow => 0,
                BinaryOp::Max => a.max(b),
                BinaryOp::Min => a.min(b),
            })
        }
        // Only `max` reaches bools (a reduce_max over a mask): their union.
        DType::Bool => f64::from(u8::from(a != 0.0 || b != 0.0)),
    }
}

/// Comparison `op` of two elements of `dtype` (IEEE for f32, signed for i32).
pub fn compare(op: CmpOp, dtype: DType, a: f64, b: f64) -> bool {
    // Values of every dtype are exact in f64, and f64 comparisons of f32 values are
    // the f32 comparisons, NaN and signed zeros included.
    let (a, b) = match dtype {
        DType::F32 => (f64::from(a as f32), f64::from(b as f32)),
        DType::I32 | DType::Bool => (a, b),
    };
    op.apply(a, b)
}

/// `select(cond, on_true, on_false)` on one element: any nonzero condition is true.
pub fn select(cond: f64, on_true: f64, on_false: f64) -> f64 {
    if cond != 0.0 {
        on_true
    } else {
        on_false
    }
}

/// An elementwise `op` (unary, binary, compare, select, cast) on one element per
/// operand, whose first operand has dtype `dtype` (a select's condition is bool; its
/// value operands pass through). `None` for an op that is not elementwise. Both
/// constant folders call this, so they fold exactly as the kernels compute.
pub fn elementwise(op: &Op, dtype: DType, x: &[f64]) -> Option<f64> {
    Some(match op {
        Op::Unary(op) => unary(*op, dtype, x[0]),
        Op::Binary(op) => binary(*op, dtype, x[0], x[1]),
        Op::Compare(op) => f64::from(u8::from(compare(*op, dtype, x[0], x[1]))),
        Op::Select => select(x[0], x[1], x[2]),
        Op::Cast { to } => cast(x[0], *to),
        _ => return None,
    })
}

/// The value a reduction starts from: +0 for sums and means, -inf (`i32::MIN`,
/// false) for max.
pub fn reduce_init(op: ReduceOp, dtype: DType) -> f64 {
    match (op, dtype) {
        (ReduceOp::Sum | ReduceOp::Mean, _) => 0.0,
        (ReduceOp::Max, DType::F32) => f64::NEG_INFINITY,
        (ReduceOp::Max, DType::I32) => f64::from(i32::MIN),
        (ReduceOp::Max, DType::Bool) => 0.0,
    }
}

/// One step of a reduction: the accumulator combined with the next element.
pub fn reduce_step(op: ReduceOp, dtype: DType, acc: f64, x: f64) -> f64 {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => binary(BinaryOp::Add, dtype, acc, x),
        ReduceOp::Max => binary(BinaryOp::Max, dtype, acc, x),
    }
}

/// The mean from a sum of `count` f32 elements: the sum divided by the count rounded
/// to f32 (0 / 0 is NaN for an empty reduction).
pub fn mean_finish(sum: f64, count: usize) -> f64 {
    binary(
        BinaryOp::Div,
        DType::F32,
        sum,
        to_dtype(count as f64, DType::F32),
    )
}

/// Whether two elements are the same result: bit for bit (so -0 differs from +0),
/// except that every NaN equals every NaN (payloads are not part of the contract).
pub fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_and_results_round_to_f32() {
        assert_eq!(to_dtype(16_777_217.0, DType::F32), 16_777_216.0);
        let c = to_dtype(16_777_217.0, DType::F32);
        let d = to_dtype(16_777_216.0, DType::F32);
        assert_eq!(binary(BinaryOp::Sub, DType::F32, c, d), 0.0);
        // 1e39 is beyond f32: it reads as +inf, and inf - inf is NaN.
        let big = to_dtype(1e39, DType::F32);
        assert_eq!(big, f64::INFINITY);
        assert!(binary(BinaryOp::Sub, DType::F32, big, big).is_nan());
        // A product that overflows f32 is inf even though f64 could hold it.
        let max = f64::from(f32::MAX);
        assert_eq!(binary(BinaryOp::Mul, DType::F32, max, 2.0), f64::INFINITY);
        assert_eq!(unary(UnaryOp::Log, DType::F32, big), f64::INFINITY);
        assert_eq!(unary(UnaryOp::Exp, DType::F32, 89.0), f64::INFINITY);
    }

    #[test]
    fn max_propagates_nan_and_orders_signed_zeros() {
        for (a, b) in [(0.0, -0.0), (-0.0, 0.0)] {
            assert!(same(binary(BinaryOp::Max, DType::F32, a, b), 0.0));
            assert!(same(max_f64(a, b), 0.0));
        }
        assert!(same(binary(BinaryOp::Max, DType::F32, -0.0, -0.0), -0.0));
        assert!(binary(BinaryOp::Max, DType::F32, f64::NAN, 1.0).is_nan());
        assert!(binary(BinaryOp::Max, DType::F32, 1.0, f64::NAN).is_nan());
        assert!(same(unary(UnaryOp::Relu, DType::F32, -0.0), 0.0));
        assert!(same(unary(UnaryOp::Relu, DType::F32, f64::NAN), 0.0));
    }

    #[test]
    fn integers_wrap_and_casts_follow_rust_as() {
        let min = f64::from(i32::MIN);
        assert_eq!(unary(UnaryOp::Neg, DType::I32, min), min);
        assert_eq!(
            binary(BinaryOp::Add, DType::I32, f64::from(i32::MAX), 1.0),
            min
        );
        assert_eq!(cast(f64::NAN, DType::I32), 0.0);
        assert_eq!(cast(3e9, DType::I32), f64::from(i32::MAX));
        assert_eq!(cast(-2.9, DType::I32), -2.0);
        assert_eq!(cast(16_777_217.0, DType::F32), 16_777_216.0);
        assert_eq!(cast(f64::NAN, DType::Bool), 1.0);
        assert!(same(to_dtype(-0.0, DType::I32), 0.0));
    }

    #[test]
    fn sums_accumulate_in_order_from_positive_zero() {
        let max = f64::from(f32::MAX);
        let mut acc = reduce_init(ReduceOp::Sum, DType::F32);
        for x in [max, max, -max] {
            acc = reduce_step(ReduceOp::Sum, DType::F32, acc, x);
        }
        assert_eq!(acc, f64::INFINITY);
        let mut acc = reduce_init(ReduceOp::Sum, DType::F32);
        acc = reduce_step(ReduceOp::Sum, DType::F32, acc, -0.0);
        assert!(same(acc, 0.0));
        assert!(mean_finish(0.0, 0).is_nan());
        assert_eq!(reduce_init(ReduceOp::Max, DType::I32), f64::from(i32::MIN));
    }
}
