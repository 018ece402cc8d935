//! The differential tests' comparison of compiled results with the interpreter's,
//! and their panic catching, shared through `#[path]` by tests/differential.rs,
//! tests/differential_targets.rs, tests/cuda.rs and tests/ptx_exec.rs.

use kiln_ir::{scalar, Evaluation, Tensor};
use std::collections::BTreeMap;

/// Compares compiled results with the interpreter's, naming the first difference.
pub fn compare(
    what: &str,
    expected: &Evaluation,
    outputs: &BTreeMap<String, Tensor>,
    updates: &BTreeMap<String, Tensor>,
) -> Result<(), String> {
    for (kind, want, got) in [
        ("output", &expected.outputs, outputs),
        ("update", &expected.updates, updates),
    ] {
        if want.keys().ne(got.keys()) {
            return Err(format!(
                "{what}: {kind} names {:?}, interpreter {:?}",
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>()
            ));
        }
        for (name, value) in want {
            let actual = &got[name];
            if actual.ty() != value.ty() {
                return Err(format!(
                    "{what}: {kind} {name} has type {}, interpreter {}",
                    actual.ty(),
                    value.ty()
                ));
            }
            for (index, (a, e)) in actual.data().iter().zip(value.data()).enumerate() {
                if !scalar::same(*a, *e) {
                    return Err(format!(
                        "{what}: {kind} {name}[{index}] is {a:?} compiled, {e:?} in the interpreter"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Runs `check`, turning a panic into an error with the panic's message, so a
/// failure report can still name the seed that caused it.
pub fn or_panic<T>(check: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(format!("panic: {message}"))
    })
}
