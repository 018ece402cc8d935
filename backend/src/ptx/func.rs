//! The body of one PTX entry as it is written: virtual registers by class, the
//! instruction text, labels; and the [`Arith`] instructions of `crate::math` as PTX.
//!
//! Every floating-point instruction names its rounding (`add.rn.f32`, `fma.rn.f32`,
//! `div.rn.f32`, `sqrt.rn.f32`, `cvt.rn.f32.s32`): PTX does not contract an `add` or
//! `mul` with an explicit rounding into an fma, and without `.ftz` subnormals are
//! kept, so each instruction is the IEEE operation the interpreter performs. Sign
//! changes are bit operations (`xor.b32`, `and.b32`), since `neg.f32` and `abs.f32`
//! leave a NaN's payload unspecified.

use crate::math::Arith;
use kiln_ir::CmpOp;
use std::fmt::{self, Write as _};

/// A register class: its PTX type and name prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `.f32`, `%f`.
    F32,
    /// `.b32`, `%r`: i32 values, and bools as 0/1 words (as in memory).
    B32,
    /// `.pred`, `%p`: the result of a comparison.
    Pred,
    /// `.b64`, `%rd`: addresses and 64-bit offsets.
    B64,
}

impl Class {
    const ALL: [Class; 4] = [Class::F32, Class::B32, Class::Pred, Class::B64];

    fn prefix(self) -> &'static str {
        match self {
            Class::F32 => "%f",
            Class::B32 => "%r",
            Class::Pred => "%p",
            Class::B64 => "%rd",
        }
    }

    fn ptx_type(self) -> &'static str {
        match self {
            Class::F32 => ".f32",
            Class::B32 => ".b32",
            Class::Pred => ".pred",
            Class::B64 => ".b64",
        }
    }
}

/// A virtual register (ptxas allocates the real ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    pub class: Class,
    pub number: u32,
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.class.prefix(), self.number)
    }
}

/// An f32 immediate in PTX's exact hexadecimal form (`0f3F800000` is 1.0).
pub fn f32_literal(value: f32) -> String {
    format!("0f{:08X}", value.to_bits())
}

/// The instructions of one entry being written.
#[derive(Default)]
pub struct Func {
    text: String,
    /// Registers used so far, per class (numbered from 0).
    counts: [u32; 4],
    labels: u32,
}

impl Func {
    pub fn reg(&mut self, class: Class) -> Reg {
        let slot = class as usize;
        let number = self.counts[slot];
        self.counts[slot] += 1;
        Reg { class, number }
    }

    /// Appends one instruction (without its `;`).
    pub fn ins(&mut self, instruction: fmt::Arguments<'_>) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "\t{instruction};");
    }

    /// A fresh label name `L<n>`.
    pub fn label(&mut self) -> String {
        self.labels += 1;
        format!("L{}", self.labels)
    }

    pub fn place(&mut self, label: &str) {
        let _ = writeln!(self.text, "{label}:");
    }

    /// A new register of `class` holding the result of `op` (`op dst, operands`).
    pub fn op(&mut self, class: Class, op: &str, operands: fmt::Arguments<'_>) -> Reg {
        let dst = self.reg(class);
        self.ins(format_args!("{op} {dst}, {operands}"));
        dst
    }

    /// The register declarations and the instructions.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for (slot, class) in Class::ALL.iter().enumerate() {
            if self.counts[slot] > 0 {
                let _ = writeln!(
                    out,
                    "\t.reg {} {}<{}>;",
                    class.ptx_type(),
                    class.prefix(),
                    self.counts[slot]
                );
            }
        }
        out.push_str(&self.text);
        out
    }

    /// An i32 register holding `value`.
    pub fn int_const(&mut self, value: i32) -> Reg {
        self.op(Class::B32, "mov.b32", format_args!("{value}"))
    }

    /// An f32 register holding `value`, bit for bit.
    pub fn float_const(&mut self, value: f32) -> Reg {
        self.op(
            Class::F32,
            "mov.b32",
            format_args!("{}", f32_literal(value)),
        )
    }

    /// The 0/1 word of a predicate.
    pub fn word_of(&mut self, flag: Reg) -> Reg {
        self.op(Class::B32, "selp.b32", format_args!("1, 0, {flag}"))
    }

    /// The predicate `word != 0`.
    pub fn flag_of(&mut self, word: Reg) -> Reg {
        self.op(Class::Pred, "setp.ne.s32", format_args!("{word}, 0"))
    }

    fn binary(&mut self, op: &str, a: Reg, b: Reg) -> Reg {
        self.op(a.class, op, format_args!("{a}, {b}"))
    }

    /// A logical op on predicates or a bitwise one on words: `and`, `or`, `xor`.
    fn logic(&mut self, op: &str, a: Reg, b: Reg) -> Reg {
        let suffix = if a.class == Class::Pred {
            "pred"
        } else {
            "b32"
        };
        self.binary(&format!("{op}.{suffix}"), a, b)
    }

    /// The suffix of an IEEE comparison: `ne` is unordered (true on NaN), the
    /// others ordered (false on NaN), as kiln's comparisons.
    pub fn float_condition(op: CmpOp) -> &'static str {
        match op {
            CmpOp::Ne => "neu",
            _ => op.name(),
        }
    }
}

