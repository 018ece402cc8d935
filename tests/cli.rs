//! The `kiln` command as a user runs it: its output, its errors and its exit codes
//! (0 success, 1 a mistake in the model or a failed check, 2 a bad command line).

use std::path::PathBuf;

#[path = "support/cli.rs"]
mod support;

use support::{kiln, stderr, stdout};

const DIGITS: &str = "examples/models/mlp_digits.kiln";

/// A model file with `text` in a fresh temporary folder.
fn temp_model(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.kiln"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_prints_a_one_line_summary_and_binds_dimensions() {
    let output = kiln(&["check", DIGITS, "--dim", "B=8"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "MlpDigits: ok; 6 parameters (26122 values); inputs x: f32[8,64], labels: i32[8]; \
         outputs logits: f32[8,10], loss: f32[]; trains loss with sgd(lr = 0.1, momentum = 0.0, \
         dampening = 0.0, weight_decay = 0.0, nesterov = false), batch 8\n"
    );
}

#[test]
fn a_mistake_is_shown_with_its_line_and_exits_with_1() {
    let path = temp_model(
        "shape",
        "model M(B = 2) {\n  input x: f32[B, 3]\n  fc = Linear(4, 5)\n  forward {\n    y = fc(x)\n    output y\n  }\n}\n",
    );
    let output = kiln(&["check", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains(":5:9: linear: expected f32[batch,4] (or more leading axes), found f32[2,3]"),
        "{err}"
    );
    assert!(err.contains("    y = fc(x)"), "{err}");
    assert!(stdout(&output).is_empty());

    let output = kiln(&["check", "no/such/file.kiln"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("error: no/such/file.kiln: "),
        "{}",
        stderr(&output)
    );

    let output = kiln(&["check", DIGITS, "--dim", "C=3"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("model `MlpDigits` has no dimension `C`"));
}

#[test]
fn a_bad_command_line_exits_with_2() {
    for args in [
        &["check"][..],
        &["check", DIGITS, "--dim", "B"],
        &["frobnicate"],
    ] {
        let output = kiln(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let output = kiln(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = stdout(&output);
    for command in ["check", "dump", "gradcheck", "compile", "Exit codes"] {
        assert!(help.contains(command), "{help}");
    }
}

#[test]
fn dump_prints_the_ir_after_any_step() {
    let output = kiln(&["dump", DIGITS, "--dim", "B=4", "--after", "dce"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("graph MlpDigits {"), "{text}");
    assert!(text.contains("output \"loss\""), "{text}");
    assert!(text.contains("update \"fc1.weight\""), "{text}");

    let output = kiln(&["dump", DIGITS, "--after", "schedule.matmul"]);
    assert!(
        stdout(&output).contains("call matmul"),
        "{}",
        stdout(&output)
    );

    let output = kiln(&["dump", DIGITS, "--after", "build", "--format", "json"]);
    assert!(stdout(&output).trim_start().starts_with('{'));
    let output = kiln(&["dump", DIGITS, "--after", "build", "--format", "dot"]);
    assert!(
        stdout(&output).starts_with("digraph"),
        "{}",
        stdout(&output)
    );

    let output = kiln(&["dump", DIGITS, "--after", "lower", "--format", "dot"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("kernel IR, which prints as text only"));

    let output = kiln(&["dump", DIGITS, "--after", "fuse"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(
            "the steps are build, autodiff, optimizer, expand, egraph, dce, lower, schedule.epilogue"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn dump_stats_count_nodes_kernels_and_bytes_per_step() {
    let output = kiln(&["dump", DIGITS, "--dim", "B=4", "--stats"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let steps: Vec<&str> = text
        .lines()
        .map(|line| line.split(':').next().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "build",
            "autodiff",
            "optimizer",
            "expand",
            "egraph",
            "dce",
            "lower",
            "schedule.epilogue",
            "schedule.matmul",
            "schedule.parallel",
            "schedule.vectorize"
        ]
    );
    assert!(
        text.lines().next().unwrap().contains(" nodes, 0 kernels, "),
        "{text}"
    );
    assert!(text.contains("lower: "), "{text}");
}

#[test]
fn gradcheck_passes_on_the_digits_model_and_needs_a_loss() {
    let output = kiln(&["gradcheck", DIGITS, "--dim", "B=3", "--seed", "1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("max relative error: "), "{text}");
    let error: f64 = last["max relative error: ".len()..].parse().unwrap();
    assert!(error < 1e-4, "{text}");
    // Every parameter and the f32 input are checked.
    for leaf in ["fc1.weight", "fc1.bias", "fc3.weight", "x"] {
        assert!(text.contains(&format!("{leaf}: ")), "{text}");
    }

    let path = temp_model(
        "no_train",
        "model M() {\n  input x: f32[2]\n  forward { output x }\n}\n",
    );
    let output = kiln(&["gradcheck", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("no `train` statement and no output `loss`"));
}

#[test]
fn check_names_the_optimizer_with_every_hyperparameter_and_rejects_one_out_of_range() {
    let model = |optimizer: &str| {
        format!(
            "model M() {{\n  input x: f32[4, 3]\n  fc = Linear(3, 1)\n  forward {{\n    loss = mean(fc(x))\n    output loss\n  }}\n  train loss with {optimizer}\n}}\n"
        )
    };
    let path = temp_model("adam", &model("adam(amsgrad = true, polyak = 0.99)"));
    let output = kiln(&["check", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).ends_with(
            "trains loss with adam(lr = 0.001, betas = (0.9, 0.999), eps = 1e-8, \
             weight_decay = 0.0, amsgrad = true, polyak = 0.99), batch 4\n"
        ),
        "{}",
        stdout(&output)
    );
    // The train step with the optimizer's state compiles and dumps.
    let output = kiln(&["dump", path.to_str().unwrap(), "--after", "optimizer"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("update \"fc.weight.adam.max_exp_avg_sq\""));

    let path = temp_model("rmsprop", &model("rmsprop(alpha = 1.5)"));
    let output = kiln(&["check", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let error = stderr(&output);
    assert!(
        error.contains(":8:35: alpha 1.5 rounds to 1.5 in f32; expected a number in [0, 1)"),
        "{error}"
    );
}

#[test]
fn compile_writes_an_object_and_a_header_or_says_what_is_wrong() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{}-compile", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (object, header) = (dir.join("digits.o"), dir.join("digits.h"));
    let (object, header) = (object.to_str().unwrap(), header.to_str().unwrap());
    let output = kiln(&[
        "compile", DIGITS, "--dim", "B=2", "--train", "-o", object, "--header", header,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let lines: Vec<String> = stdout(&output).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("digits_train: 10 arguments, workspace "),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("digits_infer: 10 arguments, workspace "),
        "{lines:?}"
    );
    // An ELF relocatable object, and its header with both entry points.
    let bytes = std::fs::read(object).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    let text = std::fs::read_to_string(header).unwrap();
    assert!(text.contains("int32_t digits_train(const digits_train_args *args, void *workspace);"));
    assert!(text.contains("#define DIGITS_INFER_X_LEN 128u"));

    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "compile",
                DIGITS,
                "-o",
                "no/such/folder/m.o",
                "--header",
                header,
            ],
            "error: no/such/folder/m.o: cannot write the file: the folder no/such/folder does not exist",
        ),
        (
            &[
                "compile", DIGITS, "-o", object, "--header", header, "--name", "2fast",
            ],
            "error: --name \"2fast\" is not a C identifier",
        ),
        (
            &[
                "compile",
                "examples/models/hopfield.kiln",
                "--train",
                "-o",
                object,
                "--header",
                header,
            ],
            "error: examples/models/hopfield.kiln: --train needs a `train` statement",
        ),
    ];
    for (args, message) in cases {
        let output = kiln(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(stderr(&output).starts_with(message), "{}", stderr(&output));
    }
}

/// The kernel lines `kiln compile --ptx` printed (`k3: … (entry k3_add)`): each
/// kernel's number, launch and entry name.
fn ptx_kernel_lines(stdout: &str) -> Vec<(usize, String, String)> {
    stdout
        .lines()
        .filter(|line| !line.starts_with("wrote "))
        .map(|line| {
            let (kernel, rest) = line.split_once(": ").expect("`kN: launch (entry name)`");
            let (launch, entry) = rest.split_once(" (entry ").expect("an entry name");
            let kernel = kernel.strip_prefix('k').expect("`kN`").parse().expect("N");
            let entry = entry.strip_suffix(')').expect("`)` at the end");
            (kernel, launch.to_string(), entry.to_string())
        })
        .collect()
}

#[test]
fn compile_ptx_writes_the_forward_pass_or_the_train_step_and_prints_every_kernel() {
    use kiln::frontend::lang::ElaborateOptions;
    use kiln::ir::GpuTarget;
    let dir = support::temp_dir("cli", "ptx");
    let mut kernels = Vec::new();
    for (arch, target, train) in [
        ("sm_80", GpuTarget::sm80(), false),
        ("sm_90", GpuTarget::sm90(), false),
        ("sm_80", GpuTarget::sm80(), true),
        ("sm_90", GpuTarget::sm90(), true),
    ] {
        let path = dir.join(format!("{arch}-{train}.ptx"));
        let mut args = vec![
            "compile",
            DIGITS,
            "--ptx",
            arch,
            "-o",
            path.to_str().unwrap(),
        ];
        if train {
            args.push("--train");
        }
        let output = kiln(&args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("//\n// MlpDigits for "), "{args:?}");
        assert!(text.contains(&format!("\n.target {arch}\n")), "{args:?}");

        // The file is the library's module for the same model, byte for byte: the
        // forward pass built for evaluation, or the train statement's step.
        let options = ElaborateOptions {
            evaluation: !train,
            ..ElaborateOptions::default()
        };
        let file = kiln::model_file::load(std::path::Path::new(DIGITS), &options).unwrap();
        let expected = if train {
            let spec = file.train.as_ref().unwrap();
            let optimizer = kiln::model_file::optimizer(spec).unwrap();
            kiln::gpu::ptx_train_step(&file.model, &spec.loss, optimizer, &target)
        } else {
            kiln::gpu::ptx_inference(file.model.graph(), &target)
        }
        .unwrap();
        assert!(
            text == expected.module.text,
            "{args:?}: not the library's PTX"
        );

        // One line per kernel, in order, with the schedule's launch and the name of
        // its `.visible .entry`, and as many entries in the file as lines.
        let out = stdout(&output);
        let lines = ptx_kernel_lines(&out);
        let expected_lines: Vec<(usize, String, String)> = expected
            .module
            .entries
            .iter()
            .map(|entry| {
                let launch = expected.schedule.launches[entry.kernel].to_string();
                (entry.kernel, launch, entry.name.clone())
            })
            .collect();
        assert_eq!(lines, expected_lines, "{args:?}");
        assert_eq!(text.matches(".visible .entry ").count(), lines.len());
        for (_, _, entry) in &lines {
            assert!(
                text.contains(&format!(".visible .entry {entry}(")),
                "{entry}"
            );
        }
        assert_eq!(
            out.lines().last().unwrap(),
            format!(
                "wrote {} kernels ({arch}, {} bytes) to {}",
                lines.len(),
                text.len(),
                path.display()
            )
        );
        kernels.push(lines.len());
    }
    // Both architectures get the same kernels; the train step has the forward pass's
    // and its backward pass's and updates.
    assert_eq!(kernels[0], kernels[1]);
    assert_eq!(kernels[2], kernels[3]);
    assert!(kernels[2] > kernels[0], "{kernels:?}");

    // --train needs the file's `train` statement, as for an object file.
    let output = kiln(&[
        "compile",
        "examples/models/hopfield.kiln",
        "--ptx",
        "sm_80",
        "--train",
        "-o",
        dir.join("h.ptx").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output)
            .starts_with("error: examples/models/hopfield.kiln: --train needs a `train` statement"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn compile_ptx_writes_the_model_name_with_ptx_into_the_current_folder() {
    let dir = support::temp_dir("cli", "ptx-default");
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DIGITS);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "compile",
            model.to_str().unwrap(),
            "--ptx",
            "sm_90",
            "--dim",
            "B=4",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(support::entries(&dir), ["mlp_digits.ptx"]);
    let bytes = std::fs::metadata(dir.join("mlp_digits.ptx")).unwrap().len();
    let out = stdout(&output);
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("wrote ")
            && last.ends_with(&format!(
                " kernels (sm_90, {bytes} bytes) to mlp_digits.ptx"
            )),
        "{last}"
    );
}

#[test]
fn compile_ptx_with_an_unknown_architecture_is_a_usage_error_naming_sm80_and_sm90() {
    let dir = support::temp_dir("cli", "ptx-arch");
    let path = dir.join("m.ptx");
    for arch in ["sm_70", "foo", "sm80", ""] {
        let output = kiln(&[
            "compile",
            DIGITS,
            "--ptx",
            arch,
            "-o",
            path.to_str().unwrap(),
        ]);
        assert_eq!(output.status.code(), Some(2), "{arch:?}");
        let first = stderr(&output).lines().next().unwrap_or("").to_string();
        assert_eq!(
            first,
            format!(
                "error: invalid value '{arch}' for '--ptx <ARCH>': {arch:?} is no architecture \
                 kiln writes PTX for: expected sm_80 or sm_90"
            )
        );
    }
    assert_eq!(
        support::entries(&dir),
        Vec::<String>::new(),
        "nothing written"
    );
}

#[test]
fn compile_ptx_with_an_object_file_option_is_a_usage_error() {
    let dir = support::temp_dir("cli", "ptx-conflicts");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let cases: [(&[&str], &str); 4] = [
        (&["--header", "m.h"], "'--header <FILE.h>'"),
        (&["--embed-weights"], "'--embed-weights'"),
        (
            &["--embed-weights", "--weights", "w.safetensors"],
            "--weights <W.safetensors>",
        ),
        (&["--name", "m"], "'--name <NAME>'"),
    ];
    for (extra, named) in cases {
        let output_path = path("m.ptx");
        let mut args = vec!["compile", DIGITS, "--ptx", "sm_80", "-o", &output_path];
        args.extend_from_slice(extra);
        let output = kiln(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let err = stderr(&output);
        assert!(
            err.starts_with("error: the argument '--ptx <ARCH>' cannot be used with"),
            "{err}"
        );
        assert!(err.contains(named), "{err}");
    }
    assert_eq!(
        support::entries(&dir),
        Vec::<String>::new(),
        "nothing written"
    );

    // Without --ptx an object file still needs its header.
    let output = kiln(&["compile", DIGITS, "-o", &path("m.o")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--header <FILE.h>"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn kiln_dump_prints_the_gpu_schedule_and_the_ptx_of_compile_ptx() {
    let dir = support::temp_dir("cli", "ptx-dump");
    let path = dir.join("m.ptx");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "compile",
            DIGITS,
            "--ptx",
            "sm_80",
            "-o",
            path.to_str().unwrap(),
        ])
        .env("KILN_DUMP", "^(lower|schedule.gpu|ptx)$")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let err = stderr(&output);
    let headers: Vec<&str> = err
        .lines()
        .filter(|line| line.starts_with("// ---- "))
        .collect();
    assert_eq!(
        headers,
        [
            "// ---- IR after lower ----",
            "// ---- IR after schedule.gpu ----",
            "// ---- IR after ptx ----"
        ]
    );
    // The schedule's lines, then the program it launches; the PTX as written.
    let first_kernel = ptx_kernel_lines(&stdout(&output))[0].1.clone();
    assert!(
        err.contains(&format!(
            "// ---- IR after schedule.gpu ----\ngpu schedule for sm_80 sms=108\nk0: {first_kernel}\n"
        )),
        "{err}"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        err.ends_with(&format!("// ---- IR after ptx ----\n{text}\n")),
        "PTX dumped as written"
    );
}

#[test]
fn bench_reports_compile_time_median_step_and_memory() {
    let output = kiln(&[
        "bench",
        DIGITS,
        "--dim",
        "B=4",
        "--steps",
        "3",
        "--threads",
        "1",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let line = stdout(&output);
    let pattern = regex::Regex::new(
        r"^MlpDigits: train step, 1 thread\(s\): compile [0-9.]+ ms; step median [0-9.]+ ms over 3 runs \(min [0-9.]+, max [0-9.]+\); arena [0-9]+ bytes, parameters 104488 bytes, [0-9]+ kernels\n$",
    )
    .unwrap();
    assert!(pattern.is_match(&line), "{line}");
    let output = kiln(&["bench", DIGITS, "--inference", "--steps", "1"]);
    assert!(
        stdout(&output).starts_with("MlpDigits: forward pass, "),
        "{}",
        stdout(&output)
    );
    let output = kiln(&["bench", DIGITS, "--steps", "0"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr(&output), "error: --steps must be at least 1\n");
}

#[test]
fn compile_embeds_the_weights_of_a_safetensors_file() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{}-embed", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let output = kiln(&["init", DIGITS, "--seed", "7", "-o", &path("w.safetensors")]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let compile = |extra: &[&str], object: &str| {
        let mut args = vec!["compile", DIGITS, "--embed-weights", "--name", "m"];
        args.extend_from_slice(extra);
        let (o, h) = (path(object), path("m.h"));
        args.extend_from_slice(&["-o", &o, "--header", &h]);
        let output = kiln(&args);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        std::fs::read(path(object)).unwrap()
    };
    let from_file = compile(&["--weights", &path("w.safetensors")], "file.o");
    // The file holds the initialisation drawn with seed 7: the same bytes embedded.
    assert_eq!(from_file, compile(&["--seed", "7"], "seed7.o"));
    assert_ne!(from_file, compile(&["--seed", "8"], "seed8.o"));

    let output = kiln(&[
        "compile",
        DIGITS,
        "--weights",
        &path("w.safetensors"),
        "-o",
        "x.o",
        "--header",
        "x.h",
    ]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "--weights needs --embed-weights"
    );
    std::fs::write(path("bad.safetensors"), b"not safetensors").unwrap();
    let output = kiln(&[
        "compile",
        DIGITS,
        "--embed-weights",
        "--weights",
        &path("bad.safetensors"),
        "-o",
        &path("bad.o"),
        "--header",
        &path("bad.h"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("bad.safetensors: not a valid safetensors file"),
        "{}",
        stderr(&output)
    );
    assert!(!dir.join("bad.o").exists(), "nothing written");
}

#[test]
#[cfg(not(feature = "cuda"))]
fn device_cuda_without_the_cuda_feature_is_a_usage_error() {
    let commands: [&[&str]; 3] = [
        &["bench", DIGITS, "--device", "cuda"],
        &["train", DIGITS, "--epochs", "1", "--device", "cuda:1"],
        &[
            "run",
            DIGITS,
            "--weights",
            "w",
            "-o",
            "out",
            "--device",
            "cuda",
        ],
    ];
    for args in commands {
        let output = kiln(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let device = args[args.len() - 1];
        let first = stderr(&output).lines().next().unwrap_or("").to_string();
        assert_eq!(
            first,
            format!(
                "error: invalid value '{device}' for '--device <DEVICE>': kiln was built \
                 without CUDA support: rebuild with --features cuda"
            ),
            "{args:?}"
        );
    }
}

#[test]
fn an_unknown_device_is_a_usage_error_naming_the_devices() {
    let output = kiln(&["bench", DIGITS, "--device", "gpu"]);
    assert_eq!(output.status.code(), Some(2));
    let first = stderr(&output).lines().next().unwrap_or("").to_string();
    assert_eq!(
        first,
        "error: invalid value 'gpu' for '--device <DEVICE>': \"gpu\" is no device: expected \
         cpu, cuda or cuda:N"
    );
}
