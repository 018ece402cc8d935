//! Constant tensors built from the op set: the identity matrix.

use crate::builder::{Context, FrontendError, ModelBuilder};
use kiln_ir::{NodeId, TensorType};

/// The `n x n` identity matrix, f32. The op set has no iota, so it is a row of `n`
/// ones with `n` zeros padded between neighbours (`1 0…0 1 0…0 1`, `n²` elements,
/// the ones `n + 1` apart) read as `[n, n]`: a constant the compiler folds. With a
/// comparison or `select` it masks a diagonal (a Hopfield net's zero self-coupling).
pub fn eye(builder: &mut ModelBuilder, n: usize) -> Result<NodeId, FrontendError> {
    let context = "eye";
    let graph = builder.graph();
    let ones = graph
        .constant(1.0, TensorType::f32(vec![n]))
        .context(context)?;
    let spread = graph.pad(ones, &[0], &[0], &[n], 0.0).context(context)?;
    graph.reshape(spread, vec![n, n]).context(context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{evaluate, Feeds, Precision};

    fn identity(n: usize) -> Vec<f64> {
        let mut builder = ModelBuilder::new("eye", 0);
        let id = eye(&mut builder, n).expect("eye builds");
        builder.output("eye", id).expect("an output");
        let model = builder.finish().expect("a model");
        let values = evaluate(model.graph(), &Feeds::new(), Precision::F64).expect("evaluates");
        values.outputs["eye"].data().to_vec()
    }

    #[test]
    fn eye_is_one_on_the_diagonal_and_zero_elsewhere() {
        for n in [0, 1, 2, 5] {
            let values = identity(n);
            assert_eq!(values.len(), n * n, "n = {n}");
            for (k, value) in values.iter().enumerate() {
                let expected = if k / n == k % n { 1.0 } else { 0.0 };
                assert_eq!(*value, expected, "n = {n}, element {k}");
            }
        }
    }
}
