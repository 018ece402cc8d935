//! Sinusoidal positional encoding (`kiln_frontend::positional`, the language's
//! `PositionalEncoding`): its table is Vaswani et al.'s formula, the layer adds the
//! first rows to a sequence, and training never changes the table (a buffer).

use kiln::compile::set_params;
use kiln::frontend::lang::{self, ElaborateOptions};
use kiln::frontend::positional::PositionalEncoding;
use kiln::frontend::{FrontendError, ModelBuilder};
use kiln::ir::TensorType;
use kiln::{compile, compile_train_step, model_file, Arg};

/// A layer for 6-wide embeddings of up to 10 positions applied to `x: [2, 4, 6]`,
/// then a linear head trained to an MSE target.
const MODEL: &str = "
model Encoded(B = 2, S = 4) {
  input x: f32[B, S, 6]
  input y: f32[B, S, 1]
  pe = PositionalEncoding(6, 10)
  fit = Linear(6, 1)
  forward {
    h = pe(x)
    loss = mse_loss(fit(h), y)
    output h, loss
  }
  train loss with adam(lr = 0.1)
}
";

fn load() -> lang::ModelFile {
    lang::load(MODEL, &ElaborateOptions::default()).unwrap_or_else(|err| panic!("{err}"))
}

/// `PE[pos, 2i] = sin(pos / 10000^(2i/d))`, `PE[pos, 2i+1] = cos(…)`, written out
/// with PyTorch's `exp(-2i·ln(10000)/d)` form of the frequency.
fn formula(pos: usize, column: usize, d: usize) -> f64 {
    let i = (column / 2) as f64;
    let frequency = (-2.0 * i * 10000f64.ln() / d as f64).exp();
    let angle = pos as f64 * frequency;
    if column.is_multiple_of(2) {
        angle.sin()
    } else {
        angle.cos()
    }
}

#[test]
fn the_table_is_the_sinusoid_formula_rounded_to_f32() {
    let file = load();
    let table = file.model.param("pe.pe").expect("the table is a parameter");
    assert_eq!(table.len(), 10 * 6);
    assert!(file
        .model
        .graph()
        .is_frozen(file.model.graph().param_by_name("pe.pe").unwrap()));
    for pos in 0..10 {
        for column in 0..6 {
            let expected = formula(pos, column, 6);
            let found = table[pos * 6 + column];
            // Within one f32 rounding of the f64 value (the two forms of the
            // frequency differ in the last f64 bits only).
            assert!(
                (f64::from(found) - expected).abs() <= 1e-7,
                "PE[{pos}, {column}] = {found}, expected {expected}"
            );
        }
    }
    // Position 0: sin 0 = 0 and cos 0 = 1; the slowest pair of a 6-wide table has
    // frequency 10000^(-4/6).
    assert_eq!(&table[..6], [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
    let slow = 10000f64.powf(-4.0 / 6.0);
    assert_eq!(table[9 * 6 + 4], (9.0 * slow).sin() as f32);
}

#[test]
fn the_layer_adds_the_first_rows_and_training_leaves_the_table_unchanged() {
    let file = load();
    let initial = file.model.param("pe.pe").unwrap().to_vec();
    // Forward: x = 0.5 everywhere gives 0.5 + PE[s, j] at every batch row.
    let mut forward = compile(file.model.graph()).unwrap();
    set_params(&mut forward, &file.model).unwrap();
    let x = vec![0.5f32; 2 * 4 * 6];
    let y = vec![1.0f32; 2 * 4];
    let args = [("x", Arg::F32(&x)), ("y", Arg::F32(&y))];
    forward.run(&args).unwrap();
    let h = forward.output_f32("h").unwrap();
    for (k, &value) in h.iter().enumerate() {
        let row = k % (4 * 6);
        assert_eq!(value, 0.5 + initial[row], "h[{k}]");
    }
    // Training: the head moves, the table does not, and it has no optimizer state.
    let spec = file.train.as_ref().unwrap();
    let optimizer = model_file::optimizer(spec).unwrap();
    let mut step = compile_train_step(&file.model, &spec.loss, optimizer).unwrap();
    let head = step.param("fit.weight").unwrap().to_vec();
    let mut losses = Vec::new();
    for _ in 0..5 {
        step.run(&args).unwrap();
        losses.push(step.output_f32("loss").unwrap()[0]);
    }
    assert!(losses[4] < losses[0], "losses {losses:?}");
    assert_ne!(step.param("fit.weight").unwrap(), head.as_slice());
    assert_eq!(step.param("pe.pe").unwrap(), initial.as_slice());
    assert!(step
        .params()
        .iter()
        .all(|(name, _)| !name.starts_with("pe.pe.")));
}

#[test]
fn a_sequence_longer_than_the_table_is_refused() {
    let mut builder = ModelBuilder::new("long", 1);
    let pe = PositionalEncoding::new(&mut builder, "pe", 4, 3).unwrap();
    let x = builder.input("x", TensorType::f32([2, 5, 4])).unwrap();
    let err = pe.forward(&mut builder, x).unwrap_err();
    assert!(matches!(err, FrontendError::Operand { .. }), "{err}");
    assert!(err.to_string().contains("sequence ≤ 3"), "{err}");
    let err = PositionalEncoding::new(&mut builder, "empty", 0, 3).unwrap_err();
    assert!(err.to_string().contains("d_model 0"), "{err}");
    // In the language, the error points at the application.
    let source = MODEL.replace("PositionalEncoding(6, 10)", "PositionalEncoding(6, 3)");
    let err = lang::load(&source, &ElaborateOptions::default()).unwrap_err();
    assert!(err.to_string().contains("sequence ≤ 3"), "{err}");
}
