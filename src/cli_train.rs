//! `kiln train`: trains a model file on a data set with its `train` statement, with a
//! progress bar, a loss curve (CSV and PNG), the final weights, and checkpoints that
//! resume bit for bit.
//!
//! A checkpoint `DIR/epoch-NNNN.safetensors` holds every parameter and
//! optimizer-state buffer by name and, under `kiln.*` names, the epochs done, the
//! shuffling generator's state and the loss of every epoch so far. Each is written
//! atomically (`kiln::fsutil`), so an interrupted run leaves the previous ones whole,
//! and `--resume` continues from the last.

use crate::cli_data::{read_inputs, Owned};
use crate::{fail, load_with, out, Failed, ModelArgs};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln::ir::{DType, Tensor, TensorType};
use kiln::trainer::{restore_step, step_state};
use kiln::weights::{self, Weights};
use kiln::{model_file, Dataset, Device, Trainer, TrainerConfig, TrainerState};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The arguments of `kiln train`.
#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The training data: a CSV file (`.csv` or `.csv.gz`; features then an integer
    /// label per row; a first line that is not numbers is skipped as a header), or a
    /// .npy file of features `[examples, features]` with --labels; fed to the inputs
    /// `x` and `labels` in shuffled minibatches.
    #[arg(long, value_name = "FILE", required_unless_present = "inputs")]
    pub data: Option<PathBuf>,
    /// Full-batch training instead: every input of the model from a .npy file of its
    /// exact type, the same every step, one step per epoch (a graph and its node
    /// labels, say); repeatable.
    #[arg(long = "input", value_name = "NAME=FILE.npy", value_parser = crate::cli_data::parse_input, conflicts_with_all = ["data", "labels"])]
    pub inputs: Vec<(String, PathBuf)>,
    /// The labels of .npy features: an int32 .npy file `[examples]`.
    #[arg(long, value_name = "FILE.npy")]
    pub labels: Option<PathBuf>,
    /// Multiplies every feature (1/16 = 0.0625 scales the digits' pixels to [0, 1]).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f32,
    /// Passes over the data, in all (a resumed run continues to this many).
    #[arg(long)]
    pub epochs: usize,
    /// Seeds the parameters' initialisation and the order of the examples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Start from these weights (a safetensors file with exactly the model's
    /// parameters) instead of a fresh initialisation.
    #[arg(long, value_name = "W.safetensors")]
    pub weights: Option<PathBuf>,
    /// Write a checkpoint (parameters, optimizer state, data order, losses) into
    /// this folder after every epoch.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    /// Continue from the last checkpoint in --checkpoint's folder.
    #[arg(long, requires = "checkpoint")]
    pub resume: bool,
    /// The folder for the results: weights.safetensors (the trained parameters),
    /// loss.csv and loss.png (the mean loss of every epoch). Created if missing.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "DIR",
        default_value = "kiln-train"
    )]
    pub output: PathBuf,
    /// Where the train step runs: cpu, or an NVIDIA GPU: cuda (the first) or cuda:N
    /// (needs kiln built with --features cuda).
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = crate::parse_device)]
    pub device: Device,
}

/// Reserved checkpoint names (no model parameter starts with `kiln.`).
const EPOCH: &str = "kiln.epoch";
const RNG: &str = "kiln.rng";
const LOSSES: &str = "kiln.losses";

/// A test hook: milliseconds to wait after writing a checkpoint's temporary file and
/// before renaming it into place, so that a test can interrupt a run mid-checkpoint.
const PAUSE_VAR: &str = "KILN_TEST_CHECKPOINT_PAUSE_MS";