impl Arith for Func {
    type V = Reg;

    fn float(&mut self, value: f32) -> Reg {
        self.float_const(value)
    }

    fn int(&mut self, value: i32) -> Reg {
        self.int_const(value)
    }

    fn fadd(&mut self, a: Reg, b: Reg) -> Reg {
        self.binary("add.rn.f32", a, b)
    }

    fn fsub(&mut self, a: Reg, b: Reg) -> Reg {
        self.binary("sub.rn.f32", a, b)
    }

    fn fmul(&mut self, a: Reg, b: Reg) -> Reg {
        self.binary("mul.rn.f32", a, b)
    }

    fn fdiv(&mut self, a: Reg, b: Reg) -> Reg {
        self.binary("div.rn.f32", a, b)
    }

    fn fma(&mut self, a: Reg, b: Reg, c: Reg) -> Reg {
        self.op(Class::F32, "fma.rn.f32", format_args!("{a}, {b}, {c}"))
    }

    fn fneg(&mut self, x: Reg) -> Reg {
        self.op(Class::F32, "xor.b32", format_args!("{x}, 0x80000000"))
    }

    fn fabs(&mut self, x: Reg) -> Reg {
        self.op(Class::F32, "and.b32", format_args!("{x}, 0x7FFFFFFF"))
    }

    fn sqrt(&mut self, x: Reg) -> Reg {
        self.op(Class::F32, "sqrt.rn.f32", format_args!("{x}"))
    }

    fn fcmp(&mut self, op: CmpOp, a: Reg, b: Reg) -> Reg {
        let op = format!("setp.{}.f32", Func::float_condition(op));
        self.op(Class::Pred, &op, format_args!("{a}, {b}"))
    }

    fn select(&mut self, condition: Reg, on_true: Reg, on_false: Reg) -> Reg {
        let op = match on_true.class {
            Class::F32 => "selp.f32",
            _ => "selp.b32",
        };
        self.op(
            on_true.class,
            op,
            format_args!("{on_true}, {on_false}, {condition}"),
        )
    }

    fn band(&mut self, a: Reg, b: Reg) -> Reg {
        self.logic("and", a, b)
    }

    fn bor(&mut self, a: Reg, b: Reg) -> Reg {
        self.logic("or", a, b)
    }

    fn band_not(&mut self, a: Reg, b: Reg) -> Reg {
        let not_b = self.op(b.class, "not.pred", format_args!("{b}"));
        self.logic("and", a, not_b)
    }

    fn bxor(&mut self, a: Reg, b: Reg) -> Reg {
        self.logic("xor", a, b)
    }

    fn iadd(&mut self, a: Reg, b: Reg) -> Reg {
        self.binary("add.s32", a, b)
    }

    fn isub(&mut self, a: Reg, b: Reg) -> Reg {
        self.binary("sub.s32", a, b)
    }

    fn sshr(&mut self, x: Reg, bits: u32) -> Reg {
        self.op(Class::B32, "shr.s32", format_args!("{x}, {bits}"))
    }

    fn ishl(&mut self, x: Reg, bits: u32) -> Reg {
        self.op(Class::B32, "shl.b32", format_args!("{x}, {bits}"))
    }

    fn ushr(&mut self, x: Reg, bits: u32) -> Reg {
        self.op(Class::B32, "shr.u32", format_args!("{x}, {bits}"))
    }

    fn bits_of(&mut self, x: Reg) -> Reg {
        self.op(Class::B32, "mov.b32", format_args!("{x}"))
    }

    fn float_of_bits(&mut self, x: Reg) -> Reg {
        self.op(Class::F32, "mov.b32", format_args!("{x}"))
    }

    fn int_to_float(&mut self, x: Reg) -> Reg {
        self.op(Class::F32, "cvt.rn.f32.s32", format_args!("{x}"))
    }
}
