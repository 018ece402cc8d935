//! `Trainer`: runs a compiled training step over shuffled minibatches.

use crate::compile::{compile_train_step_on, Device, Error, Executable};
use crate::data::{first_label_outside, Dataset};
use kiln_backend::Arg;
use kiln_frontend::Model;
use kiln_ir::{DType, Graph, Op, Rng, TensorType};
use kiln_passes::optimizer::Optimizer;
use std::collections::BTreeMap;

/// How the model's graph is fed and what it optimises. Built by `new`, which checks
/// the optimizer's hyperparameters; the names default to those `mlp_classifier` uses
/// and are checked against the model by `Trainer::new`.
#[derive(Clone, Debug)]
pub struct TrainerConfig {
    features_input: String,
    labels_input: String,
    loss_output: String,
    optimizer: Optimizer,
    seed: u64,
    /// An `i32[]` input fed a fresh seed every step (dropout's, noise's).
    seed_input: Option<String>,
    /// Where the train step runs.
    device: Device,
}

impl TrainerConfig {
    /// Feeds input `x` with `[batch, features]` f32 minibatches and input `labels` with
    /// their `[batch]` i32 labels, and minimises output `loss` with `optimizer`;
    /// shuffles with seed 0.
    pub fn new(optimizer: Optimizer) -> Result<TrainerConfig, Error> {
        optimizer.check()?;
        Ok(TrainerConfig {
            features_input: "x".to_string(),
            labels_input: "labels".to_string(),
            loss_output: "loss".to_string(),
            optimizer,
            seed: 0,
            seed_input: None,
            device: Device::Cpu,
        })
    }

    /// An `i32[]` input that receives a fresh seed every step, drawn from the
    /// trainer's seeded stream (for `dropout`, `rand_like`, `randn_like`), so each
    /// step draws new samples and a run is reproducible.
    pub fn with_seed_input(self, name: &str) -> TrainerConfig {
        TrainerConfig {
            seed_input: Some(name.to_string()),
            ..self
        }
    }

    /// The input receiving the `[batch, features]` f32 minibatch.
    pub fn with_features_input(self, name: &str) -> TrainerConfig {
        TrainerConfig {
            features_input: name.to_string(),
            ..self
        }
    }

    /// The input receiving the `[batch]` i32 labels.
    pub fn with_labels_input(self, name: &str) -> TrainerConfig {
        TrainerConfig {
            labels_input: name.to_string(),
            ..self
        }
    }

    /// The scalar output minimised.
    pub fn with_loss_output(self, name: &str) -> TrainerConfig {
        TrainerConfig {
            loss_output: name.to_string(),
            ..self
        }
    }

    /// The seed of the minibatch shuffling.
    pub fn with_seed(self, seed: u64) -> TrainerConfig {
        TrainerConfig { seed, ..self }
    }

