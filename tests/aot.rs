//! Ahead-of-time objects linked into C programs: a model compiled by `kiln::aot`
//! (as `kiln compile` does) into an object and a header, a C program that calls it
//! built with the system C compiler (`cc`), and its results against the JIT's: the
//! forward pass's outputs, and every train step's outputs and the parameters and
//! optimizer state after `STEPS` steps, within 1e-6 relative. Parameters passed by
//! the caller and embedded in the object; the header compiles as C99 and C++.

use kiln::aot::{compile_object, AotOptions, AotOutput};
use kiln::backend::cpu::aot::{ArgKind, EntryLayout};
use kiln::compile::{compile_with, set_params, Executable};
use kiln::frontend::lang::ElaborateOptions;
use kiln::frontend::Model;
use kiln::ir::{DType, Rng, TensorType};
use kiln::model_file;
use kiln::passes::pipeline::{self, PipelineOptions};
use kiln::{Arg, Optimizer};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const STEPS: usize = 3;

/// An MLP with Adam (so the train step has optimizer state, a step counter too),
/// an odd batch and widths.
const SOURCE: &str = "model Tiny(B = 5) {
  input x: f32[B, 7]
  input labels: i32[B]
  fc1 = Linear(7, 9)
  fc2 = Linear(9, 3)
  forward {
    logits = fc2(relu(fc1(x)))
    loss = cross_entropy(logits, labels)
    output logits, loss
  }
  train loss with adam(lr = 0.05) batch B
}
";

fn model() -> (Model, String, Optimizer) {
    let file = model_file::load_source(
        Path::new("tiny.kiln"),
        SOURCE.to_string(),
        &ElaborateOptions {
            seed: 3,
            ..ElaborateOptions::default()
        },
    )
    .unwrap_or_else(|err| panic!("{}", err.render(false)));
    let spec = file.train.expect("the model trains");
    let optimizer = model_file::optimizer(&spec).unwrap();
    (file.model, spec.loss, optimizer)
}

/// A fresh folder for one test's files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-aot-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a command and returns its standard output; fails the test with its
/// standard error otherwise.
fn run(command: &mut Command) -> Vec<u8> {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?} does not start: {err}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn c_type(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float",
        DType::I32 => "int32_t",
        DType::Bool => "uint32_t",
    }
}

