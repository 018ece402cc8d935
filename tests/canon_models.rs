//! The model files of the canon (`examples/canon/`): each builds with a small batch,
//! its compiled gradients (of every parameter and of its input) agree with central
//! finite differences within `kiln::gradcheck::TOLERANCE`, as `kiln gradcheck` checks
//! them, and a reduced version trains: a few steps of its own optimizer on one small
//! batch of its real data lower the loss. (Families with data of their own are
//! trained by tests/canon_<group>.rs.)

use kiln::frontend::lang::ElaborateOptions;
use kiln::gradcheck::{gradcheck, GradcheckOptions, TOLERANCE};
use kiln::model_file::{self, ModelFile};
use kiln::{Arg, Dataset};
use std::collections::BTreeMap;
use std::path::Path;

/// What a family's reduced training reads.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Data {
    /// 8 examples of the UCI digits, `x: f32[B, 64]`.
    Digits,
    /// 8 iris examples, `x: f32[B, 4]`, 3 classes.
    Iris,
    /// The same with setosa as 1 and the rest 0.
    IrisSetosa,
    /// A ring of `N` nodes with one-hot features, every node labelled.
    Graph,
    /// Trained by a test of its group.
    Elsewhere,
    /// Sequence reversal over `L` symbols (bound to 3 here), trained by
    /// tests/canon_sequence.rs.
    Reversal,
}

const FAMILIES: &[(&str, Data)] = &[
    ("perceptron", Data::IrisSetosa),
    ("logistic_regression", Data::IrisSetosa),
    ("softmax_regression", Data::Iris),
    ("mlp", Data::Digits),
    ("batchnorm_mlp", Data::Digits),
    ("layernorm_mlp", Data::Digits),
    ("dropout_mlp", Data::Digits),
    ("weightnorm_mlp", Data::Digits),
    ("lenet", Data::Digits),
    ("resnet_block", Data::Digits),
    ("densenet_block", Data::Digits),
    ("rnn", Data::Digits),
    ("lstm", Data::Digits),
    ("gru", Data::Digits),
    ("deep_birnn", Data::Digits),
    ("attention", Data::Digits),
    ("transformer_encoder", Data::Digits),
    ("gcn", Data::Graph),
    ("autoencoder", Data::Elsewhere),
    ("vae", Data::Elsewhere),
    ("planar_flow", Data::Elsewhere),
    ("gan", Data::Elsewhere),
    ("transformer_decoder", Data::Reversal),
    ("seq2seq_attention", Data::Reversal),
    ("adversarial", Data::Digits),
    ("distillation", Data::Elsewhere),
];

/// The family's model file with its batch (or graph) dimension bound to `size`.
fn load(name: &str, data: Data, size: usize) -> ModelFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/models")
        .join(format!("{name}.kiln"));
    let dim = if data == Data::Graph { "N" } else { "B" };
    let mut dims = BTreeMap::from([(dim.to_string(), size)]);
    if data == Data::Reversal {
        dims.insert("L".to_string(), 3);
    }
    let options = ElaborateOptions {
        dims,
        seed: 5,
        ..ElaborateOptions::default()
    };
    model_file::load(&path, &options).unwrap_or_else(|err| panic!("{name}: {}", err.render(false)))
}

#[test]
fn every_canon_model_passes_the_gradient_check() {
    for &(name, data) in FAMILIES {
        let file = load(name, data, 3);
        let loss = &file.train.as_ref().expect("a canon model trains").loss;
        let check = GradcheckOptions {
            samples: 3,
            ..GradcheckOptions::default()
        };
        let report = gradcheck(&file.model, loss, &check).unwrap();
        assert!(
            report.max_error() < TOLERANCE,
            "{name}: max relative error {:.1e}\n{report}",
            report.max_error()
        );
        assert!(report.leaves.len() >= 3, "{name}: {report}");
    }
}

fn data_file(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/data")
        .join(file)
}

