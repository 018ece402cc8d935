//! GEMM tests: JIT-compiled functions against the scalar fma chain, bit for bit.

use super::*;
use crate::cpu::{host_isa, OptLevel};
use cranelift_jit::{JITBuilder, JITModule};

const BIAS: Epilogue = Epilogue {
    bias: true,
    relu: false,
    update: None,
};
const RELU: Epilogue = Epilogue {
    bias: false,
    relu: true,
    update: None,
};
const BIAS_RELU: Epilogue = Epilogue {
    bias: true,
    relu: true,
    update: None,
};

type GemmFn = unsafe extern "C" fn(*const f32, *const f32, *mut f32, *mut u8, i64, i64, i64, i64);
type GemmBiasFn =
    unsafe extern "C" fn(*const f32, *const f32, *mut f32, *mut u8, i64, i64, i64, i64, *const f32);

/// A JIT-compiled GEMM; frees its code when dropped.
struct Compiled {
    module: Option<JITModule>,
    entry: Entry,
}

/// The function's address and what calling it needs; shared by threads while the
/// `Compiled` that owns the code lives.
#[derive(Clone, Copy)]
struct Entry {
    address: usize,
    spec: GemmSpec,
    workspace_bytes: usize,
}

impl std::ops::Deref for Compiled {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        &self.entry
    }
}

impl Drop for Compiled {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the function is only called through `self`.
            unsafe { module.free_memory() };
        }
    }
}

fn compile(
    spec: &GemmSpec,
    kernel: MicroKernel,
    blocking: &Blocking,
    opt_level: OptLevel,
) -> Compiled {
    let isa = host_isa(opt_level).expect("the host is supported");
    let builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    let mut module = JITModule::new(builder);
    let func = define_gemm(&mut module, "gemm", spec, kernel, blocking).expect("gemm compiles");
    module.finalize_definitions().expect("the module links");
    let address = module.get_finalized_function(func) as usize;
    Compiled {
        module: Some(module),
        entry: Entry {
            address,
            spec: *spec,
            workspace_bytes: spec.workspace_bytes(kernel, blocking),
        },
    }
}

impl Entry {
    /// Runs rows `[row_begin, row_end)` of C (all columns) into `c` with a fresh
    /// workspace.
    fn run(&self, a: &[f32], b: &[f32], bias: &[f32], c_address: usize, rows: (usize, usize)) {
        self.run_block(a, b, bias, c_address, rows, (0, self.spec.n));
    }

    /// Runs the block of rows `[row_begin, row_end)` and columns `[col_begin,
    /// col_end)` into `c` with a fresh workspace.
    fn run_block(
        &self,
        a: &[f32],
        b: &[f32],
        bias: &[f32],
        c_address: usize,
        rows: (usize, usize),
        cols: (usize, usize),
    ) {
        // Unaligned on purpose (by 4 bytes): the kernel must not assume alignment.
        let mut workspace = vec![0u8; self.workspace_bytes + 8];
        let workspace_ptr = workspace[4..].as_mut_ptr();
        let (row_begin, row_end) = (rows.0 as i64, rows.1 as i64);
        let (col_begin, col_end) = (cols.0 as i64, cols.1 as i64);
        let c = c_address as *mut f32;
        // SAFETY: the function was defined with this signature; the buffers have the
        // spec's sizes and the workspace its size.
        unsafe {
            if self.spec.epilogue.bias {
                let f: GemmBiasFn = std::mem::transmute(self.address);
                f(
                    a.as_ptr(),
                    b.as_ptr(),
                    c,
                    workspace_ptr,
                    row_begin,
                    row_end,
                    col_begin,
                    col_end,
                    bias.as_ptr(),
                );
            } else {
                let f: GemmFn = std::mem::transmute(self.address);
                f(
                    a.as_ptr(),
                    b.as_ptr(),
                    c,
                    workspace_ptr,
                    row_begin,
                    row_end,
                    col_begin,
                    col_end,
                );
            }
        }
    }
}