/// The header's field name of an argument (as `kiln::aot` names them).
fn field(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The C program: reads the train step's parameters (in its order), the forward
/// pass's inputs, and each step's inputs from `argv[1]`; writes the forward pass's
/// outputs, each step's outputs and the final parameters to `argv[2]`, all as raw
/// 4-byte elements.
fn harness(library: &str, train: &EntryLayout, infer: &EntryLayout) -> String {
    let upper = library.to_ascii_uppercase();
    let mut c = format!(
        "#include <stdio.h>\n#include <stdlib.h>\n#include \"{library}.h\"\n\n\
         static void *load(FILE *f, size_t n) {{\n\
         \x20   void *p = malloc(n * 4 + 4);\n\
         \x20   if (!p || fread(p, 4, n, f) != n) exit(10);\n\
         \x20   return p;\n}}\n\n\
         int main(int argc, char **argv) {{\n\
         \x20   if (argc != 3) return 9;\n\
         \x20   FILE *in = fopen(argv[1], \"rb\"), *out = fopen(argv[2], \"wb\");\n\
         \x20   if (!in || !out) return 8;\n\
         \x20   if ({library}_abi_version() != {upper}_ABI_VERSION) return 7;\n\
         \x20   size_t bytes = {upper}_TRAIN_WORKSPACE_BYTES > {upper}_INFER_WORKSPACE_BYTES\n\
         \x20       ? {upper}_TRAIN_WORKSPACE_BYTES : {upper}_INFER_WORKSPACE_BYTES;\n\
         \x20   void *workspace = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);\n\
         \x20   if (!workspace) return 6;\n"
    );
    let len = |entry: &EntryLayout, name: &str| {
        format!(
            "{}_{}_LEN",
            entry.symbol.to_ascii_uppercase(),
            field(name).to_ascii_uppercase()
        )
    };
    for arg in train.args.iter().filter(|a| a.kind == ArgKind::Param) {
        let _ = writeln!(
            c,
            "    {} *p_{} = load(in, {});",
            c_type(arg.ty.dtype),
            field(&arg.name),
            len(train, &arg.name)
        );
    }
    // One call of `entry`: its inputs read, its outputs written.
    let call = |c: &mut String, entry: &EntryLayout, code: u8| {
        let _ = writeln!(c, "    {{");
        for arg in &entry.args {
            let name = field(&arg.name);
            let _ = match arg.kind {
                ArgKind::Input => writeln!(
                    c,
                    "        {} *i_{name} = load(in, {});",
                    c_type(arg.ty.dtype),
                    len(entry, &arg.name)
                ),
                ArgKind::Output => writeln!(
                    c,
                    "        {} *o_{name} = malloc({} * 4 + 4);",
                    c_type(arg.ty.dtype),
                    len(entry, &arg.name)
                ),
                ArgKind::Param => Ok(()),
            };
        }
        let inits: Vec<String> = entry
            .args
            .iter()
            .map(|arg| {
                let name = field(&arg.name);
                let prefix = match arg.kind {
                    ArgKind::Input => "i",
                    ArgKind::Param => "p",
                    ArgKind::Output => "o",
                };
                format!(".{name} = {prefix}_{name}")
            })
            .collect();
        let _ = writeln!(
            c,
            "        {0}_args args = {{ {1} }};\n        if ({0}(&args, workspace) != 0) return {code};",
            entry.symbol,
            inits.join(", ")
        );
        for arg in entry.args.iter().filter(|a| a.kind == ArgKind::Output) {
            let _ = writeln!(
                c,
                "        fwrite(o_{}, 4, {}, out);",
                field(&arg.name),
                len(entry, &arg.name)
            );
        }
        let _ = writeln!(c, "    }}");
    };
    call(&mut c, infer, 5);
    let _ = writeln!(c, "    for (int step = 0; step < {STEPS}; step++)");
    call(&mut c, train, 4);
    for arg in train.args.iter().filter(|a| a.kind == ArgKind::Param) {
        let _ = writeln!(
            c,
            "    fwrite(p_{}, 4, {}, out);",
            field(&arg.name),
            len(train, &arg.name)
        );
    }
    c.push_str("    return fclose(out) == 0 ? 0 : 11;\n}\n");
    c
}

/// Random values of an input's type: features in [0, 1), labels below 3.
fn random_input(ty: &TensorType, rng: &mut Rng) -> Vec<u32> {
    (0..ty.num_elements())
        .map(|_| match ty.dtype {
            DType::F32 => (rng.uniform(0.0, 1.0) as f32).to_bits(),
            DType::I32 | DType::Bool => rng.below(3) as u32,
        })
        .collect()
}

fn arg_of<'a>(ty: &TensorType, words: &'a [u32]) -> Arg<'a> {
    match ty.dtype {
        // SAFETY: f32 and u32 have the same size and alignment; every bit pattern
        // is a valid f32 (and i32).
        DType::F32 => {
            Arg::F32(unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), words.len()) })
        }
        DType::I32 | DType::Bool => {
            Arg::I32(unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), words.len()) })
        }
    }
}

/// Reads `n` 4-byte elements from `bytes` at `*at`.
fn take(bytes: &[u8], at: &mut usize, n: usize) -> Vec<f32> {
    let values = bytes[*at..*at + 4 * n]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    *at += 4 * n;
    values
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tolerance = 1e-6 * w.abs().max(1.0);
        assert!((g - w).abs() <= tolerance, "{what}[{i}]: C {g}, JIT {w}");
    }
}

/// Compiles `output` with a generated harness, runs it on random inputs and checks
/// everything it writes against the JIT.
fn check_against_jit(name: &str, output: &AotOutput, embedded: bool) {
    let (model, loss, optimizer) = model();
    check_model_against_jit(
        name,
        "tiny",
        (&model, &model),
        (loss, optimizer),
        output,
        embedded,
    );
}

