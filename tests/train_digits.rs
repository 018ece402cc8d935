//! Whole-model test: the digits MLP of the example, trained briefly through the whole
//! compiler, must learn (loss falls, test accuracy well above chance).

use kiln::frontend::models::mlp_classifier;
use kiln::{compile, metrics, Arg, Dataset, Optimizer, Trainer, TrainerConfig};
use std::path::Path;

#[test]
fn digits_mlp_learns_through_the_jit() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    let digits = Dataset::from_csv(&path, 1.0 / 16.0).unwrap();
    assert_eq!((digits.len(), digits.features_per_example), (1797, 64));
    let (train, test) = digits.split(1437, 7);
    let sizes = [64, 64, 10];
    let model = mlp_classifier("mlp", 32, &sizes, true, 7).unwrap();
    let config = TrainerConfig {
        features_input: "x".to_string(),
        labels_input: "labels".to_string(),
        loss_output: "loss".to_string(),
        optimizer: Optimizer::Sgd { learning_rate: 0.1 },
        seed: 7,
    };
    let mut trainer = Trainer::new(&model, config).unwrap();
    let losses: Vec<f32> = (0..8).map(|_| trainer.epoch(&train).unwrap()).collect();
    // An untrained 10-class model starts near ln 10 = 2.30.
    assert!(
        losses[0] < 2.3 && losses[0] > 0.2,
        "first epoch loss {}",
        losses[0]
    );
    assert!(losses[7] < 0.5 * losses[0], "losses {losses:?}");

    let eval_model = mlp_classifier("mlp_eval", test.len(), &sizes, false, 7).unwrap();
    let mut eval = compile(&eval_model.graph).unwrap();
    for (name, values) in trainer.params().unwrap() {
        eval.set_param(&name, &values).unwrap();
    }
    eval.run(&[("x", Arg::F32(&test.features))]).unwrap();
    let accuracy = metrics::accuracy(eval.output_f32("logits").unwrap(), &test.labels, 10);
    assert!(accuracy > 0.9, "test accuracy {accuracy}");
}

#[test]
fn trainer_errors_name_what_is_wrong() {
    let model = mlp_classifier("mlp", 4, &[3, 2], true, 1).unwrap();
    let config = TrainerConfig {
        features_input: "x".to_string(),
        labels_input: "labels".to_string(),
        loss_output: "loss".to_string(),
        optimizer: Optimizer::Sgd { learning_rate: 0.1 },
        seed: 1,
    };
    let mut trainer = Trainer::new(&model, config.clone()).unwrap();
    let tiny = Dataset::parse_csv("1,2,3,0\n", 1.0).unwrap();
    let err = trainer.epoch(&tiny).unwrap_err().to_string();
    assert_eq!(
        err,
        "the data set has 1 examples, fewer than the batch size 4"
    );
    // Rows of the wrong width reach the runtime's argument check, not generated code.
    let wide = Dataset::parse_csv(&"1,2,3,4,0\n".repeat(4), 1.0).unwrap();
    let err = trainer.epoch(&wide).unwrap_err().to_string();
    assert!(err.contains("\"x\"") && err.contains("12"), "{err}");

    let misnamed = TrainerConfig {
        labels_input: "targets".to_string(),
        ..config
    };
    let err = Trainer::new(&model, misnamed).err().unwrap().to_string();
    assert_eq!(err, "the model has no input named \"targets\"");
}
