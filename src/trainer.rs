//! `Trainer`: runs a compiled training step over shuffled minibatches.

use crate::compile::{compile_train_step, Error, Executable};
use crate::data::Dataset;
use kiln_backend::Arg;
use kiln_frontend::Model;
use kiln_ir::Rng;
use kiln_passes::optimizer::Optimizer;
use std::collections::BTreeMap;

/// How the model's graph is fed and what it optimises.
#[derive(Clone, Debug)]
pub struct TrainerConfig {
    /// Input receiving a `[batch, features]` f32 minibatch.
    pub features_input: String,
    /// Input receiving the `[batch]` i32 labels.
    pub labels_input: String,
    /// Scalar output minimised.
    pub loss_output: String,
    pub optimizer: Optimizer,
    /// Seed of the minibatch shuffling.
    pub seed: u64,
}

/// Trains a model with its JIT-compiled training step. The batch size is the one
/// the model's graph was declared with; each epoch visits the examples in a fresh
/// seeded order and drops the last partial batch (shapes are static).
pub struct Trainer {
    step: Executable,
    config: TrainerConfig,
    batch_size: usize,
    rng: Rng,
    features: Vec<f32>,
    labels: Vec<i32>,
}

impl Trainer {
    pub fn new(model: &Model, config: TrainerConfig) -> Result<Trainer, Error> {
        let step = compile_train_step(model, &config.loss_output, config.optimizer)?;
        let batch_size = model
            .graph
            .input_by_name(&config.labels_input)
            .map(|id| model.graph.ty(id).shape.first().copied().unwrap_or(1))
            .ok_or_else(|| Error::NoSuchInput(config.labels_input.clone()))?;
        Ok(Trainer {
            step,
            rng: Rng::new(config.seed),
            config,
            batch_size,
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

    /// One pass over `data`; returns the mean loss of its minibatches.
    pub fn epoch(&mut self, data: &Dataset) -> Result<f32, Error> {
        if data.len() < self.batch_size {
            return Err(Error::TooFewExamples {
                examples: data.len(),
                batch_size: self.batch_size,
            });
        }
        let mut order: Vec<usize> = (0..data.len()).collect();
        self.rng.shuffle(&mut order);
        let mut total = 0.0f64;
        let mut batches = 0usize;
        for batch in order.chunks_exact(self.batch_size) {
            self.features.clear();
            self.labels.clear();
            for &index in batch {
                self.features.extend_from_slice(data.example(index));
                self.labels.push(data.labels[index]);
            }
            self.step.run(&[
                (&self.config.features_input, Arg::F32(&self.features)),
                (&self.config.labels_input, Arg::I32(&self.labels)),
            ])?;
            total += f64::from(self.step.output_f32(&self.config.loss_output)?[0]);
            batches += 1;
        }
        Ok((total / batches as f64) as f32)
    }

    /// The current value of every parameter.
    pub fn params(&self) -> Result<BTreeMap<String, Vec<f32>>, Error> {
        let mut params = BTreeMap::new();
        for (name, _) in self.step.params() {
            let values = self.step.param(&name)?.to_vec();
            params.insert(name, values);
        }
        Ok(params)
    }
}
