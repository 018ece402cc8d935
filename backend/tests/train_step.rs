//! A small MLP training step (matmul, broadcast bias add, relu, log-sum-exp
//! cross-entropy with one_hot, hand-written backward, SGD updates) run twice through
//! the JIT, with the parameters carried over by the executable, against the
//! interpreter; and the aliasing cases of parameter updates.

mod common;

use common::{assert_close, assert_run_matches, compile_graph, random_feeds};
use kiln_backend::Arg;
use kiln_ir::{evaluate, CmpOp, Feeds, Graph, NodeId, Precision, Tensor, TensorType};

const BATCH: usize = 8;
const FEATURES: usize = 13;
const HIDDEN: usize = 17;
const CLASSES: usize = 5;

fn mlp_train_step() -> Graph {
    let mut g = Graph::new("mlp_step");
    let x = g.input("x", TensorType::f32([BATCH, FEATURES])).unwrap();
    let labels = g.input("labels", TensorType::i32([BATCH])).unwrap();
    let w1 = g
        .parameter("w1", TensorType::f32([FEATURES, HIDDEN]))
        .unwrap();
    let b1 = g.parameter("b1", TensorType::f32([1, HIDDEN])).unwrap();
    let w2 = g
        .parameter("w2", TensorType::f32([HIDDEN, CLASSES]))
        .unwrap();
    let b2 = g.parameter("b2", TensorType::f32([1, CLASSES])).unwrap();

    let xw = g.matmul(x, w1).unwrap();
    let bias1 = g.broadcast(b1, vec![BATCH, HIDDEN]).unwrap();
    let pre = g.add_(xw, bias1).unwrap();
    let h = g.relu(pre).unwrap();
    let hw = g.matmul(h, w2).unwrap();
    let bias2 = g.broadcast(b2, vec![BATCH, CLASSES]).unwrap();
    let logits = g.add_(hw, bias2).unwrap();

    // Log-sum-exp cross-entropy, shifted by the row maximum.
    let row_max = g.reduce_max(logits, &[1]).unwrap();
    let row_max_wide = g.broadcast(row_max, vec![BATCH, CLASSES]).unwrap();
    let shifted = g.sub(logits, row_max_wide).unwrap();
    let e = g.exp(shifted).unwrap();
    let sum = g.reduce_sum(e, &[1]).unwrap();
    let log_sum = g.log(sum).unwrap();
    let lse = g.add_(log_sum, row_max).unwrap();
    let hot = g.one_hot(labels, CLASSES).unwrap();
    let hot_logits = g.mul(hot, logits).unwrap();
    let picked = g.reduce_sum(hot_logits, &[1]).unwrap();
    let per_example = g.sub(lse, picked).unwrap();
    let loss = g.reduce_mean(per_example, &[0, 1]).unwrap();

    // Backward: d loss / d logits = (softmax - onehot) / batch.
    let sum_wide = g.broadcast(sum, vec![BATCH, CLASSES]).unwrap();
    let softmax = g.div(e, sum_wide).unwrap();
    let diff = g.sub(softmax, hot).unwrap();
    let scale = g
        .constant(1.0 / BATCH as f64, TensorType::f32([BATCH, CLASSES]))
        .unwrap();
    let d_logits = g.mul(diff, scale).unwrap();
    let d_w2 = g.matmul_t(h, d_logits, true, false).unwrap();
    let d_b2 = g.reduce_sum(d_logits, &[0]).unwrap();
    let d_h = g.matmul_t(d_logits, w2, false, true).unwrap();
    let zero = g.constant_like(0.0, pre).unwrap();
    let active = g.compare(CmpOp::Gt, pre, zero).unwrap();
    let d_pre = g.select(active, d_h, zero).unwrap();
    let d_w1 = g.matmul_t(x, d_pre, true, false).unwrap();
    let d_b1 = g.reduce_sum(d_pre, &[0]).unwrap();

    let sgd = |g: &mut Graph, param: NodeId, grad: NodeId| {
        let lr = g.constant_like(0.5, grad).unwrap();
        let step = g.mul(lr, grad).unwrap();
        let next = g.sub(param, step).unwrap();
        g.set_update(param, next).unwrap();
    };
    sgd(&mut g, w1, d_w1);
    sgd(&mut g, b1, d_b1);
    sgd(&mut g, w2, d_w2);
    sgd(&mut g, b2, d_b2);
    g.set_output("loss", loss).unwrap();
    g.set_output("logits", logits).unwrap();
    g
}

fn labels(seed: usize) -> Tensor {
    let data: Vec<i32> = (0..BATCH)
        .map(|i| ((i * 3 + seed) % CLASSES) as i32)
        .collect();
    Tensor::i32([BATCH], &data).unwrap()
}

