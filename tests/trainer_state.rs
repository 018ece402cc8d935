//! A trainer's state (every parameter, the optimizer's state, the shuffling
//! generator) restored into a fresh trainer continues training bit for bit as if it
//! had never stopped; a state of another model is refused by name.

use kiln::frontend::models::mlp_classifier;
use kiln::{Dataset, Optimizer, Rule, Trainer, TrainerConfig};
use std::path::Path;

fn digits() -> Dataset {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    let all = Dataset::from_csv(&path, 1.0 / 16.0).unwrap();
    all.subset(&(0..200).collect::<Vec<_>>()).unwrap()
}

fn trainer() -> Trainer {
    let model = mlp_classifier("state", 16, &[64, 24, 10], true, 4).unwrap();
    let adam = Optimizer::new(Rule::adam(0.01));
    Trainer::new(&model, TrainerConfig::new(adam).unwrap().with_seed(9)).unwrap()
}

#[test]
fn a_restored_trainer_continues_bit_for_bit() {
    let data = digits();
    let mut straight = trainer();
    for _ in 0..3 {
        straight.epoch(&data).unwrap();
    }
    let mut first = trainer();
    first.epoch(&data).unwrap();
    let saved = first.state().unwrap();
    assert!(
        saved.tensors.contains_key("optimizer.step"),
        "{:?}",
        saved.tensors.keys()
    );
    let mut resumed = trainer();
    resumed.restore(&saved).unwrap();
    for _ in 0..2 {
        resumed.epoch(&data).unwrap();
    }
    let (a, b) = (straight.state().unwrap(), resumed.state().unwrap());
    assert_eq!(a.rng, b.rng);
    for (name, values) in &a.tensors {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(values), bits(&b.tensors[name]), "{name}");
    }
    // Without the restore the third epoch differs: the test can tell.
    let mut fresh = trainer();
    fresh.epoch(&data).unwrap();
    assert_ne!(
        fresh.state().unwrap().tensors["fc1.weight"],
        a.tensors["fc1.weight"]
    );
}

#[test]
fn a_state_of_another_model_is_refused_and_changes_nothing() {
    let mut t = trainer();
    let before = t.state().unwrap();
    let mut missing = before.clone();
    missing.tensors.remove("optimizer.step");
    let err = t.restore(&missing).unwrap_err().to_string();
    assert_eq!(
        err,
        "the saved state has no \"optimizer.step\", which the train step needs"
    );
    let mut short = before.clone();
    short.tensors.get_mut("fc1.bias").unwrap().pop();
    let err = t.restore(&short).unwrap_err().to_string();
    assert_eq!(
        err,
        "the saved state \"fc1.bias\" has 23 values, the train step's has 24"
    );
    let mut extra = before.clone();
    extra.tensors.insert("nope".to_string(), vec![1.0]);
    let err = t.restore(&extra).unwrap_err().to_string();
    assert_eq!(
        err,
        "the saved state has \"nope\", which the train step does not have"
    );
    assert_eq!(t.state().unwrap(), before);
}
