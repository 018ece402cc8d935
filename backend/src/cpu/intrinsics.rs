//! Runtime functions that generated code calls for operations Cranelift has no
//! instruction for: `exp` and `log` on f32.
//!
//! They are `kiln_ir::scalar`'s `exp_f32` and `log_f32` (in f64, rounded once), the
//! functions the reference interpreter's `Precision::F32` mode and the constant
//! folders call, so compiled results match them bit for bit. A vector lane calls
//! them one lane at a time. A vectorised polynomial would be faster; it can replace
//! these without touching the kernel IR.

/// The symbol of the f32 `exp` intrinsic.
pub const EXP_F32: &str = "kiln_exp_f32";
/// The symbol of the f32 `log` intrinsic.
pub const LOG_F32: &str = "kiln_log_f32";

/// `exp(x)` rounded from f64.
pub extern "C" fn kiln_exp_f32(x: f32) -> f32 {
    kiln_ir::scalar::exp_f32(x)
}

/// `ln(x)` rounded from f64 (NaN below zero, -inf at zero, as the interpreter).
pub extern "C" fn kiln_log_f32(x: f32) -> f32 {
    kiln_ir::scalar::log_f32(x)
}

/// Every intrinsic's symbol and address, for a JIT's symbol table.
pub fn symbols() -> [(&'static str, *const u8); 2] {
    [
        (EXP_F32, kiln_exp_f32 as *const u8),
        (LOG_F32, kiln_log_f32 as *const u8),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intrinsics_round_the_f64_result() {
        assert_eq!(kiln_exp_f32(1.0), std::f64::consts::E as f32);
        assert_eq!(kiln_log_f32(0.0), f32::NEG_INFINITY);
        assert!(kiln_log_f32(-1.0).is_nan());
        assert_eq!(kiln_exp_f32(f32::NEG_INFINITY), 0.0);
    }
}