pub fn train(args: &TrainArgs) -> Result<(), Failed> {
    if args.epochs == 0 {
        return Err(fail("--epochs must be at least 1"));
    }
    let mut file = load_with(&args.model, args.seed, false)?;
    let Some(spec) = &file.train else {
        return Err(fail(format!(
            "{}: the model has no `train` statement to say its loss and optimizer",
            args.model.path.display()
        )));
    };
    if let Some(path) = &args.weights {
        weights::load_into(&mut file.model, path).map_err(fail)?;
    }
    let mut session = if args.inputs.is_empty() {
        let data = read_data(args)?;
        let mut config = TrainerConfig::new(model_file::optimizer(spec).map_err(fail)?)
            .map_err(fail)?
            .with_seed(args.seed)
            .with_loss_output(&spec.loss)
            .with_device(args.device);
        if file.model.graph().input_by_name("seed").is_some() {
            config = config.with_seed_input("seed");
        }
        let trainer = Trainer::new(&file.model, config).map_err(fail)?;
        Session::Minibatch(Box::new(trainer), data)
    } else {
        let every = file.model.graph().inputs().iter();
        let every = every
            .filter_map(|&id| file.model.graph().leaf_name(id))
            .map(str::to_string);
        let inputs = read_inputs(&file.model, &args.inputs, &every.collect())?;
        let optimizer = model_file::optimizer(spec).map_err(fail)?;
        let step =
            kiln::compile::compile_train_step_on(&file.model, &spec.loss, optimizer, args.device)
                .map_err(fail)?;
        let inputs = inputs
            .iter()
            .map(|(name, tensor)| (name.clone(), Owned::of(tensor)))
            .collect();
        Session::FullBatch {
            step: Box::new(step),
            inputs,
            loss: spec.loss.clone(),
        }
    };

    let mut losses: Vec<f64> = Vec::new();
    if args.resume {
        let dir = args.checkpoint.as_deref().unwrap_or(Path::new("."));
        let (path, epoch) = last_checkpoint(dir)?;
        let saved = weights::load(&path).map_err(fail)?;
        let (state, done) = from_checkpoint(&saved, &path)?;
        if done != epoch {
            return Err(fail(format!(
                "{}: the checkpoint says {done} epochs, its name {epoch}",
                path.display()
            )));
        }
        session
            .restore(&state)
            .map_err(|err| fail(format!("{}: {err}", path.display())))?;
        losses = saved[LOSSES].data().to_vec();
        out(&format!(
            "resumed from {} ({epoch} epochs done)",
            path.display()
        ))?;
    }
    if let Some(dir) = &args.checkpoint {
        create_folder(dir)?;
    }
    create_folder(&args.output)?;

    let bar = progress_bar(args.epochs, losses.len());
    let examples = session.examples_per_epoch();
    for epoch in losses.len() + 1..=args.epochs {
        let start = Instant::now();
        let loss = session.epoch().map_err(fail)?;
        let rate = examples as f64 / start.elapsed().as_secs_f64().max(1e-9);
        losses.push(f64::from(loss));
        let line = format!(
            "epoch {epoch}/{}: loss {loss:.6}, {examples} examples, {rate:.0} examples/s",
            args.epochs
        );
        bar.set_message(format!("loss {loss:.4}, {rate:.0} examples/s"));
        bar.inc(1);
        bar.suspend(|| out(&line))?;
        if let Some(dir) = &args.checkpoint {
            save_checkpoint(dir, epoch, &session.state().map_err(fail)?, &losses)?;
        }
    }
    bar.finish_and_clear();

    // The model's parameters, not the optimizer's state, with their types.
    let mut trained = Weights::new();
    let state = session.state().map_err(fail)?;
    let graph = file.model.graph();
    for &id in graph.params() {
        let name = graph.leaf_name(id).expect("parameters are named");
        let values = state
            .tensors
            .get(name)
            .ok_or_else(|| fail(format!("the train step has no parameter {name:?}")))?;
        let data = values.iter().map(|&v| f64::from(v)).collect();
        let tensor = Tensor::new(graph.ty(id).clone(), data).map_err(fail)?;
        trained.insert(name.to_string(), tensor);
    }
    let weights_path = args.output.join("weights.safetensors");
    weights::save(&trained, &weights_path).map_err(fail)?;
    write(
        &args.output.join("loss.csv"),
        kiln::plot::loss_csv(&losses).as_bytes(),
    )?;
    let title = format!("{}: mean loss per epoch", file.name);
    let png = kiln::plot::loss_curve_png(&title, &losses).map_err(fail)?;
    write(&args.output.join("loss.png"), &png)?;
    out(&format!(
        "wrote {}, loss.csv and loss.png to {}",
        weights_path.display(),
        args.output.display()
    ))
}

/// What trains: a trainer over a data set in minibatches, or one step per epoch on
/// fixed inputs.
enum Session {
    Minibatch(Box<Trainer>, Dataset),
    FullBatch {
        step: Box<kiln::Executable>,
        inputs: Vec<(String, Owned)>,
        loss: String,
    },
}

