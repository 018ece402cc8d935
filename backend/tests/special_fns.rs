//! The emitted special functions of `cpu::math` (expm1, log1p, tanh, sigmoid,
//! softplus, erf, pow) equal `kiln_ir::scalar`'s definitions bit for bit (any NaN
//! equal to any NaN), on `f32` and in every lane of `f32x4`, at both Cranelift
//! optimisation levels: on every 1999th f32 bit pattern (the sample of
//! `ir/tests/special_fns.rs`) and on the awkward values, each in every lane. No graph
//! op computes them yet, so a small harness JIT-compiles each emitter into a loop
//! over arrays.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module};
use kiln_backend::cpu::{host_isa, math, OptLevel};
use kiln_ir::scalar;

/// `out[i] = f(x[i], y[i])` for i in 0..n, `n` a positive multiple of the lanes.
type LoopFn = unsafe extern "C" fn(x: *const f32, y: *const f32, out: *mut f32, n: i64);

/// An emitter of one or two arguments (a unary one ignores `y`).
type Emit = dyn Fn(&mut FunctionBuilder, Value, Value) -> Value;

/// Defines `name` as a loop that loads `lanes` of x and y (`f32` or `f32x4`),
/// emits `emit` on them and stores the result.
fn define_loop(module: &mut JITModule, name: &str, lanes: Type, emit: &Emit) -> FuncId {
    let pointer = module.target_config().pointer_type();
    let mut signature = module.make_signature();
    for ty in [pointer, pointer, pointer, types::I64] {
        signature.params.push(AbiParam::new(ty));
    }
    let func = module
        .declare_function(name, Linkage::Local, &signature)
        .unwrap();
    let mut ctx = module.make_context();
    ctx.func.signature = signature;
    let mut builder_ctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut ctx.func, &mut builder_ctx);
    let entry = b.create_block();
    let header = b.create_block();
    let exit = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params: [Value; 4] = b.block_params(entry).try_into().unwrap();
    let [x, y, out, n] = params;
    let zero = b.ins().iconst(types::I64, 0);
    b.ins().jump(header, &[zero.into()]);

    b.switch_to_block(header);
    let index = b.append_block_param(header, types::I64);
    let four = b.ins().iconst(types::I64, 4);
    let offset = b.ins().imul(index, four);
    let flags = MemFlagsData::trusted();
    let x_at = b.ins().iadd(x, offset);
    let x_value = b.ins().load(lanes, flags, x_at, 0);
    let y_at = b.ins().iadd(y, offset);
    let y_value = b.ins().load(lanes, flags, y_at, 0);
    let result = emit(&mut b, x_value, y_value);
    let out_at = b.ins().iadd(out, offset);
    b.ins().store(flags, result, out_at, 0);
    let next = b.ins().iadd_imm_s(index, i64::from(lanes.lane_count()));
    let more = b.ins().icmp(IntCC::SignedLessThan, next, n);
    b.ins().brif(more, header, &[next.into()], exit, &[]);

    b.switch_to_block(exit);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(module.target_config());
    module.define_function(func, &mut ctx).unwrap();
    func
}

/// Runs `emit` compiled for `f32` and for `f32x4` at both optimisation levels on
/// `xs` and `ys` (of one length) and checks every result against `reference`.
fn check(name: &str, emit: &Emit, reference: &dyn Fn(f32, f32) -> f32, xs: &[f32], ys: &[f32]) {
    assert_eq!(xs.len(), ys.len());
    let want: Vec<f32> = xs.iter().zip(ys).map(|(&x, &y)| reference(x, y)).collect();
    // The vector loop runs over whole vectors: pad with a harmless argument.
    let padded = xs.len().next_multiple_of(4);
    let mut x_data = xs.to_vec();
    let mut y_data = ys.to_vec();
    x_data.resize(padded, 1.0);
    y_data.resize(padded, 1.0);
    for opt_level in [OptLevel::None, OptLevel::Speed] {
        let isa = host_isa(opt_level).unwrap();
        let builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
        let mut module = JITModule::new(builder);
        let scalar_fn = define_loop(&mut module, "scalar", types::F32, emit);
        let vector_fn = define_loop(&mut module, "vector", types::F32X4, emit);
        module.finalize_definitions().unwrap();
        for (func, lanes) in [(scalar_fn, "f32"), (vector_fn, "f32x4")] {
            let code = module.get_finalized_function(func);
            // SAFETY: `define_loop` built this function with `LoopFn`'s signature in
            // the host's default calling convention.
            let code = unsafe { std::mem::transmute::<*const u8, LoopFn>(code) };
            let mut out = vec![0.0f32; padded];
            let n = if lanes == "f32" { xs.len() } else { padded };
            // SAFETY: every array holds at least `n` elements; the loop reads and
            // writes exactly the first `n`.
            unsafe { code(x_data.as_ptr(), y_data.as_ptr(), out.as_mut_ptr(), n as i64) };
            for (index, (&got, &want)) in out.iter().zip(&want).enumerate() {
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{opt_level:?} {lanes} {name}({:e}, {:e}) [{index}]: compiled {got:e}, \
                     scalar {want:e}",
                    xs[index],
                    ys[index]
                );
            }
        }
        // SAFETY: no function of the module is used after this.
        unsafe { module.free_memory() };
    }
}

