//! Weights in safetensors files (the format of the Hugging Face ecosystem, read and
//! written with the `safetensors` crate): a map from names to tensors.
//!
//! `save` and `load` work on any such map, so the same files hold a model's
//! parameters (named as in the model file: `fc1.weight`) and a training step's whole
//! state, optimizer state included (`fc1.weight.adam.exp_avg`, `optimizer.step`;
//! see [`of_executable`]). Applying weights to a model ([`apply`]) is separate and
//! strict: every parameter must be there with its exact type, and nothing else, so
//! a file for another model or another configuration is refused by name instead of
//! half-loaded.

use crate::fsutil::{self, WriteError};
use kiln_frontend::{FrontendError, Model};
use kiln_ir::{DType, Tensor, TensorType};
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Tensors by name, in name order.
pub type Weights = BTreeMap<String, Tensor>;

/// Why weights could not be read, written or applied.
#[derive(Debug, Error)]
pub enum WeightsError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file could not be written (see `WriteError`).
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Not a safetensors file, or a truncated or corrupt one (the crate's reason).
    #[error("{path}: not a valid safetensors file: {source}")]
    Format {
        path: PathBuf,
        #[source]
        source: SafeTensorError,
    },
    /// A tensor of a dtype kiln has no tensors of.
    #[error("{path}: weight {name:?} is {dtype}; kiln reads F32, I32 and BOOL tensors")]
    Dtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// A tensor of the file whose values do not make a kiln tensor (a bool byte
    /// other than 0 or 1, a shape beyond kiln's size limit, no memory).
    #[error("{path}: weight {name:?}: {reason}")]
    Invalid {
        path: PathBuf,
        name: String,
        reason: String,
    },
    /// A parameter of the model with no weight.
    #[error("no weight {name:?}: the model's parameter {name:?} is {expected}")]
    Missing { name: String, expected: TensorType },
    /// A weight whose dtype or shape differs from its parameter's.
    #[error("weight {name:?} is {found}, but the model's parameter {name:?} is {expected}")]
    WrongType {
        name: String,
        expected: TensorType,
        found: TensorType,
    },
    /// A weight the model has no parameter for (a file for another model, or a
    /// renamed layer).
    #[error("weight {name:?} is not a parameter of the model (its parameters are {known})")]
    Unknown { name: String, known: String },
    /// The model refused the values (a NaN or infinite weight).
    #[error("weight {name:?}: {source}")]
    Rejected {
        name: String,
        /// Boxed: the error is large and this enum travels in every `Result`.
        #[source]
        source: Box<FrontendError>,
    },
    /// The weights could not be encoded as a safetensors file (the crate's reason).
    #[error("{path}: cannot encode the weights: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: SafeTensorError,
    },
    /// A parameter's values could not be made a tensor (no memory for the copy).
    #[error("weight {name:?}: {source}")]
    Tensor {
        name: String,
        #[source]
        source: kiln_ir::TensorError,
    },
    /// Reading the current values of an executable's parameter failed.
    #[error("parameter {name:?}: {reason}")]
    Executable { name: String, reason: String },
    /// An error applying the weights of the file at `path` (one of the above).
    #[error("{path}: {source}")]
    In {
        path: PathBuf,
        #[source]
        source: Box<WeightsError>,
    },
}

/// Reads the safetensors file at `path`.
pub fn load(path: &Path) -> Result<Weights, WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(&bytes, path)
}

/// Writes `weights` to `path` as a safetensors file, atomically (see `fsutil`).
pub fn save(weights: &Weights, path: &Path) -> Result<(), WeightsError> {
    let bytes = to_bytes(weights, path)?;
    fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

/// Parses the bytes of a safetensors file; `path` is where they came from, named in
/// errors.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Weights, WeightsError> {
    let file = SafeTensors::deserialize(bytes).map_err(|source| WeightsError::Format {
        path: path.to_path_buf(),
        source,
    })?;
    let mut weights = Weights::new();
    for (name, view) in file.iter() {
        let tensor = decode(&view).map_err(|reason| match reason {
            Decode::Dtype => WeightsError::Dtype {
                path: path.to_path_buf(),
                name: name.to_string(),
                dtype: view.dtype().to_string(),
            },
            Decode::Invalid(reason) => WeightsError::Invalid {
                path: path.to_path_buf(),
                name: name.to_string(),
                reason,
            },
        })?;
        weights.insert(name.to_string(), tensor);
    }
    Ok(weights)
}