/// Deterministic values in [-1, 1) with full mantissas, so that any change in the
/// order or the rounding of the chain shows.
fn values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The interpreter's chain, then the epilogue.
fn reference(spec: &GemmSpec, a: &[f32], b: &[f32], bias: &[f32]) -> Vec<f32> {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                let a_ip = if spec.trans_a {
                    a[p * m + i]
                } else {
                    a[i * k + p]
                };
                let b_pj = if spec.trans_b {
                    b[j * k + p]
                } else {
                    b[p * n + j]
                };
                acc = a_ip.mul_add(b_pj, acc);
            }
            if spec.epilogue.bias {
                acc += bias[j];
            }
            if spec.epilogue.relu {
                acc = if acc > 0.0 { acc } else { 0.0 };
            }
            c[i * n + j] = acc;
        }
    }
    c
}

/// Equal bits, or both NaN (NaN payloads are not part of kiln's contract).
fn same(x: f32, y: f32) -> bool {
    x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
}

fn assert_same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (index, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            same(g, w),
            "{what}: element {index} is {g:e} ({:#010x}), want {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// Every kernel the host runs, slowest first: the fallback always, AVX2/FMA where the
/// host has it (as kiln's development machines do), AVX-512F where it has that too.
fn kernels() -> Vec<MicroKernel> {
    let host = crate::cpu::target::host_target(1);
    let mut kernels = vec![MicroKernel::F32x4];
    if host.avx2_fma {
        kernels.push(MicroKernel::Avx2Fma6x16);
    }
    if host.avx512f {
        kernels.push(MicroKernel::Avx512F12x32);
    }
    kernels
}

/// The fastest kernel the host runs (the one the schedule picks).
fn best_kernel() -> MicroKernel {
    *kernels().last().expect("the fallback is always there")
}

/// Several KC, MC and NC blocks even on small matrices.
const SMALL: Blocking = Blocking {
    mc: 12,
    kc: 8,
    nc: 32,
};

/// Computes the whole C (pre-filled with NaN, which must all be overwritten) split
/// at `splits` and compares it with the reference.
fn check(spec: &GemmSpec, kernel: MicroKernel, blocking: &Blocking, seed: u64) {
    let a = values(spec.m * spec.k, seed);
    let b = values(spec.k * spec.n, seed + 1);
    let bias = values(spec.n, seed + 2);
    check_with(spec, kernel, blocking, &a, &b, &bias, &[spec.m]);
}

fn check_with(
    spec: &GemmSpec,
    kernel: MicroKernel,
    blocking: &Blocking,
    a: &[f32],
    b: &[f32],
    bias: &[f32],
    split_ends: &[usize],
) {
    let compiled = compile(spec, kernel, blocking, OptLevel::Speed);
    // A guard after C: edge tiles written directly (masked columns, exact rows)
    // must stop at C's last element.
    let len = spec.m * spec.n;
    let mut c = vec![f32::NAN; len + GUARD];
    c[len..].fill(GUARD_VALUE);
    let mut begin = 0;
    for &end in split_ends {
        compiled.run(a, b, bias, c.as_mut_ptr() as usize, (begin, end));
        begin = end;
    }
    let what = format!("{spec:?} {kernel:?} {blocking:?} split at {split_ends:?}");
    assert_same(&c[..len], &reference(spec, a, b, bias), &what);
    assert!(
        c[len..]
            .iter()
            .all(|x| x.to_bits() == GUARD_VALUE.to_bits()),
        "{what}: wrote past C"
    );
}

/// Floats after C that no run may write, and their value (a NaN no kernel makes).
const GUARD: usize = 64;
const GUARD_VALUE: f32 = f32::from_bits(0x7fc0_4321);

fn spec(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> GemmSpec {
    GemmSpec {
        m,
        n,
        k,
        trans_a,
        trans_b,
        epilogue: Epilogue::default(),
    }
}

const SIZES: [(usize, usize, usize); 16] = [
    (1, 1, 1),
    (6, 16, 4),
    (5, 7, 3),
    (7, 17, 5),
    (13, 33, 31),
    (17, 31, 13),
    (33, 16, 17),
    (31, 1, 33),
    (1, 64, 67),
    (6, 8, 16),
    (67, 70, 65),
    (64, 64, 64),
    (5, 13, 71),
    (16, 6, 1),
    // Whole 16-column tiles that are not whole 32-column ones, and several of both.
    (7, 48, 9),
    (13, 96, 21),
];

#[test]
fn every_transpose_and_odd_size_matches_the_fma_chain() {
    for kernel in kernels() {
        for (trans_a, trans_b) in [(false, false), (false, true), (true, false), (true, true)] {
            for (seed, &(m, n, k)) in SIZES.iter().enumerate() {
                let spec = spec(m, n, k, trans_a, trans_b);
                check(&spec, kernel, &SMALL, seed as u64);
            }
            // Several KC and MC blocks at the default blocking.
            for &(m, n, k) in &[(67, 70, 65), (13, 40, 600), (300, 20, 10)] {
                let spec = spec(m, n, k, trans_a, trans_b);
                check(&spec, kernel, &Blocking::default(), 99);
            }
        }
    }
}

#[test]
fn empty_dimensions_write_positive_zeros_or_nothing() {
    for kernel in kernels() {
        for &(m, n, k) in &[(0, 5, 7), (5, 0, 7), (5, 7, 0), (0, 0, 0), (13, 17, 0)] {
            let spec = spec(m, n, k, false, false);
            assert_eq!(spec.workspace_bytes(kernel, &SMALL), 0);
            check(&spec, kernel, &SMALL, 7);
        }
    }
}

#[test]
fn blocking_clamps_degenerate_values() {
    let tiny = Blocking {
        mc: 0,
        kc: 0,
        nc: 0,
    };
    let huge = Blocking {
        mc: 1 << 40,
        kc: 1 << 40,
        nc: 1 << 40,
    };
    for kernel in kernels() {
        check(&spec(13, 33, 9, false, true), kernel, &tiny, 3);
        check(&spec(13, 33, 9, true, false), kernel, &huge, 4);
    }
    assert_eq!(
        Blocking::default(),
        Blocking {
            mc: 252,
            kc: 256,
            nc: 8192
        }
    );
}

#[test]
fn the_schedules_host_blocking_is_usable() {
    let target = crate::cpu::target::host_target(1);
    let (chosen, mc, kc, nc) = kiln_passes::schedule::matmul::blocking(&target, 67, 70, 65);
    assert!(kc >= 16 && mc >= chosen.mr() && nc >= chosen.nr());
    assert_eq!((mc % chosen.mr(), nc % chosen.nr()), (0, 0));
    let blocking = Blocking { mc, kc, nc };
    for kernel in kernels() {
        check(&spec(67, 70, 65, false, false), kernel, &blocking, 5);
    }
}

#[test]
fn two_threads_on_split_row_ranges_match_and_touch_only_their_rows() {
    for kernel in kernels() {
        for (split, &(m, n, k)) in [(36, (67, 70, 65)), (7, (13, 33, 31)), (0, (5, 17, 9))]
            .iter()
            .map(|(split, size)| (*split, size))
        {
            let spec = spec(m, n, k, false, false);
            let compiled = compile(&spec, kernel, &SMALL, OptLevel::Speed);
            let a = values(m * k, 11);
            let b = values(k * n, 12);
            let sentinel = f32::from_bits(0x7fc0_1234);
            let mut c = vec![sentinel; m * n];
            let c_address = c.as_mut_ptr() as usize;
            let entry = compiled.entry;
            std::thread::scope(|scope| {
                scope.spawn(|| entry.run(&a, &b, &[], c_address, (0, split)));
                scope.spawn(|| entry.run(&a, &b, &[], c_address, (split, m)));
            });
            assert_same(&c, &reference(&spec, &a, &b, &[]), "two threads");

            // One range alone leaves the other rows as they were.
            let mut c = vec![sentinel; m * n];
            compiled.run(&a, &b, &[], c.as_mut_ptr() as usize, (split, m));
            assert!(c[..split * n]
                .iter()
                .all(|x| x.to_bits() == sentinel.to_bits()));
            let want = reference(&spec, &a, &b, &[]);
            assert_same(&c[split * n..], &want[split * n..], "second range");
        }
    }
}

#[test]
fn two_threads_on_split_column_ranges_match_and_touch_only_their_columns() {
    // Splits at a multiple of every kernel's NR and not; the bias is indexed by the
    // absolute column.
    for kernel in kernels() {
        for (split, &(m, n, k)) in [(32, (29, 70, 65)), (13, (7, 33, 31)), (0, (5, 17, 9))]
            .iter()
            .map(|(split, size)| (*split, size))
        {
            for epilogue in [Epilogue::default(), BIAS_RELU] {
                let spec = GemmSpec {
                    epilogue,
                    ..spec(m, n, k, false, true)
                };
                let compiled = compile(&spec, kernel, &SMALL, OptLevel::Speed);
                let (a, b, bias) = (values(m * k, 21), values(k * n, 22), values(n, 23));
                let sentinel = f32::from_bits(0x7fc0_1234);
                let mut c = vec![sentinel; m * n];
                let c_address = c.as_mut_ptr() as usize;
                let entry = compiled.entry;
                std::thread::scope(|scope| {
                    scope.spawn(|| entry.run_block(&a, &b, &bias, c_address, (0, m), (0, split)));
                    scope.spawn(|| entry.run_block(&a, &b, &bias, c_address, (0, m), (split, n)));
                });
                let want = reference(&spec, &a, &b, &bias);
                assert_same(&c, &want, &format!("{kernel:?} {spec:?} two threads"));

                // One range alone leaves the other columns as they were.
                let mut c = vec![sentinel; m * n];
                compiled.run_block(&a, &b, &bias, c.as_mut_ptr() as usize, (0, m), (split, n));
                for (row, (got, want)) in c.chunks(n).zip(want.chunks(n)).enumerate() {
                    assert!(
                        got[..split]
                            .iter()
                            .all(|x| x.to_bits() == sentinel.to_bits()),
                        "{kernel:?} {spec:?}: row {row} written left of the block"
                    );
                    assert_same(&got[split..], &want[split..], "second block");
                }
            }
        }
    }
}

#[test]
fn out_of_range_rows_are_clamped() {
    for kernel in kernels() {
        let spec = spec(7, 9, 5, false, false);
        let compiled = compile(&spec, kernel, &SMALL, OptLevel::Speed);
        let (a, b) = (values(35, 1), values(45, 2));
        let mut c = vec![f32::NAN; 63];
        compiled.run(&a, &b, &[], c.as_mut_ptr() as usize, (0, 0));
        let address = c.as_mut_ptr() as usize;
        // SAFETY (of the run): the clamped range stays inside C.
        let workspace = vec![0u8; compiled.workspace_bytes];
        let f: GemmFn = unsafe { std::mem::transmute(compiled.address) };
        unsafe {
            f(
                a.as_ptr(),
                b.as_ptr(),
                address as *mut f32,
                workspace.as_ptr() as *mut u8,
                -5,
                1 << 40,
                -3,
                1 << 41,
            )
        };
        assert_same(&c, &reference(&spec, &a, &b, &[]), "clamped");
    }
}

#[test]
fn nan_and_infinity_propagate_as_in_the_chain() {
    for kernel in kernels() {
        let spec = spec(13, 19, 11, false, true);
        let mut a = values(13 * 11, 5);
        let mut b = values(11 * 19, 6);
        a[3] = f32::NAN;
        a[20] = f32::INFINITY;
        a[40] = f32::NEG_INFINITY;
        b[7] = f32::INFINITY;
        b[50] = 0.0;
        b[60] = f32::NAN;
        a[100] = -0.0;
        check_with(&spec, kernel, &SMALL, &a, &b, &[], &[13]);
    }
}

#[test]
fn negative_zero_products_sum_to_positive_zero() {
    for kernel in kernels() {
        let spec = spec(7, 17, 3, false, false);
        let a = vec![-0.0; 21];
        let b = vec![1.0; 51];
        check_with(&spec, kernel, &SMALL, &a, &b, &[], &[7]);
    }
}

#[test]
fn epilogues_apply_bias_then_relu_to_the_final_chain() {
    for kernel in kernels() {
        for epilogue in [BIAS, RELU, BIAS_RELU] {
            for &(m, n, k) in &[(13, 33, 31), (6, 16, 8), (7, 9, 0), (67, 70, 65)] {
                let spec = GemmSpec {
                    epilogue,
                    ..spec(m, n, k, false, true)
                };
                let mut a = values(m * k, 8);
                let b = values(k * n, 9);
                let mut bias = values(n, 10);
                if k > 0 {
                    a[0] = f32::NAN;
                }
                bias[0] = -0.0;
                bias[n - 1] = f32::NAN;
                check_with(&spec, kernel, &SMALL, &a, &b, &bias, &[m / 2, m]);
            }
        }
    }
}

#[test]
fn fallback_kernel_is_exact_without_mid_end_optimisation() {
    for (seed, &(m, n, k)) in SIZES.iter().enumerate() {
        let spec = spec(m, n, k, true, false);
        let compiled = compile(&spec, MicroKernel::F32x4, &SMALL, OptLevel::None);
        let a = values(m * k, seed as u64);
        let b = values(k * n, seed as u64 + 1);
        let mut c = vec![f32::NAN; m * n];
        compiled.run(&a, &b, &[], c.as_mut_ptr() as usize, (0, m));
        assert_same(&c, &reference(&spec, &a, &b, &[]), "opt none");
    }
}

#[test]
fn x86_microkernels_are_fma_code_of_their_width_and_isa() {
    use iced_x86::{CpuidFeature, Decoder, DecoderOptions, Mnemonic};
    use CpuidFeature::{AVX, AVX512F, FMA, INTEL386, INTEL8086, SSE, X64};
    // SSE for the `prefetcht1` of the next tiles' C.
    let kernels = [
        (
            avx2::microkernel_bytes(TileShape {
                rows: avx2::MR,
                cols: avx2::NR,
            }),
            32,
            avx2::MR,
            [INTEL8086, INTEL386, X64, SSE, AVX, FMA],
        ),
        // AVX for the zeroing `vxorps xmm` and `vzeroupper`; nothing beyond AVX-512F.
        (
            avx512::microkernel_bytes(TileShape {
                rows: avx512::MR,
                cols: avx512::NR,
            }),
            64,
            avx512::MR,
            [INTEL8086, INTEL386, X64, SSE, AVX, AVX512F],
        ),
    ];
    for (bytes, vector_bytes, mr, allowed) in kernels {
        let bytes = bytes
            .expect("the kernel assembles")
            .expect("every kernel has a full tile");
        let mut decoder = Decoder::with_ip(64, &bytes, 0, DecoderOptions::NONE);
        let mut fmas = 0;
        let mut broadcasts = 0;
        let mut last = Mnemonic::INVALID;
        let mut before_last = Mnemonic::INVALID;
        for instruction in &mut decoder {
            assert!(!instruction.is_invalid(), "undecodable bytes");
            for feature in instruction.cpuid_features() {
                assert!(allowed.contains(feature), "{instruction} needs {feature:?}");
            }
            let register_bytes = instruction.op0_register().size();
            match instruction.mnemonic() {
                Mnemonic::Vfmadd231ps => {
                    assert_eq!(register_bytes, vector_bytes, "{instruction}");
                    fmas += 1;
                }
                Mnemonic::Vbroadcastss => {
                    assert_eq!(register_bytes, vector_bytes, "{instruction}");
                    assert_eq!(instruction.memory_size().size(), 4, "from memory");
                    broadcasts += 1;
                }
                _ => {}
            }
            before_last = last;
            last = instruction.mnemonic();
        }
        // Per k step 2 fmas and 1 broadcast a row: four unrolled steps and one
        // remainder.
        assert_eq!(
            (fmas, broadcasts),
            (2 * mr * 5, mr * 5),
            "{vector_bytes}-byte kernel"
        );
        assert_eq!((before_last, last), (Mnemonic::Vzeroupper, Mnemonic::Ret));
    }
}

#[test]
fn x86_kernels_are_refused_for_a_target_without_their_features() {
    use cranelift_codegen::settings::{self, Configurable};
    let isa_without = |flag: &str| {
        let mut isa_builder = cranelift_codegen::isa::lookup_by_name("x86_64-unknown-linux-gnu")
            .expect("x64 is built");
        isa_builder.set("has_avx2", "true").expect("a known flag");
        isa_builder.set("has_fma", "true").expect("a known flag");
        isa_builder
            .set("has_avx512f", "true")
            .expect("a known flag");
        isa_builder.set(flag, "false").expect("a known flag");
        isa_builder
            .finish(settings::Flags::new(settings::builder()))
            .expect("a valid isa")
    };
    let without_avx2 = isa_without("has_avx2");
    assert!(!MicroKernel::Avx2Fma6x16.runs_on(&*without_avx2));
    assert!(MicroKernel::F32x4.runs_on(&*without_avx2));
    let without_avx512 = isa_without("has_avx512f");
    assert!(!MicroKernel::Avx512F12x32.runs_on(&*without_avx512));
    assert!(MicroKernel::Avx2Fma6x16.runs_on(&*without_avx512));
    let host = host_isa(OptLevel::None).expect("the host is supported");
    let target = crate::cpu::target::host_target(1);
    assert_eq!(MicroKernel::Avx2Fma6x16.runs_on(&*host), target.avx2_fma);
    assert_eq!(MicroKernel::Avx512F12x32.runs_on(&*host), target.avx512f);
}

#[test]
fn several_gemms_share_one_module() {
    let isa = host_isa(OptLevel::Speed).expect("the host is supported");
    let builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    let mut module = JITModule::new(builder);
    let kernel = best_kernel();
    let specs = [spec(7, 17, 5, false, false), spec(13, 9, 20, true, true)];
    let ids: Vec<FuncId> = specs
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            define_gemm(&mut module, &format!("gemm{index}"), spec, kernel, &SMALL)
                .expect("gemm compiles")
        })
        .collect();
    assert!(define_gemm(&mut module, "gemm0", &specs[0], kernel, &SMALL).is_err());
    module.finalize_definitions().expect("the module links");
    for (spec, id) in specs.iter().zip(ids) {
        let entry = Entry {
            address: module.get_finalized_function(id) as usize,
            spec: *spec,
            workspace_bytes: spec.workspace_bytes(kernel, &SMALL),
        };
        let (a, b) = (values(spec.m * spec.k, 1), values(spec.k * spec.n, 2));
        let mut c = vec![f32::NAN; spec.m * spec.n];
        entry.run(&a, &b, &[], c.as_mut_ptr() as usize, (0, spec.m));
        assert_same(&c, &reference(spec, &a, &b, &[]), "shared module");
    }
    // SAFETY: the functions are not called after this.
    unsafe { module.free_memory() };
}

