//! Every optimizer rule and modifier against a plain f64 reference of its update,
//! written here from the formulas (PyTorch's `torch.optim` forms), not by calling the
//! pass: a JIT-compiled train step of a two-parameter model runs a few steps, and its
//! parameters and optimizer state must match the reference, read back by their names.
//! The reference interpreter agrees with the JIT on each rule with every modifier,
//! and Adam trains the digits MLP at least as well as SGD.

use kiln::compile::{compile_train_step, set_params, Executable};
use kiln::frontend::models::mlp_classifier;
use kiln::frontend::Model;
use kiln::ir::{evaluate, Feeds, Graph, Precision, Tensor, TensorType};
use kiln::passes::optimizer::StateInit;
use kiln::passes::pipeline::{self, PipelineOptions, Step};
use kiln::{compile, metrics, Arg, Averaging, Dataset, Optimizer, Rule, Trainer, TrainerConfig};
use std::collections::BTreeMap;
use std::path::Path;

const STEPS: usize = 4;

/// Every compiled value must be within `TOLERANCE · max(1, |reference|)`: a few f32
/// roundings (2^-23 ≈ 1.2e-7 each) per step over `STEPS` steps, with margin.
const TOLERANCE: f64 = 2e-5;

/// `loss = ½·Σ(w − x)² + Σ v·y`, so `grad.w = w − x` (it depends on the step's
/// weights, so momentum and state feed back) and `grad.v = y`.
fn model() -> Model {
    let mut graph = Graph::new("quadratic");
    let x = graph.input("x", TensorType::f32([2, 3])).unwrap();
    let y = graph.input("y", TensorType::f32([3])).unwrap();
    let w = graph.parameter("w", TensorType::f32([2, 3])).unwrap();
    let v = graph.parameter("v", TensorType::f32([3])).unwrap();
    let diff = graph.sub(w, x).unwrap();
    let squares = graph.mul(diff, diff).unwrap();
    let sum = graph.reduce_sum(squares, &[0, 1]).unwrap();
    let sum = graph.reshape(sum, Vec::<usize>::new()).unwrap();
    let half = graph.constant_like(0.5, sum).unwrap();
    let quadratic = graph.mul(half, sum).unwrap();
    let products = graph.mul(v, y).unwrap();
    let linear = graph.reduce_sum(products, &[0]).unwrap();
    let linear = graph.reshape(linear, Vec::<usize>::new()).unwrap();
    let loss = graph.add_(quadratic, linear).unwrap();
    graph.set_output("loss", loss).unwrap();
    let params = BTreeMap::from([
        ("w".to_string(), vec![0.5, -1.25, 2.0, 0.75, -0.3, 1.5]),
        ("v".to_string(), vec![1.0, -2.0, 0.25]),
    ]);
    Model::new(graph, params).unwrap()
}

/// The inputs of step `k`: values away from 0, so no gradient sits at sign's jump.
fn inputs(k: usize) -> (Vec<f64>, Vec<f64>) {
    let value = |i: usize| {
        let phase = (k * 7 + i * 3) as f64;
        let magnitude = 0.4 + 0.5 * (phase * 0.7).sin().abs();
        if (k + i).is_multiple_of(3) {
            -magnitude
        } else {
            magnitude
        }
    };
    ((0..6).map(value).collect(), (6..9).map(value).collect())
}

/// The reference: parameters and state in f64, by the names kiln gives them.
struct Reference {
    optimizer: Optimizer,
    values: BTreeMap<String, Vec<f64>>,
    step: usize,
    /// Whether clipping or the projection changed anything (so the test checks them).
    clipped: bool,
    projected: bool,
}

impl Reference {
    fn new(optimizer: Optimizer, model: &Model) -> Reference {
        let values = model
            .params()
            .iter()
            .map(|(name, values)| (name.clone(), values.iter().map(|&v| f64::from(v)).collect()))
            .collect();
        Reference {
            optimizer,
            values,
            step: 0,
            clipped: false,
            projected: false,
        }
    }

