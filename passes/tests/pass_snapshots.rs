//! Pass tests as data: every `passes/tests/<pass>/*.kiln` file is parsed, run
//! through that one pass, and the printed result snapshotted. Each input file starts
//! with a comment saying what it checks; some are inputs on which the pass must not
//! fire. Every result is also verified; the passes' meaning is checked elsewhere
//! (`gradcheck.rs`, `egraph_rule_soundness.rs`).

use kiln_ir::{text, verify, Graph};
use kiln_passes::optimizer::Optimizer;
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