/// As `check_against_jit`, for any model compiled into `output` as `library`.
fn check_model_against_jit(
    name: &str,
    library: &str,
    (model, forward_model): (&Model, &Model),
    (loss, optimizer): (String, Optimizer),
    output: &AotOutput,
    embedded: bool,
) {
    let dir = temp_dir(name);
    std::fs::write(dir.join(format!("{library}.o")), &output.object).unwrap();
    std::fs::write(dir.join(format!("{library}.h")), &output.header).unwrap();
    let [train, infer] = &output.entries[..] else {
        panic!("a train step and a forward pass")
    };
    std::fs::write(dir.join("main.c"), harness(library, train, infer)).unwrap();
    run(Command::new("cc")
        .current_dir(&dir)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "main.c"])
        .arg(format!("{library}.o"))
        .args(["-o", "main"]));

    // The JIT, one thread, from the same parameters and optimizer state.
    let single = PipelineOptions {
        threads: Some(1),
        ..PipelineOptions::default()
    };
    let mut forward: Executable =
        compile_with(forward_model.graph(), pipeline::INFERENCE, &single).unwrap();
    set_params(&mut forward, model).unwrap();
    let training = PipelineOptions {
        loss: Some(loss),
        optimizer: Some(optimizer),
        ..single
    };
    let mut step = compile_with(model.graph(), pipeline::TRAIN_STEP, &training).unwrap();
    set_params(&mut step, model).unwrap();

    let mut rng = Rng::new(11);
    let mut feed: Vec<u8> = Vec::new();
    let push = |feed: &mut Vec<u8>, words: &[u32]| {
        feed.extend(words.iter().flat_map(|w| w.to_le_bytes()));
    };
    let params: Vec<&str> = train
        .args
        .iter()
        .filter(|a| a.kind == ArgKind::Param)
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(params.is_empty(), embedded, "{params:?}");
    for name in &params {
        let values: Vec<u32> = step
            .param(name)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        push(&mut feed, &values);
    }
    // Every call's inputs: the forward pass's, then each step's.
    let mut calls: Vec<BTreeMap<String, (TensorType, Vec<u32>)>> = Vec::new();
    for entry in std::iter::once(infer).chain(std::iter::repeat_n(train, STEPS)) {
        let mut inputs = BTreeMap::new();
        for arg in entry.args.iter().filter(|a| a.kind == ArgKind::Input) {
            let words = random_input(&arg.ty, &mut rng);
            push(&mut feed, &words);
            inputs.insert(arg.name.clone(), (arg.ty.clone(), words));
        }
        calls.push(inputs);
    }
    std::fs::write(dir.join("in.bin"), &feed).unwrap();
    run(Command::new(dir.join("main"))
        .current_dir(&dir)
        .args(["in.bin", "out.bin"]));
    let written = std::fs::read(dir.join("out.bin")).unwrap();

    let mut at = 0;
    for (index, (inputs, entry)) in calls
        .iter()
        .zip(std::iter::once(infer).chain(std::iter::repeat_n(train, STEPS)))
        .enumerate()
    {
        let exe = if index == 0 { &mut forward } else { &mut step };
        let args: Vec<(&str, Arg)> = inputs
            .iter()
            .map(|(name, (ty, words))| (name.as_str(), arg_of(ty, words)))
            .collect();
        exe.run(&args).unwrap();
        for arg in entry.args.iter().filter(|a| a.kind == ArgKind::Output) {
            let got = take(&written, &mut at, arg.ty.num_elements());
            let what = format!("call {index} ({}): output {}", entry.symbol, arg.name);
            assert_close(&what, &got, exe.output_f32(&arg.name).unwrap());
        }
    }
    for name in &params {
        let want = step.param(name).unwrap();
        let got = take(&written, &mut at, want.len());
        assert_close(&format!("{name} after {STEPS} steps"), &got, want);
    }
    assert_eq!(at, written.len(), "everything written was checked");
}

fn options(embed: bool) -> AotOptions {
    let (_, loss, optimizer) = model();
    AotOptions {
        library: "tiny".to_string(),
        train: Some((loss, optimizer)),
        embed,
        source: "tiny.kiln".to_string(),
        inference: None,
        target: None,
    }
}

#[test]
fn a_c_program_runs_the_forward_pass_and_train_steps_as_the_jit_does() {
    let (model, _, _) = model();
    let output = compile_object(&model, &options(false)).unwrap();
    // Adam's state is the caller's too: two moments per parameter and the counter.
    let params = output.entries[0]
        .args
        .iter()
        .filter(|a| a.kind == ArgKind::Param)
        .count();
    assert_eq!(params, 4 * 3 + 1);
    check_against_jit("passed", &output, false);
}

#[test]
fn embedded_weights_train_in_the_object_as_in_the_jit() {
    let (model, _, _) = model();
    let output = compile_object(&model, &options(true)).unwrap();
    assert!(output
        .entries
        .iter()
        .all(|e| e.args.iter().all(|a| a.kind != ArgKind::Param)));
    assert_eq!(output.entries[0].embedded.len(), 4 * 3 + 1);
    check_against_jit("embedded", &output, true);
}

