//! Sizes and memory end to end: the size limit refuses what no machine could hold with
//! an error (never an abort), empty batches build, evaluate and compile, and compiled
//! executables allocate run-time buffers only when they first run, in one arena whose
//! buffers share memory when they are not live at the same time.

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
    let logits = infer.graph().output_by_name("logits").unwrap();
    assert_eq!(infer.graph().ty(logits), &TensorType::f32([0, 3]));
    let mut feeds = Feeds::new();
    feeds.insert("x".into(), Tensor::f32([0, 4], &[]).unwrap());
    for (name, values) in infer.params() {
        let shape = infer
            .graph()
            .ty(infer.graph().param_by_name(name).unwrap())
            .shape
            .clone();
        feeds.insert(name.clone(), Tensor::f32(shape, values).unwrap());
    }
    let evaluation = evaluate(infer.graph(), &feeds, Precision::F32).unwrap();
    assert_eq!(evaluation.outputs["logits"].ty(), TensorType::f32([0, 3]));
    assert!(evaluation.outputs["logits"].is_empty());

    let mut exe = compile(infer.graph()).unwrap();
    for (name, values) in infer.params() {
        exe.set_param(name, values).unwrap();
    }
    exe.run(&[("x", Arg::F32(&[]))]).unwrap();
    assert_eq!(exe.output_f32("logits").unwrap(), &[] as &[f32]);

    // Training on no examples: the mean of an empty loss is NaN, as in NumPy.
    let train = mlp_classifier("empty_train", 0, &sizes, true, 1).unwrap();
    feeds.insert("labels".into(), Tensor::i32([0], &[]).unwrap());
    let evaluation = evaluate(train.graph(), &feeds, Precision::F32).unwrap();
    assert!(evaluation.outputs["loss"].data()[0].is_nan());
    let mut step = compile_train_step(&train, "loss", Optimizer::sgd(0.1).unwrap()).unwrap();
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
    assert!(
        exe.stats().buffer_bytes >= 4096 * 131_072 * 4,
        "{:?}",
        exe.stats()
    );
    // ...but compiling it holds no buffer memory: it has no parameters.
    assert_eq!(exe.allocated_bytes(), 0);
    let err = exe.output_f32("y").unwrap_err();
    assert_eq!(
        err.to_string(),
        "output \"y\" has no value before the first run"
    );
}

#[test]
fn parameters_are_allocated_at_compile_time_and_the_rest_at_the_first_run() {
    let text = "graph g {
  %0 = input \"x\" : f32[1000]
  %1 = param \"w\" : f32[1000]
  %2 = mul %0, %1 : f32[1000]
  %3 = exp %2 : f32[1000]
  %4 = reduce_sum %3 axes=[0] : f32[1]
  output \"y\" = %4
  output \"w\" = %1
}
";
    let graph = kiln::ir::text::parse(text).unwrap();
    let mut exe = compile(&graph).unwrap();
    // Only the parameter: 1000 f32. It is state, readable (zeros) before any run.
    assert_eq!(exe.allocated_bytes(), 4000);
    assert_eq!(exe.output_f32("w").unwrap(), &[0.0; 1000]);
    exe.set_param("w", &[1.0; 1000]).unwrap();
    assert_eq!(exe.allocated_bytes(), 4000);
    exe.run(&[("x", Arg::F32(&[0.0; 1000]))]).unwrap();
    // The parameter plus one arena for the input and the intermediates, which is
    // smaller than their sum: x and mul's result die at exp, whose result takes
    // the place of one of them.
    let stats = exe.stats().clone();
    assert_eq!(exe.allocated_bytes(), stats.param_bytes + stats.arena_bytes);
    assert_eq!(stats.param_bytes, 4000);
    assert!(stats.arena_bytes > 0, "{stats:?}");
    assert!(stats.arena_bytes < stats.arena_unplanned_bytes, "{stats:?}");
    assert_eq!(exe.output_f32("y").unwrap(), &[1000.0]);
    // Later runs reuse the arena.
    exe.run(&[("x", Arg::F32(&[0.0; 1000]))]).unwrap();
    assert_eq!(exe.allocated_bytes(), stats.param_bytes + stats.arena_bytes);
}

