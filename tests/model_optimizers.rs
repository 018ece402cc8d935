//! The optimizers of the model language: each `train … with <optimizer>(…)` reads into
//! the optimizer pass's `Optimizer` with PyTorch's defaults, prints back with every
//! hyperparameter (the `kiln check` summary), and its mistakes are located.

use kiln::frontend::lang::{self, ElaborateOptions};
use kiln::model_file;
use kiln::{Averaging, Optimizer, Rule};
use std::path::Path;

fn source(optimizer: &str) -> String {
    format!(
        "model M() {{\n  input x: f32[2, 3]\n  fc = Linear(3, 1)\n  forward {{\n    loss = mean(fc(x))\n    output loss\n  }}\n  train loss with {optimizer}\n}}\n"
    )
}

/// The optimizer of `optimizer` as the file states it, and how it prints.
fn read(optimizer: &str) -> (Optimizer, String) {
    let file = model_file::load_source(
        Path::new("model.kiln"),
        source(optimizer),
        &ElaborateOptions::default(),
    )
    .unwrap_or_else(|err| panic!("{optimizer}: {}", err.render(false)));
    let train = file.train.expect("the file trains");
    (
        model_file::optimizer(&train).unwrap(),
        train.optimizer.to_string(),
    )
}

#[test]
fn every_optimizer_reads_with_pytorchs_defaults() {
    let cases = [
        (
            "sgd(0.1)",
            Optimizer::new(Rule::sgd(0.1)),
            "sgd(lr = 0.1, momentum = 0.0, dampening = 0.0, weight_decay = 0.0, nesterov = false)",
        ),
        (
            "sgd(lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 1e-4)",
            Optimizer::new(Rule::momentum(0.1, 0.9, true)).with_weight_decay(1e-4),
            "sgd(lr = 0.1, momentum = 0.9, dampening = 0.0, weight_decay = 0.0001, nesterov = true)",
        ),
        (
            "sgd(0.1, 0.9, 0.5)",
            Optimizer::new(Rule::Sgd {
                learning_rate: 0.1,
                momentum: 0.9,
                dampening: 0.5,
                nesterov: false,
            }),
            "sgd(lr = 0.1, momentum = 0.9, dampening = 0.5, weight_decay = 0.0, nesterov = false)",
        ),
        (
            "adam()",
            Optimizer::new(Rule::adam(1e-3)),
            "adam(lr = 0.001, betas = (0.9, 0.999), eps = 1e-8, weight_decay = 0.0, amsgrad = false)",
        ),
        (
            "adam(lr = 0.01, betas = (0.8, 0.99), eps = 1e-6, amsgrad = true, max_grad_norm = 1)",
            Optimizer::new(Rule::Adam {
                learning_rate: 0.01,
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
                amsgrad: true,
            })
            .with_max_grad_norm(1.0),
            "adam(lr = 0.01, betas = (0.8, 0.99), eps = 1e-6, weight_decay = 0.0, amsgrad = true, \
             max_grad_norm = 1.0)",
        ),
        (
            "adamw(polyak = 0.99)",
            Optimizer::new(Rule::adam(1e-3))
                .with_decoupled_weight_decay(1e-2)
                .with_averaging(Averaging::Ema { decay: 0.99 }),
            "adamw(lr = 0.001, betas = (0.9, 0.999), eps = 1e-8, weight_decay = 0.01, \
             amsgrad = false, polyak = 0.99)",
        ),
        (
            "adagrad(max_param_norm = 3.0)",
            Optimizer::new(Rule::adagrad(1e-2)).with_max_param_norm(3.0),
            "adagrad(lr = 0.01, lr_decay = 0.0, weight_decay = 0.0, initial_accumulator_value = 0.0, \
             eps = 1e-10, max_param_norm = 3.0)",
        ),
        (
            "adagrad(lr_decay = 0.01, initial_accumulator_value = 0.1)",
            Optimizer::new(Rule::Adagrad {
                learning_rate: 1e-2,
                lr_decay: 0.01,
                initial_accumulator_value: 0.1,
                eps: 1e-10,
            }),
            "adagrad(lr = 0.01, lr_decay = 0.01, weight_decay = 0.0, initial_accumulator_value = 0.1, \
             eps = 1e-10)",
        ),
        (
            "rmsprop(polyak = true)",
            Optimizer::new(Rule::rmsprop(1e-2)).with_averaging(Averaging::Uniform),
            "rmsprop(lr = 0.01, alpha = 0.99, eps = 1e-8, weight_decay = 0.0, momentum = 0.0, \
             centered = false, polyak = true)",
        ),
        (
            "rmsprop(momentum = 0.9, centered = true)",
            Optimizer::new(Rule::RmsProp {
                learning_rate: 1e-2,
                alpha: 0.99,
                eps: 1e-8,
                momentum: 0.9,
                centered: true,
            }),
            "rmsprop(lr = 0.01, alpha = 0.99, eps = 1e-8, weight_decay = 0.0, momentum = 0.9, \
             centered = true)",
        ),
        (
            "signsgd(lr = 0.01, polyak = false)",
            Optimizer::new(Rule::SignSgd {
                learning_rate: 0.01,
            }),
            "signsgd(lr = 0.01, weight_decay = 0.0)",
        ),
    ];
    for (written, optimizer, printed) in cases {
        assert_eq!(read(written), (optimizer, printed.to_string()), "{written}");
    }
}

#[test]
fn optimizer_mistakes_are_located() {
    let cases = [
        ("unknown_optimizer", "adamax(lr = 0.1)"),
        ("unknown_argument", "adam(lr = 0.1, beta1 = 0.9)"),
        ("missing_lr", "sgd(momentum = 0.9)"),
        ("betas_not_a_pair", "adam(betas = 0.9)"),
        ("polyak_string", "sgd(0.1, polyak = \"uniform\")"),
        // Ranges are the optimizer pass's checks, located at the optimizer's name.
        ("beta_out_of_range", "adam(betas = (0.9, 1.0))"),
        ("nesterov_without_momentum", "sgd(0.1, nesterov = true)"),
        (
            "nesterov_with_dampening",
            "sgd(0.1, momentum = 0.9, dampening = 0.1, nesterov = true)",
        ),
        ("negative_lr_decay", "adagrad(lr_decay = -0.1)"),
    ];
    for (name, optimizer) in cases {
        let err = model_file::load_source(
            Path::new("model.kiln"),
            source(optimizer),
            &ElaborateOptions::default(),
        )
        .err()
        .unwrap_or_else(|| panic!("{optimizer} loads"));
        insta::assert_snapshot!(format!("optimizer_error_{name}"), err.render(false));
    }
    // The language alone (without the facade's range checks) accepts what it can read.
    assert!(lang::load(
        &source("adam(betas = (0.9, 1.0))"),
        &ElaborateOptions::default()
    )
    .is_ok());
}
