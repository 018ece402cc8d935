//! `.kiln` model files: the digits model file builds the network of the Rust
//! builder exactly; blocks, repetition and dimensions name and shape parameters as
//! documented; and mistakes get located, rendered errors (golden snapshots).

use kiln::frontend::lang::{self, ElaborateOptions};
use kiln::frontend::models::mlp_classifier;
use kiln::ir::{evaluate, Feeds, Precision, Rng, Tensor, TensorType};
use kiln::model_file;
use std::collections::BTreeMap;
use std::path::Path;

fn options(dims: &[(&str, usize)]) -> ElaborateOptions {
    ElaborateOptions {
        dims: dims
            .iter()
            .map(|&(name, value)| (name.to_string(), value))
            .collect(),
        seed: 7,
        ..ElaborateOptions::default()
    }
}

fn digits_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/mlp_digits.kiln")
}

#[test]
fn the_digits_file_is_the_builders_mlp_with_the_same_weights_and_loss() {
    let file = model_file::load(&digits_file(), &options(&[("B", 5)])).unwrap();
    assert_eq!(file.name, "MlpDigits");
    assert_eq!(file.dims, BTreeMap::from([("B".to_string(), 5)]));
    assert_eq!(file.outputs, ["logits", "loss"]);
    let train = file.train.as_ref().unwrap();
    assert_eq!(
        (
            train.loss.as_str(),
            train.optimizer.to_string(),
            train.batch
        ),
        (
            "loss",
            "sgd(lr = 0.1, momentum = 0.0, dampening = 0.0, weight_decay = 0.0, nesterov = false)"
                .to_string(),
            5
        )
    );
    let built = mlp_classifier("m", 5, &[64, 128, 128, 10], true, 7).unwrap();
    assert_eq!(file.model.params(), built.params());

    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..5 * 64).map(|_| rng.uniform(0.0, 1.0) as f32).collect();
    let labels = [3, 1, 4, 1, 5];
    let mut feeds = Feeds::new();
    feeds.insert("x".into(), Tensor::f32([5, 64], &x).unwrap());
    feeds.insert("labels".into(), Tensor::i32([5], &labels).unwrap());
    for (name, values) in file.model.params() {
        let ty = file
            .model
            .graph()
            .ty(file.model.graph().param_by_name(name).unwrap());
        feeds.insert(name.clone(), Tensor::f32(ty.shape.clone(), values).unwrap());
    }
    let from_file = evaluate(file.model.graph(), &feeds, Precision::F32).unwrap();
    let from_builder = evaluate(built.graph(), &feeds, Precision::F32).unwrap();
    assert_eq!(from_file.outputs["loss"], from_builder.outputs["loss"]);
    assert_eq!(from_file.outputs["logits"].ty(), TensorType::f32([5, 10]));
}

const RESIDUAL: &str = r#"
# Residual blocks, repeated: parameters are named after the path to them.
block Residual(features) {
  fc1 = Linear(features, features)
  fc2 = Linear(features, features, bias = false)
  forward(x) {
    h = relu(fc1(x))
    return relu(x + fc2(h))
  }
}

model Deep(B = 4, D = 6) {
  input x: f32[B, D * 2]
  stem = Linear(D * 2, D)
  blocks = Residual(D) * 3
  head = Linear(D, 2)
  forward {
    h = blocks(stem(x))
    y = head(blocks[1](h))
    output y
  }
}
"#;

#[test]
fn blocks_repeat_with_their_own_parameters_and_dimensions_bind() {
    let file = lang::load(RESIDUAL, &options(&[("D", 5)])).unwrap();
    let names: Vec<&str> = file.model.params().keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "blocks.0.fc1.bias",
            "blocks.0.fc1.weight",
            "blocks.0.fc2.weight",
            "blocks.1.fc1.bias",
            "blocks.1.fc1.weight",
            "blocks.1.fc2.weight",
            "blocks.2.fc1.bias",
            "blocks.2.fc1.weight",
            "blocks.2.fc2.weight",
            "head.bias",
            "head.weight",
            "stem.bias",
            "stem.weight",
        ]
    );
    let graph = file.model.graph();
    assert_eq!(
        graph.ty(graph.input_by_name("x").unwrap()),
        &TensorType::f32([4, 10])
    );
    assert_eq!(
        graph.ty(graph.output_by_name("y").unwrap()),
        &TensorType::f32([4, 2])
    );
    assert_eq!(file.dims["D"], 5);
    // PyTorch's default initialisation: U(-1/sqrt(in), 1/sqrt(in)).
    let bound = 1.0 / (10f32).sqrt();
    let stem = &file.model.params()["stem.weight"];
    assert!(stem.iter().all(|v| v.abs() <= bound));
    assert!(stem.iter().any(|v| v.abs() > 0.5 * bound));
    // Four applications of a block: twelve matmuls with the stem and the head.
    let matmuls = graph
        .node_ids()
        .into_iter()
        .filter(|&id| graph.op(id).mnemonic() == "matmul")
        .count();
    assert_eq!(matmuls, 2 + 4 * 2);
}