impl Session {
    /// One epoch; its mean loss.
    fn epoch(&mut self) -> Result<f32, kiln::Error> {
        match self {
            Session::Minibatch(trainer, data) => trainer.epoch(data),
            Session::FullBatch { step, inputs, loss } => {
                let args: Vec<(&str, kiln::Arg)> = inputs
                    .iter()
                    .map(|(name, values)| (name.as_str(), values.arg()))
                    .collect();
                step.run(&args)?;
                Ok(step.output_f32(loss)?[0])
            }
        }
    }

    /// Examples seen per epoch (whole batches).
    fn examples_per_epoch(&self) -> usize {
        match self {
            Session::Minibatch(trainer, data) => {
                let batch = trainer.batch_size().max(1);
                data.len() / batch * batch
            }
            Session::FullBatch { step, .. } => step
                .inputs()
                .first()
                .and_then(|(_, ty)| ty.shape.first().copied())
                .unwrap_or(1),
        }
    }

    fn state(&self) -> Result<TrainerState, kiln::Error> {
        match self {
            Session::Minibatch(trainer, _) => trainer.state(),
            Session::FullBatch { step, .. } => Ok(TrainerState {
                tensors: step_state(step)?,
                rng: 0,
            }),
        }
    }

    fn restore(&mut self, state: &TrainerState) -> Result<(), kiln::Error> {
        match self {
            Session::Minibatch(trainer, _) => trainer.restore(state),
            Session::FullBatch { step, .. } => restore_step(step, &state.tensors),
        }
    }
}

/// The data set: CSV (a non-numeric first line skipped as a header) or .npy
/// features with .npy labels.
fn read_data(args: &TrainArgs) -> Result<Dataset, Failed> {
    let Some(path) = &args.data else {
        return Err(fail(
            "give --data FILE, or every input with --input NAME=FILE.npy",
        ));
    };
    let shown = path.display();
    let is_npy = path.extension().is_some_and(|ext| ext == "npy");
    if is_npy {
        let Some(labels_path) = &args.labels else {
            return Err(fail(format!(
                "{shown}: .npy features need --labels FILE.npy"
            )));
        };
        let features = kiln::npy::read(path).map_err(fail)?;
        let labels = kiln::npy::read(labels_path).map_err(fail)?;
        let ty = features.ty();
        if ty.dtype != DType::F32 || ty.rank() != 2 {
            return Err(fail(format!(
                "{shown}: the features are {ty}; expected f32[examples, features]"
            )));
        }
        let lty = labels.ty();
        if lty.dtype != DType::I32 || lty.shape.as_slice() != [ty.shape[0]] {
            return Err(fail(format!(
                "{}: the labels are {lty}; expected i32[{}], one per example of {shown}",
                labels_path.display(),
                ty.shape[0]
            )));
        }
        let values = features
            .data()
            .iter()
            .map(|&v| v as f32 * args.scale)
            .collect();
        let labels = labels.data().iter().map(|&v| v as i32).collect::<Vec<_>>();
        let classes = labels
            .iter()
            .copied()
            .max()
            .map_or(0, |max| max.max(0) as usize + 1);
        return Dataset::new(values, labels, ty.shape[1], classes)
            .map_err(|err| fail(format!("{shown}: {err}")));
    }
    if args.labels.is_some() {
        return Err(fail(format!(
            "{shown}: --labels goes with .npy features; a CSV file has its labels"
        )));
    }
    let text = kiln::data::read_text(path).map_err(fail)?;
    let located = |(line, message): (usize, String)| fail(format!("{shown}:{line}: {message}"));
    match Dataset::parse_csv(&text, args.scale) {
        Ok(data) => Ok(data),
        // A header line (iris.csv's `150,4,setosa,…`): the rest must parse.
        Err((1, _)) => {
            let rest = text.split_once('\n').map_or("", |(_, rest)| rest);
            Dataset::parse_csv(rest, args.scale)
                .map_err(|(line, message)| located((line + 1, message)))
        }
        Err(err) => Err(located(err)),
    }
}

