//! The associative memories, which store patterns in weights computed in the graph
//! (no gradients): the Hopfield network and the Willshaw net.

use crate::{load_model_with, Family, Outcome, RunResult, SEED};
use kiln::ir::Rng;
use kiln::{compile, Arg};

/// The Hopfield network's units, probes and the fraction of a probe's units flipped.
const UNITS: usize = 100;
const PROBES: usize = 100;
const CORRUPTED: f64 = 0.1;

/// The Willshaw net's units on each side, active units per pattern and pairs stored.
const SPARSE_UNITS: usize = 256;
const ACTIVE: usize = 8;
const PAIRS: usize = 300;

/// How well a run recalled: the fraction of probes that ended exactly on their
/// pattern, and the mean overlap `s·p / N` with it (1 when equal, 0 for a state
/// unrelated to the pattern).
struct Recall {
    exact: f64,
    overlap: f64,
}

/// `count` patterns of ±1 over `units`, row after row.
pub(crate) fn random_signs(rng: &mut Rng, count: usize, units: usize) -> Vec<f32> {
    (0..count * units)
        .map(|_| if rng.below(2) == 1 { 1.0 } else { -1.0 })
        .collect()
}

/// `probes` copies of the patterns in turn (probe `b` is pattern `b % count`), each
/// with `flipped` of its units' signs flipped, chosen at random.
pub(crate) fn corrupted_probes(
    rng: &mut Rng,
    patterns: &[f32],
    units: usize,
    probes: usize,
    flipped: usize,
) -> Vec<f32> {
    let count = patterns.len() / units.max(1);
    let mut out = Vec::with_capacity(probes * units);
    let mut order: Vec<usize> = (0..units).collect();
    for probe in 0..probes {
        let start = (probe % count) * units;
        let mut row = patterns[start..start + units].to_vec();
        rng.shuffle(&mut order);
        for &unit in &order[..flipped] {
            row[unit] = -row[unit];
        }
        out.extend(row);
    }
    out
}

/// Stores `stored` random patterns in the Hopfield network and recalls them from
/// corrupted probes.
fn hopfield_recall(stored: usize) -> Result<Recall, Box<dyn std::error::Error>> {
    let mut rng = Rng::new(SEED);
    let patterns = random_signs(&mut rng, stored, UNITS);
    let flipped = (CORRUPTED * UNITS as f64).round() as usize;
    let probes = corrupted_probes(&mut rng, &patterns, UNITS, PROBES, flipped);
    let file = load_model_with(
        "hopfield",
        &[("N", UNITS), ("P", stored), ("B", PROBES)],
        true,
    )?;
    let mut exe = compile(file.model.graph())?;
    exe.run(&[
        ("patterns", Arg::F32(&patterns)),
        ("probes", Arg::F32(&probes)),
    ])?;
    let recalled = exe.output_f32("recalled")?;
    let (mut exact, mut overlap) = (0usize, 0.0f64);
    for (probe, state) in recalled.chunks_exact(UNITS).enumerate() {
        let start = (probe % stored) * UNITS;
        let pattern = &patterns[start..start + UNITS];
        exact += usize::from(state == pattern);
        let dot: f32 = state.iter().zip(pattern).map(|(s, p)| s * p).sum();
        overlap += f64::from(dot) / UNITS as f64;
    }
    Ok(Recall {
        exact: exact as f64 / PROBES as f64,
        overlap: overlap / PROBES as f64,
    })
}

/// The Hopfield network at 0.05 N patterns (the result) and at loads around and past
/// its capacity of about 0.14 N, where exact recall fails but the states reached
/// stay near their patterns.
pub(crate) fn hopfield(family: &Family) -> RunResult {
    let mut below_capacity = None;
    for load in [0.05, 0.10, 0.14, 0.20, 0.30] {
        let stored = (load * UNITS as f64).round() as usize;
        let recall = hopfield_recall(stored)?;
        println!(
            "hopfield: {stored} patterns ({load:.2} N): {:.2} of {PROBES} probes recalled exactly, \
             mean overlap {:.3} (probes {:.2}, chance 0)",
            recall.exact,
            recall.overlap,
            1.0 - 2.0 * CORRUPTED,
        );
        below_capacity.get_or_insert(recall.exact);
    }
    let exact = below_capacity.ok_or("no load was run")?;
    Ok(Outcome::at_least(
        "recalled exactly at 0.05 N",
        exact,
        4,
        family.target,
    ))
}

