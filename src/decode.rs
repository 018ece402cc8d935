//! Greedy decoding with a fixed-length graph.
//!
//! A sequence model trained with teacher forcing reads its decoder input `shifted:
//! i32[N, T]` (a start symbol, then the target without its last symbol) and gives
//! logits for every position, `N·T` rows of `classes` scores (position `t` of
//! example `n` in row `n·T + t`). When the prediction at position `t` depends only
//! on `shifted[.., ..=t]` (a causal mask, or a recurrent decoder), greedy decoding
//! needs no graph of its own: run the graph once per position, `shifted` holding the
//! start symbol and the predictions so far (the positions not yet decoded hold 0,
//! which position `t` never reads), and take the argmax at `t` as the next symbol.

use crate::compile::{Error, Executable};
use crate::metrics;
use kiln_backend::Arg;

/// What [`greedy`] reads and writes of the executable.
#[derive(Clone, Copy, Debug)]
pub struct Greedy<'a> {
    /// The decoder input, `i32[N, T]`, that [`greedy`] fills.
    pub shifted: &'a str,
    /// The logits output: `N·T·classes` values, row `n·T + t` for position `t`.
    pub logits: &'a str,
    /// The symbol at position 0 of `shifted`.
    pub start: i32,
}

/// Decodes every example greedily (see the module docs): runs `exe` `T` times with
/// `inputs` (every input but `shifted`) and returns the `N·T` predictions, example
/// by example. Errors when `shifted` is not an `i32[N, T]` input, the logits are not
/// `N·T` rows of at least one score, a row holds a NaN (a diverged model predicts
/// nothing), or a run fails.
pub fn greedy(
    exe: &mut Executable,
    inputs: &[(&str, Arg<'_>)],
    spec: Greedy<'_>,
) -> Result<Vec<i32>, Error> {
    let ty = exe
        .inputs()
        .into_iter()
        .find(|(name, _)| name == spec.shifted)
        .map(|(_, ty)| ty)
        .ok_or_else(|| Error::NoSuchInput(spec.shifted.to_string()))?;
    let [examples, steps] = ty.shape[..] else {
        return Err(Error::InputType {
            name: spec.shifted.to_string(),
            expected: "i32[examples, steps]".to_string(),
            found: ty,
        });
    };
    let rows = examples * steps;
    let mut shifted = vec![0i32; rows];
    for example in 0..examples {
        shifted[example * steps] = spec.start;
    }
    let mut predicted = vec![0i32; rows];
    for t in 0..steps {
        let mut args: Vec<(&str, Arg<'_>)> = inputs.to_vec();
        args.push((spec.shifted, Arg::I32(&shifted)));
        exe.run(&args)?;
        let logits = exe.output_f32(spec.logits)?;
        let classes = logits.len() / rows.max(1);
        if classes == 0 || logits.len() != rows * classes {
            return Err(Error::Decode(format!(
                "output {:?} has {} values, not {rows} rows (examples × steps) of scores",
                spec.logits,
                logits.len()
            )));
        }
        for example in 0..examples {
            let row = example * steps + t;
            let scores = &logits[row * classes..(row + 1) * classes];
            let symbol = metrics::argmax(scores).ok_or_else(|| {
                Error::Decode(format!(
                    "example {example}, position {t}: the scores hold a NaN"
                ))
            })?;
            // A class index below `classes`, which came from an f32 output's length.
            let symbol = i32::try_from(symbol)
                .map_err(|_| Error::Decode(format!("class {symbol} does not fit in i32")))?;
            predicted[row] = symbol;
            if t + 1 < steps {
                shifted[row + 1] = symbol;
            }
        }
    }
    Ok(predicted)
}