    /// The state buffer `name`, zeros when new (the initial value of every buffer
    /// except averages and AdaGrad's accumulators).
    fn buffer(&mut self, name: String, len: usize) -> &mut Vec<f64> {
        self.buffer_from(name, len, 0.0)
    }

    /// The state buffer `name`, every element `initial` when new.
    fn buffer_from(&mut self, name: String, len: usize, initial: f64) -> &mut Vec<f64> {
        self.values
            .entry(name)
            .or_insert_with(|| vec![initial; len])
    }

    fn step(&mut self, x: &[f64], y: &[f64]) {
        let opt = self.optimizer;
        self.step += 1;
        let t = self.step as i32;
        let mut grads: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        grads.insert(
            "w",
            self.values["w"].iter().zip(x).map(|(w, x)| w - x).collect(),
        );
        grads.insert("v", y.to_vec());
        if let Some(max_norm) = opt.max_grad_norm {
            let norm = grads.values().flatten().map(|g| g * g).sum::<f64>().sqrt();
            let factor = (max_norm / (norm + 1e-6)).min(1.0);
            self.clipped |= factor < 1.0;
            for g in grads.values_mut().flatten() {
                *g *= factor;
            }
        }
        let lr = opt.rule.learning_rate();
        for (name, mut g) in grads {
            let n = g.len();
            let mut p = self.values[name].clone();
            if opt.weight_decay != 0.0 {
                for i in 0..n {
                    if opt.decoupled_weight_decay {
                        p[i] *= 1.0 - lr * opt.weight_decay;
                    } else {
                        g[i] += opt.weight_decay * p[i];
                    }
                }
            }
            match opt.rule {
                Rule::Sgd {
                    momentum,
                    dampening,
                    nesterov,
                    ..
                } => {
                    let mut direction = g.clone();
                    if momentum > 0.0 {
                        let buf = self.buffer(format!("{name}.sgd.momentum_buffer"), n);
                        // PyTorch: the buffer starts as the first gradient, undamped.
                        let fresh = if t == 1 { 1.0 } else { 1.0 - dampening };
                        for i in 0..n {
                            buf[i] = momentum * buf[i] + fresh * g[i];
                            direction[i] = if nesterov {
                                g[i] + momentum * buf[i]
                            } else {
                                buf[i]
                            };
                        }
                    }
                    for i in 0..n {
                        p[i] -= lr * direction[i];
                    }
                }
                Rule::Adagrad {
                    lr_decay,
                    initial_accumulator_value,
                    eps,
                    ..
                } => {
                    let rate = lr / (1.0 + f64::from(t - 1) * lr_decay);
                    let sum = self.buffer_from(
                        format!("{name}.adagrad.sum"),
                        n,
                        initial_accumulator_value,
                    );
                    for i in 0..n {
                        sum[i] += g[i] * g[i];
                        p[i] -= rate * g[i] / (sum[i].sqrt() + eps);
                    }
                }
                Rule::RmsProp {
                    alpha,
                    eps,
                    momentum,
                    centered,
                    ..
                } => {
                    let avg = self.buffer(format!("{name}.rmsprop.square_avg"), n);
                    let mut direction = vec![0.0; n];
                    for i in 0..n {
                        avg[i] = alpha * avg[i] + (1.0 - alpha) * g[i] * g[i];
                        direction[i] = avg[i];
                    }
                    if centered {
                        let mean = self.buffer(format!("{name}.rmsprop.grad_avg"), n);
                        for i in 0..n {
                            mean[i] = alpha * mean[i] + (1.0 - alpha) * g[i];
                            direction[i] -= mean[i] * mean[i];
                        }
                    }
                    for i in 0..n {
                        direction[i] = g[i] / (direction[i].sqrt() + eps);
                    }
                    if momentum > 0.0 {
                        let buf = self.buffer(format!("{name}.rmsprop.momentum_buffer"), n);
                        for i in 0..n {
                            buf[i] = momentum * buf[i] + direction[i];
                            direction[i] = buf[i];
                        }
                    }
                    for i in 0..n {
                        p[i] -= lr * direction[i];
                    }
                }
                Rule::Adam {
                    beta1,
                    beta2,
                    eps,
                    amsgrad,
                    ..
                } => {
                    let mut m = self.buffer(format!("{name}.adam.exp_avg"), n).clone();
                    let mut v = self.buffer(format!("{name}.adam.exp_avg_sq"), n).clone();
                    let mut v_max = self
                        .buffer(format!("{name}.adam.max_exp_avg_sq"), n)
                        .clone();
                    for i in 0..n {
                        m[i] = beta1 * m[i] + (1.0 - beta1) * g[i];
                        v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i];
                        v_max[i] = v_max[i].max(v[i]);
                        let m_hat = m[i] / (1.0 - beta1.powi(t));
                        let second = if amsgrad { v_max[i] } else { v[i] };
                        let v_hat = second / (1.0 - beta2.powi(t));
                        p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
                    }
                    self.values.insert(format!("{name}.adam.exp_avg"), m);
                    self.values.insert(format!("{name}.adam.exp_avg_sq"), v);
                    if amsgrad {
                        self.values
                            .insert(format!("{name}.adam.max_exp_avg_sq"), v_max);
                    } else {
                        self.values.remove(&format!("{name}.adam.max_exp_avg_sq"));
                    }
                }
                Rule::SignSgd { .. } => {
                    for i in 0..n {
                        p[i] -= lr * g[i].signum();
                    }
                }
            }
            if let Some(radius) = opt.max_param_norm {
                let norm = p.iter().map(|v| v * v).sum::<f64>().sqrt();
                if norm > radius {
                    self.projected = true;
                    for value in &mut p {
                        *value *= radius / norm;
                    }
                }
            }
            if let Some(averaging) = opt.averaging {
                let initial = self.values[name].clone();
                let avg = self
                    .values
                    .entry(format!("{name}.average"))
                    .or_insert(initial);
                for i in 0..n {
                    avg[i] = match averaging {
                        Averaging::Uniform => avg[i] + (p[i] - avg[i]) / (t as f64 + 1.0),
                        Averaging::Ema { decay } => decay * avg[i] + (1.0 - decay) * p[i],
                    };
                }
            }
            self.values.insert(name.to_string(), p);
        }
        let counts_steps = match opt.rule {
            Rule::Adam { .. } => true,
            Rule::Adagrad { lr_decay, .. } => lr_decay != 0.0,
            Rule::Sgd {
                momentum,
                dampening,
                ..
            } => momentum > 0.0 && dampening != 0.0,
            Rule::RmsProp { .. } | Rule::SignSgd { .. } => false,
        } || opt.averaging == Some(Averaging::Uniform);
        if counts_steps {
            self.values
                .insert("optimizer.step".to_string(), vec![f64::from(t)]);
        }
    }
}

