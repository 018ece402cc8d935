//! The model files of the canon (`examples/canon.rs`): each builds with a small
//! batch, and its compiled gradients (of every parameter and of its input) agree with
//! central finite differences within `kiln::gradcheck::TOLERANCE`, as `kiln gradcheck`
//! checks them.

use kiln::frontend::lang::ElaborateOptions;
use kiln::gradcheck::{gradcheck, GradcheckOptions, TOLERANCE};
use kiln::model_file;
use std::collections::BTreeMap;
use std::path::Path;

const FAMILIES: [&str; 18] = [
    "perceptron",
    "logistic_regression",
    "softmax_regression",
    "mlp",
    "layernorm_mlp",
    "dropout_mlp",
    "weightnorm_mlp",
    "resnet_block",
    "densenet_block",
    "rnn",
    "lstm",
    "gru",
    "deep_birnn",
    "attention",
    "transformer_encoder",
    "gcn",
    "adversarial",
    "distillation",
];

#[test]
fn every_canon_model_passes_the_gradient_check() {
    for name in FAMILIES {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/models")
            .join(format!("{name}.kiln"));
        // A small batch, or for the graph network a small graph.
        let dim = if name == "gcn" { "N" } else { "B" };
        let options = ElaborateOptions {
            dims: BTreeMap::from([(dim.to_string(), 3)]),
            seed: 5,
            ..ElaborateOptions::default()
        };
        let file = model_file::load(&path, &options)
            .unwrap_or_else(|err| panic!("{name}: {}", err.render(false)));
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
