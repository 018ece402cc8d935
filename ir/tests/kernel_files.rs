//! Kernel-IR file tests (`ir/tests/kernels/*.kir`, syntax in
//! `kiln_ir::kernel_filetest`): every file is parsed, checked and run by the kernel
//! interpreter; its `; expect` values must match bit for bit, or it must fail with
//! its `; error:` text. Each file's outputs and parameters after the run (or its
//! error) are snapshotted, and each program must print and parse back to itself.
//! `backend/tests/kernel_files.rs` runs the same files through the JIT.

use kiln_ir::kernel_filetest::{self, FileTest};
use kiln_ir::kernel_interp::{self, Values};
use kiln_ir::kernel_text;

/// Parses, checks and runs the file's program: its outputs and parameters after the
/// run, or the first error.
fn run(test: &FileTest) -> Result<(Values, Values), String> {
    let program = test.program().map_err(|err| err.to_string())?;
    let text = program.to_string();
    let reparsed = kernel_text::parse(&text).map(|program| program.to_string());
    assert_eq!(reparsed, Ok(text.clone()), "the printed program reads back");
    program.check().map_err(|err| err.to_string())?;
    let (inputs, mut params) = test.feeds(&program)?;
    let outputs =
        kernel_interp::run(&program, &inputs, &mut params).map_err(|err| err.to_string())?;
    Ok((outputs, params))
}

#[test]
fn kernel_files() {
    insta::glob!("kernels/*.kir", |path| {
        let name = path.display();
        let text = std::fs::read_to_string(path).expect("test file is readable");
        assert!(
            text.starts_with("//"),
            "{name}: a file test starts with a comment saying what it checks"
        );
        let test = kernel_filetest::read(&text).unwrap_or_else(|err| panic!("{name}: {err}"));
        let result = run(&test);
        match (&test.error, &result) {
            (Some(expected), Err(err)) => assert!(
                err.contains(expected.as_str()),
                "{name}: error {err:?} does not contain {expected:?}"
            ),
            (Some(expected), Ok(_)) => {
                panic!("{name}: ran, but should fail with {expected:?}")
            }
            (None, Err(err)) => panic!("{name}: {err}"),
            (None, Ok((outputs, params))) => {
                assert!(!test.expects.is_empty(), "{name}: nothing is expected");
                let mismatches = test.mismatches(outputs, params);
                assert!(mismatches.is_empty(), "{name}:\n{}", mismatches.join("\n"));
            }
        }
        let snapshot = match &result {
            Ok((outputs, params)) => kernel_filetest::format_run(outputs, params),
            Err(err) => format!("error: {err}\n"),
        };
        insta::assert_snapshot!(snapshot);
    });
}