/// `count` examples of a data set: features and labels.
fn examples(data: Data, count: usize) -> (Vec<f32>, Vec<i32>) {
    let set = match data {
        Data::Digits => Dataset::from_csv(&data_file("digits.csv.gz"), 1.0 / 16.0).unwrap(),
        _ => {
            let text = std::fs::read_to_string(data_file("iris.csv")).unwrap();
            // Past the header; the classes alternate so that a batch holds them all.
            let rows: String = text
                .lines()
                .skip(1)
                .map(|line| format!("{line}\n"))
                .collect();
            let iris = Dataset::parse_csv(&rows, 1.0).unwrap();
            let mixed: Vec<usize> = (0..50).flat_map(|i| [i, 50 + i, 100 + i]).collect();
            iris.subset(&mixed).unwrap()
        }
    };
    let features = set.features()[..count * set.features_per_example()].to_vec();
    let mut labels = set.labels()[..count].to_vec();
    if data == Data::IrisSetosa {
        labels
            .iter_mut()
            .for_each(|label| *label = i32::from(*label == 0));
    }
    (features, labels)
}

/// A ring of `n` nodes: `Q = D̃^-1/2 (A + I) D̃^-1/2` is `(A + I) / 3`; one-hot
/// features; the two halves of the ring the two classes; every node in the loss.
fn ring(n: usize) -> BTreeMap<&'static str, (Vec<f32>, Vec<i32>)> {
    let q: Vec<f32> = (0..n * n)
        .map(|k| {
            let (i, j) = (k / n, k % n);
            let near = i == j || (i + 1) % n == j || (j + 1) % n == i;
            if near {
                1.0 / 3.0
            } else {
                0.0
            }
        })
        .collect();
    let x: Vec<f32> = (0..n * n)
        .map(|k| f32::from(u8::from(k / n == k % n)))
        .collect();
    let labels: Vec<i32> = (0..n).map(|i| i32::from(2 * i >= n)).collect();
    BTreeMap::from([
        ("q", (q, vec![])),
        ("x", (x, vec![])),
        ("mask", (vec![1.0; n], vec![])),
        ("labels", (vec![], labels)),
    ])
}

#[test]
fn every_canon_model_trains_a_few_steps_and_its_loss_falls() {
    const BATCH: usize = 8;
    const STEPS: usize = 12;
    for &(name, data) in FAMILIES {
        if data == Data::Elsewhere || data == Data::Reversal {
            continue;
        }
        let file = load(name, data, BATCH);
        let spec = file.train.as_ref().expect("a canon model trains");
        let optimizer = model_file::optimizer(spec).unwrap();
        let mut step = kiln::compile_train_step(&file.model, &spec.loss, optimizer).unwrap();
        let feeds = match data {
            Data::Graph => ring(BATCH),
            _ => {
                let (x, labels) = examples(data, BATCH);
                BTreeMap::from([("x", (x, vec![])), ("labels", (vec![], labels))])
            }
        };
        let mut losses = Vec::new();
        for seed in 0..STEPS as i32 {
            let mut args: Vec<(&str, Arg)> = feeds
                .iter()
                .map(|(&input, (f, i))| {
                    let arg = if i.is_empty() {
                        Arg::F32(f)
                    } else {
                        Arg::I32(i)
                    };
                    (input, arg)
                })
                .collect();
            let seeds = [seed];
            if file.model.graph().input_by_name("seed").is_some() {
                args.push(("seed", Arg::I32(&seeds)));
            }
            step.run(&args).unwrap();
            losses.push(step.output_f32(&spec.loss).unwrap()[0]);
        }
        let (first, last) = (losses[0], losses[STEPS - 1]);
        // By a twentieth at least; the perceptron's loss reaches 0 once the batch is
        // separated.
        assert!(
            last < 0.95 * first || (last == 0.0 && name == "perceptron"),
            "{name}: losses {losses:?}"
        );
        assert!(last.is_finite(), "{name}: losses {losses:?}");
    }
}