/// Dimension overrides, by name.
type Dims = &'static [(&'static str, usize)];

/// Each mistake, rendered as the `kiln` command shows it.
fn rendered(source: &str, dims: &[(&str, usize)]) -> String {
    let err = lang::load(source, &options(dims)).unwrap_err();
    err.render("model.kiln", source, false)
}

#[test]
fn mistakes_are_located_and_say_what_was_expected() {
    let cases: [(&str, &str, Dims); 10] = [
        (
            "syntax",
            "model M(B = 2) {\n  input x: f32[B, 3]\n  forward {\n    y = (x + \n  }\n}\n",
            &[],
        ),
        (
            "unknown_layer",
            "model M() {\n  input x: f32[2, 3]\n  fc = Dense(3, 4)\n  forward { output x }\n}\n",
            &[],
        ),
        (
            "shape",
            "model M(B = 2) {\n  input x: f32[B, 3]\n  fc = Linear(4, 5)\n  forward {\n    y = fc(x)\n    output y\n  }\n}\n",
            &[],
        ),
        (
            "does_not_divide",
            "model M(T = 10) {\n  input x: f32[T / 4, 3]\n  forward { output x }\n}\n",
            &[],
        ),
        (
            "unbound",
            "model M() {\n  input x: f32[2, 3]\n  forward {\n    y = relu(z)\n    output y\n  }\n}\n",
            &[],
        ),
        (
            "unknown_dimension",
            "model M(B = 2) {\n  input x: f32[B]\n  forward { output x }\n}\n",
            &[("C", 3)],
        ),
        (
            "broadcast",
            "model M() {\n  input a: f32[2, 3]\n  input b: f32[4, 3]\n  forward {\n    c = a + b\n    output c\n  }\n}\n",
            &[],
        ),
        (
            "bad_argument",
            "model M() {\n  input x: f32[2, 3]\n  forward {\n    y = softmax(x, dim = 1)\n    output y\n  }\n}\n",
            &[],
        ),
        (
            "kernel_tuple_length",
            "model M() {\n  input x: f32[1, 1, 5, 5]\n  conv = Conv2d(1, 2, kernel_size = (3, 3, 3))\n  forward {\n    y = conv(x)\n    output y\n  }\n}\n",
            &[],
        ),
        (
            "gather_indices",
            "model M() {\n  input x: f32[2, 3]\n  forward {\n    y = gather(x, x, axis = 1)\n    output y\n  }\n}\n",
            &[],
        ),
    ];
    for (name, source, dims) in cases {
        insta::assert_snapshot!(format!("model_error_{name}"), rendered(source, dims));
    }
}

#[test]
fn a_read_error_names_the_path() {
    let err = model_file::load(Path::new("no/such/model.kiln"), &options(&[])).unwrap_err();
    assert!(err.to_string().starts_with("no/such/model.kiln: "), "{err}");
}

#[test]
fn sizes_per_axis_are_tuples_as_in_pytorch() {
    let source = "model M() {
  input x: f32[2, 3, 9, 8]
  conv = Conv2d(3, 4, kernel_size = (3, 5), stride = (2, 1), padding = (1, 2), dilation = (1, 2))
  seq = Conv1d(4, 2, (3,), padding = (1,))
  forward {
    y = max_pool2d(conv(x), (2, 3), stride = (1, 2))
    z = seq(reshape(y, 2, 4, 4))
    output y, z
  }
}
";
    let file = lang::load(source, &options(&[])).unwrap();
    let graph = file.model.graph();
    let shape = |name: &str| graph.ty(graph.param_by_name(name).unwrap()).shape.clone();
    assert_eq!(shape("conv.weight"), [4, 3, 3, 5]);
    assert_eq!(shape("seq.weight"), [2, 4, 3]);
    // Height: (9 + 2 − 3)/2 + 1 = 5, then 5 − 2 + 1 = 4; width: (8 + 4 − 2·4 − 1)/1 + 1
    // = 4, then (4 − 3)/2 + 1 = 1.
    let y = graph.output_by_name("y").unwrap();
    assert_eq!(graph.ty(y).shape, [2, 4, 4, 1]);
    let z = graph.output_by_name("z").unwrap();
    assert_eq!(graph.ty(z).shape, [2, 2, 4]);
}