/// The bytes of `weights` as a safetensors file; `path` is where they will go,
/// named in errors.
pub fn to_bytes(weights: &Weights, path: &Path) -> Result<Vec<u8>, WeightsError> {
    let encoded: Vec<(&str, Encoded)> = weights
        .iter()
        .map(|(name, tensor)| (name.as_str(), encode(tensor)))
        .collect();
    safetensors::serialize(encoded, None).map_err(|source| WeightsError::Encode {
        path: path.to_path_buf(),
        source,
    })
}

/// Why a tensor of the file could not be decoded.
enum Decode {
    Dtype,
    Invalid(String),
}

fn decode(view: &TensorView<'_>) -> Result<Tensor, Decode> {
    let shape = view.shape().to_vec();
    kiln_ir::types::check_size("weight", &shape).map_err(|err| Decode::Invalid(err.to_string()))?;
    let bytes = view.data();
    // The crate has checked that the data is as long as the shape and dtype say.
    let words = || bytes.chunks_exact(4).map(|w| [w[0], w[1], w[2], w[3]]);
    let tensor = match view.dtype() {
        Dtype::F32 => {
            let values: Vec<f32> = words().map(f32::from_le_bytes).collect();
            Tensor::f32(shape, &values)
        }
        Dtype::I32 => {
            let values: Vec<i32> = words().map(i32::from_le_bytes).collect();
            Tensor::i32(shape, &values)
        }
        Dtype::BOOL => {
            // `Tensor::new` refuses a byte other than 0 or 1 by its value.
            let values = bytes.iter().map(|&byte| f64::from(byte)).collect();
            Tensor::new(TensorType::new(DType::Bool, shape), values)
        }
        _ => return Err(Decode::Dtype),
    };
    tensor.map_err(|err| Decode::Invalid(err.to_string()))
}

