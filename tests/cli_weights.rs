//! `kiln init` and `kiln run` as a user runs them: weights in safetensors, tensors
//! in .npy, outputs equal to the library's JIT bit for bit, and every bad file
//! refused with a message naming it and exit code 1 (2 for a bad command line),
//! with nothing half-written left behind.

use kiln::frontend::lang::ElaborateOptions;
use kiln::ir::{DType, Tensor, TensorType};
use kiln::{model_file, npy, weights, Arg};
use std::path::{Path, PathBuf};
use std::process::Output;

const DIGITS: &str = "examples/models/mlp_digits.kiln";
/// The batch the tests bind, unlike the file's default, so `--dim` is exercised.
const BATCH: usize = 5;

#[path = "support/cli.rs"]
mod support;

use support::{entries, kiln, stderr, stdout};

/// A fresh, empty folder for one test.
fn temp_dir(name: &str) -> PathBuf {
    support::temp_dir("cli-weights", name)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Asserts that the command failed with `code`, printed `error: <message>` as its
/// whole standard error, and printed nothing on standard output.
#[track_caller]
fn assert_error(output: &Output, code: i32, message: &str) {
    assert_eq!(output.status.code(), Some(code), "{}", stderr(output));
    assert_eq!(stderr(output), format!("error: {message}\n"));
    assert!(stdout(output).is_empty(), "{}", stdout(output));
}

/// `kiln init` of the digits MLP with `--dim B=5` into `dir/w.safetensors`.
fn init(dir: &Path, seed: u64) -> PathBuf {
    let path = dir.join("w.safetensors");
    let seed = seed.to_string();
    let dim = format!("B={BATCH}");
    let output = kiln(&[
        "init",
        DIGITS,
        "-o",
        s(&path),
        "--seed",
        &seed,
        "--dim",
        &dim,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("wrote 6 weights (26122 values) to {}\n", path.display())
    );
    path
}

/// Inputs of the digits MLP: pixels in [0, 1] and labels in 0..10, not all alike.
fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let pixels: Vec<f32> = (0..BATCH * 64)
        .map(|i| ((i * 37) % 17) as f32 / 16.0)
        .collect();
    let labels: Vec<i32> = (0..BATCH as i32).map(|i| (i * 3) % 10).collect();
    let x = dir.join("x.npy");
    let labels_path = dir.join("labels.npy");
    npy::write(&x, &Tensor::f32(vec![BATCH, 64], &pixels).unwrap()).unwrap();
    npy::write(&labels_path, &Tensor::i32(vec![BATCH], &labels).unwrap()).unwrap();
    (x, labels_path)
}

/// `kiln run` of the digits MLP with `--dim B=5` and the given extra arguments.
fn run(weights: &Path, rest: &[&str]) -> Output {
    let dim = format!("B={BATCH}");
    let mut args = vec!["run", DIGITS, "--dim", &dim, "--weights", s(weights)];
    args.extend_from_slice(rest);
    kiln(&args)
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn digits_options(seed: u64) -> ElaborateOptions {
    ElaborateOptions {
        dims: [("B".to_string(), BATCH)].into_iter().collect(),
        seed,
        evaluation: true,
        ..ElaborateOptions::default()
    }
}

#[test]
fn init_then_run_equals_the_library_jit_bit_for_bit() {
    let dir = temp_dir("end-to-end");
    let weights_path = init(&dir, 7);
    let (x, labels) = inputs(&dir);
    let out = dir.join("out");
    let output = run(
        &weights_path,
        &[
            "--input",
            &format!("x={}", x.display()),
            "--input",
            &format!("labels={}", labels.display()),
            "--output",
            s(&out),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!(
            "wrote logits.npy f32[5,10], loss.npy f32[] to {}\n",
            out.display()
        )
    );
    assert_eq!(entries(&out), ["logits.npy", "loss.npy"]);

    // The weights `init` wrote are the library's initial values for the seed.
    let seeded = model_file::load(Path::new(DIGITS), &digits_options(7)).unwrap();
    let written = weights::load(&weights_path).unwrap();
    assert_eq!(written, weights::of_model(&seeded.model).unwrap());
    assert_eq!(written["fc1.weight"].shape(), &[64, 128]);

    // The library's JIT on a model given the same weights file and inputs.
    let mut model = model_file::load(Path::new(DIGITS), &digits_options(0))
        .unwrap()
        .model;
    weights::load_into(&mut model, &weights_path).unwrap();
    let mut exe = kiln::compile(model.graph()).unwrap();
    kiln::compile::set_params(&mut exe, &model).unwrap();
    let x_values = npy::read(&x).unwrap().to_f32();
    let label_values = npy::read(&labels).unwrap().to_i32();
    exe.run(&[
        ("x", Arg::F32(&x_values)),
        ("labels", Arg::I32(&label_values)),
    ])
    .unwrap();

    let logits = npy::read(&out.join("logits.npy")).unwrap();
    assert_eq!(logits.ty(), TensorType::f32(vec![BATCH, 10]));
    assert_eq!(
        bits(&logits.to_f32()),
        bits(exe.output_f32("logits").unwrap())
    );
    let loss = npy::read(&out.join("loss.npy")).unwrap();
    assert_eq!(loss.ty(), TensorType::f32(Vec::<usize>::new()));
    assert_eq!(bits(&loss.to_f32()), bits(exe.output_f32("loss").unwrap()));
    // A real loss: finite and positive for random weights.
    let loss = loss.scalar().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
}

#[test]
fn init_is_deterministic_by_seed() {
    let dir = temp_dir("seeds");
    let read = |seed: u64| {
        let sub = dir.join(seed.to_string());
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::read(init(&sub, seed)).unwrap()
    };
    let first = read(1);
    assert_eq!(
        read(1),
        first,
        "the same seed gives the same file, byte for byte"
    );
    let other = read(2);
    assert_ne!(other, first);
    // Only the drawn weights differ: the zero biases are equal.
    let one = weights::from_bytes(&first, Path::new("1")).unwrap();
    let two = weights::from_bytes(&other, Path::new("2")).unwrap();
    assert_ne!(one["fc1.weight"], two["fc1.weight"]);
    assert_eq!(one["fc1.bias"], two["fc1.bias"]);

    // No --seed is seed 0.
    let default = dir.join("default.safetensors");
    let output = kiln(&["init", DIGITS, "--dim", "B=5", "-o", s(&default)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(std::fs::read(&default).unwrap(), read(0));
}

/// The weights file of `init` edited by `edit` and saved as `name`.
fn edited(dir: &Path, name: &str, edit: impl FnOnce(&mut weights::Weights)) -> PathBuf {
    let mut weights = weights::load(&dir.join("w.safetensors")).unwrap();
    edit(&mut weights);
    let path = dir.join(name);
    weights::save(&weights, &path).unwrap();
    path
}

#[test]
fn a_bad_weights_file_is_named_with_what_was_expected() {
    let dir = temp_dir("bad-weights");
    init(&dir, 0);
    let (x, labels) = inputs(&dir);
    let out = dir.join("out");
    let x_arg = format!("x={}", x.display());
    let labels_arg = format!("labels={}", labels.display());
    let rest = [
        "--input",
        &x_arg,
        "--input",
        &labels_arg,
        "--output",
        s(&out),
    ];

    let missing = edited(&dir, "missing.safetensors", |w| {
        w.remove("fc3.bias");
    });
    assert_error(
        &run(&missing, &rest),
        1,
        &format!(
            "{}: no weight \"fc3.bias\": the model's parameter \"fc3.bias\" is f32[10]",
            missing.display()
        ),
    );

    let shape = edited(&dir, "shape.safetensors", |w| {
        w.insert(
            "fc3.bias".into(),
            Tensor::f32(vec![11], &[0.0; 11]).unwrap(),
        );
    });
    assert_error(
        &run(&shape, &rest),
        1,
        &format!(
            "{}: weight \"fc3.bias\" is f32[11], but the model's parameter \"fc3.bias\" is f32[10]",
            shape.display()
        ),
    );

    let dtype = edited(&dir, "dtype.safetensors", |w| {
        w.insert("fc3.bias".into(), Tensor::i32(vec![10], &[0; 10]).unwrap());
    });
    assert_error(
        &run(&dtype, &rest),
        1,
        &format!(
            "{}: weight \"fc3.bias\" is i32[10], but the model's parameter \"fc3.bias\" is f32[10]",
            dtype.display()
        ),
    );

    let extra = edited(&dir, "extra.safetensors", |w| {
        w.insert("fc4.weight".into(), Tensor::f32(vec![1], &[0.0]).unwrap());
    });
    assert_error(
        &run(&extra, &rest),
        1,
        &format!(
            "{}: weight \"fc4.weight\" is not a parameter of the model (its parameters are \
             fc1.bias, fc1.weight, fc2.bias, fc2.weight, fc3.bias, fc3.weight)",
            extra.display()
        ),
    );

    // Truncated: the header's offsets run past the end of the data.
    let bytes = std::fs::read(dir.join("w.safetensors")).unwrap();
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    assert_error(
        &run(&truncated, &rest),
        1,
        &format!(
            "{}: not a valid safetensors file: incomplete metadata, file not fully covered",
            truncated.display()
        ),
    );
    // Cut inside the header: its JSON ends early.
    std::fs::write(&truncated, &bytes[..40]).unwrap();
    let output = run(&truncated, &rest);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with(&format!(
            "error: {}: not a valid safetensors file: ",
            truncated.display()
        )),
        "{}",
        stderr(&output)
    );

    let absent = dir.join("absent.safetensors");
    let output = run(&absent, &rest);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        format!(
            "error: {}: No such file or directory (os error 2)\n",
            absent.display()
        )
    );

    // None of the failed runs wrote an output.
    assert!(!out.exists());
}

#[test]
fn a_bad_input_is_named_with_what_the_model_takes() {
    let dir = temp_dir("bad-inputs");
    let weights_path = init(&dir, 0);
    let (x, labels) = inputs(&dir);
    let out = dir.join("out");
    let x_arg = format!("x={}", x.display());
    let labels_arg = format!("labels={}", labels.display());
    let with = |x_arg: &str, labels_arg: &str| {
        run(
            &weights_path,
            &["--input", x_arg, "--input", labels_arg, "--output", s(&out)],
        )
    };

    let wide = dir.join("wide.npy");
    npy::write(&wide, &Tensor::f32(vec![3, 64], &[0.5; 192]).unwrap()).unwrap();
    assert_error(
        &with(&format!("x={}", wide.display()), &labels_arg),
        1,
        &format!(
            "input \"x\": {} holds f32[3,64], but the model takes f32[5,64] (the model's \
             dimensions are set with --dim NAME=VALUE)",
            wide.display()
        ),
    );

    let float_labels = dir.join("float_labels.npy");
    npy::write(&float_labels, &Tensor::f32(vec![5], &[1.0; 5]).unwrap()).unwrap();
    assert_error(
        &with(&x_arg, &format!("labels={}", float_labels.display())),
        1,
        &format!(
            "input \"labels\": {} holds f32[5], but the model takes i32[5]",
            float_labels.display()
        ),
    );

    let bytes = std::fs::read(&x).unwrap();
    let truncated = dir.join("truncated.npy");
    std::fs::write(&truncated, &bytes[..bytes.len() - 6]).unwrap();
    assert_error(
        &with(&format!("x={}", truncated.display()), &labels_arg),
        1,
        &format!(
            "{}: truncated: the header's shape [5, 64] needs 1280 bytes of data, but the file \
             has 1274",
            truncated.display()
        ),
    );
    std::fs::write(&truncated, &bytes[..30]).unwrap();
    let output = with(&format!("x={}", truncated.display()), &labels_arg);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with(&format!(
            "error: {}: not a valid .npy file: ",
            truncated.display()
        )),
        "{}",
        stderr(&output)
    );

    assert_error(
        &with(&x_arg, &format!("y={}", labels.display())),
        1,
        &format!(
            "--input y={}: the model has no input \"y\"; its inputs are x: f32[5,64], labels: i32[5]",
            labels.display()
        ),
    );
    assert_error(
        &run(&weights_path, &["--input", &x_arg, "--output", s(&out)]),
        1,
        "no --input labels=FILE.npy for the model's input \"labels\" (i32[5])",
    );
    assert_error(&with(&x_arg, &x_arg), 1, "--input x is given twice");
    assert!(!out.exists());
}

#[test]
fn an_output_path_in_a_missing_folder_is_an_error_and_writes_nothing() {
    let dir = temp_dir("missing-folder");
    let path = dir.join("no-such-folder").join("w.safetensors");
    assert_error(
        &kiln(&["init", DIGITS, "-o", s(&path)]),
        1,
        &format!(
            "{}: cannot write the file: the folder {} does not exist",
            path.display(),
            dir.join("no-such-folder").display()
        ),
    );
    assert!(entries(&dir).is_empty());

    let weights_path = init(&dir, 0);
    let (x, labels) = inputs(&dir);
    let out = dir.join("no-such-folder").join("out");
    assert_error(
        &run(
            &weights_path,
            &[
                "--input",
                &format!("x={}", x.display()),
                "--input",
                &format!("labels={}", labels.display()),
                "--output",
                s(&out),
            ],
        ),
        1,
        &format!(
            "{}: cannot create the output folder: the folder {} does not exist",
            out.display(),
            dir.join("no-such-folder").display()
        ),
    );
    assert_eq!(entries(&dir), ["labels.npy", "w.safetensors", "x.npy"]);
}

/// A model file with `text` in `dir`.
fn model(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.kiln"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_mistake_in_the_model_file_is_located_and_leaves_the_old_weights() {
    let dir = temp_dir("model-mistakes");
    let weights_path = init(&dir, 0);
    let before = std::fs::read(&weights_path).unwrap();
    let cases = [
        (
            "syntax",
            "model M(B = 2) {\n  input x: f32[B, 3\n  forward {\n    output x\n  }\n}\n",
            vec![],
            ":3:3: unexpected `forward`",
            "expected `,` or `]`",
        ),
        (
            "layer",
            "model M(B = 2) {\n  input x: f32[B, 3]\n  fc = Frob(3, 4)\n  forward {\n    y = fc(x)\n    output y\n  }\n}\n",
            vec![],
            ":3:8: unknown layer `Frob`",
            "expected `Linear`, `Conv2d`",
        ),
        (
            "divide",
            "model M(T = 8) {\n  input x: f32[T / 4, 3]\n  fc = Linear(3, 2)\n  forward {\n    y = fc(x)\n    output y\n  }\n}\n",
            vec!["--dim", "T=6"],
            ":2:16: 6 / 4 does not divide",
            "expected a multiple of 4",
        ),
    ];
    for (name, text, dims, located, expected) in &cases {
        let path = model(&dir, name, text);
        let mut args = vec!["init", s(&path), "-o", s(&weights_path)];
        args.extend(dims.iter().copied());
        let output = kiln(&args);
        assert_eq!(output.status.code(), Some(1), "{name}: {}", stderr(&output));
        let err = stderr(&output);
        assert!(
            err.contains(&format!("{}{located}", path.display())),
            "{name}: {err}"
        );
        assert!(err.contains(expected), "{name}: {err}");
        assert!(stdout(&output).is_empty());
        assert_eq!(std::fs::read(&weights_path).unwrap(), before, "{name}");
    }
    // The same mistakes stop `kiln run` before it reads any data.
    let path = model(&dir, "layer2", cases[1].1);
    let output = kiln(&[
        "run",
        s(&path),
        "--weights",
        s(&weights_path),
        "--output",
        s(&dir.join("out")),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("unknown layer `Frob`"));
    assert!(!dir.join("out").exists());
}

#[test]
fn a_bad_command_line_exits_with_2() {
    for args in [
        &["init", DIGITS][..],
        &["init", DIGITS, "-o", "w.safetensors", "--seed", "minus one"],
        &["run", DIGITS, "--output", "out"],
        &["run", DIGITS, "--weights", "w.safetensors"],
        &[
            "run",
            DIGITS,
            "--weights",
            "w.safetensors",
            "--input",
            "x.npy",
            "--output",
            "out",
        ],
    ] {
        let output = kiln(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("--help"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let output = kiln(&[
        "run",
        DIGITS,
        "--weights",
        "w.safetensors",
        "--input",
        "x.npy",
        "--output",
        "out",
    ]);
    assert!(
        stderr(&output).contains("\"x.npy\" is not NAME=FILE.npy"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_linear_layer_runs_to_its_hand_computed_values() {
    let dir = temp_dir("dtypes");
    let path = model(
        &dir,
        "argmax",
        "model M(B = 3) {\n  input x: f32[B, 4]\n  fc = Linear(4, 2)\n  forward {\n    y = fc(x)\n    output y\n  }\n}\n",
    );
    let weights_path = dir.join("w.safetensors");
    let output = kiln(&["init", s(&path), "-o", s(&weights_path), "--seed", "5"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let x = dir.join("x.npy");
    let values: Vec<f32> = (0..12).map(|i| i as f32 - 6.0).collect();
    npy::write(&x, &Tensor::f32(vec![3, 4], &values).unwrap()).unwrap();
    let out = dir.join("out");
    let output = kiln(&[
        "run",
        s(&path),
        "--weights",
        s(&weights_path),
        "--input",
        &format!("x={}", x.display()),
        "-o",
        s(&out),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let y = npy::read(&out.join("y.npy")).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    // y = x W + b by hand, in the order the JIT's matmul sums (k ascending), in f32.
    let w = weights::load(&weights_path).unwrap();
    let (weight, bias) = (w["fc.weight"].to_f32(), w["fc.bias"].to_f32());
    for row in 0..3 {
        for col in 0..2 {
            let mut sum = 0.0f32;
            for k in 0..4 {
                sum = values[row * 4 + k].mul_add(weight[k * 2 + col], sum);
            }
            let expected = sum + bias[col];
            let got = y.to_f32()[row * 2 + col];
            assert!(
                (got - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                "y[{row},{col}] = {got}, expected {expected}"
            );
        }
    }
}

#[test]
fn the_help_describes_the_subcommands_and_their_exit_codes() {
    let help = stdout(&kiln(&["--help"]));
    assert!(help.contains("init") && help.contains("run"), "{help}");
    for command in ["init", "run"] {
        let output = kiln(&[command, "--help"]);
        assert_eq!(output.status.code(), Some(0));
        let help = stdout(&output);
        assert!(help.contains("Exit codes: 0 success; 1 "), "{help}");
        assert!(help.contains("2 a bad command line"), "{help}");
    }
    let help = stdout(&kiln(&["run", "--help"]));
    for option in [
        "--weights <W.safetensors>",
        "--input <NAME=FILE.npy>",
        "--output <DIR>",
    ] {
        assert!(help.contains(option), "{help}");
    }
}

#[test]
fn only_the_outputs_asked_for_need_their_inputs() {
    let dir = temp_dir("only");
    let weights = init(&dir, 4);
    let (x, labels) = inputs(&dir);
    let (all, only) = (dir.join("all"), dir.join("only"));
    let x_arg = format!("x={}", s(&x));
    let labels_arg = format!("labels={}", s(&labels));
    let output = run(
        &weights,
        &["--input", &x_arg, "--input", &labels_arg, "-o", s(&all)],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // Without labels: the logits alone, the same bytes.
    let output = run(
        &weights,
        &["--input", &x_arg, "--only", "logits", "-o", s(&only)],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(entries(&only), ["logits.npy"]);
    let read = |path: PathBuf| std::fs::read(path).unwrap();
    assert_eq!(read(only.join("logits.npy")), read(all.join("logits.npy")));
    // The loss reads the labels, so they are needed for it.
    let output = run(
        &weights,
        &["--input", &x_arg, "--only", "loss", "-o", s(&only)],
    );
    assert_error(
        &output,
        1,
        "no --input labels=FILE.npy for the model's input \"labels\" (i32[5])",
    );
    let output = run(
        &weights,
        &["--input", &x_arg, "--only", "nope", "-o", s(&only)],
    );
    assert_error(
        &output,
        1,
        "--only nope: the model has no output \"nope\"; its outputs are logits, loss",
    );
}
