//! The kernel-IR file tests (`ir/tests/kernels/*.kir`) through the JIT: every file
//! that runs (no `; error:`) is compiled with `kiln_backend::compile` and run on its
//! `; input` and `; param` values. Every output and every parameter afterwards must
//! equal the kernel interpreter's bit for bit (any NaN equals any NaN, as in the
//! other differential tests) and meet the file's `; expect` lines. Files the checker
//! or parser must reject are the interpreter harness's (`ir/tests/kernel_files.rs`).

use kiln_backend::compile;
use kiln_ir::kernel::Program;
use kiln_ir::kernel_filetest::{self, format_values};
use kiln_ir::kernel_interp::{self, Values};
use std::path::{Path, PathBuf};

fn kir_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ir/tests/kernels");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "kir"))
        .collect();
    files.sort();
    files
}

/// The first difference between the JIT's values and the interpreter's.
fn compare(kind: &str, jit: &Values, interpreter: &Values) -> Result<(), String> {
    let jit_names: Vec<&String> = jit.keys().collect();
    let interpreter_names: Vec<&String> = interpreter.keys().collect();
    if jit_names != interpreter_names {
        return Err(format!(
            "{kind}s {jit_names:?} from the JIT, {interpreter_names:?} from the interpreter"
        ));
    }
    for (name, want) in interpreter {
        let got = &jit[name];
        let same = got.ty() == want.ty()
            && got
                .data()
                .iter()
                .zip(want.data())
                .all(|(&a, &e)| kernel_filetest::same(want.dtype(), a, e));
        if !same {
            return Err(format!(
                "{kind} {name:?} is {} {} from the JIT, {} {} from the interpreter",
                got.ty(),
                format_values(got),
                want.ty(),
                format_values(want)
            ));
        }
    }
    Ok(())
}

/// Compiles and runs one file's program, comparing with the interpreter and the
/// file's expectations.
fn check_file(test: &kernel_filetest::FileTest, program: &Program) -> Result<(), String> {
    let (inputs, params) = test.feeds(program)?;
    let mut interpreter_params = params.clone();
    let interpreter_outputs = kernel_interp::run(program, &inputs, &mut interpreter_params)
        .map_err(|err| format!("interpreter: {err}"))?;
    let mut exe = compile(program).map_err(|err| format!("compile: {err}"))?;
    let mut feeds = inputs;
    feeds.extend(params);
    let (outputs, _) = exe.run_feeds(&feeds).map_err(|err| format!("run: {err}"))?;
    let mut jit_params = Values::new();
    for (name, _) in program.params() {
        let value = exe
            .param_tensor(name)
            .map_err(|err| format!("parameter {name:?}: {err}"))?;
        jit_params.insert(name.to_string(), value);
    }
    compare("output", &outputs, &interpreter_outputs)?;
    compare("parameter", &jit_params, &interpreter_params)?;
    let mismatches = test.mismatches(&outputs, &jit_params);
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(mismatches.join("\n"))
    }
}

#[test]
fn kernel_files_give_the_interpreters_results_through_the_jit() {
    let (mut ran, mut failures) = (0, Vec::new());
    for path in kir_files() {
        let name = path
            .file_name()
            .map_or_else(String::new, |name| name.to_string_lossy().into_owned());
        let text = std::fs::read_to_string(&path).expect("test file is readable");
        let test = kernel_filetest::read(&text).unwrap_or_else(|err| panic!("{name}: {err}"));
        if test.error.is_some() {
            continue;
        }
        let program = test.program().unwrap_or_else(|err| panic!("{name}: {err}"));
        match check_file(&test, &program) {
            Ok(()) => ran += 1,
            Err(err) => failures.push(format!("{name}: {err}")),
        }
    }
    println!("{ran} files ran through the JIT");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Guards against a glob that silently finds nothing.
    assert!(ran >= 11, "only {ran} files ran through the JIT");
}