/// A tensor as safetensors stores it: little-endian bytes, C order.
struct Encoded {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn encode(tensor: &Tensor) -> Encoded {
    let data: Vec<u8> = match tensor.dtype() {
        DType::F32 => tensor
            .to_f32()
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect(),
        DType::I32 => tensor
            .to_i32()
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect(),
        DType::Bool => tensor
            .data()
            .iter()
            .map(|&value| u8::from(value != 0.0))
            .collect(),
    };
    let dtype = match tensor.dtype() {
        DType::F32 => Dtype::F32,
        DType::I32 => Dtype::I32,
        DType::Bool => Dtype::BOOL,
    };
    Encoded {
        dtype,
        shape: tensor.shape().to_vec(),
        data,
    }
}

impl safetensors::View for Encoded {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The model's parameters as weights, each with its parameter's shape.
pub fn of_model(model: &Model) -> Result<Weights, WeightsError> {
    let graph = model.graph();
    let mut weights = Weights::new();
    for (name, values) in model.params() {
        let ty = match graph.param_by_name(name) {
            Some(param) => graph.ty(param).clone(),
            None => TensorType::f32(vec![values.len()]),
        };
        let tensor = Tensor::f32(ty.shape, values).map_err(|source| WeightsError::Tensor {
            name: name.clone(),
            source,
        })?;
        weights.insert(name.clone(), tensor);
    }
    Ok(weights)
}

/// Every parameter of an executable with its current value: for a training step,
/// the model's parameters and the optimizer's state (a checkpoint).
pub fn of_executable(exe: &dyn kiln_backend::Runtime) -> Result<Weights, WeightsError> {
    let mut weights = Weights::new();
    for (name, _) in exe.params() {
        let tensor = exe
            .param_tensor(&name)
            .map_err(|err| WeightsError::Executable {
                name: name.clone(),
                reason: err.to_string(),
            })?;
        weights.insert(name, tensor);
    }
    Ok(weights)
}

/// Checks that `weights` are exactly the parameters `expected` (names and types):
/// none missing, none of another dtype or shape, none unknown.
pub fn check(expected: &[(String, TensorType)], weights: &Weights) -> Result<(), WeightsError> {
    for (name, ty) in expected {
        match weights.get(name) {
            None => {
                return Err(WeightsError::Missing {
                    name: name.clone(),
                    expected: ty.clone(),
                })
            }
            Some(tensor) if tensor.ty() != *ty => {
                return Err(WeightsError::WrongType {
                    name: name.clone(),
                    expected: ty.clone(),
                    found: tensor.ty(),
                })
            }
            Some(_) => {}
        }
    }
    if let Some(name) = weights
        .keys()
        .find(|name| !expected.iter().any(|(known, _)| known == *name))
    {
        let known: Vec<&str> = expected.iter().map(|(name, _)| name.as_str()).collect();
        return Err(WeightsError::Unknown {
            name: name.clone(),
            known: known.join(", "),
        });
    }
    Ok(())
}

/// The parameters of `model` with their types, in name order.
fn model_params(model: &Model) -> Vec<(String, TensorType)> {
    let graph = model.graph();
    let mut params: Vec<(String, TensorType)> = graph
        .params()
        .iter()
        .filter_map(|&id| Some((graph.leaf_name(id)?.to_string(), graph.ty(id).clone())))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

/// Gives `model` the values of `weights`, which must be exactly its parameters (see
/// [`check`]). Nothing changes unless every weight is accepted.
pub fn apply(model: &mut Model, weights: &Weights) -> Result<(), WeightsError> {
    check(&model_params(model), weights)?;
    let mut updated = model.clone();
    for (name, tensor) in weights {
        updated
            .set_param(name, tensor.to_f32())
            .map_err(|source| WeightsError::Rejected {
                name: name.clone(),
                source: Box::new(source),
            })?;
    }
    *model = updated;
    Ok(())
}

/// Reads the weights file at `path` and applies it to `model` (see [`apply`]); an
/// error names the file.
pub fn load_into(model: &mut Model, path: &Path) -> Result<(), WeightsError> {
    let weights = load(path)?;
    apply(model, &weights).map_err(|source| WeightsError::In {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_frontend::{layers::Linear, Init, ModelBuilder};

    fn path() -> &'static Path {
        Path::new("w.safetensors")
    }

    /// A model with one `Linear(3, 2)` layer named `fc`.
    fn model(seed: u64) -> Model {
        let mut builder = ModelBuilder::new("m", seed);
        let x = builder.input("x", TensorType::f32(vec![4, 3])).unwrap();
        let fc = Linear::new(&mut builder, "fc", 3, 2, Init::GlorotUniform).unwrap();
        let y = fc.forward(&mut builder, x).unwrap();
        builder.output("y", y).unwrap();
        builder.finish().unwrap()
    }

    #[test]
    fn any_map_of_tensors_round_trips() {
        let mut weights = Weights::new();
        weights.insert(
            "fc1.weight".into(),
            Tensor::f32(vec![2, 3], &[0.5, -0.0, 1e-45, f32::MAX, -7.25, 3.0]).unwrap(),
        );
        weights.insert(
            "fc1.weight.adam.exp_avg".into(),
            Tensor::f32(vec![2, 3], &[0.0; 6]).unwrap(),
        );
        weights.insert(
            "optimizer.step".into(),
            Tensor::f32(Vec::<usize>::new(), &[12.0]).unwrap(),
        );
        weights.insert(
            "ids".into(),
            Tensor::i32(vec![3], &[i32::MIN, 0, i32::MAX]).unwrap(),
        );
        weights.insert("empty".into(), Tensor::f32(vec![0, 5], &[]).unwrap());
        let mask = TensorType::new(DType::Bool, vec![3]);
        weights.insert(
            "mask".into(),
            Tensor::new(mask, vec![1.0, 0.0, 1.0]).unwrap(),
        );
        let bytes = to_bytes(&weights, path()).unwrap();
        let back = from_bytes(&bytes, path()).unwrap();
        assert_eq!(back, weights);
        let bits = |t: &Tensor| t.to_f32().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back["fc1.weight"]), bits(&weights["fc1.weight"]));
    }

    #[test]
    fn a_model_saved_and_applied_to_another_seed_equals_the_first() {
        let first = model(1);
        let mut second = model(2);
        assert_ne!(first.params(), second.params());
        let weights = of_model(&first).unwrap();
        assert_eq!(weights["fc.weight"].shape(), &[3, 2]);
        let bytes = to_bytes(&weights, path()).unwrap();
        apply(&mut second, &from_bytes(&bytes, path()).unwrap()).unwrap();
        assert_eq!(first.params(), second.params());
    }

    #[test]
    fn applying_names_the_missing_the_misshapen_and_the_unknown() {
        let mut target = model(0);
        let before = target.params().clone();
        let good = of_model(&model(1)).unwrap();

        let mut missing = good.clone();
        missing.remove("fc.bias");
        assert_eq!(
            apply(&mut target, &missing).unwrap_err().to_string(),
            "no weight \"fc.bias\": the model's parameter \"fc.bias\" is f32[2]"
        );

        let mut shape = good.clone();
        shape.insert("fc.bias".into(), Tensor::f32(vec![3], &[0.0; 3]).unwrap());
        assert_eq!(
            apply(&mut target, &shape).unwrap_err().to_string(),
            "weight \"fc.bias\" is f32[3], but the model's parameter \"fc.bias\" is f32[2]"
        );

        let mut dtype = good.clone();
        dtype.insert("fc.bias".into(), Tensor::i32(vec![2], &[0, 1]).unwrap());
        assert_eq!(
            apply(&mut target, &dtype).unwrap_err().to_string(),
            "weight \"fc.bias\" is i32[2], but the model's parameter \"fc.bias\" is f32[2]"
        );

        let mut extra = good.clone();
        extra.insert("fc2.weight".into(), Tensor::f32(vec![1], &[0.0]).unwrap());
        assert_eq!(
            apply(&mut target, &extra).unwrap_err().to_string(),
            "weight \"fc2.weight\" is not a parameter of the model (its parameters are \
             fc.bias, fc.weight)"
        );

        let mut nan = good.clone();
        nan.insert(
            "fc.bias".into(),
            Tensor::f32(vec![2], &[0.0, f32::NAN]).unwrap(),
        );
        let err = apply(&mut target, &nan).unwrap_err().to_string();
        assert!(err.starts_with("weight \"fc.bias\": "), "{err}");
        assert!(err.contains("NaN"), "{err}");

        // Nothing was applied by any of the failures.
        assert_eq!(target.params(), &before);
    }

    #[test]
    fn a_truncated_or_foreign_file_is_a_format_error_naming_the_path() {
        let bytes = to_bytes(&of_model(&model(0)).unwrap(), path()).unwrap();
        for cut in [0, 5, 8, 20, bytes.len() - 1] {
            let err = from_bytes(&bytes[..cut], path()).unwrap_err().to_string();
            assert!(
                err.starts_with("w.safetensors: not a valid safetensors file: "),
                "cut at {cut}: {err}"
            );
        }
        let err = from_bytes(b"\x93NUMPY not safetensors", path()).unwrap_err();
        assert!(matches!(err, WeightsError::Format { .. }), "{err}");
    }

    #[test]
    fn an_unsupported_dtype_is_named() {
        let f64s = safetensors::tensor::TensorView::new(Dtype::F64, vec![1], &[0u8; 8]).unwrap();
        let bytes = safetensors::serialize([("x", f64s)], None).unwrap();
        assert_eq!(
            from_bytes(&bytes, path()).unwrap_err().to_string(),
            "w.safetensors: weight \"x\" is F64; kiln reads F32, I32 and BOOL tensors"
        );
    }
}
