//! What every executable checks before it runs, whatever the device: a program's
//! inputs, parameters and outputs by name and type ([`Signature`]), the caller's
//! arguments matched against them, and the [`Runtime`] trait that the CPU's
//! [`crate::Executable`] and the GPU's `CudaExecutable` both implement.
//!
//! The checks live here once so that both executables refuse the same mistakes with
//! the same [`RuntimeError`]s: an executable only moves data once its signature has
//! accepted the arguments.

use crate::runtime::{Arg, CompileStats, RuntimeError};
use kiln_ir::alloc::{try_collect, OutOfMemory};
use kiln_ir::kernel::{BufferId, Program};
use kiln_ir::{DType, Feeds, Tensor, TensorType};
use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;

/// A named view of a buffer.
#[derive(Clone, Debug)]
pub struct Binding {
    pub name: String,
    pub buffer: BufferId,
    pub ty: TensorType,
}

/// Bindings in declaration order, indexed by name: arguments are matched by name on
/// every run, and a scan per argument would make a run with many inputs quadratic.
#[derive(Clone, Debug, Default)]
pub struct Bindings {
    list: Vec<Binding>,
    position: HashMap<String, usize>,
}

impl Bindings {
    /// The position of the binding called `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.position.get(name).copied()
    }

    /// The binding called `name`.
    pub fn find(&self, name: &str) -> Option<&Binding> {
        Some(&self.list[self.position(name)?])
    }

    /// The names, comma-separated, for error messages (`none` when empty).
    fn names(&self) -> String {
        if self.list.is_empty() {
            return "none".to_string();
        }
        let names: Vec<&str> = self.list.iter().map(|b| b.name.as_str()).collect();
        names.join(", ")
    }

    /// `(name, type)` of every binding, in order.
    fn typed(&self) -> Vec<(String, TensorType)> {
        self.list
            .iter()
            .map(|b| (b.name.clone(), b.ty.clone()))
            .collect()
    }
}

impl FromIterator<Binding> for Bindings {
    fn from_iter<I: IntoIterator<Item = Binding>>(bindings: I) -> Bindings {
        let list: Vec<Binding> = bindings.into_iter().collect();
        let position = list
            .iter()
            .enumerate()
            .map(|(position, binding)| (binding.name.clone(), position))
            .collect();
        Bindings { list, position }
    }
}

impl<'b> IntoIterator for &'b Bindings {
    type Item = &'b Binding;
    type IntoIter = std::slice::Iter<'b, Binding>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

impl Deref for Bindings {
    type Target = [Binding];
    fn deref(&self) -> &[Binding] {
        &self.list
    }
}

/// A program's inputs, parameters and outputs, and the parameters it updates: what a
/// caller may pass and read, and the checks of what it passes.
#[derive(Clone, Debug, Default)]
pub struct Signature {
    pub inputs: Bindings,
    pub params: Bindings,
    pub outputs: Bindings,
    /// Parameter names with an update, in the program's update order.
    pub updated: Vec<String>,
}

/// The feeds of [`Runtime::run_feeds`], checked and converted to arguments.
pub struct SplitFeeds {
    inputs: Vec<(String, OwnedArg)>,
    params: Vec<(String, OwnedArg)>,
}

impl SplitFeeds {
    /// The fed inputs as the arguments of a run.
    pub fn input_args(&self) -> Vec<(&str, Arg<'_>)> {
        self.inputs
            .iter()
            .map(|(name, arg)| (name.as_str(), arg.as_arg()))
            .collect()
    }

    /// The fed parameters with their values.
    pub fn param_args(&self) -> impl Iterator<Item = (&str, Arg<'_>)> {
        self.params
            .iter()
            .map(|(name, arg)| (name.as_str(), arg.as_arg()))
    }
}

impl Signature {
    /// The signature of a checked program.
    pub fn of(program: &Program) -> Signature {
        let bind = |name: &str, buffer: BufferId| Binding {
            name: name.to_string(),
            buffer,
            ty: program.buffer(buffer).ty.clone(),
        };
        Signature {
            inputs: program
                .inputs()
                .into_iter()
                .map(|(name, id)| bind(name, id))
                .collect(),
            params: program
                .params()
                .into_iter()
                .map(|(name, id)| bind(name, id))
                .collect(),
            outputs: program
                .outputs
                .iter()
                .map(|output| Binding {
                    name: output.name.clone(),
                    buffer: output.buffer,
                    ty: output.ty.clone(),
                })
                .collect(),
            updated: program.updates.iter().map(|u| u.param.clone()).collect(),
        }
    }

