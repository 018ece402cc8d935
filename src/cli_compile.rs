//! `kiln compile`: a model file into an object file and its C header
//! (`kiln::aot`).

use crate::{fail, load_with, out, Failed, ModelArgs};
use clap::Args;
use kiln::aot::{compile_object, AotOptions};
use kiln::model_file;
use std::path::{Path, PathBuf};

/// The arguments of `kiln compile`.
#[derive(Args)]
pub struct CompileArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Also export the train step (`<name>_train`): the file's `train` statement's
    /// loss and optimizer, updating the parameters in place.
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
    /// The object file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE.o")]
    pub output: PathBuf,
    /// The C header to write.
    #[arg(long, value_name = "FILE.h")]
    pub header: PathBuf,
    /// The prefix of the exported symbols (a C identifier); default: the object
    /// file's name without its extension, with `_` for other characters.
    #[arg(long = "name", value_name = "NAME")]
    pub library: Option<String>,
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
        .unwrap_or_else(|| default_name(&args.output));
    if !kiln::backend::cpu::aot::is_c_identifier(&library) {
        return Err(fail(format!(
            "--name {library:?} is not a C identifier (letters, digits and `_`, not starting \
             with a digit)"
        )));
    }
    let train = if args.train {
        let Some(spec) = &file.train else {
            return Err(fail(format!(
                "{}: --train needs a `train` statement in the model file",
                args.model.path.display()
            )));
        };
        let optimizer = model_file::optimizer(spec).map_err(fail)?;
        Some((spec.loss.clone(), optimizer))
    } else {
        None
    };
    let options = AotOptions {
        library,
        train,
        embed: args.embed_weights,
        source: format!("{} (model {})", args.model.path.display(), file.name),
        inference: Some(inference),
        target: None,
    };
    let output = compile_object(&file.model, &options).map_err(fail)?;
    write(&args.output, &output.object)?;
    write(&args.header, output.header.as_bytes())?;
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

/// Writes atomically: an interrupted compile never leaves half a file.
fn write(path: &Path, bytes: &[u8]) -> Result<(), Failed> {
    kiln::fsutil::write_atomic(path, bytes).map_err(fail)
}