#[test]
fn mlp_train_step_matches_the_interpreter_over_two_runs() {
    let g = mlp_train_step();
    let mut exe = compile_graph(&g);
    let mut feeds = random_feeds(&g, 11);
    feeds.insert("labels".to_string(), labels(0));

    // Run 1: parameters and inputs from the feeds.
    assert_run_matches(&g, &mut exe, &feeds);
    let first = evaluate(&g, &feeds, Precision::F32).unwrap();

    // Run 2: the executable keeps its updated parameters; only inputs are passed.
    let x2 = random_feeds(&g, 12)["x"].clone();
    let labels2 = labels(1);
    exe.run(&[
        ("x", Arg::F32(&x2.to_f32())),
        ("labels", Arg::I32(&labels2.to_i32())),
    ])
    .unwrap();
    let mut second_feeds: Feeds = first.updates.clone();
    second_feeds.insert("x".to_string(), x2);
    second_feeds.insert("labels".to_string(), labels2);
    let second = evaluate(&g, &second_feeds, Precision::F32).unwrap();
    for (name, expected) in &second.outputs {
        assert_close(
            &format!("run 2 output {name}"),
            &exe.output(name).unwrap(),
            expected,
        );
    }
    for (name, expected) in &second.updates {
        let actual = exe.param_tensor(name).unwrap();
        assert_close(&format!("run 2 parameter {name}"), &actual, expected);
    }
}

#[test]
fn repeated_steps_on_one_batch_lower_the_loss() {
    let g = mlp_train_step();
    let mut exe = compile_graph(&g);
    let feeds = random_feeds(&g, 21);
    for (name, value) in &feeds {
        if exe.params().iter().any(|(param, _)| param == name) {
            exe.set_param(name, &value.to_f32()).unwrap();
        }
    }
    let x = feeds["x"].to_f32();
    let labels = labels(2).to_i32();
    let mut losses = Vec::new();
    for _ in 0..5 {
        exe.run(&[("x", Arg::F32(&x)), ("labels", Arg::I32(&labels))])
            .unwrap();
        losses.push(exe.output_f32("loss").unwrap()[0]);
    }
    assert!(
        losses.windows(2).all(|pair| pair[1] < pair[0]),
        "losses {losses:?}"
    );
}

#[test]
fn updates_that_swap_copy_or_show_parameters_apply_after_the_run() {
    let mut g = Graph::new("aliasing");
    let ty = TensorType::f32([5]);
    let p = g.parameter("p", ty.clone()).unwrap();
    let q = g.parameter("q", ty.clone()).unwrap();
    let r = g.parameter("r", ty.clone()).unwrap();
    let s = g.parameter("s", ty.clone()).unwrap();
    let fixed = g.parameter("fixed", ty.clone()).unwrap();
    let x = g.input("x", ty.clone()).unwrap();
    // p and q trade values; r takes the input; s takes a value that is also an output;
    // fixed keeps its value.
    g.set_update(p, q).unwrap();
    g.set_update(q, p).unwrap();
    g.set_update(r, x).unwrap();
    let shown = g.add_(s, x).unwrap();
    g.set_update(s, shown).unwrap();
    g.set_update(fixed, fixed).unwrap();
    g.set_output("shown", shown).unwrap();
    g.set_output("p_before", p).unwrap();
    g.set_output("fixed", fixed).unwrap();
    let mut exe = compile_graph(&g);
    let mut feeds = random_feeds(&g, 31);
    assert_run_matches(&g, &mut exe, &feeds);
    // Later runs pass only the input: the executable carries its parameters.
    for run in 0..3 {
        let next = evaluate(&g, &feeds, Precision::F32).unwrap();
        feeds.extend(next.updates);
        let x = random_feeds(&g, 40 + run)["x"].clone();
        feeds.insert("x".to_string(), x.clone());
        let expected = evaluate(&g, &feeds, Precision::F32).unwrap();
        let (outputs, updates) = exe
            .run_feeds(&[("x".to_string(), x)].into_iter().collect())
            .unwrap();
        for (name, value) in &expected.outputs {
            assert_close(&format!("run {run} output {name}"), &outputs[name], value);
        }
        for (name, value) in &expected.updates {
            assert_close(&format!("run {run} update {name}"), &updates[name], value);
        }
    }
}

/// `p <- p - x` after `y = exp(p)`; with `late_read`, an output `p * x` is computed
/// after the new value, so the new value must not overwrite `p` while it runs.
fn update_with_optional_late_read(late_read: bool) -> Graph {
    let mut g = Graph::new("in_place");
    let ty = TensorType::f32([2, 9]);
    let p = g.parameter("p", ty.clone()).unwrap();
    let x = g.input("x", ty.clone()).unwrap();
    let y = g.exp(p).unwrap();
    g.set_output("y", y).unwrap();
    let new_p = g.sub(p, x).unwrap();
    g.set_update(p, new_p).unwrap();
    if late_read {
        let late = g.mul(p, x).unwrap();
        g.set_output("late", late).unwrap();
    }
    g
}

#[test]
fn an_update_is_written_in_place_unless_a_later_kernel_reads_the_old_parameter() {
    for (late_read, in_place) in [(false, 1), (true, 0)] {
        let g = update_with_optional_late_read(late_read);
        let mut exe = compile_graph(&g);
        let mut feeds = random_feeds(&g, 5);
        // Several runs, so that each starts from the parameter the last one left.
        for run in 0..3 {
            let expected = evaluate(&g, &feeds, Precision::F32).unwrap();
            let (outputs, updates) = exe.run_feeds(&feeds).unwrap();
            for (name, value) in expected.outputs.iter().chain(&expected.updates) {
                let actual = outputs.get(name).or(updates.get(name)).unwrap();
                assert_eq!(actual.data(), value.data(), "run {run} {name}");
            }
            feeds.extend(expected.updates);
            feeds.insert("x".to_string(), random_feeds(&g, 6 + run)["x"].clone());
        }
        assert_eq!(
            exe.stats().in_place_updates,
            in_place,
            "late read {late_read}"
        );
    }
}
