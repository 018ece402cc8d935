//! The example model files (`examples/models/*.kiln`), for the tests that run every
//! one of them, shared through `#[path]`.

use std::path::{Path, PathBuf};

/// Every `.kiln` file of `examples/models`, sorted.
pub fn example_models() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("examples/models can be read")
        .map(|entry| entry.expect("a readable folder entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "kiln"))
        .collect();
    files.sort();
    files
}
