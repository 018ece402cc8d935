//! `.kiln` model files from disk: read, parse and build (see `kiln_frontend::lang`),
//! with errors that carry the file's path and text so they can be shown located.

use kiln_frontend::lang::{self, ElaborateOptions, Hyper, ModelError};
use kiln_passes::optimizer::{Averaging, Optimizer, OptimizerError, Rule};
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

/// Builds a model from `source`, the text of the file at `path`; its optimizer's
/// hyperparameters are checked too, and a bad one is located at its value (at the
/// optimizer's name when it is a default).
pub fn load_source(
    path: &Path,
    source: String,
    options: &ElaborateOptions,
) -> Result<ModelFile, LoadError> {
    let located = |error: ModelError, text: String| LoadError::Model {
        path: path.to_path_buf(),
        text,
        error: Box::new(error),
    };
    let file = match lang::load(&source, options) {
        Ok(file) => file,
        Err(error) => return Err(located(error, source)),
    };
    if let Some(train) = &file.train {
        if let Err(error) = optimizer(train) {
            let span = match error.argument() {
                Some(argument) => train.optimizer.span_of(argument),
                None => train.optimizer.span.clone(),
            };
            let error = ModelError::new(span, error.to_string());
            return Err(located(error, source));
        }
    }
    Ok(file)
}

/// The optimizer a `train` statement names, checked. The language gives every
/// argument a value; in a spec made otherwise, a missing number reads as NaN (which
/// the check rejects by name) and a missing flag as `false`.
pub fn optimizer(train: &TrainSpec) -> Result<Optimizer, OptimizerError> {
    let spec = &train.optimizer;
    let number = |name: &str| match spec.get(name) {
        Some(Hyper::Number(value)) => value,
        _ => f64::NAN,
    };
    let flag = |name: &str| spec.get(name) == Some(Hyper::Flag(true));
    let learning_rate = number("lr");
    let rule = match spec.name.as_str() {
        "sgd" => Rule::Sgd {
            learning_rate,
            momentum: number("momentum"),
            dampening: number("dampening"),
            nesterov: flag("nesterov"),
        },
        "adam" | "adamw" => {
            let (beta1, beta2) = match spec.get("betas") {
                Some(Hyper::Pair(beta1, beta2)) => (beta1, beta2),
                _ => (f64::NAN, f64::NAN),
            };
            Rule::Adam {
                learning_rate,
                beta1,
                beta2,
                eps: number("eps"),
                amsgrad: flag("amsgrad"),
            }
        }
        "adagrad" => Rule::Adagrad {
            learning_rate,
            lr_decay: number("lr_decay"),
            initial_accumulator_value: number("initial_accumulator_value"),
            eps: number("eps"),
        },
        "rmsprop" => Rule::RmsProp {
            learning_rate,
            alpha: number("alpha"),
            eps: number("eps"),
            momentum: number("momentum"),
            centered: flag("centered"),
        },
        "signsgd" => Rule::SignSgd { learning_rate },
        other => return Err(OptimizerError::UnknownRule(other.to_string())),
    };
    let optimizer = Optimizer {
        rule,
        weight_decay: number("weight_decay"),
        decoupled_weight_decay: spec.name == "adamw",
        max_grad_norm: spec.get("max_grad_norm").map(|_| number("max_grad_norm")),
        max_param_norm: spec.get("max_param_norm").map(|_| number("max_param_norm")),
        averaging: match spec.get("polyak") {
            Some(Hyper::Flag(true)) => Some(Averaging::Uniform),
            Some(_) => Some(Averaging::Ema {
                decay: number("polyak"),
            }),
            None => None,
        },
    };
    optimizer.check()?;
    Ok(optimizer)
}
