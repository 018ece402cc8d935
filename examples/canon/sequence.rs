//! The sequence-to-sequence families on a seeded reversal task: a decoder-only
//! transformer and an encoder-decoder GRU with attention, trained with teacher
//! forcing and measured by greedy decoding.
//!
//! The task: sources of [`LENGTH`] symbols drawn uniformly from `0..SYMBOLS`, the
//! target the source reversed, and [`SYMBOLS`] itself the start (separator) symbol.
//! [`TRAIN`] distinct training sources and [`TEST`] distinct held-out ones (none of
//! them in the training set), drawn with the canon's seed.

use crate::{evaluator, step_params, train_step, Family, Outcome, RunResult, SEED};
use kiln::decode::{self, Greedy};
use kiln::ir::Rng;
use kiln::{Arg, Executable};
use std::collections::BTreeSet;

/// Symbols per sequence (the model files' `L`).
const LENGTH: usize = 8;
/// Symbols `0..SYMBOLS` (the model files' `V`); `SYMBOLS` starts the decoder input.
const SYMBOLS: usize = 10;
const TRAIN: usize = 6000;
const TEST: usize = 1000;

/// Sources, `LENGTH` symbols each, one after another.
struct Reversal {
    sources: Vec<i32>,
}

impl Reversal {
    fn len(&self) -> usize {
        self.sources.len() / LENGTH
    }

    fn source(&self, index: usize) -> &[i32] {
        &self.sources[index * LENGTH..(index + 1) * LENGTH]
    }

    /// The sources of `indices`, their targets (each source reversed) and the
    /// teacher-forced decoder inputs (the start symbol, then the target but its last).
    fn batch(&self, indices: &[usize]) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
        let mut sources = Vec::with_capacity(indices.len() * LENGTH);
        let mut targets = Vec::with_capacity(indices.len() * LENGTH);
        let mut shifted = Vec::with_capacity(indices.len() * LENGTH);
        for &index in indices {
            let source = self.source(index);
            sources.extend_from_slice(source);
            let reversed: Vec<i32> = source.iter().rev().copied().collect();
            shifted.push(start_symbol());
            shifted.extend_from_slice(&reversed[..LENGTH - 1]);
            targets.extend(reversed);
        }
        (sources, targets, shifted)
    }
}

fn start_symbol() -> i32 {
    SYMBOLS as i32
}

/// The training and test sources: `train + test` distinct sources drawn with `seed`,
/// the first `train` to train on.
fn reversal_data(seed: u64, train: usize, test: usize) -> (Reversal, Reversal) {
    let mut rng = Rng::new(seed);
    let mut seen = BTreeSet::new();
    let mut sources = Vec::with_capacity((train + test) * LENGTH);
    while seen.len() < train + test {
        let source: Vec<i32> = (0..LENGTH).map(|_| rng.below(SYMBOLS) as i32).collect();
        if seen.insert(source.clone()) {
            sources.extend(source);
        }
    }
    let test_sources = sources.split_off(train * LENGTH);
    (
        Reversal { sources },
        Reversal {
            sources: test_sources,
        },
    )
}

/// Trains the family with teacher forcing for its epochs (shuffled batches, the last
/// partial batch left out) and returns the exact-sequence accuracy of greedy
/// decoding on the test set.
pub(crate) fn seq2seq(family: &Family) -> RunResult {
    let (train, test) = reversal_data(SEED, TRAIN, TEST);
    let mut step = train_step(family)?;
    let batch = step
        .inputs()
        .into_iter()
        .find(|(name, _)| name == "source")
        .map(|(_, ty)| ty.shape[0])
        .ok_or("the model has no input `source`")?;
    let mut rng = Rng::new(SEED);
    let mut order: Vec<usize> = (0..train.len()).collect();
    for _ in 0..family.epochs {
        rng.shuffle(&mut order);
        for indices in order.chunks_exact(batch) {
            let (sources, targets, shifted) = train.batch(indices);
            step.run(&[
                ("source", Arg::I32(&sources)),
                ("shifted", Arg::I32(&shifted)),
                ("target", Arg::I32(&targets)),
            ])?;
        }
    }
    let accuracy = greedy_accuracy(family, &step, &test)?;
    Ok(Outcome::at_least(
        "sequence accuracy",
        accuracy,
        4,
        family.target,
    ))
}

/// The fraction of `test` whose greedy decoding with the trained parameters of
/// `step` is the reversed source, every symbol of it.
fn greedy_accuracy(
    family: &Family,
    step: &Executable,
    test: &Reversal,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut eval = evaluator(family.name, Some(test.len()), step_params(step)?)?;
    let indices: Vec<usize> = (0..test.len()).collect();
    let (sources, targets, _) = test.batch(&indices);
    // The targets feed only the loss, which greedy decoding ignores.
    let args = [
        ("source", Arg::I32(&sources)),
        ("target", Arg::I32(&targets)),
    ];
    let spec = Greedy {
        shifted: "shifted",
        logits: "logits",
        start: start_symbol(),
    };
    let predicted = decode::greedy(&mut eval, &args, spec)?;
    let right = predicted
        .chunks(LENGTH)
        .zip(targets.chunks(LENGTH))
        .filter(|(predicted, target)| predicted == target)
        .count();
    Ok(right as f64 / test.len().max(1) as f64)
}