#[test]
fn the_kernel_ir_and_the_code_agree_on_tile_sizes() {
    use kiln_ir::kernel::{Matmul, Split};
    for kernel in MicroKernel::ALL {
        let call = Matmul {
            m: 1,
            n: 1,
            k: 1,
            trans_a: false,
            trans_b: false,
            split: Split::All,
            kernel,
            mc: kernel.mr(),
            kc: 1,
            nc: kernel.nr(),
            epilogue: Default::default(),
        };
        assert_eq!(call.tile(), (kernel.mr(), kernel.nr()), "{kernel:?}");
        // The schedule sizes workspaces with the kernel IR's formula; the code must
        // never need more.
        let spec = spec(37, 53, 29, true, false);
        let blocking = Blocking {
            mc: 2 * kernel.mr(),
            kc: 8,
            nc: 2 * kernel.nr(),
        };
        let call = Matmul {
            m: 37,
            n: 53,
            k: 29,
            mc: blocking.mc,
            kc: blocking.kc,
            nc: blocking.nc,
            ..call
        };
        assert!(spec.workspace_bytes(kernel, &blocking) <= call.workspace_len() * 4);
    }
}

/// The x86 kernels the host runs, with their tile.
fn x86_kernels() -> Vec<MicroKernel> {
    kernels()
        .into_iter()
        .filter(|&kernel| kernel != MicroKernel::F32x4)
        .collect()
}

