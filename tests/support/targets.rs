//! The targets the path tests run on, and how they find the routine calls the
//! schedule made, shared through `#[path]` by tests/matmul_paths.rs and
//! tests/train_step_paths.rs.

use kiln::backend::cpu::target::host_target;
use kiln_ir::kernel::{LoopKind, Matmul, Program, Routine, Stmt};
use kiln_ir::Target;

/// The four targets: the host's AVX2 microkernel and the portable fallback, on one
/// thread and on two; and the 512-bit kernel on one thread and on two where the host
/// offers it.
pub fn targets() -> Vec<(&'static str, Target)> {
    let avx2 = Target {
        avx512f: false,
        ..host_target(1)
    };
    // Without AVX2 on the host both halves run the fallback; still correct, only
    // less covered.
    if !avx2.avx2_fma {
        eprintln!("warning: the host has no AVX2/FMA; the 6x16 microkernel is not tested");
    }
    let f32x4 = Target {
        avx2_fma: false,
        avx512f: false,
        ..avx2.clone()
    };
    let mut targets = vec![
        ("avx2, 1 thread", avx2.clone()),
        ("avx2, 2 threads", avx2.with_threads(2)),
        ("f32x4, 1 thread", f32x4.clone()),
        ("f32x4, 2 threads", f32x4.with_threads(2)),
    ];
    let host = host_target(1);
    if host.avx512f {
        targets.push(("avx512, 1 thread", host.clone()));
        targets.push(("avx512, 2 threads", host.with_threads(2)));
    }
    targets
}

/// Every matmul routine call of `program`, with whether it sits in a parallel loop.
pub fn matmul_calls(program: &Program) -> Vec<(Matmul, bool)> {
    let mut calls = Vec::new();
    for kernel in &program.kernels {
        for stmt in &kernel.body {
            let parallel = matches!(
                stmt,
                Stmt::Loop {
                    kind: LoopKind::Parallel,
                    ..
                }
            );
            stmt.visit(&mut |inner| {
                if let Stmt::Call {
                    routine: Routine::Matmul(matmul),
                    ..
                } = inner
                {
                    calls.push((*matmul, parallel));
                }
            });
        }
    }
    calls
}
