//! The PTX emitter without a GPU: every kernel of every example model's train step
//! (and forward pass) is written for sm_80 and sm_90 and assembled by NVIDIA's
//! `ptxas`, which checks every instruction, operand type, register class and state
//! space; representative kernels' PTX is snapshot-tested. That the kernels compute
//! the right values is shown by the PTX simulator (`tests/ptx_exec.rs`) and on a GPU
//! (`benches/gpu.sh`), and that the GPU schedule may run the loops it splits in any
//! order by `passes/tests/kernel_programs.rs`.
//!
//! `ptxas` is the one from the `nvidia-cuda-nvcc-cu12` Python package, found through
//! `KILN_PTXAS` (which `.ci/run` sets after installing it) or on `PATH`. Without it
//! these tests print that they checked nothing, unless `KILN_REQUIRE_PTXAS=1` (CI),
//! where its absence fails them.

#[path = "support/example_models.rs"]
mod example_models;

use example_models::example_models;
use kiln::frontend::lang::ElaborateOptions;
use kiln::gpu::{ptx_inference, ptx_train_step, GpuProgram};
use kiln::ir::kernel::KernelOp;
use kiln::ir::op::ConvSpec;
use kiln::ir::{GpuTarget, Graph, Op, TensorType};
use kiln::model_file;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The ptxas to run, or `None` (after saying so) when there is none and none is
/// required.
fn ptxas() -> Option<PathBuf> {
    let candidate = std::env::var_os("KILN_PTXAS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("ptxas"));
    let found = Command::new(&candidate)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if found {
        return Some(candidate);
    }
    let required = std::env::var("KILN_REQUIRE_PTXAS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "KILN_REQUIRE_PTXAS=1 but ptxas ({}) cannot be run: install nvidia-cuda-nvcc-cu12 \
         (as .ci/run does) and set KILN_PTXAS",
        candidate.display()
    );
    eprintln!(
        "skipped: ptxas ({}) not found, so no PTX was assembled; `pip install \
         nvidia-cuda-nvcc-cu12` and set KILN_PTXAS to check it",
        candidate.display()
    );
    None
}

/// Assembles `program`'s module for its target; panics with ptxas's messages.
fn assemble(ptxas: &Path, what: &str, program: &GpuProgram) {
    let dir = std::env::temp_dir().join(format!("kiln-ptx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let arch = program.module.target.arch();
    let source = dir.join(format!("{what}.{arch}.ptx"));
    std::fs::write(&source, &program.module.text).unwrap();
    let out = Command::new(ptxas)
        .arg(format!("-arch={arch}"))
        .arg("-o")
        .arg(dir.join(format!("{what}.{arch}.cubin")))
        .arg(&source)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ptxas -arch={arch} rejected {what} ({}):\n{}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_example_models_kernels_assemble_for_sm80_and_sm90() {
    let Some(ptxas) = ptxas() else { return };
    let mut assembled = 0;
    for path in example_models() {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        // The files' own sizes (their `dim` defaults), as `kiln compile` would take.
        let options = ElaborateOptions {
            seed: 1,
            ..ElaborateOptions::default()
        };
        let file = model_file::load(&path, &options)
            .unwrap_or_else(|err| panic!("{name}: {}", err.render(false)));
        let programs: Vec<GpuProgram> = [GpuTarget::sm80(), GpuTarget::sm90()]
            .iter()
            .map(|target| {
                match &file.train {
                    Some(train) => {
                        let optimizer = model_file::optimizer(train).unwrap();
                        ptx_train_step(&file.model, &train.loss, optimizer, target)
                    }
                    None => ptx_inference(file.model.graph(), target),
                }
                .unwrap_or_else(|err| panic!("{name}: {err}"))
            })
            .collect();
        // ptxas is most of the time: both targets at once.
        std::thread::scope(|scope| {
            for program in &programs {
                let (ptxas, name) = (&ptxas, &name);
                scope.spawn(move || assemble(ptxas, name, program));
            }
        });
        assembled += programs
            .iter()
            .map(|p| p.module.entries.len())
            .sum::<usize>();
    }
    eprintln!("assembled {assembled} kernels");
    assert!(assembled > 100, "only {assembled} kernels assembled");
}

/// A small training step whose kernels are one of each kind: the tiled matmul with
/// a fused bias (the forward layer), elementwise kernels with exp and log (softmax
/// cross-entropy) four elements a thread as vectors, row reductions on a thread per
/// row, and the loss's full sum on one thread.
fn small_step() -> GpuProgram {
    let source = "model Small(B = 4) {
  input x: f32[B, 3]
  input labels: i32[B]
  fc = Linear(3, 2)
  forward {
    logits = fc(x)
    loss = cross_entropy(logits, labels)
    output logits, loss
  }
  train loss with sgd(lr = 0.5) batch B
}
";
    let file = model_file::load_source(
        Path::new("small.kiln"),
        source.to_string(),
        &ElaborateOptions::default(),
    )
    .unwrap_or_else(|err| panic!("{}", err.render(false)));
    let train = file.train.as_ref().unwrap();
    let optimizer = model_file::optimizer(train).unwrap();
    ptx_train_step(&file.model, &train.loss, optimizer, &GpuTarget::sm80()).unwrap()
}

#[test]
fn kernels_of_each_kind_print_as_expected() {
    let program = small_step();
    insta::assert_snapshot!("ptx_small_schedule", program.schedule.to_string());
    let entry = |kind: &str| -> String {
        let start = program
            .module
            .text
            .find(&format!("): {kind}"))
            .unwrap_or_else(|| panic!("no kernel launched as {kind}:\n{}", program.schedule));
        let line_start = program.module.text[..start].rfind("// kernel").unwrap();
        let end = line_start + program.module.text[line_start..].find("\n}\n").unwrap() + 3;
        program.module.text[line_start..end].to_string()
    };
    insta::assert_snapshot!("ptx_small_matmul", entry("matmul"));
    insta::assert_snapshot!("ptx_small_row_reduction", entry("threads depth=1"));
    insta::assert_snapshot!("ptx_small_single", entry("single"));
    insta::assert_snapshot!("ptx_small_vector", entry("threads depth=1 lanes=4"));
    let header: String = program
        .module
        .text
        .lines()
        .take(8)
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!("ptx_small_header", header);
}

#[test]
fn launches_match_the_module() {
    let program = small_step();
    assert_eq!(program.module.entries.len(), program.program.kernels.len());
    for (entry, launch) in program
        .module
        .entries
        .iter()
        .zip(&program.schedule.launches)
    {
        assert!(program
            .module
            .text
            .contains(&format!(".visible .entry {}(", entry.name)));
        assert_eq!(entry.block, launch.block_threads(), "{}", entry.name);
        for buffer in &entry.buffers {
            assert!(program
                .module
                .text
                .contains(&format!("{}_{buffer}", entry.name)));
        }
    }
}

/// The kernels of launches the example models do not all reach: reductions shared by
/// a block (warp shuffles, shared memory) over f32, i32 and bool.
#[test]
fn shared_reductions_assemble() {
    use kiln::ir::{CmpOp, Launch, ReduceOp};
    let mut g = Graph::new("reductions");
    let x = g.input("x", TensorType::f32([3, 333])).unwrap();
    let n = g.input("n", TensorType::i32([3, 333])).unwrap();
    let max = g.reduce(ReduceOp::Max, x, &[1]).unwrap();
    g.set_output("max", max).unwrap();
    let sum = g.reduce(ReduceOp::Sum, n, &[0, 1]).unwrap();
    g.set_output("sum", sum).unwrap();
    let zero = g.constant_like(0.0, x).unwrap();
    let positive = g.compare(CmpOp::Gt, x, zero).unwrap();
    let any = g.reduce(ReduceOp::Max, positive, &[1]).unwrap();
    g.set_output("any", any).unwrap();
    for target in [GpuTarget::sm80(), GpuTarget::sm90()] {
        let program = ptx_inference(&g, &target).unwrap();
        let shared = program
            .schedule
            .launches
            .iter()
            .filter(|launch| matches!(launch, Launch::Reduce { .. }))
            .count();
        assert_eq!(shared, 3, "{}", program.schedule);
        if let Some(ptxas) = ptxas() {
            assemble(&ptxas, "reductions", &program);
        }
    }
}

/// The tiled matmul (a transposed, batched one) and a contraction in every tiling
/// the schedule may pick assemble.
#[test]
fn every_matmul_tiling_assembles() {
    use kiln::ir::Launch;
    let Some(ptxas) = ptxas() else {
        return;
    };
    let mut g = conv_graph();
    let a = g.input("a", TensorType::f32(vec![3, 40, 70])).unwrap();
    let b = g.input("b", TensorType::f32(vec![3, 50, 40])).unwrap();
    let c = g.matmul_t(a, b, true, true).unwrap();
    g.set_output("c", c).unwrap();
    for target in [GpuTarget::sm80(), GpuTarget::sm90()] {
        let mut program = ptx_inference(&g, &target).unwrap();
        for part in Launch::MATMUL_PARTS {
            for launch in &mut program.schedule.launches {
                if matches!(launch, Launch::Matmul { .. }) {
                    *launch = Launch::matmul(part);
                }
            }
            program.module = kiln::backend::ptx::emit(&program.program, &program.schedule).unwrap();
            assemble(&ptxas, &format!("tiles{part}"), &program);
        }
    }
}

/// A convolution (`x: [2, 4, 6, 5]` by `w: [6, 2, 3, 3]`, two groups, stride 2 across,
/// padding 1) and its two gradients.
fn conv_graph() -> Graph {
    let spec = ConvSpec {
        stride: vec![1, 2],
        low: vec![1, 1],
        high: vec![1, 0],
        dilation: vec![1, 1],
        groups: 2,
    };
    let mut g = Graph::new("conv");
    let x = g.input("x", TensorType::f32(vec![2, 4, 6, 5])).unwrap();
    let w = g.input("w", TensorType::f32(vec![6, 2, 3, 3])).unwrap();
    let y = g.add(Op::Conv(spec.clone()), &[x, w]).unwrap();
    let dy = g.input("dy", g.ty(y).clone()).unwrap();
    let taps = vec![3, 3];
    let input = vec![6, 5];
    let dx = g
        .add(
            Op::ConvInputGrad {
                spec: spec.clone(),
                input,
            },
            &[dy, w],
        )
        .unwrap();
    let dw = g.add(Op::ConvFilterGrad { spec, taps }, &[x, dy]).unwrap();
    g.set_output("y", y).unwrap();
    g.set_output("dx", dx).unwrap();
    g.set_output("dw", dw).unwrap();
    g
}

/// A convolution is an implicit GEMM on the GPU: after the pad, the convolution and
/// its filter gradient are one contraction kernel each (whose op line shows the
/// strides through which the tiled kernel gathers its panels), the input gradient
/// one summed over taps, and ptxas takes them.
#[test]
fn convolutions_are_implicit_gemms() {
    let g = conv_graph();
    for target in [GpuTarget::sm80(), GpuTarget::sm90()] {
        let program = ptx_inference(&g, &target).unwrap();
        let kernels: Vec<String> = program
            .program
            .kernels
            .iter()
            .zip(&program.schedule.launches)
            .map(|(kernel, launch)| {
                let op = match &kernel.op {
                    Some(op @ KernelOp::Contraction(_)) => format!("\n  op {op}"),
                    _ => String::new(),
                };
                format!("{} ({launch}){op}", kernel.name)
            })
            .collect();
        insta::assert_snapshot!("ptx_conv_kernels", kernels.join("\n"));
        if let Some(ptxas) = ptxas() {
            assemble(&ptxas, "conv", &program);
        }
    }
}
