//! The `kiln` command: check model files, dump their IR after any step of the
//! pipeline, check their gradients, initialise weights and run models on data
//! (`cli_data`), train them (`cli_train`), time them (`cli_bench`) and compile them
//! ahead of time, to an object file or to PTX (`cli_compile`).
//!
//! Exit codes: 0 success; 1 a mistake in the model file (a located error), a
//! failed compile, a gradient check above its tolerance, or a bad data file
//! (weights, .npy, CSV); 2 a bad command line.

mod cli_bench;
mod cli_compile;
mod cli_data;
mod cli_train;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kiln::frontend::lang::ElaborateOptions;
use kiln::gradcheck::{gradcheck, GradcheckOptions, TOLERANCE};
use kiln::ir::{dot, serial, text, Graph};
use kiln::model_file::{self, ModelFile};
use kiln::passes::lower;
use kiln::passes::pipeline::{self, PipelineOptions, Step};
use kiln::passes::schedule;
use kiln::Device;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "A dataflow-graph compiler for neural networks",
    long_about = "A dataflow-graph compiler for neural networks.\n\nModel files (.kiln) are \
                  described in docs/model-format.md.\n\nExit codes: 0 success; 1 a mistake in \
                  the model file, a failed compile, a gradient check above its tolerance, or a \
                  bad data file (weights or .npy: missing, misshapen, of another dtype, \
                  truncated, or not writable); 2 a bad command line."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse a model file, bind its dimensions and check every shape; print a
    /// one-line summary (parameters, inputs, outputs, training).
    Check(ModelArgs),
    /// Print the IR after a step of the pipeline (every step without --after):
    /// `build`, the graph passes (`autodiff`, `optimizer` for a model with
    /// `train`; `egraph`, `dce`), `lower` and the kernel-IR schedule steps.
    Dump {
        #[command(flatten)]
        model: ModelArgs,
        /// The step after which to print the IR.
        #[arg(long, value_name = "STEP")]
        after: Option<String>,
        /// How graph IR is printed; kernel IR is text only.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Print, per step, the number of nodes and kernels and the bytes their
        /// operands and results occupy, instead of the IR.
        #[arg(long)]
        stats: bool,
    },
    /// Compile the loss (the `train` statement's, else output `loss`) and its
    /// gradients with respect to every parameter and f32 input, compare them with
    /// central finite differences on random inputs, and end with
    /// `max relative error: …` (exit 1 above 1e-3).
    Gradcheck {
        #[command(flatten)]
        model: ModelArgs,
        /// Seeds the random inputs and the elements checked.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The most elements of each parameter or input that are checked.
        #[arg(long, default_value_t = 16)]
        samples: usize,
    },
    /// Write the model's freshly initialised parameters (drawn from --seed) to a
    /// safetensors file, named as in the model file (`fc1.weight`).
    #[command(after_long_help = cli_data::EXIT_CODES)]
    Init(cli_data::InitArgs),
    /// Run the model for inference (dropout off, batch norm's running statistics)
    /// with weights from a safetensors file on inputs from .npy files, and write one
    /// NAME.npy per output into a folder.
    #[command(after_long_help = cli_data::EXIT_CODES)]
    Run(cli_data::RunArgs),
    /// Compile the model ahead of time into an object file for this machine that
    /// exports `<name>_infer` (and with --train `<name>_train`), and a C header that
    /// documents every function, argument, dtype and shape. The object needs only
    /// libc and runs on the caller's thread. With --ptx sm_80|sm_90, write the forward
    /// pass (or with --train the train step) as PTX for an NVIDIA GPU instead.
    #[command(
        override_usage = "kiln compile [OPTIONS] <MODEL.kiln> -o <FILE.o> --header <FILE.h>\n       \
                                kiln compile [OPTIONS] <MODEL.kiln> --ptx <ARCH> [-o <FILE.ptx>]"
    )]
    Compile(cli_compile::CompileArgs),
    /// Compile the model (its train step when the file has a `train` statement) and
    /// time it: compile time, median step time over repeated runs on fixed random
    /// inputs, arena and parameter bytes.
    Bench(cli_bench::BenchArgs),
    /// Train the model on a data set (CSV, or .npy features and labels) with its
    /// `train` statement: a progress bar, the final weights, the loss curve as CSV
    /// and PNG, and checkpoints that --resume continues bit for bit.
    Train(cli_train::TrainArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// The model file.
    #[arg(value_name = "MODEL.kiln")]
    path: PathBuf,
    /// Binds a dimension of the model, replacing its default (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
    dims: Vec<(String, usize)>,
    /// Which model of the file, when it declares several.
    #[arg(long = "model", value_name = "NAME")]
    name: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Dot,
    Json,
}

