//! `.kiln` model files from disk: read, parse and build (see `kiln_frontend::lang`),
//! with errors that carry the file's path and text so they can be shown located.

use kiln_frontend::lang::{self, ElaborateOptions, ModelError, OptimizerSpec};
use kiln_passes::optimizer::{Optimizer, OptimizerError};
use std::path::{Path, PathBuf};
use thiserror::Error;

pub use kiln_frontend::lang::{ModelFile, TrainSpec};

/// Why a model file could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A mistake in the file: its location, message and what was expected.
    #[error("{}", error.located(&path.display().to_string(), text))]
    Model {
        path: PathBuf,
        /// The file's text, for rendering the error with its line.
        text: String,
        /// Boxed: the error is large and this enum travels in every `Result`.
        error: Box<ModelError>,
    },
}

impl LoadError {
    /// The error as the `kiln` command shows it: for a mistake in the file, the
    /// source line with a caret under the span and what was expected.
    pub fn render(&self, color: bool) -> String {
        match self {
            LoadError::Read { .. } => format!("error: {self}"),
            LoadError::Model { path, text, error } => {
                error.render(&path.display().to_string(), text, color)
            }
        }
    }
}

/// Reads and builds the model file at `path`.
pub fn load(path: &Path, options: &ElaborateOptions) -> Result<ModelFile, LoadError> {
    let source = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_source(path, source, options)
}

/// Builds a model from `source`, the text of the file at `path`.
pub fn load_source(
    path: &Path,
    source: String,
    options: &ElaborateOptions,
) -> Result<ModelFile, LoadError> {
    lang::load(&source, options).map_err(|error| LoadError::Model {
        path: path.to_path_buf(),
        text: source,
        error: Box::new(error),
    })
}

/// The optimizer a `train` statement names, checked.
pub fn optimizer(train: &TrainSpec) -> Result<Optimizer, OptimizerError> {
    match train.optimizer {
        OptimizerSpec::Sgd { lr } => Optimizer::sgd(lr),
    }
}
