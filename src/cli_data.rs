//! The `kiln` subcommands that read and write data files: `init` (fresh weights to a
//! safetensors file) and `run` (a model on .npy inputs, with weights from a file, to
//! one .npy per output). Every file is written atomically (`kiln::fsutil`).

use crate::{fail, load_with, out, Failed, ModelArgs};
use clap::Args;
use kiln::frontend::Model;
use kiln::ir::{DType, Tensor};
use kiln::{npy, weights, Arg, Device};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The exit codes, at the end of `kiln init --help` and `kiln run --help`.
pub const EXIT_CODES: &str = "Exit codes: 0 success; 1 a mistake in the model file, or a bad \
    data file: a weight missing, unknown, of another shape or dtype, an input that does not \
    fit the model, a truncated or corrupt safetensors or .npy file, an output path in a \
    missing folder (nothing is left half-written: files are replaced atomically); 2 a bad \
    command line.";

#[derive(Args)]
pub struct InitArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The safetensors file to write (replaced atomically if it exists; its folder
    /// must exist).
    #[arg(short = 'o', long = "output", value_name = "W.safetensors")]
    output: PathBuf,
    /// Seeds the initial values: the same seed gives the same weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The weights: a safetensors file with exactly the model's parameters (as
    /// `kiln init` writes).
    #[arg(long, value_name = "W.safetensors")]
    weights: PathBuf,
    /// An input of the model from a .npy file (float32, int32 or bool, C order) of
    /// the input's exact shape; one per input the outputs read (repeatable).
    #[arg(long = "input", value_name = "NAME=FILE.npy", value_parser = parse_input)]
    inputs: Vec<(String, PathBuf)>,
    /// Compute only this output (repeatable; default: every output). The inputs it
    /// does not read need no --input: `--only logits` needs no labels.
    #[arg(long = "only", value_name = "NAME")]
    only: Vec<String>,
    /// The folder for the outputs, one NAME.npy per output of the model; it is
    /// created if missing (its parent must exist).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    output: PathBuf,
    /// Where the model runs: cpu, or an NVIDIA GPU: cuda (the first) or cuda:N
    /// (needs kiln built with --features cuda).
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = crate::parse_device)]
    device: Device,
}

pub(crate) fn parse_input(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("{text:?} is not NAME=FILE.npy")),
    }
}

/// Loads the model file with its parameters drawn from `seed`, built for evaluation
/// or training; a mistake in it is shown located, as `kiln check` shows it.
fn load_model(args: &ModelArgs, seed: u64, evaluation: bool) -> Result<Model, Failed> {
    Ok(load_with(args, seed, evaluation)?.model)
}

/// `kiln init`: the model's freshly initialised parameters to a safetensors file.
pub fn init(args: &InitArgs) -> Result<(), Failed> {
    // Built for training, the mode in which the weights will first be used; the
    // parameters are the same in either mode.
    let model = load_model(&args.model, args.seed, false)?;
    let weights = weights::of_model(&model).map_err(fail)?;
    weights::save(&weights, &args.output).map_err(fail)?;
    let values: usize = weights.values().map(Tensor::len).sum();
    out(&format!(
        "wrote {} weights ({values} values) to {}",
        weights.len(),
        args.output.display()
    ))
}

/// `kiln run`: the model for inference on the given inputs, with the given weights;
/// one .npy file per output.
pub fn run(args: &RunArgs) -> Result<(), Failed> {
    let mut model = load_model(&args.model, 0, true)?;
    weights::load_into(&mut model, &args.weights).map_err(fail)?;
    let mut graph = model.graph().clone();
    if !args.only.is_empty() {
        if let Some(name) = args
            .only
            .iter()
            .find(|name| graph.output_by_name(name).is_none())
        {
            let outputs: Vec<&str> = graph.outputs().iter().map(|(o, _)| o.as_str()).collect();
            return Err(fail(format!(
                "--only {name}: the model has no output {name:?}; its outputs are {}",
                outputs.join(", ")
            )));
        }
        graph.retain_outputs(|name, _| args.only.iter().any(|only| only == name));
    }
    let read = inputs_read(&graph);
    let mut inputs = read_inputs(&model, &args.inputs, &read)?;
    // The inputs the outputs do not read are still arguments of the compiled graph:
    // zeros of their type.
    for &id in graph.inputs() {
        let name = graph.leaf_name(id).unwrap_or_default();
        if !inputs.contains_key(name) {
            let ty = graph.ty(id).clone();
            let zeros = vec![0.0; ty.num_elements()];
            inputs.insert(name.to_string(), Tensor::new(ty, zeros).map_err(fail)?);
        }
    }
    let mut exe = kiln::compile::compile_for(&graph, args.device).map_err(fail)?;
    kiln::compile::set_params(&mut exe, &model).map_err(fail)?;
    let owned: Vec<(&str, Owned)> = inputs
        .iter()
        .map(|(name, tensor)| (name.as_str(), Owned::of(tensor)))
        .collect();
    let feeds: Vec<(&str, Arg<'_>)> = owned
        .iter()
        .map(|(name, data)| (*name, data.arg()))
        .collect();
    exe.run(&feeds).map_err(fail)?;

    create_output_folder(&args.output)?;
    let mut written = Vec::new();
    for (name, ty) in exe.outputs() {
        let tensor = exe.output(&name).map_err(fail)?;
        let path = args.output.join(format!("{name}.npy"));
        npy::write(&path, &tensor).map_err(fail)?;
        written.push(format!("{name}.npy {ty}"));
    }
    out(&format!(
        "wrote {} to {}",
        written.join(", "),
        args.output.display()
    ))
}

/// The names of the inputs that `graph`'s outputs and updates depend on.
pub(crate) fn inputs_read(graph: &kiln::ir::Graph) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<_> = graph
        .outputs()
        .iter()
        .map(|&(_, id)| id)
        .chain(graph.updates().iter().map(|&(_, value)| value))
        .collect();
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            stack.extend(graph.operands(id));
        }
    }
    graph
        .inputs()
        .iter()
        .filter(|id| seen.contains(id))
        .filter_map(|&id| graph.leaf_name(id).map(str::to_string))
        .collect()
}

