//! The canon's associative memories (examples/models/hopfield.kiln and
//! willshaw.kiln), which have no gradients: at small sizes the compiled forward graph
//! equals a plain Rust reference of the same updates, and recalls what it stored.

use kiln::compile;
use kiln::frontend::lang::ElaborateOptions;
use kiln::ir::Rng;
use kiln::model_file;
use kiln::Arg;
use std::path::Path;

/// The updates hopfield.kiln unrolls.
const HOPFIELD_UPDATES: usize = 10;

fn executable(name: &str, dims: &[(&str, usize)]) -> kiln::Executable {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/models")
        .join(format!("{name}.kiln"));
    let options = ElaborateOptions {
        dims: dims.iter().map(|&(d, v)| (d.to_string(), v)).collect(),
        ..ElaborateOptions::default()
    };
    let file = model_file::load(&path, &options)
        .unwrap_or_else(|err| panic!("{name}: {}", err.render(false)));
    assert!(file.train.is_none(), "{name} has no gradients to train");
    compile(file.model.graph()).expect("the forward graph compiles")
}

/// Synchronous sign updates with Hebbian weights (zero diagonal), a unit at a zero
/// field keeping its state: what hopfield.kiln computes.
fn hopfield_reference(patterns: &[f32], probes: &[f32], units: usize) -> Vec<f32> {
    let mut weights = vec![0.0f32; units * units];
    for pattern in patterns.chunks_exact(units) {
        for i in 0..units {
            for j in 0..units {
                if i != j {
                    weights[i * units + j] += pattern[i] * pattern[j];
                }
            }
        }
    }
    let mut states = probes.to_vec();
    for _ in 0..HOPFIELD_UPDATES {
        for state in states.chunks_exact_mut(units) {
            let fields: Vec<f32> = (0..units)
                .map(|j| (0..units).map(|i| state[i] * weights[i * units + j]).sum())
                .collect();
            for (unit, field) in state.iter_mut().zip(fields) {
                if field != 0.0 {
                    *unit = field.signum();
                }
            }
        }
    }
    states
}

#[test]
fn hopfield_recalls_corrupted_probes_below_capacity_as_the_reference_does() {
    // 2 patterns of 40 units (0.05 N), 8 probes with 4 units (10%) flipped.
    let (units, stored, probes) = (40, 2, 8);
    let mut rng = Rng::new(3);
    let patterns: Vec<f32> = (0..stored * units)
        .map(|_| if rng.below(2) == 1 { 1.0 } else { -1.0 })
        .collect();
    let mut cues = Vec::new();
    let mut order: Vec<usize> = (0..units).collect();
    for probe in 0..probes {
        let start = (probe % stored) * units;
        let mut row = patterns[start..start + units].to_vec();
        rng.shuffle(&mut order);
        for &unit in &order[..units / 10] {
            row[unit] = -row[unit];
        }
        cues.extend(row);
    }
    let mut exe = executable("hopfield", &[("N", units), ("P", stored), ("B", probes)]);
    exe.run(&[
        ("patterns", Arg::F32(&patterns)),
        ("probes", Arg::F32(&cues)),
    ])
    .unwrap();
    let recalled = exe.output_f32("recalled").unwrap();
    assert_eq!(recalled, hopfield_reference(&patterns, &cues, units));
    for (probe, state) in recalled.chunks_exact(units).enumerate() {
        let start = (probe % stored) * units;
        assert_eq!(state, &patterns[start..start + units], "probe {probe}");
    }
}

#[test]
fn hopfield_keeps_a_unit_at_a_tie() {
    // W couples units 0, 1 and 2 with weight 2 and unit 3 with nothing, so unit 3's
    // field is always 0; from this probe units 0 and 2 start at a zero field too.
    // Keeping the state at a tie reaches the second pattern; reading a tie as +1
    // would flip unit 3, and as 0 would zero units 0, 2 and 3.
    let units = 4;
    let patterns = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0];
    let probe = [1.0, -1.0, 1.0, -1.0];
    let mut exe = executable("hopfield", &[("N", units), ("P", 2), ("B", 1)]);
    exe.run(&[
        ("patterns", Arg::F32(&patterns)),
        ("probes", Arg::F32(&probe)),
    ])
    .unwrap();
    let recalled = exe.output_f32("recalled").unwrap();
    assert_eq!(recalled, [1.0, 1.0, 1.0, -1.0]);
    assert_eq!(recalled, hopfield_reference(&patterns, &probe, units));
}

#[test]
fn willshaw_recalls_sparse_pairs_as_the_reference_does() {
    // 12 pairs of 64-unit patterns with 4 active units each; every stored cue.
    let (units, active, pairs) = (64, 4, 12);
    let mut rng = Rng::new(4);
    let mut sparse = || {
        let mut out = vec![0.0f32; pairs * units];
        let mut order: Vec<usize> = (0..units).collect();
        for row in out.chunks_exact_mut(units) {
            rng.shuffle(&mut order);
            for &unit in &order[..active] {
                row[unit] = 1.0;
            }
        }
        out
    };
    let (xs, ys) = (sparse(), sparse());
    let dims = [("NX", units), ("NY", units), ("P", pairs), ("B", pairs)];
    let mut exe = executable("willshaw", &dims);
    exe.run(&[
        ("xs", Arg::F32(&xs)),
        ("ys", Arg::F32(&ys)),
        ("cues", Arg::F32(&xs)),
    ])
    .unwrap();
    let recalled = exe.output_f32("recalled").unwrap();

    // W = min(1, Σ y xᵀ); y = [W x ≥ number of active units of x].
    let mut on = vec![false; units * units];
    for (x, y) in xs.chunks_exact(units).zip(ys.chunks_exact(units)) {
        for i in (0..units).filter(|&i| y[i] == 1.0) {
            for j in (0..units).filter(|&j| x[j] == 1.0) {
                on[i * units + j] = true;
            }
        }
    }
    let mut expected = Vec::new();
    for x in xs.chunks_exact(units) {
        let theta = x.iter().filter(|&&v| v == 1.0).count();
        for i in 0..units {
            let dendrite = (0..units)
                .filter(|&j| x[j] == 1.0 && on[i * units + j])
                .count();
            expected.push(if dendrite >= theta { 1.0 } else { 0.0 });
        }
    }
    assert_eq!(recalled, expected);
    let exact = recalled
        .chunks_exact(units)
        .zip(ys.chunks_exact(units))
        .filter(|(got, want)| got == want)
        .count();
    // A stored target always fires whole; at this load a stray unit is rare.
    assert!(exact >= pairs - 1, "{exact} of {pairs} recalled exactly");
}
