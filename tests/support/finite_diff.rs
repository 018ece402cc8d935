//! Autodiff against central finite differences in the f64 interpreter, for the
//! layer tests (tests/activations.rs, tests/losses.rs), shared through `#[path]`.

use kiln::ir::{evaluate, Feeds, Graph, Precision};
use kiln::passes::autodiff::{self, AutodiffOptions};

/// For every element of the leaf `leaf` (a parameter) of `graph`, whose output
/// `loss` is a scalar: `(autodiff's derivative, the central difference with step
/// eps)`, both evaluated in f64 at `feeds` (perturbed in f64: `edit` keeps the
/// unrounded value).
pub fn derivatives(graph: &Graph, feeds: &Feeds, leaf: &str, eps: f64) -> Vec<(f64, f64)> {
    let backward = autodiff::run(graph, &AutodiffOptions::loss("loss")).unwrap();
    let gradient = evaluate(&backward, feeds, Precision::F64).unwrap().outputs
        [&autodiff::grad_name(leaf)]
        .clone();
    let loss_at = |index: usize, delta: f64| {
        let mut moved = feeds.clone();
        moved
            .get_mut(leaf)
            .unwrap()
            .edit(|data| data[index] += delta)
            .unwrap();
        evaluate(graph, &moved, Precision::F64).unwrap().outputs["loss"]
            .scalar()
            .unwrap()
    };
    (0..gradient.data().len())
        .map(|index| {
            let numeric = (loss_at(index, eps) - loss_at(index, -eps)) / (2.0 * eps);
            (gradient.data()[index], numeric)
        })
        .collect()
}