    /// Where the train step runs (the CPU unless told).
    pub fn with_device(self, device: Device) -> TrainerConfig {
        TrainerConfig { device, ..self }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn features_input(&self) -> &str {
        &self.features_input
    }

    pub fn labels_input(&self) -> &str {
        &self.labels_input
    }

    pub fn loss_output(&self) -> &str {
        &self.loss_output
    }

    pub fn optimizer(&self) -> Optimizer {
        self.optimizer
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn seed_input(&self) -> Option<&str> {
        self.seed_input.as_deref()
    }
}

/// Every parameter and optimizer-state buffer of a train step, by name.
pub fn step_state(step: &Executable) -> Result<BTreeMap<String, Vec<f32>>, Error> {
    let mut tensors = BTreeMap::new();
    for (name, _) in step.params() {
        let values = step.param(&name)?.to_vec();
        tensors.insert(name, values);
    }
    Ok(tensors)
}

/// Sets every parameter and optimizer-state buffer of `step` from `tensors`, which
/// must hold each of them with its length and nothing else; nothing changes unless
/// all of them are.
pub fn restore_step(
    step: &mut Executable,
    tensors: &BTreeMap<String, Vec<f32>>,
) -> Result<(), Error> {
    let params = step.params();
    for (name, ty) in &params {
        let values = tensors
            .get(name)
            .ok_or_else(|| Error::MissingState(name.clone()))?;
        if values.len() != ty.num_elements() {
            return Err(Error::StateLength {
                name: name.clone(),
                expected: ty.num_elements(),
                found: values.len(),
            });
        }
    }
    if let Some(name) = tensors
        .keys()
        .find(|name| !params.iter().any(|(param, _)| param == *name))
    {
        return Err(Error::UnknownState(name.clone()));
    }
    for (name, values) in tensors {
        step.set_param(name, values)?;
    }
    Ok(())
}

/// What a trainer needs to resume: see [`Trainer::state`].
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerState {
    /// Every parameter and optimizer-state buffer, by name.
    pub tensors: BTreeMap<String, Vec<f32>>,
    /// The shuffling generator's state ([`Rng::state`]).
    pub rng: u64,
}

/// Trains a model with its JIT-compiled training step. The batch size is the one
/// the model's graph was declared with; each epoch visits the examples in a fresh
/// seeded order and drops the last partial batch (shapes are static).
pub struct Trainer {
    step: Executable,
    config: TrainerConfig,
    batch_size: usize,
    features_per_example: usize,
    /// The depth of the model's one-hot encoding of its labels, when it has one: labels
    /// outside `0..classes` would silently get an all-zero target.
    classes: Option<usize>,
    rng: Rng,
    features: Vec<f32>,
    labels: Vec<i32>,
}

impl Trainer {
    /// Compiles the training step of `model`, after checking that the configured
    /// inputs exist with the types an epoch feeds them (labels `i32[batch]`, features
    /// `f32[batch,n]`) and that the batch is not empty.
    pub fn new(model: &Model, config: TrainerConfig) -> Result<Trainer, Error> {
        let graph = model.graph();
        let labels_ty = input_type(graph, &config.labels_input)?;
        let batch_size = match labels_ty.shape[..] {
            [batch] if labels_ty.dtype == DType::I32 => batch,
            _ => {
                return Err(Error::InputType {
                    name: config.labels_input.clone(),
                    expected: "i32[batch]".to_string(),
                    found: labels_ty.clone(),
                })
            }
        };
        let features_ty = input_type(graph, &config.features_input)?;
        let features_per_example = match features_ty.shape[..] {
            [batch, width] if batch == batch_size && features_ty.dtype == DType::F32 => width,
            _ => {
                return Err(Error::InputType {
                    name: config.features_input.clone(),
                    expected: format!("f32[{batch_size},features]"),
                    found: features_ty.clone(),
                })
            }
        };
        if batch_size == 0 {
            return Err(Error::EmptyBatch);
        }
        if let Some(name) = &config.seed_input {
            let ty = input_type(graph, name)?;
            if *ty != TensorType::i32(Vec::<usize>::new()) {
                return Err(Error::InputType {
                    name: name.clone(),
                    expected: "i32[] (a seed)".to_string(),
                    found: ty.clone(),
                });
            }
        }
        let classes = one_hot_depth(graph, &config.labels_input);
        let step =
            compile_train_step_on(model, &config.loss_output, config.optimizer, config.device)?;
        Ok(Trainer {
            step,
            rng: Rng::new(config.seed),
            config,
            batch_size,
            features_per_example,
            classes,
            features: Vec::new(),
            labels: Vec::new(),
        })
    }

    /// The compiled training step (its compile report, parameters, outputs).
    pub fn step(&self) -> &Executable {
        &self.step
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// One pass over `data`; returns the mean loss of its minibatches. The data set is
    /// checked first, so a mistake in it trains nothing: its examples must be as wide
    /// as the features input, at least one batch long, and every label must be a class
    /// of the model.
    pub fn epoch(&mut self, data: &Dataset) -> Result<f32, Error> {
        if data.features_per_example() != self.features_per_example {
            return Err(Error::FeatureCount {
                input: self.config.features_input.clone(),
                expected: self.features_per_example,
                found: data.features_per_example(),
            });
        }
        if data.len() < self.batch_size {
            return Err(Error::TooFewExamples {
                examples: data.len(),
                batch_size: self.batch_size,
            });
        }
        if let Some(classes) = self.classes {
            if let Some(example) = first_label_outside(data.labels(), classes) {
                return Err(Error::LabelOutOfRange {
                    example,
                    label: data.labels()[example],
                    classes,
                });
            }
        }
        let mut order: Vec<usize> = (0..data.len()).collect();
        self.rng.shuffle(&mut order);
        let width = self.features_per_example;
        let (features, labels) = (data.features(), data.labels());
        let mut total = 0.0f64;
        let mut batches = 0usize;
        for batch in order.chunks_exact(self.batch_size) {
            self.features.clear();
            self.labels.clear();
            for &index in batch {
                // In range: `Dataset` holds `len() * features_per_example()` features.
                self.features
                    .extend_from_slice(&features[index * width..(index + 1) * width]);
                self.labels.push(labels[index]);
            }
            let mut args = vec![
                (
                    self.config.features_input.as_str(),
                    Arg::F32(&self.features),
                ),
                (self.config.labels_input.as_str(), Arg::I32(&self.labels)),
            ];
            // Drawn only for a model with a seed input, so that the shuffling of one
            // without stays as it was.
            let seed: [i32; 1];
            if let Some(name) = &self.config.seed_input {
                seed = [self.rng.next_u64() as i32];
                args.push((name.as_str(), Arg::I32(&seed)));
            }
            self.step.run(&args)?;
            total += f64::from(self.step.output_f32(&self.config.loss_output)?[0]);
            batches += 1;
        }
        Ok((total / batches as f64) as f32)
    }

    /// Everything a checkpoint needs to resume training bit for bit: every parameter
    /// and optimizer-state buffer of the step, by name, and the state of the
    /// generator that shuffles the examples (and draws the seeds).
    pub fn state(&self) -> Result<TrainerState, Error> {
        Ok(TrainerState {
            tensors: step_state(&self.step)?,
            rng: self.rng.state(),
        })
    }

    /// Continues from `state` (of a trainer of the same model and configuration):
    /// every parameter and optimizer-state buffer must be there with its length, and
    /// nothing else; nothing changes unless all of them are.
    pub fn restore(&mut self, state: &TrainerState) -> Result<(), Error> {
        restore_step(&mut self.step, &state.tensors)?;
        self.rng = Rng::new(state.rng);
        Ok(())
    }

    /// The current value of every parameter of the model (not the optimizer state:
    /// see `Executable::optimizer_state` and `averaged_params`).
    pub fn params(&self) -> Result<BTreeMap<String, Vec<f32>>, Error> {
        let mut params = BTreeMap::new();
        for (name, _) in self.step.params() {
            if self.step.is_optimizer_state(&name) {
                continue;
            }
            let values = self.step.param(&name)?.to_vec();
            params.insert(name, values);
        }
        Ok(params)
    }

    /// The running average of every parameter when the optimizer keeps one
    /// (`Optimizer::averaging`), to evaluate with instead of `params`; else empty.
    pub fn averaged_params(&self) -> Result<BTreeMap<String, Vec<f32>>, Error> {
        self.step.averaged_params()
    }
}

fn input_type<'g>(graph: &'g Graph, name: &str) -> Result<&'g kiln_ir::TensorType, Error> {
    graph
        .input_by_name(name)
        .map(|id| graph.ty(id))
        .ok_or_else(|| Error::NoSuchInput(name.to_string()))
}

/// The smallest depth of a one-hot encoding of input `labels`, if the graph has one.
fn one_hot_depth(graph: &Graph, labels: &str) -> Option<usize> {
    let labels = graph.input_by_name(labels)?;
    graph
        .users(labels)
        .into_iter()
        .filter_map(|user| match graph.op(user) {
            Op::OneHot { depth } => Some(*depth),
            _ => None,
        })
        .min()
}