fn run_step(exe: &mut Executable, x: &[f64], y: &[f64]) {
    let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let y: Vec<f32> = y.iter().map(|&v| v as f32).collect();
    exe.run(&[("x", Arg::F32(&x)), ("y", Arg::F32(&y))])
        .unwrap();
}

/// Runs `STEPS` steps of the compiled step and of the reference; after each, every
/// parameter and state buffer the reference has must exist under the same name in the
/// executable and match; the executable has no other state.
fn check_against_reference(label: &str, optimizer: Optimizer) -> Reference {
    let model = model();
    let mut exe = compile_train_step(&model, "loss", optimizer).unwrap();
    let mut reference = Reference::new(optimizer, &model);
    for k in 0..STEPS {
        let (x, y) = inputs(k);
        run_step(&mut exe, &x, &y);
        reference.step(&x, &y);
        let mut names: Vec<String> = exe.params().into_iter().map(|(name, _)| name).collect();
        names.sort();
        let expected: Vec<&String> = reference.values.keys().collect();
        assert_eq!(
            names.iter().collect::<Vec<_>>(),
            expected,
            "{label}: state names"
        );
        for (name, want) in &reference.values {
            let got = exe.param(name).unwrap();
            for (i, (&got, &want)) in got.iter().zip(want).enumerate() {
                let error = (f64::from(got) - want).abs();
                assert!(
                    error <= TOLERANCE * want.abs().max(1.0),
                    "{label}, step {}: {name}[{i}] is {got}, the reference {want}",
                    k + 1
                );
            }
        }
    }
    reference
}

