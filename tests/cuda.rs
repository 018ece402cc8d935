//! The GPU runtime (`--features cuda`): on every machine, a missing driver is an
//! error and not a panic; with `KILN_TEST_CUDA=1` on a machine with an NVIDIA GPU
//! (benches/gpu.sh sets it), random graphs and the regression graphs of
//! tests/differential.rs run on the GPU and must equal the interpreter bit for bit,
//! so must random convolutions and their gradients (the implicit GEMM), `kiln train
//! --device cuda` must write the CPU's weights, and the digits MLP trains on the GPU to the accuracy it reaches on the CPU.
//!
//! Without `KILN_TEST_CUDA=1` the GPU tests print `skipped: KILN_TEST_CUDA is not
//! set` and check nothing; their names start with `cuda_` so that a run's list says
//! which they are. CI runs them on the simulated driver (`simcuda/`, linked as
//! `libcuda.so`; see `.ci/run`), which executes the PTX on the CPU.

#![cfg(feature = "cuda")]

use kiln::backend::cuda::CudaDevice;
use kiln::compile::{compile_for, compile_on, set_params};
use kiln::frontend::models::mlp_classifier;
use kiln::passes::optimizer::Optimizer;
use kiln::passes::pipeline;
use kiln::{metrics, Arg, CudaError, Dataset, Device, Trainer, TrainerConfig};
use kiln_ir::random::random_awkward_feeds;
use kiln_ir::{evaluate, text, Feeds, Graph, Precision, Rng};
use std::path::Path;

#[path = "support/compare.rs"]
mod compare;
#[path = "support/conv_cases.rs"]
mod conv_cases;
#[path = "support/cli.rs"]
mod support;
#[path = "support/sweep.rs"]
mod sweep;

use compare::{compare, or_panic};

const GPU: Device = Device::Cuda { ordinal: 0 };

/// Whether the GPU tests run (`KILN_TEST_CUDA=1`); says so when they do not.
fn gpu_tests_enabled(test: &str) -> bool {
    if std::env::var("KILN_TEST_CUDA").as_deref() == Ok("1") {
        return true;
    }
    println!("{test}: skipped: KILN_TEST_CUDA is not set");
    false
}

/// Whether the dynamic loader finds the driver library, asked directly rather than
/// through kiln, so that the test below checks kiln's answer against it.
fn driver_loadable() -> bool {
    ["libcuda.so", "libcuda.so.1"].iter().any(|name| {
        let name = std::ffi::CString::new(*name).expect("no NUL in a library name");
        // SAFETY: dlopen with a valid C string; a handle found is closed at once.
        unsafe {
            let handle = libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if handle.is_null() {
                return false;
            }
            libc::dlclose(handle);
            true
        }
    })
}

