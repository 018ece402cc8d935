//! `kiln compile`: a model file into an object file and its C header
//! (`kiln::aot`), or with `--ptx` into a PTX module for an NVIDIA GPU (`kiln::gpu`).

use crate::{fail, load_with, out, Failed, ModelArgs};
use clap::Args;
use kiln::aot::{compile_object, AotOptions};
use kiln::ir::GpuTarget;
use kiln::model_file::{self, ModelFile};
use kiln::passes::optimizer::Optimizer;
use kiln::passes::pipeline::{self, PipelineOptions};
use std::path::{Path, PathBuf};

/// The arguments of `kiln compile`.
#[derive(Args)]
pub struct CompileArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Also export the train step (`<name>_train`): the file's `train` statement's
    /// loss and optimizer, updating the parameters in place. With --ptx, the train
    /// step is what is written, instead of the forward pass.
    #[arg(long)]
    pub train: bool,
    /// Embed the parameter values (and the optimizer's initial state) in the object,
    /// so the caller does not pass them: the weights of --weights, else the model's
    /// initialisation drawn with --seed.
    #[arg(long)]
    pub embed_weights: bool,
    /// The parameter values to embed: a safetensors file with exactly the model's
    /// parameters (`kiln init` writes one); needs --embed-weights.
    #[arg(long, value_name = "W.safetensors", requires = "embed_weights")]
    pub weights: Option<PathBuf>,
    /// Seeds the parameters' initialisation (the values embedded).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The file to write: the object file, or with --ptx the PTX module (default:
    /// the model file's name with `.ptx`, in the current folder).
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        required_unless_present = "ptx"
    )]
    pub output: Option<PathBuf>,
    /// The C header to write.
    #[arg(long, value_name = "FILE.h", required_unless_present = "ptx")]
    pub header: Option<PathBuf>,
    /// The prefix of the exported symbols (a C identifier); default: the object
    /// file's name without its extension, with `_` for other characters.
    #[arg(long = "name", value_name = "NAME")]
    pub library: Option<String>,
    /// Write PTX for an NVIDIA GPU of this architecture (sm_80: A100; sm_90: H100,
    /// H200) instead of an object: the forward pass, or with --train the train step,
    /// one `.entry` per kernel, each printed with its launch. Takes no weights or
    /// header: the kernels read the parameters from device memory.
    #[arg(
        long,
        value_name = "ARCH",
        value_parser = parse_gpu_target,
        conflicts_with_all = ["embed_weights", "weights", "header", "library"]
    )]
    pub ptx: Option<GpuTarget>,
}

/// The architectures `--ptx` takes, by name.
fn gpu_targets() -> [GpuTarget; 2] {
    [GpuTarget::sm80(), GpuTarget::sm90()]
}

/// Reads `--ptx`: `sm_80` or `sm_90`.
fn parse_gpu_target(text: &str) -> Result<GpuTarget, String> {
    let targets = gpu_targets();
    if let Some(target) = targets.iter().find(|target| target.arch() == text) {
        return Ok(*target);
    }
    let names: Vec<String> = targets.iter().map(GpuTarget::arch).collect();
    Err(format!(
        "{text:?} is no architecture kiln writes PTX for: expected {}",
        names.join(" or ")
    ))
}

/// The PTX module's default path: the model file's stem with `.ptx`, in the current
/// folder (`examples/models/mlp_digits.kiln` gives `mlp_digits.ptx`).
fn default_ptx_path(model: &Path) -> PathBuf {
    let stem = model
        .file_stem()
        .map_or_else(|| "model".into(), |stem| stem.to_string_lossy());
    PathBuf::from(format!("{stem}.ptx"))
}