#[test]
fn sgd_momentum_and_nesterov_match_the_reference() {
    check_against_reference("sgd", Optimizer::new(Rule::sgd(0.1)));
    for nesterov in [false, true] {
        let rule = Rule::momentum(0.1, 0.9, nesterov);
        check_against_reference(&format!("nesterov {nesterov}"), Optimizer::new(rule));
    }
    let damped = Rule::Sgd {
        learning_rate: 0.1,
        momentum: 0.9,
        dampening: 0.3,
        nesterov: false,
    };
    check_against_reference("dampening", Optimizer::new(damped));
}

#[test]
fn adaptive_rules_match_the_reference() {
    check_against_reference("adagrad", Optimizer::new(Rule::adagrad(0.1)));
    let decayed = Rule::Adagrad {
        learning_rate: 0.1,
        lr_decay: 0.5,
        initial_accumulator_value: 0.2,
        eps: 1e-10,
    };
    check_against_reference("adagrad lr_decay", Optimizer::new(decayed));
    check_against_reference("rmsprop", Optimizer::new(Rule::rmsprop(0.01)));
    for (momentum, centered) in [(0.9, false), (0.0, true), (0.5, true)] {
        let rule = Rule::RmsProp {
            learning_rate: 0.01,
            alpha: 0.9,
            eps: 1e-8,
            momentum,
            centered,
        };
        let label = format!("rmsprop momentum {momentum} centered {centered}");
        check_against_reference(&label, Optimizer::new(rule));
    }
    check_against_reference("adam", Optimizer::new(Rule::adam(0.05)));
    let amsgrad = Rule::Adam {
        learning_rate: 0.05,
        beta1: 0.8,
        beta2: 0.9,
        eps: 1e-6,
        amsgrad: true,
    };
    check_against_reference("amsgrad", Optimizer::new(amsgrad));
    check_against_reference(
        "signsgd",
        Optimizer::new(Rule::SignSgd { learning_rate: 0.1 }),
    );
}

#[test]
fn weight_decay_l2_and_decoupled_match_the_reference() {
    check_against_reference(
        "sgd + weight decay",
        Optimizer::new(Rule::sgd(0.1)).with_weight_decay(0.1),
    );
    check_against_reference(
        "adamw",
        Optimizer::new(Rule::adam(0.05)).with_decoupled_weight_decay(0.1),
    );
}

#[test]
fn clipping_and_projection_match_the_reference() {
    // Bounds well below the gradients' and weights' norms, so both act.
    let clipped = check_against_reference(
        "adam + clipping",
        Optimizer::new(Rule::adam(0.05)).with_max_grad_norm(0.5),
    );
    assert!(clipped.clipped);
    let projected = check_against_reference(
        "sgd + projection",
        Optimizer::new(Rule::sgd(0.1)).with_max_param_norm(1.0),
    );
    assert!(projected.projected);
}

