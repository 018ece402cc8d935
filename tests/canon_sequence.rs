//! The sequence-to-sequence families of the canon (`examples/canon/sequence.rs`):
//! reduced versions of `transformer_decoder.kiln` and `seq2seq_attention.kiln` learn
//! a batch of reversals with teacher forcing, and `kiln::decode::greedy` feeds each
//! prediction back as the next position's input.

use kiln::compile::set_params;
use kiln::decode::{self, Greedy};
use kiln::frontend::lang::ElaborateOptions;
use kiln::ir::Rng;
use kiln::{compile, compile_train_step, model_file, Arg, Error};
use std::collections::BTreeMap;
use std::path::Path;

/// Reversal at a reduced size: sources of `LENGTH` symbols of `SYMBOLS`, the start
/// symbol `SYMBOLS`, a batch of `BATCH`.
const LENGTH: usize = 4;
const SYMBOLS: usize = 5;
const BATCH: usize = 6;

fn load(name: &str) -> model_file::ModelFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/models")
        .join(format!("{name}.kiln"));
    let dims = [("B", BATCH), ("L", LENGTH), ("V", SYMBOLS)];
    let options = ElaborateOptions {
        dims: BTreeMap::from(dims.map(|(d, n)| (d.to_string(), n))),
        seed: 7,
        ..ElaborateOptions::default()
    };
    model_file::load(&path, &options).unwrap_or_else(|err| panic!("{}", err.render(false)))
}

/// Trains the reduced family on one fixed batch of reversals for `steps` steps and
/// returns the first and the last loss.
fn first_and_last_loss(name: &str, steps: usize) -> (f32, f32) {
    let file = load(name);
    let spec = file.train.as_ref().expect("a canon model trains");
    let optimizer = model_file::optimizer(spec).unwrap();
    let mut step = compile_train_step(&file.model, &spec.loss, optimizer).unwrap();
    let mut rng = Rng::new(11);
    let sources: Vec<i32> = (0..BATCH * LENGTH)
        .map(|_| rng.below(SYMBOLS) as i32)
        .collect();
    let mut targets = Vec::new();
    let mut shifted = Vec::new();
    for source in sources.chunks(LENGTH) {
        let reversed: Vec<i32> = source.iter().rev().copied().collect();
        shifted.push(SYMBOLS as i32);
        shifted.extend_from_slice(&reversed[..LENGTH - 1]);
        targets.extend(reversed);
    }
    let args = [
        ("source", Arg::I32(&sources)),
        ("shifted", Arg::I32(&shifted)),
        ("target", Arg::I32(&targets)),
    ];
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        step.run(&args).unwrap();
        losses.push(step.output_f32(&spec.loss).unwrap()[0]);
    }
    (losses[0], losses[steps - 1])
}

#[test]
fn transformer_decoder_learns_a_batch_of_reversals() {
    let (first, last) = first_and_last_loss("transformer_decoder", 30);
    // Uniform guessing over 5 symbols is ln 5 = 1.61 nats.
    assert!(first > 1.0, "first loss {first}");
    assert!(last < 0.1 * first, "loss {first} -> {last}");
}

#[test]
fn seq2seq_attention_learns_a_batch_of_reversals() {
    let (first, last) = first_and_last_loss("seq2seq_attention", 30);
    assert!(first > 1.0, "first loss {first}");
    assert!(last < 0.1 * first, "loss {first} -> {last}");
}

/// A hand-set decoder whose logits at each position favour the successor of the
/// symbol it reads there: `(k + 1) mod C`.
const SUCCESSOR: &str = "
model Successor(N = 3, T = 5, C = 6) {
  input shifted: i32[N, T]
  input bump: f32[N, 1, C]
  next = Linear(C, C, bias = false, init = \"zeros\")
  forward {
    logits = reshape(next(one_hot(shifted, C)) + bump, N * T, C)
    output logits
  }
}
";

fn successor() -> kiln::Executable {
    let mut file = kiln::frontend::lang::load(SUCCESSOR, &ElaborateOptions::default())
        .unwrap_or_else(|err| panic!("{err}"));
    let classes = 6;
    let mut weight = vec![0.0f32; classes * classes];
    for k in 0..classes {
        // `Linear`'s weight is [in, out]: input symbol k scores output k + 1.
        weight[k * classes + (k + 1) % classes] = 1.0;
    }
    file.model.set_param("next.weight", weight).unwrap();
    let mut exe = compile(file.model.graph()).unwrap();
    set_params(&mut exe, &file.model).unwrap();
    exe
}

#[test]
fn greedy_decoding_feeds_each_prediction_back() {
    let mut exe = successor();
    // No bump: from the start symbol 2, each step predicts the successor of the last
    // prediction. Teacher forcing with zeros after the start would give 3, 1, 1, 1, 1.
    let bump = vec![0.0f32; 3 * 6];
    let spec = Greedy {
        shifted: "shifted",
        logits: "logits",
        start: 2,
    };
    let predicted = decode::greedy(&mut exe, &[("bump", Arg::F32(&bump))], spec).unwrap();
    assert_eq!(predicted, [3, 4, 5, 0, 1].repeat(3));
    // Example 1 is bumped towards symbol 0 at every position (by more than the
    // successor's score of 1): it predicts 0, whose successor never wins again.
    let mut bump = vec![0.0f32; 3 * 6];
    bump[6] = 2.0;
    let predicted = decode::greedy(&mut exe, &[("bump", Arg::F32(&bump))], spec).unwrap();
    assert_eq!(&predicted[..5], [3, 4, 5, 0, 1]);
    assert_eq!(&predicted[5..10], [0, 0, 0, 0, 0]);
    assert_eq!(&predicted[10..], [3, 4, 5, 0, 1]);
}

#[test]
fn greedy_decoding_names_what_it_cannot_read() {
    let mut exe = successor();
    let bump = vec![0.0f32; 3 * 6];
    let args = [("bump", Arg::F32(&bump))];
    let wrong_input = Greedy {
        shifted: "tokens",
        logits: "logits",
        start: 0,
    };
    let err = decode::greedy(&mut exe, &args, wrong_input).unwrap_err();
    assert!(
        matches!(&err, Error::NoSuchInput(name) if name == "tokens"),
        "{err}"
    );
    let wrong_output = Greedy {
        shifted: "shifted",
        logits: "scores",
        start: 0,
    };
    let err = decode::greedy(&mut exe, &args, wrong_output).unwrap_err();
    assert!(err.to_string().contains("scores"), "{err}");
    // A NaN score predicts nothing: the error names the example and position.
    let mut bump = vec![0.0f32; 3 * 6];
    bump[2 * 6 + 4] = f32::NAN;
    let spec = Greedy {
        shifted: "shifted",
        logits: "logits",
        start: 0,
    };
    let err = decode::greedy(&mut exe, &[("bump", Arg::F32(&bump))], spec).unwrap_err();
    assert_eq!(
        err.to_string(),
        "greedy decoding: example 2, position 0: the scores hold a NaN"
    );
}