/// `count` sparse binary patterns over `units` with `active` ones each.
pub(crate) fn sparse_patterns(
    rng: &mut Rng,
    count: usize,
    units: usize,
    active: usize,
) -> Vec<f32> {
    let mut out = vec![0.0; count * units];
    let mut order: Vec<usize> = (0..units).collect();
    for row in out.chunks_exact_mut(units) {
        rng.shuffle(&mut order);
        for &unit in &order[..active] {
            row[unit] = 1.0;
        }
    }
    out
}

/// The Willshaw net: 300 pairs of sparse patterns, each target recalled from its
/// whole cue (the result) and from half of it.
pub(crate) fn willshaw(family: &Family) -> RunResult {
    let mut rng = Rng::new(SEED);
    let xs = sparse_patterns(&mut rng, PAIRS, SPARSE_UNITS, ACTIVE);
    let ys = sparse_patterns(&mut rng, PAIRS, SPARSE_UNITS, ACTIVE);
    let file = load_model_with("willshaw", &[("P", PAIRS), ("B", PAIRS)], true)?;
    let mut exe = compile(file.model.graph())?;
    let mut recalled_exactly = |cues: &[f32]| -> Result<f64, Box<dyn std::error::Error>> {
        exe.run(&[
            ("xs", Arg::F32(&xs)),
            ("ys", Arg::F32(&ys)),
            ("cues", Arg::F32(cues)),
        ])?;
        let recalled = exe.output_f32("recalled")?;
        let exact = recalled
            .chunks_exact(SPARSE_UNITS)
            .zip(ys.chunks_exact(SPARSE_UNITS))
            .filter(|(got, want)| got == want)
            .count();
        Ok(exact as f64 / PAIRS as f64)
    };
    let whole = recalled_exactly(&xs)?;
    // Half of each cue: its first ACTIVE / 2 active units.
    let mut halves = xs.clone();
    for row in halves.chunks_exact_mut(SPARSE_UNITS) {
        let mut kept = 0;
        for value in row.iter_mut().filter(|value| **value == 1.0) {
            if kept == ACTIVE / 2 {
                *value = 0.0;
            } else {
                kept += 1;
            }
        }
    }
    let half = recalled_exactly(&halves)?;
    // The memory load (the fraction of synapses on) and the exact recall it predicts
    // for a cue of k units: a unit outside the target fires by mistake with
    // probability about load^k.
    let mut on = vec![false; SPARSE_UNITS * SPARSE_UNITS];
    for (x, y) in xs
        .chunks_exact(SPARSE_UNITS)
        .zip(ys.chunks_exact(SPARSE_UNITS))
    {
        for (i, _) in y.iter().enumerate().filter(|(_, v)| **v == 1.0) {
            for (j, _) in x.iter().enumerate().filter(|(_, v)| **v == 1.0) {
                on[i * SPARSE_UNITS + j] = true;
            }
        }
    }
    let load = on.iter().filter(|&&s| s).count() as f64 / on.len() as f64;
    let predicted = |k: usize| (1.0 - load.powi(k as i32)).powi((SPARSE_UNITS - ACTIVE) as i32);
    println!(
        "willshaw: {PAIRS} pairs, {ACTIVE} of {SPARSE_UNITS} units active, {load:.3} of synapses on; \
         recalled exactly from whole cues {whole:.4} (predicted {:.4}), from half cues {half:.4} \
         (predicted {:.4})",
        predicted(ACTIVE),
        predicted(ACTIVE / 2),
    );
    Ok(Outcome::at_least(
        "recalled exactly",
        whole,
        4,
        family.target,
    ))
}