fn create_folder(dir: &Path) -> Result<(), Failed> {
    std::fs::create_dir_all(dir).map_err(|err| {
        fail(format!(
            "{}: cannot create the folder: {err}",
            dir.display()
        ))
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Failed> {
    kiln::fsutil::write_atomic(path, bytes).map_err(fail)
}

/// The progress bar on standard error when it is a terminal (hidden otherwise; the
/// per-epoch lines on standard output say the same).
fn progress_bar(epochs: usize, done: usize) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(epochs as u64), target);
    let style = ProgressStyle::with_template("epoch {pos}/{len} {wide_bar} {msg} [{elapsed}]")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_position(done as u64);
    bar
}

fn checkpoint_name(epoch: usize) -> String {
    format!("epoch-{epoch:04}.safetensors")
}

/// Writes `dir/epoch-NNNN.safetensors`: the training state, the epochs done, the
/// losses so far.
fn save_checkpoint(
    dir: &Path,
    epoch: usize,
    state: &TrainerState,
    losses: &[f64],
) -> Result<(), Failed> {
    let mut saved = Weights::new();
    for (name, values) in &state.tensors {
        let ty = TensorType::f32([values.len()]);
        let data = values.iter().map(|&v| f64::from(v)).collect();
        saved.insert(name.clone(), Tensor::new(ty, data).map_err(fail)?);
    }
    let i32s =
        |values: Vec<f64>| Tensor::new(TensorType::i32([values.len()]), values).map_err(fail);
    // The generator's 64-bit state as two 32-bit halves (i32 bit patterns).
    let halves = [(state.rng >> 32) as u32, state.rng as u32];
    saved.insert(
        RNG.into(),
        i32s(halves.iter().map(|&h| f64::from(h as i32)).collect())?,
    );
    saved.insert(EPOCH.into(), i32s(vec![epoch as f64])?);
    let losses_ty = TensorType::f32([losses.len()]);
    saved.insert(
        LOSSES.into(),
        Tensor::new(losses_ty, losses.to_vec()).map_err(fail)?,
    );
    let path = dir.join(checkpoint_name(epoch));
    let bytes = weights::to_bytes(&saved, &path).map_err(fail)?;
    let pause = std::env::var(PAUSE_VAR)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis);
    kiln::fsutil::write_atomic_with(&path, |file| {
        file.write_all(&bytes)?;
        if let Some(pause) = pause {
            file.flush()?;
            std::thread::sleep(pause);
        }
        Ok(())
    })
    .map_err(fail)
}

/// The trainer state and epochs done of a loaded checkpoint.
fn from_checkpoint(saved: &Weights, path: &Path) -> Result<(TrainerState, usize), Failed> {
    let missing = |name: &str| {
        fail(format!(
            "{}: not a kiln train checkpoint (no {name:?})",
            path.display()
        ))
    };
    let epoch = saved.get(EPOCH).ok_or_else(|| missing(EPOCH))?;
    let rng = saved.get(RNG).ok_or_else(|| missing(RNG))?;
    saved.get(LOSSES).ok_or_else(|| missing(LOSSES))?;
    let [high, low] = rng.data() else {
        return Err(missing(RNG));
    };
    let half = |v: f64| u64::from(v as i32 as u32);
    let tensors: BTreeMap<String, Vec<f32>> = saved
        .iter()
        .filter(|(name, _)| !name.starts_with("kiln."))
        .map(|(name, t)| (name.clone(), t.data().iter().map(|&v| v as f32).collect()))
        .collect();
    let done = epoch.data().first().map_or(0, |&e| e as usize);
    Ok((
        TrainerState {
            tensors,
            rng: (half(*high) << 32) | half(*low),
        },
        done,
    ))
}

/// The checkpoint with the most epochs in `dir`.
fn last_checkpoint(dir: &Path) -> Result<(PathBuf, usize), Failed> {
    let entries = std::fs::read_dir(dir).map_err(|err| {
        fail(format!(
            "{}: cannot read the checkpoint folder: {err}",
            dir.display()
        ))
    })?;
    let mut best: Option<(usize, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let epoch = name
            .strip_prefix("epoch-")
            .and_then(|rest| rest.strip_suffix(".safetensors"))
            .and_then(|number| number.parse::<usize>().ok());
        if let Some(epoch) = epoch {
            if best.as_ref().is_none_or(|(most, _)| epoch > *most) {
                best = Some((epoch, entry.path()));
            }
        }
    }
    best.map(|(epoch, path)| (path, epoch)).ok_or_else(|| {
        fail(format!(
            "{}: no checkpoint (epoch-NNNN.safetensors) to resume from",
            dir.display()
        ))
    })
}