#[test]
fn averages_match_the_reference() {
    let momentum = Rule::momentum(0.1, 0.5, false);
    check_against_reference(
        "momentum + uniform average",
        Optimizer::new(momentum).with_averaging(Averaging::Uniform),
    );
    check_against_reference(
        "adam + ema",
        Optimizer::new(Rule::adam(0.05)).with_averaging(Averaging::Ema { decay: 0.9 }),
    );
}

#[test]
fn all_modifiers_together_match_the_reference() {
    let optimizer = Optimizer::new(Rule::rmsprop(0.05))
        .with_weight_decay(0.01)
        .with_max_grad_norm(1.0)
        .with_max_param_norm(2.0)
        .with_averaging(Averaging::Ema { decay: 0.5 });
    let reference = check_against_reference("all modifiers", optimizer);
    assert!(reference.clipped && reference.projected);
}

#[test]
fn set_params_restarts_the_state_and_the_average_from_the_loaded_weights() {
    let model = model();
    let optimizer = Optimizer::new(Rule::adam(0.05)).with_averaging(Averaging::Uniform);
    let mut exe = compile_train_step(&model, "loss", optimizer).unwrap();
    let (x, y) = inputs(0);
    run_step(&mut exe, &x, &y);
    assert_eq!(exe.param("optimizer.step").unwrap(), [1.0]);
    set_params(&mut exe, &model).unwrap();
    assert_eq!(exe.param("optimizer.step").unwrap(), [0.0]);
    assert_eq!(exe.param("w.adam.exp_avg").unwrap(), [0.0; 6]);
    let averages = exe.averaged_params().unwrap();
    assert_eq!(averages.keys().collect::<Vec<_>>(), ["v", "w"]);
    assert_eq!(averages["w"], model.param("w").unwrap());
}

/// The test accuracy of the digits MLP after `epochs` epochs with `optimizer`, and of
/// its running average when the optimizer keeps one.
fn digits_accuracy(optimizer: Optimizer, epochs: usize) -> (f64, Option<f64>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    let digits = Dataset::from_csv(&path, 1.0 / 16.0).unwrap();
    let (train, test) = digits.split(1437, 7).unwrap();
    let sizes = [64, 32, 10];
    let model = mlp_classifier("mlp", 32, &sizes, true, 7).unwrap();
    let config = TrainerConfig::new(optimizer).unwrap().with_seed(7);
    let mut trainer = Trainer::new(&model, config).unwrap();
    for _ in 0..epochs {
        trainer.epoch(&train).unwrap();
    }
    let mut eval_model = mlp_classifier("eval", test.len(), &sizes, false, 7).unwrap();
    let mut eval = compile(eval_model.graph()).unwrap();
    let mut accuracy = |params: BTreeMap<String, Vec<f32>>| {
        for (name, values) in params {
            eval_model.set_param(&name, values).unwrap();
        }
        set_params(&mut eval, &eval_model).unwrap();
        eval.run(&[("x", Arg::F32(test.features()))]).unwrap();
        let logits = eval.output_f32("logits").unwrap();
        let accuracy = metrics::accuracy(logits, test.labels(), 10).unwrap();
        accuracy.fraction().unwrap()
    };
    let trained = accuracy(trainer.params().unwrap());
    let averages = trainer.averaged_params().unwrap();
    let averaged = (!averages.is_empty()).then(|| accuracy(averages));
    (trained, averaged)
}

#[test]
fn adam_trains_the_digits_mlp_at_least_as_well_as_sgd() {
    // Two epochs (90 steps of 32): SGD at the example's rate reaches about 85%, Adam at
    // lr 0.01 about 92% (at PyTorch's default 1e-3 it needs more steps than this). The
    // EMA of Adam's weights, evaluated in their place, must do as well.
    let (sgd, _) = digits_accuracy(Optimizer::sgd(0.1).unwrap(), 2);
    let adam = Optimizer::new(Rule::adam(1e-2)).with_averaging(Averaging::Ema { decay: 0.9 });
    let (adam, averaged) = digits_accuracy(adam, 2);
    let averaged = averaged.expect("adam keeps an average");
    assert!(adam >= sgd && adam > 0.9, "adam {adam}, sgd {sgd}");
    assert!(averaged > 0.9, "the average's accuracy {averaged}");
}