/// The loss and optimizer of the file's `train` statement when --train asks for the
/// train step; a file without one is the user's mistake.
fn train_step(args: &CompileArgs, file: &ModelFile) -> Result<Option<(String, Optimizer)>, Failed> {
    if !args.train {
        return Ok(None);
    }
    let Some(spec) = &file.train else {
        return Err(fail(format!(
            "{}: --train needs a `train` statement in the model file",
            args.model.path.display()
        )));
    };
    let optimizer = model_file::optimizer(spec).map_err(fail)?;
    Ok(Some((spec.loss.clone(), optimizer)))
}

/// The library name from the object file's name: `my-model.o` is `my_model`.
fn default_name(output: &Path) -> String {
    let stem = output
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        name.insert(0, '_');
    }
    name
}

pub fn compile(args: &CompileArgs) -> Result<(), Failed> {
    if let Some(target) = args.ptx {
        return compile_ptx(args, target);
    }
    // clap requires both without --ptx.
    let (Some(output_path), Some(header_path)) = (&args.output, &args.header) else {
        return Err(fail("an object file needs -o FILE.o and --header FILE.h"));
    };
    let mut file = load_with(&args.model, args.seed, false)?;
    // The forward pass is the file built for evaluation (dropout off, batch norm by
    // its running statistics); `compile_object` takes the parameter values from the
    // trained model, so the weights go into that one only.
    let inference = load_with(&args.model, args.seed, true)?.model;
    if let Some(weights) = &args.weights {
        kiln::weights::load_into(&mut file.model, weights).map_err(fail)?;
    }
    let library = args
        .library
        .clone()
        .unwrap_or_else(|| default_name(output_path));
    if !kiln::backend::cpu::aot::is_c_identifier(&library) {
        return Err(fail(format!(
            "--name {library:?} is not a C identifier (letters, digits and `_`, not starting \
             with a digit)"
        )));
    }
    let train = train_step(args, &file)?;
    let options = AotOptions {
        library,
        train,
        embed: args.embed_weights,
        source: format!("{} (model {})", args.model.path.display(), file.name),
        inference: Some(inference),
        target: None,
    };
    let output = compile_object(&file.model, &options).map_err(fail)?;
    write(output_path, &output.object)?;
    write(header_path, output.header.as_bytes())?;
    for entry in &output.entries {
        out(&format!(
            "{}: {} arguments, workspace {} bytes",
            entry.symbol,
            entry.args.len(),
            entry.workspace_bytes
        ))?;
    }
    Ok(())
}

/// `kiln compile --ptx`: the forward pass (the file built for evaluation, as the
/// object's `_infer`) or with --train the train step, as one PTX module for `target`;
/// prints each kernel's launch and entry, then what was written where.
fn compile_ptx(args: &CompileArgs, target: GpuTarget) -> Result<(), Failed> {
    let file = load_with(&args.model, args.seed, !args.train)?;
    let (steps, options) = match train_step(args, &file)? {
        Some((loss, optimizer)) => (
            pipeline::TRAIN_STEP,
            PipelineOptions {
                loss: Some(loss),
                optimizer: Some(optimizer),
                ..PipelineOptions::default()
            },
        ),
        None => (pipeline::INFERENCE, PipelineOptions::default()),
    };
    let gpu = kiln::gpu::compile_ptx(file.model.graph(), steps, &options, &target).map_err(fail)?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_ptx_path(&args.model.path));
    write(&output, gpu.module.text.as_bytes())?;
    for ((kernel, launch), entry) in gpu
        .schedule
        .launches
        .iter()
        .enumerate()
        .zip(&gpu.module.entries)
    {
        out(&format!("k{kernel}: {launch} (entry {})", entry.name))?;
    }
    out(&format!(
        "wrote {} kernels ({}, {} bytes) to {}",
        gpu.module.entries.len(),
        target.arch(),
        gpu.module.text.len(),
        output.display()
    ))
}

/// Writes atomically: an interrupted compile never leaves half a file.
fn write(path: &Path, bytes: &[u8]) -> Result<(), Failed> {
    kiln::fsutil::write_atomic(path, bytes).map_err(fail)
}