/// Arguments that are awkward for some function: signed zeros, subnormals,
/// infinities, NaNs, integers and halves, and each function's thresholds.
fn awkward_values() -> Vec<f32> {
    let mut values = vec![
        0.0,
        -0.0,
        f32::from_bits(1),
        -f32::from_bits(1),
        f32::from_bits(0x007f_ffff),
        -f32::from_bits(0x007f_ffff),
        f32::MIN_POSITIVE,
        1e-30,
        -1e-30,
        f32::MAX,
        -f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0xffc0_0000),
        f32::from_bits(0x7f80_0001),
        f32::from_bits(0xffff_ffff),
        // expm1 and exp: overflow, the two-step scale, the clamp below.
        88.72283,
        88.722_84,
        89.0,
        44.7,
        44.72,
        -17.33,
        -18.0,
        -104.0,
        // log1p: around -1.
        -1.0,
        -1.000_000_1,
        -0.999_999_94,
        -0.5,
        // tanh and erf: the splits and clamps.
        9.0,
        10.0,
        0.921_875,
        0.921_874_94,
        3.92,
        4.0,
        // pow: parity limits.
        8_388_607.0,
        8_388_608.0,
        8_388_609.0,
        16_777_215.0,
        16_777_216.0,
        1e30,
    ];
    for n in -6..=6 {
        values.push(n as f32);
        values.push(n as f32 + 0.5);
    }
    values
}

/// Every 1999th bit pattern, then the awkward values four times over, each copy one
/// lane further on, so every awkward value meets every lane of a vector.
fn unary_arguments() -> Vec<f32> {
    let mut xs: Vec<f32> = (0..=u32::MAX).step_by(1999).map(f32::from_bits).collect();
    let mut copy = awkward_values();
    while copy.len() % 4 != 1 {
        copy.push(0.25);
    }
    for _ in 0..4 {
        xs.extend(&copy);
    }
    xs
}

fn check_unary(name: &str, emit: fn(&mut FunctionBuilder, Value) -> Value, f: fn(f32) -> f32) {
    let xs = unary_arguments();
    let ys = vec![0.0; xs.len()];
    check(name, &move |b, x, _| emit(b, x), &|x, _| f(x), &xs, &ys);
}

#[test]
fn compiled_expm1_equals_the_scalar_definition() {
    check_unary("expm1", math::emit_expm1, scalar::expm1_f32);
}

#[test]
fn compiled_log1p_equals_the_scalar_definition() {
    check_unary("log1p", math::emit_log1p, scalar::log1p_f32);
}

#[test]
fn compiled_tanh_equals_the_scalar_definition() {
    check_unary("tanh", math::emit_tanh, scalar::tanh_f32);
}

#[test]
fn compiled_sigmoid_equals_the_scalar_definition() {
    check_unary("sigmoid", math::emit_sigmoid, scalar::sigmoid_f32);
}

#[test]
fn compiled_softplus_equals_the_scalar_definition() {
    check_unary("softplus", math::emit_softplus, scalar::softplus_f32);
}

#[test]
fn compiled_erf_equals_the_scalar_definition() {
    check_unary("erf", math::emit_erf, scalar::erf_f32);
}

#[test]
fn compiled_pow_equals_the_scalar_definition() {
    // Every awkward value against every other (their signs, zeros, infinities and
    // NaNs are pow's special cases), then bases from the bit-pattern sample against
    // exponents that walk the patterns at another stride.
    let awkward = awkward_values();
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for &x in &awkward {
        for &y in &awkward {
            xs.push(x);
            ys.push(y);
        }
    }
    for (step, bits) in (0..=u32::MAX).step_by(1999).enumerate() {
        xs.push(f32::from_bits(bits));
        // Any sign and mantissa, magnitudes from 2^-9 to 2^10, where few powers
        // overflow or underflow.
        let hash = (step as u32).wrapping_mul(0x9e37_79b9);
        let exponent = 118 + (hash >> 8) % 20;
        ys.push(f32::from_bits((hash & 0x807f_ffff) | (exponent << 23)));
    }
    // An odd count, so the vector loop's padding lanes hold values too.
    xs.push(2.0);
    ys.push(0.5);
    check("pow", &math::emit_pow, &scalar::pow_f32, &xs, &ys);
}
