//! LayerNorm, MultiheadAttention and LSTM (`kiln_frontend::sequence`): values against
//! direct f64 implementations of PyTorch's definitions, gradients against finite
//! differences, and compiled code against the interpreter bit for bit.

use kiln::frontend::recurrent::Recurrent;
use kiln::frontend::sequence::{LayerNorm, MultiheadAttention};
use kiln::frontend::{Model, ModelBuilder};
use kiln::ir::{evaluate, Feeds, Precision, Rng, Tensor, TensorType};
use kiln::passes::autodiff::{self, grad_name, AutodiffOptions};

#[path = "support/compiled.rs"]
mod compiled;

fn random(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let count: usize = shape.iter().product();
    let data = (0..count)
        .map(|_| f64::from(rng.uniform(-1.0, 1.0) as f32))
        .collect();
    Tensor::new(TensorType::f32(shape), data).unwrap()
}

/// The model's feeds: `x` random, parameters as initialised but perturbed (so that
/// biases and norm scales are not their trivial starting values).
fn feeds(model: &Model, x_shape: &[usize], seed: u64) -> Feeds {
    let mut rng = Rng::new(seed);
    let mut feeds = Feeds::new();
    feeds.insert("x".into(), random(&mut rng, x_shape));
    for (name, values) in model.params() {
        let shape = model
            .graph()
            .ty(model.graph().param_by_name(name).unwrap())
            .shape
            .clone();
        let data = values
            .iter()
            .map(|&v| f64::from(v + 0.3 * rng.uniform(-1.0, 1.0) as f32))
            .collect();
        feeds.insert(
            name.clone(),
            Tensor::new(TensorType::f32(shape), data).unwrap(),
        );
    }
    feeds
}

fn model_with(
    x_shape: &[usize],
    layer: impl FnOnce(&mut ModelBuilder, kiln::ir::NodeId) -> kiln::ir::NodeId,
) -> Model {
    let mut builder = ModelBuilder::new("layer", 3);
    let x = builder.input("x", TensorType::f32(x_shape)).unwrap();
    let y = layer(&mut builder, x);
    builder.output("y", y).unwrap();
    builder.finish().unwrap()
}

fn matvec(w: &[f64], rows: usize, cols: usize, x: &[f64]) -> Vec<f64> {
    (0..rows)
        .map(|r| (0..cols).map(|c| w[r * cols + c] * x[c]).sum())
        .collect()
}

#[test]
fn layer_norm_normalises_the_last_axis() {
    let model = model_with(&[3, 5], |b, x| {
        LayerNorm::new(b, "norm", 5, 1e-5)
            .unwrap()
            .forward(b, x)
            .unwrap()
    });
    let feeds = feeds(&model, &[3, 5], 1);
    let y = evaluate(model.graph(), &feeds, Precision::F64)
        .unwrap()
        .outputs["y"]
        .clone();
    let (x, w, b) = (
        feeds["x"].data(),
        feeds["norm.weight"].data(),
        feeds["norm.bias"].data(),
    );
    for row in 0..3 {
        let values = &x[row * 5..row * 5 + 5];
        let mean = values.iter().sum::<f64>() / 5.0;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 5.0;
        for i in 0..5 {
            let want = (values[i] - mean) / (var + 1e-5).sqrt() * w[i] + b[i];
            assert!((y.data()[row * 5 + i] - want).abs() < 1e-12);
        }
    }
}

