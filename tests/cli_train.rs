//! `kiln train` as a user runs it: the per-epoch lines, the results folder, the
//! checkpoints and `--resume` (bit for bit the uninterrupted run, even after the
//! run was killed in the middle of writing a checkpoint), and its errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const DIGITS: &str = "examples/models/mlp_digits.kiln";
const DATA: &str = "examples/data/digits.csv.gz";

#[path = "support/cli.rs"]
mod support;

use support::{entries, kiln};

fn temp_dir(name: &str) -> PathBuf {
    support::temp_dir("train", name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `kiln train` of the digits MLP for `epochs`, with extra arguments.
fn train(epochs: usize, extra: &[&str]) -> Output {
    let epochs = epochs.to_string();
    let mut args = vec![
        "train", DIGITS, "--data", DATA, "--scale", "0.0625", "--epochs", &epochs, "--seed", "3",
    ];
    args.extend_from_slice(extra);
    let output = kiln(&args);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    output
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn training_writes_weights_and_the_loss_curve_and_resumes_bit_for_bit() {
    let dir = temp_dir("resume");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let output = train(4, &["-o", &path("straight")]);
    let lines: Vec<String> = text(&output.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    for (epoch, line) in lines[..4].iter().enumerate() {
        let prefix = format!("epoch {}/4: loss ", epoch + 1);
        assert!(
            line.starts_with(&prefix) && line.contains(", 1792 examples, "),
            "{line}"
        );
    }
    let csv = text(&read(&dir.join("straight/loss.csv")));
    let losses: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 4);
    assert!(losses[3] < 0.5 * losses[0], "{losses:?}");
    assert_eq!(&read(&dir.join("straight/loss.png"))[..4], b"\x89PNG");

    // Two epochs, then two more from the checkpoint.
    train(2, &["--checkpoint", &path("ck"), "-o", &path("first")]);
    assert_eq!(
        entries(&dir.join("ck")),
        ["epoch-0001.safetensors", "epoch-0002.safetensors"]
    );
    let output = train(
        4,
        &[
            "--checkpoint",
            &path("ck"),
            "--resume",
            "-o",
            &path("resumed"),
        ],
    );
    assert!(
        text(&output.stdout).starts_with("resumed from "),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(
        read(&dir.join("straight/weights.safetensors")),
        read(&dir.join("resumed/weights.safetensors"))
    );
    assert_eq!(csv, text(&read(&dir.join("resumed/loss.csv"))));
    // The resumed run went on training: its weights are not the two-epoch ones.
    assert_ne!(
        read(&dir.join("first/weights.safetensors")),
        read(&dir.join("resumed/weights.safetensors"))
    );
}

#[test]
fn a_run_killed_while_writing_a_checkpoint_leaves_the_previous_one_to_resume_from() {
    let dir = temp_dir("killed");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (ck, out) = (path("ck"), path("out"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "train", DIGITS, "--data", DATA, "--scale", "0.0625", "--epochs", "3", "--seed", "3",
        ])
        .args(["--checkpoint", &ck, "-o", &out])
        .env("KILN_TEST_CHECKPOINT_PAUSE_MS", "2000")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first checkpoint is in place and the second is being written.
    let start = Instant::now();
    let writing_second = || {
        std::fs::read_dir(&ck).ok().is_some_and(|entries| {
            let names: Vec<String> = entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.iter().any(|n| n == "epoch-0001.safetensors")
                && names
                    .iter()
                    .any(|n| n.starts_with(".epoch-0002.safetensors.tmp"))
        })
    };
    while !writing_second() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no second checkpoint started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !dir.join("ck/epoch-0002.safetensors").exists(),
        "no half-written checkpoint"
    );
    let output = train(3, &["--checkpoint", &ck, "--resume", "-o", &out]);
    assert!(
        text(&output.stdout).contains("epoch-0001.safetensors (1 epochs done)"),
        "{}",
        text(&output.stdout)
    );
    train(3, &["-o", &path("straight")]);
    assert_eq!(
        read(&dir.join("out/weights.safetensors")),
        read(&dir.join("straight/weights.safetensors"))
    );
}

#[test]
fn npy_features_and_labels_train_too() {
    let dir = temp_dir("npy");
    let features: Vec<f64> = (0..40 * 64).map(|i| f64::from(i % 17) / 16.0).collect();
    let labels: Vec<f64> = (0..40).map(|i| f64::from(i % 10)).collect();
    let tensor = |ty, data| kiln::ir::Tensor::new(ty, data).unwrap();
    kiln::npy::write(
        &dir.join("x.npy"),
        &tensor(kiln::ir::TensorType::f32([40, 64]), features),
    )
    .unwrap();
    kiln::npy::write(
        &dir.join("y.npy"),
        &tensor(kiln::ir::TensorType::i32([40]), labels),
    )
    .unwrap();
    let (x, y, out) = (dir.join("x.npy"), dir.join("y.npy"), dir.join("out"));
    let output = kiln(&[
        "train",
        DIGITS,
        "--data",
        x.to_str().unwrap(),
        "--labels",
        y.to_str().unwrap(),
        "--epochs",
        "2",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).starts_with("epoch 1/2: loss "),
        "{}",
        text(&output.stdout)
    );
    assert!(out.join("weights.safetensors").exists());
}

#[test]
fn mistakes_are_named_with_exit_code_1_and_bad_command_lines_2() {
    let dir = temp_dir("errors");
    let out = dir.join("out");
    let out = out.to_str().unwrap();
    let bad_csv = dir.join("bad.csv");
    std::fs::write(&bad_csv, "1,2,0\n3,x,1\n").unwrap();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let cases: [(&[&str], String); 5] = [
        (&["train", DIGITS, "--data", DATA, "--epochs", "0", "-o", out], "error: --epochs must be at least 1\n".into()),
        (
            &["train", "examples/models/hopfield.kiln", "--data", DATA, "--epochs", "1", "-o", out],
            "error: examples/models/hopfield.kiln: the model has no `train` statement to say its loss and optimizer\n".into(),
        ),
        (
            &["train", DIGITS, "--data", bad_csv.to_str().unwrap(), "--epochs", "1", "-o", out],
            format!("error: {}:2: feature \"x\" is not a number\n", bad_csv.display()),
        ),
        (
            &["train", DIGITS, "--data", "no/such.csv", "--epochs", "1", "-o", out],
            "error: no/such.csv: No such file or directory (os error 2)\n".into(),
        ),
        (
            &["train", DIGITS, "--data", DATA, "--epochs", "1", "--checkpoint", empty.to_str().unwrap(), "--resume", "-o", out],
            format!("error: {}: no checkpoint (epoch-NNNN.safetensors) to resume from\n", empty.display()),
        ),
    ];
    for (args, message) in cases {
        let output = kiln(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(text(&output.stderr), message, "{args:?}");
    }
    let output = kiln(&[
        "train", DIGITS, "--data", DATA, "--epochs", "1", "--resume", "-o", out,
    ]);
    assert_eq!(output.status.code(), Some(2), "--resume needs --checkpoint");
}

#[test]
fn the_iris_and_karate_club_data_train_out_of_the_box() {
    let dir = temp_dir("datasets");
    let out = |name: &str| dir.join(name).to_str().unwrap().to_string();
    // iris.csv starts with scikit-learn's header line, which is skipped.
    let output = kiln(&[
        "train",
        "examples/models/softmax_regression.kiln",
        "--data",
        "examples/data/iris.csv",
        "--epochs",
        "3",
        "-o",
        &out("iris"),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("epoch 3/3: loss "),
        "{}",
        text(&output.stdout)
    );

    // The karate club: the graph network full batch on its .npy inputs, one step per
    // epoch; 100 epochs, or 60 and then 40 more from the checkpoint, to the same bytes.
    let karate = |name: &str| format!("{name}=examples/data/karate/{name}.npy");
    let inputs: Vec<String> = ["q", "x", "labels", "mask"]
        .into_iter()
        .map(karate)
        .collect();
    let run = |epochs: &str, extra: &[&str]| {
        let mut args = vec!["train", "examples/models/gcn.kiln", "--epochs", epochs];
        for input in &inputs {
            args.extend_from_slice(&["--input", input]);
        }
        args.extend_from_slice(extra);
        let output = kiln(&args);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        output
    };
    let output = run("100", &["-o", &out("gcn")]);
    let last = text(&output.stdout).lines().nth(99).unwrap().to_string();
    let loss: f64 = last
        .split("loss ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(loss < 0.05, "{last}");
    run("60", &["--checkpoint", &out("ck"), "-o", &out("first")]);
    run(
        "100",
        &[
            "--checkpoint",
            &out("ck"),
            "--resume",
            "-o",
            &out("resumed"),
        ],
    );
    assert_eq!(
        read(&dir.join("gcn/weights.safetensors")),
        read(&dir.join("resumed/weights.safetensors"))
    );
}
