//! kiln's f32 special functions (`crate::math`, written once over an abstract
//! instruction set) as inline Cranelift IR, on `f32` and on `f32x4` alike, so
//! compiled code equals the interpreter and the constant folders bit for bit.
//!
//! Each [`Arith`] operation has one Cranelift counterpart with the same IEEE or
//! two's-complement meaning: `+ - *` are `fadd`/`fsub`/`fmul`, `fma` is `fma` (one
//! `vfmadd` on an FMA host), an i32 to f32 conversion is `fcvt_from_sint`, bit casts
//! are `bitcast`, wrapping integer arithmetic is `iadd`/`isub`, shifts are
//! `sshr`/`ishl`/`ushr` by a constant, and a comparison is `fcmp` feeding a `select`
//! (a `bitselect` of lane masks on vectors); `&`, `|` and `!` on comparison results
//! are `band`, `bor` and `band_not` on flags or lane masks. Constants are emitted at
//! their use: Cranelift's optimising mid-end hoists them out of loops, and there are
//! few (about a dozen per call).

use crate::math::{self, Arith};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, Endianness, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::{CmpOp, Distribution};

/// `exp(x)` for an `f32` or `f32x4` value `x`, as `kiln_ir::scalar::exp_f32`.
pub fn emit_exp(builder: &mut FunctionBuilder, x: Value) -> Value {
    math::exp(&mut Lanes::new(builder, x), x)
}

/// `ln(x)` for an `f32` or `f32x4` value `x`, as `kiln_ir::scalar::log_f32`.
pub fn emit_log(builder: &mut FunctionBuilder, x: Value) -> Value {
    math::log(&mut Lanes::new(builder, x), x)
}

/// `e^x − 1` for an `f32` or `f32x4` value `x`, as `kiln_ir::scalar::expm1_f32`.
pub fn emit_expm1(builder: &mut FunctionBuilder, x: Value) -> Value {
    math::expm1(&mut Lanes::new(builder, x), x)
}

/// `ln(1 + x)` for an `f32` or `f32x4` value `x`, as `kiln_ir::scalar::log1p_f32`.
pub fn emit_log1p(builder: &mut FunctionBuilder, x: Value) -> Value {
    math::log1p(&mut Lanes::new(builder, x), x)
}

/// `tanh(x)` for an `f32` or `f32x4` value `x`, as `kiln_ir::scalar::tanh_f32`.
pub fn emit_tanh(builder: &mut FunctionBuilder, x: Value) -> Value {
    math::tanh(&mut Lanes::new(builder, x), x)
}

/// The logistic function of an `f32` or `f32x4` value `x`, as
/// `kiln_ir::scalar::sigmoid_f32`.
pub fn emit_sigmoid(builder: &mut FunctionBuilder, x: Value) -> Value {
    math::sigmoid(&mut Lanes::new(builder, x), x)
}

/// `ln(1 + e^x)` for an `f32` or `f32x4` value `x`, as
/// `kiln_ir::scalar::softplus_f32`.
pub fn emit_softplus(builder: &mut FunctionBuilder, x: Value) -> Value {
    math::softplus(&mut Lanes::new(builder, x), x)
}

/// `erf(x)` for an `f32` or `f32x4` value `x`, as `kiln_ir::scalar::erf_f32`.
pub fn emit_erf(builder: &mut FunctionBuilder, x: Value) -> Value {
    math::erf(&mut Lanes::new(builder, x), x)
}

/// `x^y` for `f32` or `f32x4` values `x` and `y` (the same type), as
/// `kiln_ir::scalar::pow_f32`.
pub fn emit_pow(builder: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    math::pow(&mut Lanes::new(builder, x), x, y)
}

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
    math::random(&mut m, dist, key, counter)
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
}

impl Arith for Lanes<'_, '_> {
    type V = Value;

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

    fn fadd(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fadd(a, b)
    }

    fn fsub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fsub(a, b)
    }

    fn fmul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmul(a, b)
    }

    fn fdiv(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fdiv(a, b)
    }

    fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        self.b.ins().fma(a, b, c)
    }

    fn fneg(&mut self, x: Value) -> Value {
        self.b.ins().fneg(x)
    }

    fn fabs(&mut self, x: Value) -> Value {
        self.b.ins().fabs(x)
    }

    fn sqrt(&mut self, x: Value) -> Value {
        self.b.ins().sqrt(x)
    }

    fn fcmp(&mut self, op: CmpOp, a: Value, b: Value) -> Value {
        self.b.ins().fcmp(float_cc(op), a, b)
    }

    /// A scalar flag selects; a lane mask (all ones or all zeros per lane) is
    /// applied bitwise by `bitselect`.
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

    fn band(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().band(a, b)
    }

    fn bor(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().bor(a, b)
    }

    fn band_not(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().band_not(a, b)
    }

    fn bxor(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().bxor(a, b)
    }

    fn iadd(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().iadd(a, b)
    }

    fn isub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().isub(a, b)
    }

    fn sshr(&mut self, x: Value, bits: u32) -> Value {
        let bits = self.b.ins().iconst(types::I32, i64::from(bits));
        self.b.ins().sshr(x, bits)
    }

    fn ishl(&mut self, x: Value, bits: u32) -> Value {
        self.b.ins().ishl_imm_u(x, i64::from(bits))
    }

    fn ushr(&mut self, x: Value, bits: u32) -> Value {
        self.b.ins().ushr_imm_u(x, i64::from(bits))
    }

    fn bits_of(&mut self, x: Value) -> Value {
        self.b.ins().bitcast(self.int_type, lane_flags(), x)
    }

    fn float_of_bits(&mut self, x: Value) -> Value {
        self.b.ins().bitcast(self.float_type, lane_flags(), x)
    }

    fn int_to_float(&mut self, x: Value) -> Value {
        self.b.ins().fcvt_from_sint(self.float_type, x)
    }
}

/// Cranelift's condition for kiln's f32 comparison `op`: ordered comparisons are
/// false on NaN, `NotEqual` is true, as in Rust.
pub(super) fn float_cc(op: CmpOp) -> FloatCC {
    match op {
        CmpOp::Eq => FloatCC::Equal,
        CmpOp::Ne => FloatCC::NotEqual,
        CmpOp::Lt => FloatCC::LessThan,
        CmpOp::Le => FloatCC::LessThanOrEqual,
        CmpOp::Gt => FloatCC::GreaterThan,
        CmpOp::Ge => FloatCC::GreaterThanOrEqual,
    }
}

/// Lane-preserving reinterpretation between float and integer vectors.
fn lane_flags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}
