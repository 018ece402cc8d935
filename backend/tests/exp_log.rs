//! Compiled `exp` and `log` (the inline polynomials of `cpu::math`) equal
//! `kiln_ir::scalar::exp_f32` and `log_f32` bit for bit (any NaN equal to any NaN),
//! in vector loops and their scalar remainders, at both Cranelift optimisation
//! levels: on a sample of bit patterns spread over the whole f32 range and on the
//! awkward values (±0, subnormals, ±inf, NaNs, the overflow and underflow thresholds).

mod common;

use common::compile_graph_with;
use kiln_backend::{CompileOptions, OptLevel};
use kiln_ir::{scalar, Feeds, Graph, Op, Tensor, TensorType, UnaryOp};

/// Every 4099th bit pattern, then the awkward values; the count is made odd so a
/// scalar remainder loop runs after the vector loop.
fn arguments() -> Vec<f32> {
    let mut xs: Vec<f32> = (0..=u32::MAX).step_by(4099).map(f32::from_bits).collect();
    let thresholds = [
        88.72283,
        88.722_84,
        88.7,
        89.0,
        89.5,
        -87.33655,
        -87.4,
        -100.0,
        -103.27893,
        -103.28,
        -103.972,
        -103.972_08,
        -104.0,
        -150.0,
    ];
    xs.extend(thresholds);
    xs.extend([
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        2.0,
        f32::from_bits(1),
        -f32::from_bits(1),
        f32::from_bits(0x007f_ffff),
        f32::MIN_POSITIVE,
        f32::MAX,
        -f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7f80_0001),
        f32::from_bits(0xffc0_1234),
    ]);
    // Each value once more, one lane later, so every value meets every lane.
    let shifted: Vec<f32> = xs[..xs.len().min(64)].to_vec();
    xs.push(0.25);
    xs.extend(shifted);
    if xs.len().is_multiple_of(4) {
        xs.push(3.0);
    }
    xs
}

#[test]
fn compiled_exp_and_log_equal_the_scalar_definitions_bit_for_bit() {
    let xs = arguments();
    let n = xs.len();
    let mut g = Graph::new("exp_log");
    let x = g.input("x", TensorType::f32([n])).unwrap();
    for op in [UnaryOp::Exp, UnaryOp::Log] {
        let y = g.add(Op::Unary(op), &[x]).unwrap();
        g.set_output(op.name(), y).unwrap();
    }
    let data = xs.iter().map(|&v| f64::from(v)).collect();
    let mut feeds = Feeds::new();
    feeds.insert(
        "x".to_string(),
        Tensor::new(TensorType::f32([n]), data).unwrap(),
    );
    for opt_level in [OptLevel::None, OptLevel::Speed] {
        let options = CompileOptions {
            opt_level,
            ..CompileOptions::default()
        };
        let mut exe = compile_graph_with(&g, &options);
        let (outputs, _) = exe.run_feeds(&feeds).unwrap();
        for (op, reference) in [
            (UnaryOp::Exp, scalar::exp_f32 as fn(f32) -> f32),
            (UnaryOp::Log, scalar::log_f32),
        ] {
            let got = outputs[op.name()].data();
            for (index, &x) in xs.iter().enumerate() {
                let want = f64::from(reference(x));
                assert!(
                    scalar::same(got[index], want),
                    "{opt_level:?} {}({x:e}) [{index}]: compiled {:e}, scalar {want:e}",
                    op.name(),
                    got[index]
                );
            }
        }
    }
}
