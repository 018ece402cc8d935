//! Whole-model test: the digits MLP of the example, trained briefly through the whole
//! compiler, must learn (loss falls, test accuracy well above chance); and the
//! trainer's checks of its model, data and hyperparameters.

use kiln::compile::set_params;
use kiln::frontend::loss::mean_squared_error;
use kiln::frontend::models::mlp_classifier;
use kiln::frontend::{Init, ModelBuilder};
use kiln::ir::TensorType;
use kiln::{
    compile, compile_train_step, metrics, Arg, Dataset, Optimizer, Rule, Trainer, TrainerConfig,
};
use std::path::Path;

#[test]
fn digits_mlp_learns_through_the_jit() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    let digits = Dataset::from_csv(&path, 1.0 / 16.0).unwrap();
    assert_eq!(
        (
            digits.len(),
            digits.features_per_example(),
            digits.classes()
        ),
        (1797, 64, 10)
    );
    let (train, test) = digits.split(1437, 7).unwrap();
    let sizes = [64, 64, 10];
    let model = mlp_classifier("mlp", 32, &sizes, true, 7).unwrap();
    let config = TrainerConfig::new(Optimizer::sgd(0.1).unwrap())
        .unwrap()
        .with_seed(7);
    let mut trainer = Trainer::new(&model, config).unwrap();
    let losses: Vec<f32> = (0..8).map(|_| trainer.epoch(&train).unwrap()).collect();
    // An untrained 10-class model starts near ln 10 = 2.30.
    assert!(
        losses[0] < 2.3 && losses[0] > 0.2,
        "first epoch loss {}",
        losses[0]
    );
    assert!(losses[7] < 0.5 * losses[0], "losses {losses:?}");

    let mut eval_model = mlp_classifier("mlp_eval", test.len(), &sizes, false, 7).unwrap();
    for (name, values) in trainer.params().unwrap() {
        eval_model.set_param(&name, values).unwrap();
    }
    let mut eval = compile(eval_model.graph()).unwrap();
    set_params(&mut eval, &eval_model).unwrap();
    eval.run(&[("x", Arg::F32(test.features()))]).unwrap();
    let logits = eval.output_f32("logits").unwrap();
    let accuracy = metrics::accuracy(logits, test.labels(), 10).unwrap();
    assert_eq!((accuracy.rows, accuracy.nan_rows), (test.len(), 0));
    let fraction = accuracy.fraction().unwrap();
    assert!(fraction > 0.9, "test accuracy {accuracy}");
}

#[test]
fn trainer_errors_name_what_is_wrong() {
    let model = mlp_classifier("mlp", 4, &[3, 2], true, 1).unwrap();
    let config = TrainerConfig::new(Optimizer::sgd(0.1).unwrap())
        .unwrap()
        .with_seed(1);
    let mut trainer = Trainer::new(&model, config.clone()).unwrap();
    let tiny = Dataset::parse_csv("1,2,3,0\n", 1.0).unwrap();
    let err = trainer.epoch(&tiny).unwrap_err().to_string();
    assert_eq!(
        err,
        "the data set has 1 examples, fewer than the batch size 4"
    );
    // Rows of the wrong width are named before anything runs.
    let wide = Dataset::parse_csv(&"1,2,3,4,0\n".repeat(4), 1.0).unwrap();
    let err = trainer.epoch(&wide).unwrap_err().to_string();
    assert_eq!(
        err,
        "the data set has 4 features per example, but input \"x\" takes 3"
    );

    let misnamed = config.clone().with_labels_input("targets");
    let err = Trainer::new(&model, misnamed).err().unwrap().to_string();
    assert_eq!(err, "the model has no input named \"targets\"");
    let mistyped = config.with_labels_input("x");
    let err = Trainer::new(&model, mistyped).err().unwrap().to_string();
    assert_eq!(err, "input \"x\" is f32[4,3], expected i32[batch]");
}

#[test]
fn a_label_outside_the_model_classes_is_an_error_naming_the_example() {
    // A valid 3-class data set fed to a 2-class model: before, the one-hot encoding
    // silently turned label 2 into an all-zero target and training went on.
    let model = mlp_classifier("mlp", 2, &[1, 2], true, 1).unwrap();
    let config = TrainerConfig::new(Optimizer::sgd(0.1).unwrap()).unwrap();
    let mut trainer = Trainer::new(&model, config).unwrap();
    let before = trainer.params().unwrap();
    let data = Dataset::parse_csv("0.5,0\n0.25,1\n1,0\n2,2\n", 1.0).unwrap();
    let err = trainer.epoch(&data).unwrap_err().to_string();
    assert_eq!(
        err,
        "example 3: label 2 is outside 0..2, the model's classes"
    );
    // Checked before the first batch: nothing trained.
    assert_eq!(trainer.params().unwrap(), before);
    let fitting = data.subset(&[0, 1, 2]).unwrap();
    assert!(trainer.epoch(&fitting).unwrap().is_finite());
}

#[test]
fn a_model_with_batch_size_zero_is_an_error_not_an_endless_epoch() {
    // Before, `Trainer::new` accepted it and `epoch` panicked in `chunks_exact(0)`.
    let mut builder = ModelBuilder::new("empty", 0);
    builder.input("x", TensorType::f32([0, 3])).unwrap();
    builder.input("labels", TensorType::i32([0])).unwrap();
    let weight = builder.parameter("w", &[3], Init::Zeros).unwrap();
    let loss = mean_squared_error(&mut builder, weight, weight).unwrap();
    builder.output("loss", loss).unwrap();
    let model = builder.finish().unwrap();
    let config = TrainerConfig::new(Optimizer::sgd(0.1).unwrap()).unwrap();
    let err = Trainer::new(&model, config).err().unwrap().to_string();
    assert_eq!(
        err,
        "the model's batch size is 0; a training batch needs at least one example"
    );
}

#[test]
fn a_learning_rate_that_overflows_f32_is_an_error_not_infinite_weights() {
    // 1e300 passed the f64 check and turned every weight into ±inf after one step.
    let model = mlp_classifier("mlp", 2, &[3, 2], true, 1).unwrap();
    let err = TrainerConfig::new(Optimizer::new(Rule::sgd(1e300)))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("learning rate 1e300 rounds to inf in f32"),
        "{err}"
    );
    let err = compile_train_step(&model, "loss", Optimizer::new(Rule::sgd(1e300)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("optimizer: learning rate 1e300 rounds to inf in f32"),
        "{err}"
    );
}

#[test]
fn set_params_requires_values_for_every_parameter_of_the_executable() {
    // The executable has fc1 and fc2; the model only fc1, with fc1's shapes. Before,
    // fc1 was loaded and fc2 silently kept whatever it held.
    let wide = mlp_classifier("wide", 2, &[3, 2, 2], false, 1).unwrap();
    let narrow = mlp_classifier("narrow", 2, &[3, 2], false, 1).unwrap();
    let mut exe = compile(wide.graph()).unwrap();
    let err = set_params(&mut exe, &narrow).unwrap_err().to_string();
    assert_eq!(
        err,
        "the model has no values for the executable's parameter \"fc2.weight\""
    );
    let mut small = compile(narrow.graph()).unwrap();
    let err = set_params(&mut small, &wide).unwrap_err().to_string();
    assert!(err.contains("fc2"), "{err}");
    set_params(&mut exe, &wide).unwrap();
    assert_eq!(
        exe.param("fc2.weight").unwrap(),
        wide.param("fc2.weight").unwrap()
    );
}