    /// The parameter called `name`.
    pub fn param(&self, name: &str) -> Result<&Binding, RuntimeError> {
        self.params
            .find(name)
            .ok_or_else(|| RuntimeError::UnknownParam {
                name: name.to_string(),
                known: self.params.names(),
            })
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Result<&Binding, RuntimeError> {
        self.outputs
            .find(name)
            .ok_or_else(|| RuntimeError::UnknownOutput {
                name: name.to_string(),
                known: self.outputs.names(),
            })
    }

    /// The parameter called `name`, which must be f32 (read as `&[f32]`).
    pub fn f32_param(&self, name: &str) -> Result<&Binding, RuntimeError> {
        require_f32("parameter", self.param(name)?)
    }

    /// The output called `name`, which must be f32 (read as `&[f32]`).
    pub fn f32_output(&self, name: &str) -> Result<&Binding, RuntimeError> {
        require_f32("output", self.output(name)?)
    }

    /// The parameter called `name`, if `data` has its dtype and element count.
    pub fn param_for(&self, name: &str, data: &Arg<'_>) -> Result<&Binding, RuntimeError> {
        let binding = self.param(name)?;
        check_arg("parameter", binding, data)?;
        Ok(binding)
    }

    /// Matches the arguments to the inputs: every input exactly once, with its dtype
    /// and element count. Returns the argument of each input, in input order.
    pub fn match_inputs<'a>(&self, args: &[(&str, Arg<'a>)]) -> Result<Vec<Arg<'a>>, RuntimeError> {
        let mut given: Vec<Option<Arg<'a>>> = vec![None; self.inputs.len()];
        for (name, arg) in args {
            let position =
                self.inputs
                    .position(name)
                    .ok_or_else(|| RuntimeError::UnknownInput {
                        name: name.to_string(),
                        known: self.inputs.names(),
                    })?;
            if given[position].is_some() {
                return Err(RuntimeError::DuplicateInput {
                    name: name.to_string(),
                });
            }
            check_arg("input", &self.inputs[position], arg)?;
            given[position] = Some(*arg);
        }
        given
            .into_iter()
            .zip(&self.inputs)
            .map(|(arg, binding)| {
                arg.ok_or_else(|| RuntimeError::MissingInput {
                    name: binding.name.clone(),
                    ty: binding.ty.clone(),
                })
            })
            .collect()
    }

    /// Sorts `feeds` into inputs and parameters and checks every one: each names an
    /// input or a parameter and has its type, and the inputs are all there.
    pub fn split_feeds(&self, feeds: &Feeds) -> Result<SplitFeeds, RuntimeError> {
        let mut split = SplitFeeds {
            inputs: Vec::new(),
            params: Vec::new(),
        };
        for (name, tensor) in feeds {
            let (kind, binding) = if let Some(binding) = self.inputs.find(name) {
                ("input", binding)
            } else if let Some(binding) = self.params.find(name) {
                ("parameter", binding)
            } else {
                return Err(RuntimeError::UnknownFeed { name: name.clone() });
            };
            if tensor.ty() != binding.ty || tensor.len() != binding.ty.num_elements() {
                return Err(RuntimeError::WrongType {
                    kind,
                    name: name.clone(),
                    expected: binding.ty.clone(),
                    found: tensor.ty(),
                });
            }
            let arg = OwnedArg::from_tensor(tensor)?;
            if kind == "input" {
                split.inputs.push((name.clone(), arg));
            } else {
                split.params.push((name.clone(), arg));
            }
        }
        self.match_inputs(&split.input_args())?;
        Ok(split)
    }
}

fn require_f32<'b>(kind: &'static str, binding: &'b Binding) -> Result<&'b Binding, RuntimeError> {
    if binding.ty.dtype != DType::F32 {
        return Err(RuntimeError::NotF32 {
            kind,
            name: binding.name.clone(),
            ty: binding.ty.clone(),
        });
    }
    Ok(binding)
}

fn check_arg(kind: &'static str, binding: &Binding, arg: &Arg<'_>) -> Result<(), RuntimeError> {
    if arg.dtype() != binding.ty.dtype {
        return Err(RuntimeError::WrongDtype {
            kind,
            name: binding.name.clone(),
            expected: binding.ty.clone(),
            found: arg.dtype(),
        });
    }
    if arg.len() != binding.ty.num_elements() {
        return Err(RuntimeError::WrongLength {
            kind,
            name: binding.name.clone(),
            expected: binding.ty.clone(),
            found: arg.len(),
        });
    }
    Ok(())
}

/// Reads 32-bit words of a buffer as a tensor of type `ty`.
pub(crate) fn to_tensor(words: &[u32], ty: &TensorType) -> Result<Tensor, OutOfMemory> {
    let data = try_collect(
        words.iter().map(|&word| match ty.dtype {
            DType::F32 => f64::from(f32::from_bits(word)),
            DType::I32 => f64::from(word as i32),
            DType::Bool => f64::from(u8::from(word != 0)),
        }),
        || format!("a host copy of a {ty} buffer"),
    )?;
    // A buffer holds exactly its type's elements, and every word decodes to a value
    // of the dtype.
    Ok(Tensor::new(ty.clone(), data).expect("a buffer matches its binding's type"))
}