#[test]
fn exact_row_edge_kernels_match_for_every_remainder() {
    for kernel in x86_kernels() {
        let (mr, nr) = (kernel.mr(), kernel.nr());
        for rows in 1..mr {
            let m = 2 * mr + rows;
            for (trans_a, trans_b) in [(false, false), (true, true)] {
                // Whole column tiles, and a column edge too (the corner kernel).
                for n in [2 * nr, nr + 3] {
                    let spec = spec(m, n, 13, trans_a, trans_b);
                    let (a, b) = (values(m * 13, rows as u64), values(13 * n, 50));
                    let bias = values(n, 51);
                    // Splits at multiples of MR reach the edge kernel; an odd split
                    // the scratch tile.
                    for splits in [vec![m], vec![mr, m], vec![mr + 1, m]] {
                        check_with(&spec, kernel, &SMALL, &a, &b, &bias, &splits);
                    }
                }
            }
            let spec = GemmSpec {
                epilogue: BIAS_RELU,
                ..spec(m, 2 * nr, 9, false, true)
            };
            check(&spec, kernel, &SMALL, rows as u64);
        }
    }
}

#[test]
fn column_edges_match_for_every_width() {
    for kernel in x86_kernels() {
        let (mr, nr) = (kernel.mr(), kernel.nr());
        for cols in 1..nr {
            // Masked on AVX-512; one whole vector or the scratch tile on AVX2.
            for m in [mr, 2 * mr + 1] {
                let n = nr + cols;
                check(&spec(m, n, 11, false, false), kernel, &SMALL, cols as u64);
                let spec = GemmSpec {
                    epilogue: BIAS,
                    ..spec(m, n, 6, true, false)
                };
                check(&spec, kernel, &SMALL, cols as u64 + 100);
            }
        }
    }
}