/// Reads every `--input`, checked against the model's inputs: each input given once,
/// none unknown, each of its input's exact type, and every input in `required`
/// given.
pub(crate) fn read_inputs(
    model: &Model,
    given: &[(String, PathBuf)],
    required: &BTreeSet<String>,
) -> Result<BTreeMap<String, Tensor>, Failed> {
    let graph = model.graph();
    let expected: Vec<(String, kiln::ir::TensorType)> = graph
        .inputs()
        .iter()
        .filter_map(|&id| Some((graph.leaf_name(id)?.to_string(), graph.ty(id).clone())))
        .collect();
    let names = || {
        expected
            .iter()
            .map(|(name, ty)| format!("{name}: {ty}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut inputs = BTreeMap::new();
    for (name, path) in given {
        let Some((_, ty)) = expected.iter().find(|(known, _)| known == name) else {
            return Err(fail(format!(
                "--input {name}={}: the model has no input {name:?}; its inputs are {}",
                path.display(),
                names()
            )));
        };
        if inputs.contains_key(name) {
            return Err(fail(format!("--input {name} is given twice")));
        }
        let tensor = npy::read(path).map_err(fail)?;
        if tensor.ty() != *ty {
            let hint = if tensor.dtype() == ty.dtype && tensor.shape().len() == ty.shape.len() {
                " (the model's dimensions are set with --dim NAME=VALUE)"
            } else {
                ""
            };
            return Err(fail(format!(
                "input {name:?}: {} holds {}, but the model takes {ty}{hint}",
                path.display(),
                tensor.ty()
            )));
        }
        inputs.insert(name.clone(), tensor);
    }
    if let Some((name, ty)) = expected
        .iter()
        .find(|(name, _)| required.contains(name) && !inputs.contains_key(name))
    {
        return Err(fail(format!(
            "no --input {name}=FILE.npy for the model's input {name:?} ({ty})"
        )));
    }
    Ok(inputs)
}

/// Creates the output folder unless it exists; its parent must exist, so that a
/// mistyped path is reported rather than built.
fn create_output_folder(folder: &Path) -> Result<(), Failed> {
    if folder.is_dir() {
        return Ok(());
    }
    let parent = match folder.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(fail(format!(
            "{}: cannot create the output folder: the folder {} does not exist",
            folder.display(),
            parent.display()
        )));
    }
    std::fs::create_dir(folder).map_err(|err| {
        fail(format!(
            "{}: cannot create the output folder: {err}",
            folder.display()
        ))
    })
}

/// An input's elements in the dtype the executable takes.
pub(crate) enum Owned {
    F32(Vec<f32>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
}

impl Owned {
    pub(crate) fn of(tensor: &Tensor) -> Owned {
        match tensor.dtype() {
            DType::F32 => Owned::F32(tensor.to_f32()),
            DType::I32 => Owned::I32(tensor.to_i32()),
            DType::Bool => Owned::Bool(tensor.data().iter().map(|&v| v != 0.0).collect()),
        }
    }

    pub(crate) fn arg(&self) -> Arg<'_> {
        match self {
            Owned::F32(data) => Arg::F32(data),
            Owned::I32(data) => Arg::I32(data),
            Owned::Bool(data) => Arg::Bool(data),
        }
    }
}