/// Reads `--device`: a device this build can compile for (a GPU needs the `cuda`
/// feature, and asking for one without it is a usage error).
fn parse_device(text: &str) -> Result<Device, String> {
    let device: Device = text.parse()?;
    if !device.is_supported() {
        return Err(kiln::compile::NO_CUDA_SUPPORT.to_string());
    }
    Ok(device)
}

fn parse_dim(text: &str) -> Result<(String, usize), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    let value = value
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number ≥ 0"))?;
    Ok((name.to_string(), value))
}

/// A failure already explained to the user; the command exits with 1.
struct Failed;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(model) => check(&model),
        Command::Dump {
            model,
            after,
            format,
            stats,
        } => dump(&model, after.as_deref(), format, stats),
        Command::Gradcheck {
            model,
            seed,
            samples,
        } => grad(&model, seed, samples),
        Command::Init(args) => cli_data::init(&args),
        Command::Run(args) => cli_data::run(&args),
        Command::Compile(args) => cli_compile::compile(&args),
        Command::Bench(args) => cli_bench::bench(&args),
        Command::Train(args) => cli_train::train(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed) => ExitCode::FAILURE,
    }
}

/// Prints a line on standard output. A closed pipe (`kiln dump … | head`) ends the
/// output quietly instead of failing.
fn out(text: &str) -> Result<(), Failed> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}") {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(fail(err)),
        _ => Ok(()),
    }
}

/// Prints `error: …` and fails.
fn fail(message: impl std::fmt::Display) -> Failed {
    eprintln!("error: {message}");
    Failed
}

fn load(args: &ModelArgs) -> Result<ModelFile, Failed> {
    load_with(args, 0, false)
}

/// The model file with its parameters drawn from `seed`, built for training or
/// (`evaluation`) for inference; a mistake is printed with its location.
fn load_with(args: &ModelArgs, seed: u64, evaluation: bool) -> Result<ModelFile, Failed> {
    let options = ElaborateOptions {
        model: args.name.clone(),
        dims: args.dims.iter().cloned().collect(),
        seed,
        evaluation,
    };
    model_file::load(&args.path, &options).map_err(|err| {
        eprint!("{}", err.render(std::io::stderr().is_terminal()));
        if matches!(err, model_file::LoadError::Read { .. }) {
            eprintln!();
        }
        Failed
    })
}