#[test]
fn packing_handles_kc_remainders_and_partial_panels() {
    // kc blocks of 5, 6 and 7 leave remainders 1..3 of the transposed 4×4 packing;
    // m and n leave every partial panel size with and without whole groups of four.
    for kernel in kernels() {
        for kc in [5, 6, 7] {
            let blocking = Blocking {
                mc: 2 * kernel.mr(),
                kc,
                nc: kernel.nr(),
            };
            for (trans_a, trans_b) in [(false, false), (false, true), (true, false), (true, true)] {
                for extra in 1..kernel.mr().max(8) {
                    let (m, n) = (kernel.mr() + extra, kernel.nr() + extra);
                    for k in [kc - 1, kc + 2, 2 * kc + 3] {
                        check(
                            &spec(m, n, k, trans_a, trans_b),
                            kernel,
                            &blocking,
                            (m * k) as u64,
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn x86_edge_kernels_compute_only_their_shape() {
    use iced_x86::{Code, Decoder, DecoderOptions, Mnemonic, OpKind, Register};
    // The machine code of a shape, the kernel's tile, and whether it has opmasks.
    type BytesOf = fn(TileShape) -> Result<Option<Vec<u8>>, BackendError>;
    let cases: [(BytesOf, usize, usize, bool); 2] = [
        (avx2::microkernel_bytes, avx2::MR, avx2::NR, false),
        (avx512::microkernel_bytes, avx512::MR, avx512::NR, true),
    ];
    for (bytes_of, mr, nr, maskable) in cases {
        let lanes = nr / 2;
        for rows in 1..=mr {
            for cols in 1..=nr {
                let shape = TileShape { rows, cols };
                let bytes = bytes_of(shape).expect("the kernel assembles");
                let masked = cols % lanes != 0;
                let Some(bytes) = bytes else {
                    assert!(masked && !maskable, "{shape:?} has code");
                    continue;
                };
                let vectors = cols.div_ceil(lanes);
                let mut fmas = 0;
                let mut masked_moves = 0;
                for instruction in Decoder::with_ip(64, &bytes, 0, DecoderOptions::NONE) {
                    assert!(!instruction.is_invalid(), "undecodable bytes");
                    if instruction.mnemonic() == Mnemonic::Vfmadd231ps {
                        fmas += 1;
                    }
                    if instruction.op_mask() == Register::K1 {
                        assert_eq!(instruction.mnemonic(), Mnemonic::Vmovups);
                        // Loads zero the lanes outside the mask.
                        let load = instruction.op0_kind() == OpKind::Register;
                        assert!(!load || instruction.zeroing_masking());
                        masked_moves += 1;
                    }
                    assert_ne!(instruction.code(), Code::INVALID);
                }
                // Four unrolled k steps and one remainder.
                assert_eq!(fmas, 5 * rows * vectors, "{shape:?}");
                // A load (accumulating) and a store of each row's last vector.
                let want = if masked { 2 * rows } else { 0 };
                assert_eq!(masked_moves, want, "{shape:?}");
            }
        }
    }
}

type GemmUpdateFn =
    unsafe extern "C" fn(*const f32, *const f32, *mut f32, *mut u8, i64, i64, i64, i64, *const f32);

impl Entry {
    /// Runs the block `rows` × `cols` of an update-epilogue gemm: C = param - scale ·
    /// A·B, with `param` at `param_address` (C's own address for in place).
    fn run_update(
        &self,
        a: &[f32],
        b: &[f32],
        param_address: usize,
        c_address: usize,
        rows: (usize, usize),
        cols: (usize, usize),
    ) {
        let mut workspace = vec![0u8; self.workspace_bytes + 8];
        // SAFETY: the function was defined with this signature (update, no bias); the
        // buffers have the spec's sizes and the workspace its size.
        unsafe {
            let f: GemmUpdateFn = std::mem::transmute(self.address);
            f(
                a.as_ptr(),
                b.as_ptr(),
                c_address as *mut f32,
                workspace[4..].as_mut_ptr(),
                rows.0 as i64,
                rows.1 as i64,
                cols.0 as i64,
                cols.1 as i64,
                param_address as *const f32,
            );
        }
    }
}

#[test]
fn the_update_epilogue_takes_one_descent_step_per_element() {
    // Whole tiles, edge rows and columns, k = 1, one KC block of the blocking, and
    // k = 0 (every sum the empty chain +0).
    let blocking = Blocking { kc: 128, ..SMALL };
    let scale = 0.01f32;
    for kernel in kernels() {
        for &(m, n, k) in &[
            (13, 37, 11),
            (7, 5, 1),
            (29, 70, 65),
            (24, 64, 128),
            (5, 9, 0),
        ] {
            for (trans_a, trans_b) in [(false, false), (true, false), (false, true)] {
                let spec = GemmSpec {
                    epilogue: Epilogue::update(scale),
                    ..spec(m, n, k, trans_a, trans_b)
                };
                let compiled = compile(&spec, kernel, &blocking, OptLevel::Speed);
                let (a, b) = (values(m * k, 31), values(k * n, 32));
                let param = values(m * n, 33);
                let product = reference(&spec, &a, &b, &[]);
                let want: Vec<f32> = param
                    .iter()
                    .zip(&product)
                    .map(|(&old, &sum)| old - scale * sum)
                    .collect();
                let what = format!("{kernel:?} {spec:?}");
                // Into a separate C, in two column blocks.
                let mut c = vec![f32::NAN; m * n];
                let (param_address, c_address) = (param.as_ptr() as usize, c.as_mut_ptr() as usize);
                let half = n / 2;
                compiled.run_update(&a, &b, param_address, c_address, (0, m), (0, half));
                compiled.run_update(&a, &b, param_address, c_address, (0, m), (half, n));
                assert_same(&c, &want, &format!("{what} into C"));
                // In place, as the arena places a parameter's update, in two row blocks.
                let mut in_place = param.clone();
                let address = in_place.as_mut_ptr() as usize;
                compiled.run_update(&a, &b, address, address, (0, m / 2), (0, n));
                compiled.run_update(&a, &b, address, address, (m / 2, m), (0, n));
                assert_same(&in_place, &want, &format!("{what} in place"));
            }
        }
    }
}

#[test]
fn an_update_epilogue_over_two_kc_blocks_is_refused() {
    let spec = GemmSpec {
        epilogue: Epilogue::update(0.5),
        ..spec(4, 8, 9, false, false)
    };
    let isa = host_isa(OptLevel::None).expect("the host is supported");
    let mut module = JITModule::new(JITBuilder::with_isa(
        isa,
        cranelift_module::default_libcall_names(),
    ));
    let err = define_gemm(&mut module, "gemm", &spec, MicroKernel::F32x4, &SMALL).unwrap_err();
    assert!(err.to_string().contains("one KC block"), "{err}");
}
