//! Sizes and memory end to end: the size limit refuses what no machine could hold with
//! an error (never an abort), empty batches build, evaluate and compile, and compiled
//! executables allocate run-time buffers only when they first run.

use kiln::frontend::init::Init;
use kiln::frontend::models::mlp_classifier;
use kiln::frontend::ModelBuilder;
use kiln::ir::{evaluate, Feeds, Graph, Precision, Tensor, TensorType};
use kiln::{compile, compile_train_step, Arg, Optimizer};

#[test]
fn a_parameter_of_100000_by_100000_is_an_error_in_the_builder_and_the_text_form() {
    let mut builder = ModelBuilder::new("huge", 0);
    let err = builder
        .parameter("w", &[100_000, 100_000], Init::HeUniform)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "parameter \"w\": param: shape [100000, 100000] has more than 2147483647 elements, the most a tensor may have"
    );
    // A graph that would reach `compile` from a file stops at parsing, at the op.
    let text = "graph g {\n  %0 = param \"w\" : f32[100000,100000]\n  output \"w\" = %0\n}\n";
    let err = kiln::ir::text::parse(text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "2:8: param: shape [100000, 100000] has more than 2147483647 elements, the most a tensor may have"
    );
}

#[test]
fn mlp_classifier_with_batch_0_builds_evaluates_and_compiles() {
    let sizes = [4, 5, 3];
    let infer = mlp_classifier("empty", 0, &sizes, false, 1).unwrap();
    let logits = infer.graph.output_by_name("logits").unwrap();
    assert_eq!(infer.graph.ty(logits), &TensorType::f32([0, 3]));
    let mut feeds = Feeds::new();
    feeds.insert("x".into(), Tensor::f32([0, 4], &[]).unwrap());
    for (name, values) in &infer.params {
        let shape = infer
            .graph
            .ty(infer.graph.param_by_name(name).unwrap())
            .shape
            .clone();
        feeds.insert(name.clone(), Tensor::f32(shape, values).unwrap());
    }
    let evaluation = evaluate(&infer.graph, &feeds, Precision::F32).unwrap();
    assert_eq!(evaluation.outputs["logits"].ty(), TensorType::f32([0, 3]));
    assert!(evaluation.outputs["logits"].is_empty());

    let mut exe = compile(&infer.graph).unwrap();
    for (name, values) in &infer.params {
        exe.set_param(name, values).unwrap();
    }
    exe.run(&[("x", Arg::F32(&[]))]).unwrap();
    assert_eq!(exe.output_f32("logits").unwrap(), &[] as &[f32]);

    // Training on no examples: the mean of an empty loss is NaN, as in NumPy.
    let train = mlp_classifier("empty_train", 0, &sizes, true, 1).unwrap();
    feeds.insert("labels".into(), Tensor::i32([0], &[]).unwrap());
    let evaluation = evaluate(&train.graph, &feeds, Precision::F32).unwrap();
    assert!(evaluation.outputs["loss"].data()[0].is_nan());
    let mut step = compile_train_step(&train, "loss", Optimizer::Sgd { learning_rate: 0.1 }).unwrap();
    step.run(&[("x", Arg::F32(&[])), ("labels", Arg::I32(&[]))])
        .unwrap();
    assert!(step.output_f32("loss").unwrap()[0].is_nan());
}

/// `y = sum(broadcast(x))` over a [4096, 131072] intermediate: 2 GiB of f32 that
/// exists only while the program runs.
fn large_intermediate() -> Graph {
    let mut graph = Graph::new("large_intermediate");
    let x = graph.input("x", TensorType::f32([1, 131_072])).unwrap();
    let wide = graph.broadcast(x, [4096, 131_072]).unwrap();
    let exp = graph.exp(wide).unwrap();
    let sum = graph.reduce_sum(exp, &[0, 1]).unwrap();
    graph.set_output("y", sum).unwrap();
    graph
}

#[test]
fn compiling_does_not_allocate_run_time_buffers() {
    let exe = kiln::compile::compile_with(
        &large_intermediate(),
        &[],
        &kiln::passes::pipeline::PipelineOptions::default(),
    )
    .unwrap();
    // The program needs the 2 GiB intermediate once it runs...
    assert!(exe.stats().buffer_bytes >= 4096 * 131_072 * 4, "{:?}", exe.stats());
    // ...but compiling it holds no buffer memory: it has no parameters.
    assert_eq!(exe.allocated_bytes(), 0);
    let err = exe.output_f32("y").unwrap_err();
    assert_eq!(err.to_string(), "output \"y\" has no value before the first run");
}
