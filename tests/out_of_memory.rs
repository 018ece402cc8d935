//! Running out of memory is an error, not an abort: this test binary caps its own
//! address space (`setrlimit(RLIMIT_AS)`) a little above what it uses, then asks for
//! tensors within the size limit but beyond the cap, so that `try_reserve` fails on
//! every machine, whatever its RAM or overcommit policy. Linux only: the cap is set
//! relative to the `VmSize` that `/proc/self/status` reports.
#![cfg(target_os = "linux")]

use kiln::backend::RuntimeError;
use kiln::frontend::{FrontendError, Init, ModelBuilder};
use kiln::ir::{evaluate, Feeds, Graph, InterpError, Precision, Tensor, TensorType};
use kiln::{compile, Arg};
use std::sync::Once;

/// Elements of a tensor within the size limit (2^29 <= 2^31 - 1) whose f32 buffer
/// (2 GiB) or f64 host tensor (4 GiB) exceeds the cap.
const LARGE: usize = 1 << 29;

/// Headroom above the address space in use when the cap is set: enough for JIT
/// compilation and the test harness, far below any `LARGE` allocation.
const HEADROOM: u64 = 1 << 30;

/// Caps the address space of this process once (every test of this binary relies on
/// it, and the cap cannot be raised again).
fn cap_address_space() {
    static CAP: Once = Once::new();
    CAP.call_once(|| {
        let status = std::fs::read_to_string("/proc/self/status").expect("procfs is mounted");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmSize:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmSize in /proc/self/status");
        let cap = kib * 1024 + HEADROOM;
        let limit = libc::rlimit {
            rlim_cur: cap,
            rlim_max: cap,
        };
        // SAFETY: setrlimit reads the struct we pass and changes only process limits.
        let result = unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
        assert_eq!(result, 0, "setrlimit(RLIMIT_AS) failed");
    });
}

#[test]
fn a_parameter_too_large_for_memory_is_a_builder_error() {
    cap_address_space();
    let mut builder = ModelBuilder::new("big", 0);
    let err = builder
        .parameter("w", &[LARGE, 1], Init::HeUniform)
        .unwrap_err();
    let FrontendError::OutOfMemory { context, source } = &err else {
        panic!("expected OutOfMemory, got {err}");
    };
    assert_eq!(context, "parameter \"w\"");
    assert_eq!(source.bytes, LARGE * 4);
    assert_eq!(
        err.to_string(),
        format!(
            "parameter \"w\": out of memory: cannot allocate {} bytes for the initial values of a parameter of shape [{LARGE}, 1]",
            LARGE * 4
        )
    );
    // The builder is still usable and declared nothing.
    builder.parameter("w", &[2], Init::Zeros).unwrap();
}

#[test]
fn a_parameter_too_large_for_memory_is_a_compile_error() {
    cap_address_space();
    let mut graph = Graph::new("big_param");
    let w = graph.parameter("w", TensorType::f32([LARGE])).unwrap();
    let y = graph.neg(w).unwrap();
    graph.set_output("y", y).unwrap();
    let err = compile(&graph).err().expect("compiling must fail");
    assert_eq!(
        err.to_string(),
        format!(
            "codegen: out of memory: cannot allocate {} bytes for parameter \"w\"",
            LARGE * 4
        )
    );
}

#[test]
fn a_large_intermediate_is_allocated_at_the_first_run_and_fails_there() {
    cap_address_space();
    let mut graph = Graph::new("big_temp");
    let x = graph.input("x", TensorType::f32([1, 1 << 14])).unwrap();
    let wide = graph.broadcast(x, [LARGE >> 14, 1 << 14]).unwrap();
    let exp = graph.exp(wide).unwrap();
    let sum = graph.reduce_sum(exp, &[0, 1]).unwrap();
    graph.set_output("y", sum).unwrap();
    // Compiling succeeds under the cap: nothing of the run is allocated yet.
    let mut exe = kiln::compile::compile_with(
        &graph,
        &[],
        &kiln::passes::pipeline::PipelineOptions::default(),
    )
    .unwrap();
    assert_eq!(exe.allocated_bytes(), 0);
    let x_values = vec![0.0f32; 1 << 14];
    let err = exe.run(&[("x", Arg::F32(&x_values))]).unwrap_err();
    let RuntimeError::OutOfMemory(oom) = &err else {
        panic!("expected OutOfMemory, got {err}");
    };
    assert!(oom.bytes >= LARGE * 4, "{err}");
    assert!(
        err.to_string()
            .starts_with("out of memory: cannot allocate"),
        "{err}"
    );
    // Nothing was kept: the executable holds no buffers and can report it.
    assert_eq!(exe.allocated_bytes(), 0);
}

#[test]
fn an_interpreter_value_too_large_for_memory_is_an_error() {
    cap_address_space();
    let mut graph = Graph::new("big_value");
    let x = graph.input("x", TensorType::f32([1])).unwrap();
    let wide = graph.broadcast(x, [LARGE]).unwrap();
    graph.set_output("y", wide).unwrap();
    let mut feeds = Feeds::new();
    feeds.insert("x".into(), Tensor::f32([1], &[1.0]).unwrap());
    let err = evaluate(&graph, &feeds, Precision::F32).unwrap_err();
    assert_eq!(
        err,
        InterpError::OutOfMemory(kiln::ir::OutOfMemory {
            what: format!("a value of shape [{LARGE}]"),
            bytes: LARGE * 8,
        })
    );
    let err = Tensor::full(&TensorType::f32([LARGE]), 0.0).unwrap_err();
    assert!(err.to_string().starts_with("out of memory"), "{err}");
}