#[test]
fn a_train_step_updates_in_place_and_its_arena_reuses_memory() {
    let model = mlp_classifier("digits", 32, &[64, 64, 10], true, 7).unwrap();
    let mut step = compile_train_step(&model, "loss", Optimizer::sgd(0.1).unwrap()).unwrap();
    let stats = step.stats().clone();
    // No kernel after an SGD update `w - lr * g` reads the old `w` (its gradient
    // uses are earlier), so all four parameters are written in place.
    assert_eq!(stats.in_place_updates, 4, "{stats:?}");
    // Forward activations die as the backward pass consumes them: the arena holds
    // about a third of what the buffers would take one by one.
    assert!(
        stats.arena_bytes * 2 < stats.arena_unplanned_bytes,
        "{stats:?}"
    );
    assert!(
        step.report
            .to_string()
            .contains(&format!("arena {} bytes", stats.arena_bytes)),
        "{}",
        step.report
    );
    let x = vec![0.5f32; 32 * 64];
    let labels: Vec<i32> = (0..32).map(|i| i % 10).collect();
    step.run(&[("x", Arg::F32(&x)), ("labels", Arg::I32(&labels))])
        .unwrap();
    assert_eq!(
        step.allocated_bytes(),
        stats.param_bytes + stats.arena_bytes
    );
}

/// Every op on zero-extent operands, including results that are not empty (a matmul
/// contracting over k = 0, reductions over an empty axis).
const EMPTY_OPS: &str = "graph empty_ops {
  %0 = input \"a\" : f32[2,0]
  %1 = input \"b\" : f32[0,3]
  %2 = input \"labels\" : i32[0]
  %3 = input \"row\" : f32[1,3]
  %4 = matmul %0, %1 : f32[2,3]
  %5 = matmul.tt %1, %0 : f32[3,2]
  %6 = reduce_sum %0 axes=[1] : f32[2,1]
  %7 = reduce_max %0 axes=[1] : f32[2,1]
  %8 = reduce_mean %0 axes=[1] : f32[2,1]
  %9 = one_hot %2 depth=4 : f32[0,4]
  %10 = transpose %1 perm=[1,0] : f32[3,0]
  %11 = reshape %1 : f32[3,0]
  %12 = add %10, %11 : f32[3,0]
  %13 = broadcast %3 : f32[0,3]
  %14 = exp %13 : f32[0,3]
  %15 = cmp.lt %1, %14 : bool[0,3]
  %16 = select %15, %1, %14 : f32[0,3]
  %17 = cast %16 : i32[0,3]
  %18 = reduce_sum %17 axes=[0] : i32[1,3]
  output \"mm\" = %4
  output \"mm_tt\" = %5
  output \"sum\" = %6
  output \"max\" = %7
  output \"mean\" = %8
  output \"one_hot\" = %9
  output \"add\" = %12
  output \"select\" = %16
  output \"int_sum\" = %18
}
";

#[test]
fn every_op_on_zero_extents_evaluates_and_compiles() {
    let graph = kiln::ir::text::parse(EMPTY_OPS).unwrap();
    let mut feeds = Feeds::new();
    feeds.insert("a".into(), Tensor::f32([2, 0], &[]).unwrap());
    feeds.insert("b".into(), Tensor::f32([0, 3], &[]).unwrap());
    feeds.insert("labels".into(), Tensor::i32([0], &[]).unwrap());
    feeds.insert("row".into(), Tensor::f32([1, 3], &[1.0, 2.0, 3.0]).unwrap());
    let expected = evaluate(&graph, &feeds, Precision::F32).unwrap().outputs;
    assert_eq!(expected["mm"].data(), &[0.0; 6]);
    assert_eq!(expected["sum"].data(), &[0.0; 2]);
    assert_eq!(expected["max"].data(), &[f64::NEG_INFINITY; 2]);
    assert!(expected["mean"].data().iter().all(|v| v.is_nan()));
    assert_eq!(expected["int_sum"].data(), &[0.0; 3]);
    assert!(expected["one_hot"].is_empty() && expected["add"].is_empty());
    let mut exe = compile(&graph).unwrap();
    let (outputs, _) = exe.run_feeds(&feeds).unwrap();
    for (name, value) in &expected {
        let actual = &outputs[name];
        assert_eq!(
            kiln::ir::max_relative_error(actual, value),
            Some(0.0),
            "{name}: {actual} vs {value}"
        );
    }
}
