//! Snapshots of the digits MLP's IR after every pipeline step: building, autodiff,
//! the optimizer, expansion (nothing to expand in an MLP), the e-graph rewrite and
//! dead-code elimination. Reading them in order
//! shows what each pass did.

use kiln::frontend::models::mlp_classifier;
use kiln::passes::optimizer::Optimizer;
use kiln::passes::pipeline::{self, PipelineOptions};
use regex::Regex;

#[test]
fn digits_mlp_ir_after_each_step() {
    // A small batch keeps the dumps readable; the graph is the example's otherwise.
    let model = mlp_classifier("mlp_digits", 32, &[64, 128, 128, 10], true, 2026).unwrap();
    let options = PipelineOptions {
        loss: Some("loss".to_string()),
        optimizer: Some(Optimizer::sgd(0.1).unwrap()),
        dump: Some(Regex::new(".*").unwrap()),
        verify: true,
        ..PipelineOptions::default()
    };
    let mut dumps = Vec::new();
    pipeline::run(
        model.graph(),
        pipeline::TRAIN_STEP,
        &options,
        &mut |step, text| dumps.push((step.to_string(), text.to_string())),
    )
    .unwrap();
    let steps: Vec<&str> = dumps.iter().map(|(step, _)| step.as_str()).collect();
    assert_eq!(
        steps,
        ["build", "autodiff", "optimizer", "expand", "egraph", "dce"]
    );
    for (index, (step, text)) in dumps.iter().enumerate() {
        // The e-graph report line holds a wall-clock time; keep it out of snapshots.
        let text: String = text
            .lines()
            .filter(|line| !line.starts_with("// egraph:"))
            .map(|line| format!("{line}\n"))
            .collect();
        insta::assert_snapshot!(format!("digits_mlp_{index}_{step}"), text);
    }
}

/// The IR of every model file under examples/models, as built and after the whole
/// pipeline (a training step for a file that says `train`).
#[test]
fn every_example_model_file_ir_as_built_and_compiled() {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models");
    let mut paths: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "kiln"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    let built_and_compiled = Regex::new("^(build|dce)$").unwrap();
    for path in paths {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let file = kiln::model_file::load(&path, &Default::default()).unwrap();
        let mut options = PipelineOptions {
            dump: Some(built_and_compiled.clone()),
            verify: true,
            ..PipelineOptions::default()
        };
        let steps = match &file.train {
            Some(train) => {
                options.loss = Some(train.loss.clone());
                options.optimizer = Some(kiln::model_file::optimizer(train).unwrap());
                pipeline::TRAIN_STEP
            }
            None => pipeline::INFERENCE,
        };
        let mut dumps = Vec::new();
        pipeline::run(file.model.graph(), steps, &options, &mut |step, text| {
            dumps.push((step.to_string(), text.to_string()))
        })
        .unwrap();
        for (step, text) in dumps {
            insta::assert_snapshot!(format!("model_file_{stem}_{step}"), text);
        }
    }
}
