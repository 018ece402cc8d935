//! What the generated machine code looks like: fused multiply-adds become `vfmadd`
//! on hosts with FMA, vector loops use 128-bit SIMD, and both optimisation levels
//! compute the same results. Also reports JIT compile time of a 60-kernel program.

mod common;

use common::{compile_graph_with, random_feeds};
use kiln_backend::{Arg, CompileOptions, OptLevel};
use kiln_ir::{Graph, TensorType};
use std::time::{Duration, Instant};

fn disasm_options(opt_level: OptLevel) -> CompileOptions {
    CompileOptions {
        opt_level,
        disasm: true,
        ..CompileOptions::default()
    }
}

fn kernel_listing(exe: &kiln_backend::Executable, name: &str) -> String {
    let position = exe
        .kernel_names()
        .iter()
        .position(|kernel| kernel == name)
        .unwrap_or_else(|| panic!("no {name} kernel in {:?}", exe.kernel_names()));
    exe.disassembly(position).unwrap().to_string()
}

#[test]
fn matmul_kernels_call_the_gemm_routine_and_never_a_libcall() {
    let mut g = Graph::new("fma");
    let a = g.input("a", TensorType::f32([6, 10])).unwrap();
    let b = g.input("b", TensorType::f32([10, 12])).unwrap();
    let c = g.matmul(a, b).unwrap();
    g.set_output("c", c).unwrap();
    for opt_level in [OptLevel::None, OptLevel::Speed] {
        let exe = compile_graph_with(&g, &disasm_options(opt_level));
        let listing = kernel_listing(&exe, "matmul");
        // The kernel is one call of the packed gemm defined in the same module (its
        // microkernel's vfmadd231ps is checked in backend::cpu::gemm's tests).
        let calls: Vec<&str> = listing
            .lines()
            .filter(|line| line.trim_start().starts_with("call"))
            .collect();
        assert_eq!(calls.len(), 1, "{opt_level:?}:\n{listing}");
        assert!(
            !listing.contains("fma"),
            "{opt_level:?}: fma is not a libcall\n{listing}"
        );
    }
}

#[test]
fn elementwise_kernels_use_128_bit_vectors() {
    let mut g = Graph::new("simd");
    let a = g.input("a", TensorType::f32([37])).unwrap();
    let b = g.input("b", TensorType::f32([37])).unwrap();
    let sum = g.add_(a, b).unwrap();
    let biggest = g.max(sum, b).unwrap();
    g.set_output("sum", sum).unwrap();
    g.set_output("max", biggest).unwrap();
    for opt_level in [OptLevel::None, OptLevel::Speed] {
        let exe = compile_graph_with(&g, &disasm_options(opt_level));
        let add = kernel_listing(&exe, "add");
        // Packed single-precision add and unaligned 128-bit loads/stores, plus the
        // scalar add of the remainder loop (37 = 9 * 4 + 1).
        assert!(add.contains("addps"), "{opt_level:?}:\n{add}");
        assert!(add.contains("movups") && add.contains("xmm"), "{add}");
        assert!(
            add.contains("addss"),
            "{opt_level:?}: no scalar tail\n{add}"
        );
        let max = kernel_listing(&exe, "max");
        assert!(max.contains("maxps") || max.contains("minps"), "{max}");
    }
}

/// A 15-layer MLP forward pass: matmul, bias broadcast, add and relu per layer.
fn deep_mlp(layers: usize, width: usize, batch: usize) -> Graph {
    let mut g = Graph::new("deep_mlp");
    let mut h = g.input("x", TensorType::f32([batch, width])).unwrap();
    for layer in 0..layers {
        let w = g
            .parameter(&format!("w{layer}"), TensorType::f32([width, width]))
            .unwrap();
        let b = g
            .parameter(&format!("b{layer}"), TensorType::f32([1, width]))
            .unwrap();
        let xw = g.matmul(h, w).unwrap();
        let bias = g.broadcast(b, vec![batch, width]).unwrap();
        let pre = g.add_(xw, bias).unwrap();
        h = g.relu(pre).unwrap();
    }
    g.set_output("y", h).unwrap();
    g
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[test]
fn fifteen_layers_compile_quickly_and_both_opt_levels_agree() {
    let g = deep_mlp(15, 64, 32);
    let mut feeds = random_feeds(&g, 1);
    // Small weights keep 15 layers of activations in range.
    for (name, tensor) in feeds.iter_mut() {
        if name.starts_with('w') {
            tensor
                .edit(|data| {
                    for value in data {
                        *value = (*value * 0.1) as f32 as f64;
                    }
                })
                .unwrap();
        }
    }
    let mut results = Vec::new();
    for opt_level in [OptLevel::None, OptLevel::Speed] {
        let options = CompileOptions {
            opt_level,
            ..CompileOptions::default()
        };
        let start = Instant::now();
        let mut exe = compile_graph_with(&g, &options);
        let total = start.elapsed();
        // One kernel per layer: the matmul, with bias and relu as its epilogue.
        assert_eq!(exe.kernel_count(), 15);
        let (outputs, _) = exe.run_feeds(&feeds).unwrap();
        let x = feeds["x"].to_f32();
        let mut runs = Vec::new();
        for _ in 0..7 {
            let start = Instant::now();
            exe.run(&[("x", Arg::F32(&x))]).unwrap();
            runs.push(start.elapsed());
        }
        eprintln!(
            "{opt_level:?}: 15 kernels, codegen+jit {:.1} ms (lower+compile {:.1} ms), \
             {} bytes of code; run median {:.3} ms",
            exe.stats().codegen_time.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            exe.stats().code_bytes,
            median(runs).as_secs_f64() * 1e3,
        );
        // Generous: a debug build of kiln with optimised Cranelift takes tens of ms.
        assert!(total < Duration::from_secs(10), "compile took {total:?}");
        results.push(outputs);
    }
    // The same operations in the same order: bit-identical at both levels.
    assert_eq!(results[0], results[1]);
    common::assert_close(
        "deep mlp",
        &results[1]["y"],
        &kiln_ir::evaluate(&g, &feeds, kiln_ir::Precision::F32)
            .unwrap()
            .outputs["y"],
    );
}
