//! Pass tests as data: every `passes/tests/<pass>/*.kiln` file is parsed, run
//! through that one pass, and the printed result snapshotted. Each input file starts
//! with a comment saying what it checks; some are inputs on which the pass must not
//! fire. Every result is also verified; the passes' meaning is checked elsewhere
//! (`gradcheck.rs`, `egraph_rule_soundness.rs`).

use kiln_ir::{text, verify, Graph};
use kiln_passes::optimizer::{Averaging, Optimizer, Rule};
use kiln_passes::{autodiff, dce, egraph, optimizer};

fn parse_input(path: &std::path::Path) -> Graph {
    let src = std::fs::read_to_string(path).expect("test input is readable");
    text::parse(&src).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn snapshot(result: &Graph) -> String {
    verify(result).expect("the pass keeps the IR valid");
    text::print(result)
}

#[test]
fn dce_snapshots() {
    insta::glob!("dce/*.kiln", |path| {
        insta::assert_snapshot!(snapshot(&dce::run(&parse_input(path))));
    });
}

#[test]
fn optimizer_snapshots() {
    insta::glob!("optimizer/*.kiln", |path| {
        let sgd = Optimizer::sgd(0.1).unwrap();
        let result = optimizer::run(&parse_input(path), &sgd).unwrap();
        insta::assert_snapshot!(snapshot(&result));
    });
}

/// One snapshot per optimizer configuration on each input, named after it.
#[test]
fn optimizer_rule_snapshots() {
    let nesterov = Rule::momentum(0.1, 0.9, true);
    let configurations = [
        (
            "nesterov_l2",
            Optimizer::new(nesterov).with_weight_decay(0.01),
        ),
        ("adagrad", Optimizer::new(Rule::adagrad(0.01))),
        ("rmsprop", Optimizer::new(Rule::rmsprop(0.01))),
        (
            "sgd_dampening",
            Optimizer::new(Rule::Sgd {
                learning_rate: 0.1,
                momentum: 0.9,
                dampening: 0.5,
                nesterov: false,
            }),
        ),
        (
            "adagrad_lr_decay",
            Optimizer::new(Rule::Adagrad {
                learning_rate: 0.01,
                lr_decay: 0.1,
                initial_accumulator_value: 0.5,
                eps: 1e-10,
            }),
        ),
        (
            "rmsprop_centered_momentum",
            Optimizer::new(Rule::RmsProp {
                learning_rate: 0.01,
                alpha: 0.99,
                eps: 1e-8,
                momentum: 0.9,
                centered: true,
            }),
        ),
        (
            "signsgd",
            Optimizer::new(Rule::SignSgd {
                learning_rate: 0.01,
            }),
        ),
        (
            "adamw_clip_project_average",
            Optimizer::new(Rule::adam(1e-3))
                .with_decoupled_weight_decay(0.01)
                .with_max_grad_norm(1.0)
                .with_max_param_norm(5.0)
                .with_averaging(Averaging::Uniform),
        ),
    ];
    insta::glob!("optimizer_rules/*.kiln", |path| {
        let input = parse_input(path);
        for (name, optimizer) in configurations {
            let result = optimizer::run(&input, &optimizer).unwrap();
            insta::assert_snapshot!(format!("optimizer_{name}"), snapshot(&result));
        }
    });
}

#[test]
fn autodiff_snapshots() {
    insta::glob!("autodiff/*.kiln", |path| {
        let options = autodiff::AutodiffOptions::loss("loss");
        let result = autodiff::run(&parse_input(path), &options).unwrap();
        insta::assert_snapshot!(snapshot(&result));
    });
}

#[test]
fn egraph_snapshots() {
    insta::glob!("egraph/*.kiln", |path| {
        let (result, report) =
            egraph::run(&parse_input(path), &egraph::EgraphOptions::default()).unwrap();
        assert!(report.saturated, "{}: {report}", path.display());
        insta::assert_snapshot!(snapshot(&result));
    });
}