/// 32-bit words as the f32 values they hold.
pub(crate) fn as_f32(words: &[u32]) -> &[f32] {
    // SAFETY: f32 and u32 have the same size and alignment and every bit pattern is
    // a valid f32.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<f32>(), words.len()) }
}

/// Feed data converted to the argument type of its dtype.
enum OwnedArg {
    F32(Vec<f32>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
}

impl OwnedArg {
    fn from_tensor(tensor: &Tensor) -> Result<OwnedArg, OutOfMemory> {
        let what = || format!("a copy of a fed {}", tensor.ty());
        let data = tensor.data().iter();
        Ok(match tensor.dtype() {
            DType::F32 => OwnedArg::F32(try_collect(data.map(|&v| v as f32), what)?),
            DType::I32 => OwnedArg::I32(try_collect(data.map(|&v| v as i32), what)?),
            DType::Bool => OwnedArg::Bool(try_collect(data.map(|&v| v != 0.0), what)?),
        })
    }

    fn as_arg(&self) -> Arg<'_> {
        match self {
            OwnedArg::F32(data) => Arg::F32(data),
            OwnedArg::I32(data) => Arg::I32(data),
            OwnedArg::Bool(data) => Arg::Bool(data),
        }
    }
}

/// Every output and the new value of every updated parameter, by name.
pub type RunResults = (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>);

/// What every executable offers, whatever the device it runs on: the CPU's
/// [`crate::Executable`] and the GPU's `CudaExecutable` (feature `cuda`) check their
/// arguments with the same [`Signature`] and so fail with the same errors.
///
/// The CPU executable also has these as inherent methods, so callers that hold one
/// need not import this trait.
pub trait Runtime {
    /// The inputs, parameters and outputs that every argument is checked against.
    fn signature(&self) -> &Signature;

    /// Sets a parameter's value from data of any dtype.
    fn set_param_arg(&mut self, name: &str, data: Arg<'_>) -> Result<(), RuntimeError>;

    /// The current value of an f32 parameter.
    fn param(&self, name: &str) -> Result<&[f32], RuntimeError>;

    /// The current value of a parameter of any dtype.
    fn param_tensor(&self, name: &str) -> Result<Tensor, RuntimeError>;

    /// An f32 output of the last run.
    fn output_f32(&self, name: &str) -> Result<&[f32], RuntimeError>;

    /// An output of the last run, of any dtype.
    fn output(&self, name: &str) -> Result<Tensor, RuntimeError>;

    /// Runs the program once: checks every argument, copies the inputs in, launches
    /// every kernel, then gives each updated parameter its new value.
    fn run(&mut self, inputs: &[(&str, Arg<'_>)]) -> Result<(), RuntimeError>;

    /// What compilation produced and what it cost.
    fn stats(&self) -> &CompileStats;

    /// Each kernel's name (the op it computes), in launch order.
    fn kernel_names(&self) -> &[String];

    /// Bytes of buffer memory held now (the device's, for a GPU executable).
    fn allocated_bytes(&self) -> usize;

    /// `(name, type)` of every input, in declaration order.
    fn inputs(&self) -> Vec<(String, TensorType)> {
        self.signature().inputs.typed()
    }

    /// `(name, type)` of every parameter, in declaration order.
    fn params(&self) -> Vec<(String, TensorType)> {
        self.signature().params.typed()
    }

    /// `(name, type)` of every output, in declaration order.
    fn outputs(&self) -> Vec<(String, TensorType)> {
        self.signature().outputs.typed()
    }

    /// Sets an f32 parameter's value.
    fn set_param(&mut self, name: &str, data: &[f32]) -> Result<(), RuntimeError> {
        self.set_param_arg(name, Arg::F32(data))
    }

    /// Number of kernels launched per run.
    fn kernel_count(&self) -> usize {
        self.kernel_names().len()
    }

    /// Convenience for differential tests: sets the parameters and inputs named in
    /// `feeds` (parameters not fed keep their values), runs once, and returns every
    /// output and the new value of every updated parameter. Every feed is checked
    /// before anything changes.
    fn run_feeds(&mut self, feeds: &Feeds) -> Result<RunResults, RuntimeError> {
        let split = self.signature().split_feeds(feeds)?;
        for (name, arg) in split.param_args() {
            self.set_param_arg(name, arg)?;
        }
        self.run(&split.input_args())?;
        let mut outputs = BTreeMap::new();
        for (name, _) in self.outputs() {
            let tensor = self.output(&name)?;
            outputs.insert(name, tensor);
        }
        let mut updated = BTreeMap::new();
        for name in self.signature().updated.clone() {
            let tensor = self.param_tensor(&name)?;
            updated.insert(name, tensor);
        }
        Ok((outputs, updated))
    }
}