#[test]
fn a_missing_cuda_driver_is_an_error_not_a_panic() {
    if driver_loadable() {
        println!("the CUDA driver is present: the cuda_ tests check the GPU");
        return;
    }
    let err = CudaDevice::open(0).expect_err("no driver, no device");
    assert_eq!(err, CudaError::DriverMissing);
    let graph = text::parse(
        "graph g {\n%0 = input \"x\" : f32[3]\n%1 = exp %0 : f32[3]\noutput \"y\" = %1\n}\n",
    )
    .expect("a valid graph");
    let message = compile_for(&graph, GPU).err().map(|err| err.to_string());
    assert_eq!(
        message.as_deref(),
        Some("the CUDA driver (libcuda.so) is not present on this machine")
    );
    let output = support::kiln(&[
        "bench",
        "examples/models/mlp_digits.kiln",
        "--device",
        "cuda",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        support::stderr(&output),
        "error: the CUDA driver (libcuda.so) is not present on this machine\n"
    );
}

/// Compiles `graph` (and, when asked, its train step) for the GPU, runs it on
/// `feeds` and compares every output and update with the interpreter's.
fn check_on_gpu(graph: &Graph, feeds: &Feeds, train: bool) -> Result<(), String> {
    let expected =
        evaluate(graph, feeds, Precision::F32).map_err(|err| format!("interpreter: {err}"))?;
    let mut exe = compile_for(graph, GPU).map_err(|err| format!("compile: {err}"))?;
    let (outputs, updates) = exe.run_feeds(feeds).map_err(|err| format!("run: {err}"))?;
    compare("inference", &expected, &outputs, &updates)?;
    if !train {
        return Ok(());
    }
    let Some((forward, options, step)) = sweep::train_step(graph)? else {
        return Ok(());
    };
    let expected =
        evaluate(&step, feeds, Precision::F32).map_err(|err| format!("interpreter: {err}"))?;
    let mut exe = compile_on(&forward, pipeline::TRAIN_STEP, &options, GPU)
        .map_err(|err| format!("compile train step: {err}"))?;
    let (outputs, updates) = exe
        .run_feeds(feeds)
        .map_err(|err| format!("run train step: {err}"))?;
    compare("train step", &expected, &outputs, &updates)
}

/// Random graphs in the GPU sweep (`KILN_TEST_CUDA_GRAPHS` overrides).
const GPU_GRAPHS: u64 = 2_000;

#[test]
fn cuda_random_and_regression_graphs_match_the_interpreter() {
    if !gpu_tests_enabled("cuda_random_and_regression_graphs_match_the_interpreter") {
        return;
    }
    let graphs: u64 = std::env::var("KILN_TEST_CUDA_GRAPHS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(GPU_GRAPHS);
    let mut failures = Vec::new();
    // The options of tests/differential.rs's sweep: three in four awkward, with
    // empty tensors; every tenth also as a train step.
    for seed in 0..graphs {
        let (graph, feeds) = sweep::graph_and_feeds(seed);
        let train = seed.is_multiple_of(10);
        if let Err(err) = or_panic(|| check_on_gpu(&graph, &feeds, train)) {
            failures.push(format!("seed {seed}: {err}\n{}", text::print(&graph)));
        }
    }
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential");
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .expect("tests/differential holds the regression graphs")
        .map(|entry| entry.expect("a readable folder entry").path())
        .collect();
    files.sort();
    for path in &files {
        let source = std::fs::read_to_string(path).expect("a readable regression graph");
        let graph = text::parse(&source).expect("a regression graph parses");
        let feeds = random_awkward_feeds(&graph, &mut Rng::new(0));
        if let Err(err) = or_panic(|| check_on_gpu(&graph, &feeds, true)) {
            failures.push(format!("{}: {err}", path.display()));
        }
    }
    let checked = graphs as usize + files.len();
    println!("{checked} graphs on the GPU, {} differ", failures.len());
    assert!(
        failures.is_empty(),
        "{} of {checked} graphs differ from the interpreter on the GPU; the first:\n{}",
        failures.len(),
        failures[..failures.len().min(3)].join("\n\n")
    );
}

/// Convolutions at random odd sizes (as tests/conv_ops.rs draws them) on the GPU:
/// `conv` and `conv_filter_grad` as implicit GEMMs, `conv_input_grad` as its
/// expansion, all equal to the interpreter bit for bit.
#[test]
fn cuda_convolutions_match_the_interpreter() {
    if !gpu_tests_enabled("cuda_convolutions_match_the_interpreter") {
        return;
    }
    let mut rng = Rng::new(5);
    let cases = 200;
    let mut failures = Vec::new();
    for round in 0..cases {
        let case = conv_cases::random_case(&mut rng);
        let graph = conv_cases::graph_of(&case);
        let feeds = random_awkward_feeds(&graph, &mut rng);
        if let Err(err) = or_panic(|| check_on_gpu(&graph, &feeds, false)) {
            failures.push(format!("round {round}: {err}\n{}", text::print(&graph)));
        }
    }
    println!("{cases} convolutions on the GPU, {} differ", failures.len());
    assert!(
        failures.is_empty(),
        "{} of {cases} convolutions differ from the interpreter on the GPU; the first:\n{}",
        failures.len(),
        failures[..failures.len().min(3)].join("\n\n")
    );
}

/// Trains the digits MLP (as tests/train_digits.rs does) on `device` and returns its
/// test accuracy, evaluated on the same device.
fn digits_accuracy(device: Device) -> f64 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    let digits = Dataset::from_csv(&path, 1.0 / 16.0).expect("the digits data set");
    let (train, test) = digits.split(1437, 7).expect("a split of 1797 examples");
    let sizes = [64, 64, 10];
    let model = mlp_classifier("mlp", 32, &sizes, true, 7).expect("the digits MLP");
    let config = TrainerConfig::new(Optimizer::sgd(0.1).expect("a valid rate"))
        .expect("a valid optimizer")
        .with_seed(7)
        .with_device(device);
    let mut trainer = Trainer::new(&model, config).expect("the train step compiles");
    for _ in 0..8 {
        trainer.epoch(&train).expect("an epoch runs");
    }
    let mut eval_model =
        mlp_classifier("mlp_eval", test.len(), &sizes, false, 7).expect("the eval MLP");
    for (name, values) in trainer.params().expect("the trained parameters") {
        eval_model
            .set_param(&name, values)
            .expect("a parameter of the model");
    }
    let mut eval = compile_for(eval_model.graph(), device).expect("the forward pass compiles");
    set_params(&mut eval, &eval_model).expect("the parameters load");
    eval.run(&[("x", Arg::F32(test.features()))])
        .expect("the forward pass runs");
    let logits = eval.output_f32("logits").expect("the logits");
    metrics::accuracy(logits, test.labels(), 10)
        .expect("one row per example")
        .fraction()
        .expect("some rows")
}

#[test]
fn cuda_digits_mlp_trains_to_the_cpu_accuracy() {
    if !gpu_tests_enabled("cuda_digits_mlp_trains_to_the_cpu_accuracy") {
        return;
    }
    let cpu = digits_accuracy(Device::Cpu);
    let gpu = digits_accuracy(GPU);
    println!("digits MLP test accuracy: cpu {cpu:.4}, gpu {gpu:.4}");
    // The GPU computes each element as the CPU does (the differential test above
    // checks it bit for bit), so training should end at the same accuracy; a point
    // of slack keeps this test about training, and the differential one about bits.
    assert!(
        (gpu - cpu).abs() <= 0.01,
        "test accuracy on the GPU {gpu}, on the CPU {cpu}"
    );
    assert!(gpu > 0.9, "test accuracy {gpu}");
}

/// `kiln train --device cuda` trains as `kiln train` does on the CPU, to the same
/// bytes: softmax regression on iris in shuffled minibatches, and the karate club's
/// graph network full batch; `kiln bench --device cuda` times the GPU's step.
#[test]
fn cuda_command_line_trains_to_the_cpus_bytes() {
    if !gpu_tests_enabled("cuda_command_line_trains_to_the_cpus_bytes") {
        return;
    }
    let dir = support::temp_dir("cuda", "cli");
    let karate: Vec<String> = ["q", "x", "labels", "mask"]
        .into_iter()
        .map(|name| format!("{name}=examples/data/karate/{name}.npy"))
        .collect();
    let runs: [(&str, Vec<&str>); 2] = [
        (
            "iris",
            vec![
                "examples/models/softmax_regression.kiln",
                "--data",
                "examples/data/iris.csv",
                "--epochs",
                "3",
                "--seed",
                "5",
            ],
        ),
        (
            "karate",
            [
                "examples/models/gcn.kiln",
                "--epochs",
                "20",
                "--input",
                &karate[0],
                "--input",
                &karate[1],
                "--input",
                &karate[2],
                "--input",
                &karate[3],
            ]
            .to_vec(),
        ),
    ];
    for (name, args) in runs {
        let mut trained = Vec::new();
        for device in ["cpu", "cuda"] {
            let out = dir.join(format!("{name}-{device}"));
            let out = out.to_str().expect("a UTF-8 temporary path");
            let mut command = vec!["train"];
            command.extend(&args);
            command.extend(["--device", device, "-o", out]);
            let output = support::kiln(&command);
            assert_eq!(
                output.status.code(),
                Some(0),
                "{name} on {device}: {}",
                support::stderr(&output)
            );
            let read = |file: &str| {
                std::fs::read(Path::new(out).join(file))
                    .unwrap_or_else(|err| panic!("{name} on {device}: {file}: {err}"))
            };
            trained.push((read("weights.safetensors"), read("loss.csv")));
        }
        assert!(
            trained[0] == trained[1],
            "{name}: the GPU's weights or losses differ from the CPU's"
        );
    }
    let output = support::kiln(&[
        "bench",
        "examples/models/mlp_digits.kiln",
        "--device",
        "cuda",
        "--steps",
        "2",
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        support::stderr(&output)
    );
    assert!(
        support::stdout(&output).contains("median"),
        "{}",
        support::stdout(&output)
    );
}