fn check(args: &ModelArgs) -> Result<(), Failed> {
    let file = load(args)?;
    let graph = file.model.graph();
    let values: usize = file.model.params().values().map(Vec::len).sum();
    let leaves = |ids: &[kiln::ir::NodeId]| -> String {
        ids.iter()
            .map(|&id| format!("{}: {}", graph.leaf_name(id).unwrap_or("?"), graph.ty(id)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let outputs: Vec<String> = graph
        .outputs()
        .iter()
        .map(|(name, id)| format!("{name}: {}", graph.ty(*id)))
        .collect();
    let train = match &file.train {
        Some(train) => format!(
            "; trains {} with {}, batch {}",
            train.loss, train.optimizer, train.batch
        ),
        None => String::new(),
    };
    out(&format!(
        "{}: ok; {} parameters ({values} values); inputs {}; outputs {}{train}",
        file.name,
        graph.params().len(),
        leaves(graph.inputs()),
        outputs.join(", ")
    ))
}

/// The pipeline for the file: a training step when it says `train`.
fn pipeline_for(file: &ModelFile) -> Result<(&'static [Step], PipelineOptions), Failed> {
    match &file.train {
        Some(train) => {
            let optimizer = model_file::optimizer(train).map_err(fail)?;
            let options = PipelineOptions {
                loss: Some(train.loss.clone()),
                optimizer: Some(optimizer),
                ..PipelineOptions::default()
            };
            Ok((pipeline::TRAIN_STEP, options))
        }
        None => Ok((pipeline::INFERENCE, PipelineOptions::default())),
    }
}

/// The IR after one step: a graph or a kernel program.
enum Ir {
    Graph(Graph),
    Kernels(kiln::ir::kernel::Program),
}

fn dump(args: &ModelArgs, after: Option<&str>, format: Format, stats: bool) -> Result<(), Failed> {
    let file = load(args)?;
    let (steps, options) = pipeline_for(&file)?;
    let mut irs: Vec<(String, Ir)> =
        vec![("build".to_string(), Ir::Graph(file.model.graph().clone()))];
    let mut graph = file.model.graph().clone();
    for &step in steps {
        graph = pipeline::run(&graph, &[step], &options, &mut |_, _| {})
            .map_err(fail)?
            .0;
        irs.push((step.name().to_string(), Ir::Graph(graph.clone())));
    }
    let program = lower::lower(&graph).map_err(fail)?;
    irs.push(("lower".to_string(), Ir::Kernels(program.clone())));
    let target = kiln::backend::cpu::target::host_target(kiln::backend::pool::available_threads());
    schedule::run(&program, schedule::STEPS, &target, &mut |step, program| {
        irs.push((step.to_string(), Ir::Kernels(program.clone())));
    })
    .map_err(fail)?;

    let chosen: Vec<&(String, Ir)> = match after {
        None => irs.iter().collect(),
        Some(step) => {
            let found: Vec<&(String, Ir)> = irs.iter().filter(|(name, _)| name == step).collect();
            if found.is_empty() {
                let names: Vec<&str> = irs.iter().map(|(name, _)| name.as_str()).collect();
                return Err(fail(format!(
                    "no step {step:?} in this model's pipeline; the steps are {}",
                    names.join(", ")
                )));
            }
            found
        }
    };
    for (name, ir) in chosen {
        if stats {
            out(&format!("{name}: {}", statistics(ir)))?;
            continue;
        }
        let printed = match (ir, format) {
            (Ir::Graph(graph), Format::Text) => text::print(graph),
            (Ir::Graph(graph), Format::Dot) => dot::to_dot(graph),
            (Ir::Graph(graph), Format::Json) => serial::to_json(graph),
            (Ir::Kernels(program), Format::Text) => program.to_string(),
            (Ir::Kernels(_), _) => {
                return Err(fail(format!(
                    "the IR after {name} is kernel IR, which prints as text only (--format text)"
                )))
            }
        };
        if after.is_none() {
            out(&format!("// ---- IR after {name} ----"))?;
        }
        out(printed.trim_end())?;
    }
    Ok(())
}

/// `N nodes, K kernels, B bytes moved`: for a graph, every op's operands and result;
/// for kernel IR, every buffer each kernel reads or writes, once per kernel.
fn statistics(ir: &Ir) -> String {
    match ir {
        Ir::Graph(graph) => {
            let ids = graph.node_ids();
            let bytes: usize = ids
                .iter()
                .filter(|&&id| !graph.op(id).is_leaf())
                .map(|&id| {
                    let own = graph.ty(id).size_bytes();
                    let operands: usize = graph
                        .operands(id)
                        .iter()
                        .map(|&operand| graph.ty(operand).size_bytes())
                        .sum();
                    own + operands
                })
                .sum();
            format!("{} nodes, 0 kernels, {bytes} bytes moved", ids.len())
        }
        Ir::Kernels(program) => {
            let bytes: usize = program
                .kernels
                .iter()
                .map(|kernel| {
                    kernel
                        .buffers()
                        .into_iter()
                        .map(|buffer| program.buffer(buffer).size_bytes())
                        .sum::<usize>()
                })
                .sum();
            format!(
                "{} buffers, {} kernels, {bytes} bytes moved",
                program.buffers.len(),
                program.kernels.len()
            )
        }
    }
}

fn grad(args: &ModelArgs, seed: u64, samples: usize) -> Result<(), Failed> {
    let file = load(args)?;
    let loss = match &file.train {
        Some(train) => train.loss.clone(),
        None if file.outputs.iter().any(|name| name == "loss") => "loss".to_string(),
        None => {
            return Err(fail(format!(
                "{}: the model has no `train` statement and no output `loss`, so no loss to differentiate",
                args.path.display()
            )))
        }
    };
    let options = GradcheckOptions {
        seed,
        samples,
        ..GradcheckOptions::default()
    };
    let report = gradcheck(&file.model, &loss, &options).map_err(fail)?;
    out(&report.to_string())?;
    if report.max_error() > TOLERANCE {
        eprintln!(
            "error: the largest error {:.1e} is above the tolerance {TOLERANCE:.0e}",
            report.max_error()
        );
        return Err(Failed);
    }
    Ok(())
}