#[test]
fn the_header_compiles_as_c99_and_cpp_and_a_bad_workspace_is_refused() {
    let (model, _, _) = model();
    let output = compile_object(&model, &options(false)).unwrap();
    let dir = temp_dir("header");
    std::fs::write(dir.join("tiny.h"), &output.header).unwrap();
    std::fs::write(dir.join("tiny.o"), &output.object).unwrap();
    let program = "#include \"tiny.h\"\n#include <stdlib.h>\n#include <string.h>\n\
        int main(void) {\n\
        \x20   tiny_infer_args args;\n\
        \x20   memset(&args, 0, sizeof args);\n\
        \x20   char *workspace = (char *)malloc(TINY_INFER_WORKSPACE_BYTES + 128);\n\
        \x20   if (tiny_abi_version() != TINY_ABI_VERSION) return 3;\n\
        \x20   if (tiny_infer_workspace_bytes() != TINY_INFER_WORKSPACE_BYTES) return 4;\n\
        \x20   /* Misaligned or null: refused before anything is read. */\n\
        \x20   if (tiny_infer(&args, workspace + ((size_t)workspace % 64 == 1 ? 2 : 1)) != 1) return 5;\n\
        \x20   if (tiny_infer(&args, NULL) != 1) return 6;\n\
        \x20   return 0;\n}\n";
    std::fs::write(dir.join("main.c"), program).unwrap();
    std::fs::write(dir.join("main.cpp"), program).unwrap();
    let strict = ["-Wall", "-Wextra", "-Werror", "-pedantic"];
    run(Command::new("cc")
        .current_dir(&dir)
        .args(["-std=c99"])
        .args(strict)
        .args(["main.c", "tiny.o", "-o", "c99"]));
    run(Command::new("c++")
        .current_dir(&dir)
        .args(["-std=c++11"])
        .args(strict)
        .args(["main.cpp", "tiny.o", "-o", "cpp"]));
    for binary in ["c99", "cpp"] {
        run(&mut Command::new(dir.join(binary)));
    }
    assert!(output.header.contains("#define TINY_ABI_VERSION 1u"));
    // Nothing but libc: the only symbol the object needs from outside is memcpy.
    let undefined = run(Command::new("nm").current_dir(&dir).args(["-u", "tiny.o"]));
    let names: Vec<String> = String::from_utf8_lossy(&undefined)
        .split_whitespace()
        .filter(|word| *word != "U")
        .map(str::to_string)
        .collect();
    assert_eq!(names, ["memcpy"]);
}

/// The header of the digits MLP with its train step, as a readable diff when the
/// interface changes.
/// The canon's model files with their kinds of kernels: convolution and pooling
/// (lenet), a recurrence (lstm), attention with layer norm (transformer_encoder),
/// random samples from a seed input (dropout_mlp), running statistics updated by the
/// step (batchnorm_mlp), a gather (an embedding, in seq2seq_attention): each train
/// step and forward pass in C equals the JIT's.
#[test]
fn canon_models_in_c_equal_the_jit() {
    for (name, dims) in [
        ("lenet", vec![("B", 3)]),
        ("lstm", vec![("B", 2)]),
        ("transformer_encoder", vec![("B", 2)]),
        ("dropout_mlp", vec![("B", 3)]),
        ("batchnorm_mlp", vec![("B", 4)]),
        ("seq2seq_attention", vec![("B", 2), ("L", 3)]),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/models")
            .join(format!("{name}.kiln"));
        let options = |evaluation| ElaborateOptions {
            dims: dims.iter().map(|&(d, v)| (d.to_string(), v)).collect(),
            seed: 1,
            evaluation,
            ..ElaborateOptions::default()
        };
        let load = |evaluation| {
            model_file::load(&path, &options(evaluation))
                .unwrap_or_else(|err| panic!("{name}: {}", err.render(false)))
        };
        let (file, forward) = (load(false), load(true).model);
        let spec = file.train.expect("a canon model trains");
        let optimizer = model_file::optimizer(&spec).unwrap();
        let aot = AotOptions {
            library: name.to_string(),
            train: Some((spec.loss.clone(), optimizer)),
            embed: false,
            source: format!("{name}.kiln"),
            inference: Some(forward.clone()),
            target: None,
        };
        let output = compile_object(&file.model, &aot).unwrap();
        let models = (&file.model, &forward);
        check_model_against_jit(name, name, models, (spec.loss, optimizer), &output, false);
    }
}

#[test]
fn the_digits_mlp_header() {
    let file = model_file::load(
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/models/mlp_digits.kiln"
        )),
        &ElaborateOptions {
            dims: BTreeMap::from([("B".to_string(), 8)]),
            ..ElaborateOptions::default()
        },
    )
    .unwrap_or_else(|err| panic!("{}", err.render(false)));
    let spec = file.train.expect("the model trains");
    let options = AotOptions {
        library: "mlp".to_string(),
        train: Some((spec.loss.clone(), model_file::optimizer(&spec).unwrap())),
        embed: false,
        source: "examples/models/mlp_digits.kiln (model MlpDigits)".to_string(),
        inference: None,
        // The baseline schedule, so the workspace sizes are the same on every machine.
        target: Some(kiln::ir::Target::baseline()),
    };
    let output = compile_object(&file.model, &options).unwrap();
    // The CPU features are this machine's.
    let header: String = output
        .header
        .lines()
        .map(|line| match line.strip_prefix(" * Compiled for ") {
            Some(_) => {
                " * Compiled for [this machine's triple and CPU features] (...).".to_string()
            }
            None => line.to_string(),
        })
        .map(|line| line + "\n")
        .collect();
    assert!(
        output.header.contains(" * Compiled for x86_64-"),
        "{}",
        output.header
    );
    insta::assert_snapshot!("mlp_digits_header", header);
}