/// The interpreter runs the train-step graph as the pass builds it, fed the state's
/// initial values from `Optimizer::state`: it must agree with the JIT (after the
/// e-graph and fusion) on every parameter and state buffer.
#[test]
fn the_interpreter_and_the_jit_agree_on_every_rule_with_all_modifiers() {
    let model = model();
    let rules = [
        Rule::momentum(0.1, 0.9, true),
        Rule::Sgd {
            learning_rate: 0.1,
            momentum: 0.9,
            dampening: 0.3,
            nesterov: false,
        },
        Rule::adagrad(0.1),
        Rule::Adagrad {
            learning_rate: 0.1,
            lr_decay: 0.5,
            initial_accumulator_value: 0.2,
            eps: 1e-10,
        },
        Rule::rmsprop(0.01),
        Rule::RmsProp {
            learning_rate: 0.01,
            alpha: 0.9,
            eps: 1e-8,
            momentum: 0.5,
            centered: true,
        },
        Rule::Adam {
            learning_rate: 0.05,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            amsgrad: true,
        },
        Rule::SignSgd { learning_rate: 0.1 },
    ];
    for rule in rules {
        let optimizer = Optimizer::new(rule)
            .with_weight_decay(0.01)
            .with_max_grad_norm(1.0)
            .with_max_param_norm(2.0)
            .with_averaging(Averaging::Uniform);
        let options = PipelineOptions {
            loss: Some("loss".to_string()),
            optimizer: Some(optimizer),
            ..PipelineOptions::default()
        };
        let steps = [Step::Autodiff, Step::Optimizer];
        let (graph, _) = pipeline::run(model.graph(), &steps, &options, &mut |_, _| {}).unwrap();
        let tensor =
            |ty: &TensorType, values: &[f32]| Tensor::f32(ty.shape.clone(), values).unwrap();
        let mut params: Feeds = model
            .params()
            .iter()
            .map(|(name, values)| {
                let ty = graph.ty(graph.param_by_name(name).unwrap());
                (name.clone(), tensor(ty, values))
            })
            .collect();
        for state in optimizer.state(model.graph()) {
            let values = match &state.init {
                StateInit::Zeros => vec![0.0; state.ty.num_elements()],
                StateInit::Fill(value) => vec![*value as f32; state.ty.num_elements()],
                StateInit::ValueOf(param) => model.param(param).unwrap().to_vec(),
            };
            params.insert(state.name.clone(), tensor(&state.ty, &values));
        }
        let mut exe = compile_train_step(&model, "loss", optimizer).unwrap();
        for k in 0..STEPS {
            let (x, y) = inputs(k);
            run_step(&mut exe, &x, &y);
            let mut feeds = params.clone();
            let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let y: Vec<f32> = y.iter().map(|&v| v as f32).collect();
            feeds.insert("x".to_string(), tensor(&TensorType::f32([2, 3]), &x));
            feeds.insert("y".to_string(), tensor(&TensorType::f32([3]), &y));
            params = evaluate(&graph, &feeds, Precision::F32).unwrap().updates;
            assert_eq!(
                params.len(),
                exe.params().len(),
                "{rule:?}: every parameter steps"
            );
            for (name, interpreted) in &params {
                let compiled = exe.param(name).unwrap();
                for (i, (&got, &want)) in compiled.iter().zip(interpreted.data()).enumerate() {
                    let error = (f64::from(got) - want).abs();
                    assert!(
                        error <= TOLERANCE * want.abs().max(1.0),
                        "{rule:?}, step {}: {name}[{i}] is {got} compiled, {want} interpreted",
                        k + 1
                    );
                }
            }
        }
    }
}