#[test]
fn attention_is_softmax_of_scaled_products_per_head() {
    let (batch, seq, d, heads) = (2, 3, 4, 2);
    let model = model_with(&[batch, seq, d], |b, x| {
        MultiheadAttention::new(b, "attn", d, heads)
            .unwrap()
            .forward(b, x)
            .unwrap()
    });
    let feeds = feeds(&model, &[batch, seq, d], 2);
    let y = evaluate(model.graph(), &feeds, Precision::F64)
        .unwrap()
        .outputs["y"]
        .clone();
    let x = feeds["x"].data();
    let (w_in, b_in) = (
        feeds["attn.in_proj_weight"].data(),
        feeds["attn.in_proj_bias"].data(),
    );
    let (w_out, b_out) = (
        feeds["attn.out_proj.weight"].data(),
        feeds["attn.out_proj.bias"].data(),
    );
    let dh = d / heads;
    for n in 0..batch {
        // q, k, v of every position: in_proj · x + bias.
        let proj: Vec<Vec<f64>> = (0..seq)
            .map(|s| {
                let row = &x[(n * seq + s) * d..(n * seq + s + 1) * d];
                let mut out = matvec(w_in, 3 * d, d, row);
                out.iter_mut().zip(b_in).for_each(|(o, b)| *o += b);
                out
            })
            .collect();
        for s in 0..seq {
            let mut merged = vec![0.0; d];
            for h in 0..heads {
                let q = &proj[s][h * dh..(h + 1) * dh];
                let scores: Vec<f64> = (0..seq)
                    .map(|t| {
                        let k = &proj[t][d + h * dh..d + (h + 1) * dh];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (dh as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = scores.iter().map(|v| (v - max).exp()).sum();
                for t in 0..seq {
                    let weight = (scores[t] - max).exp() / total;
                    let v = &proj[t][2 * d + h * dh..2 * d + (h + 1) * dh];
                    for i in 0..dh {
                        merged[h * dh + i] += weight * v[i];
                    }
                }
            }
            let out = matvec(w_out, d, d, &merged);
            for i in 0..d {
                let want = out[i] + b_out[i];
                let got = y.data()[(n * seq + s) * d + i];
                assert!((got - want).abs() < 1e-12, "[{n},{s},{i}] {got} vs {want}");
            }
        }
    }
}

#[test]
fn lstm_follows_the_pytorch_recurrence() {
    let (steps, batch, input, hidden) = (4, 2, 3, 5);
    let model = model_with(&[steps, batch, input], |b, x| {
        Recurrent::lstm(b, "lstm", input, hidden)
            .unwrap()
            .forward(b, x)
            .unwrap()
    });
    let names: Vec<&String> = model.params().keys().collect();
    assert_eq!(
        names,
        [
            "lstm.bias_hh_l0",
            "lstm.bias_ih_l0",
            "lstm.weight_hh_l0",
            "lstm.weight_ih_l0"
        ]
    );
    let feeds = feeds(&model, &[steps, batch, input], 3);
    let y = evaluate(model.graph(), &feeds, Precision::F64)
        .unwrap()
        .outputs["y"]
        .clone();
    assert_eq!(y.ty(), TensorType::f32([steps, batch, hidden]));
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    let (w_ih, w_hh) = (
        feeds["lstm.weight_ih_l0"].data(),
        feeds["lstm.weight_hh_l0"].data(),
    );
    let (b_ih, b_hh) = (
        feeds["lstm.bias_ih_l0"].data(),
        feeds["lstm.bias_hh_l0"].data(),
    );
    for n in 0..batch {
        let (mut h, mut c) = (vec![0.0; hidden], vec![0.0; hidden]);
        for t in 0..steps {
            let x_t = &feeds["x"].data()[(t * batch + n) * input..(t * batch + n + 1) * input];
            let a = matvec(w_ih, 4 * hidden, input, x_t);
            let r = matvec(w_hh, 4 * hidden, hidden, &h);
            let gate: Vec<f64> = (0..4 * hidden)
                .map(|i| a[i] + b_ih[i] + r[i] + b_hh[i])
                .collect();
            for j in 0..hidden {
                let (i, f) = (sigmoid(gate[j]), sigmoid(gate[hidden + j]));
                let (g, o) = (gate[2 * hidden + j].tanh(), sigmoid(gate[3 * hidden + j]));
                c[j] = f * c[j] + i * g;
                h[j] = o * c[j].tanh();
                let got = y.data()[(t * batch + n) * hidden + j];
                assert!(
                    (got - h[j]).abs() < 1e-12,
                    "t {t} n {n} j {j}: {got} vs {}",
                    h[j]
                );
            }
        }
    }
}

/// Checks d(Σ y·w)/d(every leaf) against central differences in f64, and the
/// compiled forward against the interpreter in f32.
fn check_gradients_and_compiled(model: &Model, x_shape: &[usize], seed: u64) {
    let mut graph = model.graph().clone();
    let mut feeds = feeds(model, x_shape, seed);
    let y = graph.output_by_name("y").unwrap();
    let shape = graph.ty(y).shape.clone();
    let weights = graph
        .input("weights", TensorType::f32(shape.clone()))
        .unwrap();
    let weighted = graph.mul(y, weights).unwrap();
    let axes: Vec<usize> = (0..shape.len()).collect();
    let sum = graph.reduce_sum(weighted, &axes).unwrap();
    let loss = graph.reshape(sum, Vec::new()).unwrap();
    graph.set_output("loss", loss).unwrap();
    feeds.insert("weights".into(), random(&mut Rng::new(seed + 9), &shape));
    let options = AutodiffOptions {
        loss: "loss".to_string(),
        inputs: vec!["x".to_string()],
    };
    let backward = autodiff::run(&graph, &options).unwrap();
    let gradients = evaluate(&backward, &feeds, Precision::F64).unwrap();
    let loss_at =
        |feeds: &Feeds| evaluate(&graph, feeds, Precision::F64).unwrap().outputs["loss"].data()[0];
    let leaves: Vec<String> = model
        .params()
        .keys()
        .cloned()
        .chain(["x".to_string()])
        .collect();
    for leaf in leaves {
        let gradient = gradients.outputs[&grad_name(&leaf)].data().to_vec();
        // Every fourth element keeps the test fast; each leaf is covered.
        for (index, &analytic) in gradient.iter().enumerate().step_by(4) {
            let nudged = |delta: f64| {
                let mut moved = feeds.clone();
                moved
                    .get_mut(&leaf)
                    .unwrap()
                    .edit(|d| d[index] += delta)
                    .unwrap();
                loss_at(&moved)
            };
            let numeric = (nudged(1e-6) - nudged(-1e-6)) / 2e-6;
            assert!(
                (analytic - numeric).abs() < 1e-6 * analytic.abs().max(1.0),
                "d loss / d {leaf}[{index}]: {analytic} vs {numeric}"
            );
        }
    }
    compiled::assert_compiled_matches(&graph, &feeds);
}

#[test]
fn sequence_layer_gradients_and_compiled_code() {
    let norm = model_with(&[2, 3, 4], |b, x| {
        LayerNorm::new(b, "norm", 4, 1e-5)
            .unwrap()
            .forward(b, x)
            .unwrap()
    });
    check_gradients_and_compiled(&norm, &[2, 3, 4], 1);
    let attention = model_with(&[2, 3, 4], |b, x| {
        MultiheadAttention::new(b, "attn", 4, 2)
            .unwrap()
            .forward(b, x)
            .unwrap()
    });
    check_gradients_and_compiled(&attention, &[2, 3, 4], 2);
    let lstm = model_with(&[3, 2, 3], |b, x| {
        Recurrent::lstm(b, "lstm", 3, 4)
            .unwrap()
            .forward(b, x)
            .unwrap()
    });
    check_gradients_and_compiled(&lstm, &[3, 2, 3], 3);
}

#[test]
fn embedding_rows_and_their_scatter_added_gradient() {
    use kiln::frontend::sequence::Embedding;
    let mut builder = ModelBuilder::new("embed", 4);
    let ids = builder.input("ids", TensorType::i32([2, 3])).unwrap();
    let y = Embedding::new(&mut builder, "embed", 5, 2)
        .unwrap()
        .forward(&mut builder, ids)
        .unwrap();
    assert_eq!(builder.ty(y).unwrap(), &TensorType::f32([2, 3, 2]));
    let graph = builder.graph();
    let sum = graph.reduce_sum(y, &[0, 1, 2]).unwrap();
    let loss = graph.reshape(sum, Vec::new()).unwrap();
    builder.output("loss", loss).unwrap();
    builder.output("y", y).unwrap();
    let model = builder.finish().unwrap();
    let table = model.params()["embed.weight"].clone();
    let mut feeds = Feeds::new();
    // Index 1 twice, 4, 0, 3 and one out of range (a row of zeros).
    let ids = Tensor::i32([2, 3], &[1, 4, 1, 0, 3, 7]).unwrap();
    feeds.insert("ids".into(), ids);
    feeds.insert("embed.weight".into(), Tensor::f32([5, 2], &table).unwrap());
    let backward = autodiff::run(model.graph(), &AutodiffOptions::loss("loss")).unwrap();
    let result = evaluate(&backward, &feeds, Precision::F64).unwrap();
    let row = |i: usize| [f64::from(table[2 * i]), f64::from(table[2 * i + 1])];
    let expected: Vec<f64> = [row(1), row(4), row(1), row(0), row(3), [0.0, 0.0]].concat();
    assert_eq!(result.outputs["y"].data(), expected);
    // d loss / d weight counts how often each row was looked up.
    let counts = [1.0, 2.0, 0.0, 1.0, 1.0];
    let expected_gradient: Vec<f64> = counts.iter().flat_map(|&c| [c, c]).collect();
    assert_eq!(
        result.outputs[&grad_name("embed.weight")].data(),
        expected_gradient
    );
}

/// PyTorch's GRU step on one example: `r`, `z` from both maps, `n = tanh(x_n +
/// r·h_n)`, `h' = (1 − z)·n + z·h`.
fn gru_step(feeds: &Feeds, prefix: &str, hidden: usize, x: &[f64], h: &[f64]) -> Vec<f64> {
    let get = |name: &str| feeds[&format!("{prefix}{name}")].data();
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    let a = matvec(get("weight_ih"), 3 * hidden, x.len(), x);
    let r = matvec(get("weight_hh"), 3 * hidden, hidden, h);
    let (b_ih, b_hh) = (get("bias_ih"), get("bias_hh"));
    (0..hidden)
        .map(|j| {
            let reset = sigmoid(a[j] + b_ih[j] + r[j] + b_hh[j]);
            let update =
                sigmoid(a[hidden + j] + b_ih[hidden + j] + r[hidden + j] + b_hh[hidden + j]);
            let k = 2 * hidden + j;
            let new = (a[k] + b_ih[k] + reset * (r[k] + b_hh[k])).tanh();
            (1.0 - update) * new + update * h[j]
        })
        .collect()
}

/// PyTorch's tanh RNN step on one example.
fn rnn_step(feeds: &Feeds, prefix: &str, hidden: usize, x: &[f64], h: &[f64]) -> Vec<f64> {
    let get = |name: &str| feeds[&format!("{prefix}{name}")].data();
    let a = matvec(get("weight_ih"), hidden, x.len(), x);
    let r = matvec(get("weight_hh"), hidden, hidden, h);
    let (b_ih, b_hh) = (get("bias_ih"), get("bias_hh"));
    (0..hidden)
        .map(|j| (a[j] + b_ih[j] + r[j] + b_hh[j]).tanh())
        .collect()
}

type Step = fn(&Feeds, &str, usize, &[f64], &[f64]) -> Vec<f64>;

/// A stacked (bi)directional recurrence on example `n` of `x: [T, B, input]`, as
/// PyTorch runs it: `[T][directions·hidden]`.
fn reference_recurrence(
    feeds: &Feeds,
    name: &str,
    (layers, directions, hidden): (usize, usize, usize),
    x_shape: &[usize],
    n: usize,
    step: Step,
) -> Vec<Vec<f64>> {
    let (steps, batch, input) = (x_shape[0], x_shape[1], x_shape[2]);
    let mut below: Vec<Vec<f64>> = (0..steps)
        .map(|t| feeds["x"].data()[(t * batch + n) * input..(t * batch + n + 1) * input].to_vec())
        .collect();
    for layer in 0..layers {
        let mut out = vec![Vec::new(); steps];
        for direction in 0..directions {
            let suffix = if direction == 0 { "" } else { "_reverse" };
            let prefix = format!("{name}.");
            let mut h = vec![0.0; hidden];
            let order: Vec<usize> = if direction == 0 {
                (0..steps).collect()
            } else {
                (0..steps).rev().collect()
            };
            // Parameter names end in `_l{layer}{suffix}`: look them up through a view.
            let mut view = Feeds::new();
            for kind in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] {
                let full = format!("{prefix}{kind}_l{layer}{suffix}");
                view.insert(format!("{prefix}{kind}"), feeds[&full].clone());
            }
            for t in order {
                h = step(&view, &prefix, hidden, &below[t], &h);
                out[t].extend_from_slice(&h);
            }
        }
        below = out;
    }
    below
}

#[test]
fn gru_and_stacked_bidirectional_rnns_follow_the_pytorch_recurrences() {
    use kiln::frontend::recurrent::{Cell, RecurrentOptions};
    let x_shape = [4, 2, 3];
    for (cell, layers, bidirectional, step) in [
        (Cell::Gru, 1, false, gru_step as Step),
        (Cell::RnnTanh, 2, true, rnn_step as Step),
        (Cell::Gru, 2, true, gru_step as Step),
    ] {
        let hidden = 5;
        let options = RecurrentOptions {
            layers,
            bidirectional,
            ..RecurrentOptions::new(cell, x_shape[2], hidden)
        };
        let model = model_with(&x_shape, |b, x| {
            Recurrent::new(b, "rec", options)
                .unwrap()
                .forward(b, x)
                .unwrap()
        });
        let directions = if bidirectional { 2 } else { 1 };
        assert_eq!(model.params().len(), 4 * layers * directions);
        if bidirectional {
            assert!(model.params().contains_key("rec.weight_hh_l1_reverse"));
        }
        let feeds = feeds(&model, &x_shape, 5);
        let y = evaluate(model.graph(), &feeds, Precision::F64)
            .unwrap()
            .outputs["y"]
            .clone();
        let width = directions * hidden;
        assert_eq!(y.ty(), TensorType::f32([x_shape[0], x_shape[1], width]));
        for n in 0..x_shape[1] {
            let want = reference_recurrence(
                &feeds,
                "rec",
                (layers, directions, hidden),
                &x_shape,
                n,
                step,
            );
            for (t, row) in want.iter().enumerate() {
                for (j, &w) in row.iter().enumerate() {
                    let got = y.data()[(t * x_shape[1] + n) * width + j];
                    assert!(
                        (got - w).abs() < 1e-12,
                        "{cell:?} [{t},{n},{j}]: {got} vs {w}"
                    );
                }
            }
        }
        check_gradients_and_compiled(&model, &x_shape, 6);
    }
}

/// Row `s` of example `n` of `y: [B, S, d]`.
fn row(y: &Tensor, n: usize, s: usize) -> Vec<f64> {
    let (seq, d) = (y.shape()[1], y.shape()[2]);
    y.data()[(n * seq + s) * d..(n * seq + s + 1) * d].to_vec()
}

/// Plain attention (same parameters as in `feeds`) over the first `len` positions of
/// example `n` of `x`.
fn attention_on_prefix(feeds: &Feeds, d: usize, heads: usize, n: usize, len: usize) -> Tensor {
    let model = model_with(&[1, len, d], |b, x| {
        MultiheadAttention::new(b, "attn", d, heads)
            .unwrap()
            .forward(b, x)
            .unwrap()
    });
    let mut prefix = feeds.clone();
    let x = &feeds["x"];
    let seq = x.shape()[1];
    let data = x.data()[n * seq * d..(n * seq + len) * d].to_vec();
    prefix.insert(
        "x".into(),
        Tensor::new(TensorType::f32([1, len, d]), data).unwrap(),
    );
    prefix.remove("padding");
    evaluate(model.graph(), &prefix, Precision::F64)
        .unwrap()
        .outputs["y"]
        .clone()
}

#[test]
fn causal_and_key_padding_masks_hide_what_they_mask() {
    let (batch, seq, d, heads) = (2, 4, 4, 2);
    let mut builder = ModelBuilder::new("layer", 3);
    let x = builder
        .input("x", TensorType::f32([batch, seq, d]))
        .unwrap();
    let padding = builder
        .input("padding", TensorType::i32([batch, seq]))
        .unwrap();
    let attention = MultiheadAttention::new(&mut builder, "attn", d, heads).unwrap();
    let causal = attention.clone().causal();
    let y = causal.forward(&mut builder, x).unwrap();
    let padded = attention
        .forward_masked(&mut builder, x, Some(padding))
        .unwrap();
    builder.output("y", y).unwrap();
    builder.output("padded", padded).unwrap();
    let model = builder.finish().unwrap();
    let mut feeds = feeds(&model, &[batch, seq, d], 8);
    // Example 0 pads its last two positions, example 1 none.
    let mask = Tensor::i32([batch, seq], &[0, 0, 1, 1, 0, 0, 0, 0]).unwrap();
    feeds.insert("padding".into(), mask);
    let out = evaluate(model.graph(), &feeds, Precision::F64).unwrap();
    let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-12);
    for n in 0..batch {
        // Causal: position s sees exactly the prefix 0..=s.
        for s in 0..seq {
            let want = attention_on_prefix(&feeds, d, heads, n, s + 1);
            assert!(
                close(&row(&out.outputs["y"], n, s), &row(&want, 0, s)),
                "causal [{n},{s}]"
            );
        }
        // Key padding: every query sees the unpadded prefix only.
        let len = if n == 0 { 2 } else { seq };
        let want = attention_on_prefix(&feeds, d, heads, n, len);
        for s in 0..len {
            assert!(
                close(&row(&out.outputs["padded"], n, s), &row(&want, 0, s)),
                "padded [{n},{s}]"
            );
        }
    }
    compiled::assert_compiled_matches(model.graph(), &feeds);
    let causal_only = model_with(&[batch, seq, d], |b, x| {
        MultiheadAttention::new(b, "attn", d, heads)
            .unwrap()
            .causal()
            .forward(b, x)
            .unwrap()
    });
    check_gradients_and_compiled(&causal_only, &[batch, seq, d], 9);
}
