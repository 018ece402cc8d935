//! Losses, built from primitives so that autodiff derives their gradients.

use crate::builder::{Context, FrontendError, ModelBuilder};
use kiln_ir::{DType, NodeId};

/// Mean softmax cross-entropy of `logits: f32[batch, classes]` against integer
/// `labels: i32[batch]`, as a scalar `f32[]`. Labels must lie in `0..classes`: the
/// one-hot encoding gives any other label a row of zeros (the `Trainer` and `Dataset`
/// check this before data reaches the graph).
///
/// Per row it is `logsumexp(z - max(z)) - (z[label] - max(z))`, so `exp` never
/// overflows (the shift cancels in the difference, so the value is unchanged). In f32
/// it stays finite for any finite logits whose true loss is below `f32::MAX`, even
/// logits near `±f32::MAX`:
///
/// - `z[label]` is picked from the unshifted logits. A logit more than `f32::MAX` below
///   the maximum shifts to `-inf`, and picking from the shifted row by multiplying with
///   the one-hot row would compute `0 * -inf = NaN` for it.
/// - The mean divides each row's loss by `batch` before summing, so a sum of several
///   losses near `f32::MAX` cannot overflow when their mean does not.
///
/// A row whose true loss exceeds `f32::MAX` (label logit `-f32::MAX`, another logit
/// `f32::MAX`) gives `inf`, the nearest f32.
pub fn softmax_cross_entropy(
    builder: &mut ModelBuilder,
    logits: NodeId,
    labels: NodeId,
) -> Result<NodeId, FrontendError> {
    let logits_ty = builder.ty(logits)?.clone();
    let labels_ty = builder.ty(labels)?.clone();
    // With no classes the log-sum-exp is log(0) = -inf: there is no loss to take.
    if logits_ty.dtype != DType::F32 || logits_ty.rank() != 2 || logits_ty.shape[1] == 0 {
        return Err(FrontendError::Operand {
            context: "softmax_cross_entropy logits".to_string(),
            expected: "f32[batch,classes] with at least one class".to_string(),
            found: logits_ty,
        });
    }
    let (batch, classes) = (logits_ty.shape[0], logits_ty.shape[1]);
    if labels_ty.dtype != DType::I32 || labels_ty.shape != [batch] {
        return Err(FrontendError::Operand {
            context: "softmax_cross_entropy labels".to_string(),
            expected: format!("i32[{batch}]"),
            found: labels_ty,
        });
    }
    let context = "softmax_cross_entropy";
    let graph = builder.graph();
    let row_max = graph.reduce_max(logits, &[1]).context(context)?;
    let max = graph
        .broadcast(row_max, [batch, classes])
        .context(context)?;
    let shifted = graph.sub(logits, max).context(context)?;
    let exp = graph.exp(shifted).context(context)?;
    let total = graph.reduce_sum(exp, &[1]).context(context)?;
    let log_sum_exp = graph.log(total).context(context)?;
    let one_hot = graph.one_hot(labels, classes).context(context)?;
    let picked = graph.mul(one_hot, logits).context(context)?;
    let picked = graph.reduce_sum(picked, &[1]).context(context)?;
    let picked_shifted = graph.sub(picked, row_max).context(context)?;
    let per_example = graph.sub(log_sum_exp, picked_shifted).context(context)?;
    let mean = if batch == 0 {
        // The mean of no losses is NaN, as in NumPy and PyTorch; a sum of shares
        // would give 0.
        graph.reduce_mean(per_example, &[0, 1]).context(context)?
    } else {
        let batch_size = graph
            .constant_like(batch as f64, per_example)
            .context(context)?;
        let share = graph.div(per_example, batch_size).context(context)?;
        graph.reduce_sum(share, &[0, 1]).context(context)?
    };
    graph.reshape(mean, Vec::new()).context(context)
}

/// Mean squared error between two f32 values of one shape, as a scalar `f32[]`.
pub fn mean_squared_error(
    builder: &mut ModelBuilder,
    prediction: NodeId,
    target: NodeId,
) -> Result<NodeId, FrontendError> {
    let context = "mean_squared_error";
    let rank = builder.ty(prediction)?.rank();
    let graph = builder.graph();
    let diff = graph.sub(prediction, target).context(context)?;
    let square = graph.mul(diff, diff).context(context)?;
    let axes: Vec<usize> = (0..rank).collect();
    let mean = graph.reduce_mean(square, &axes).context(context)?;
    graph.reshape(mean, Vec::new()).context(context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{evaluate, Feeds, Precision, Tensor, TensorType};

    #[test]
    fn cross_entropy_matches_hand_computed_value() {
        let mut b = ModelBuilder::new("ce", 0);
        let z = b.input("z", TensorType::f32([2, 3])).unwrap();
        let y = b.input("y", TensorType::i32([2])).unwrap();
        let loss = softmax_cross_entropy(&mut b, z, y).unwrap();
        b.output("loss", loss).unwrap();
        let model = b.finish().unwrap();
        let mut feeds = Feeds::new();
        // Large logits check the max shift: naive exp(1000) overflows.
        feeds.insert(
            "z".into(),
            Tensor::f32([2, 3], &[1.0, 2.0, 3.0, 1000.0, 0.0, 0.0]).unwrap(),
        );
        feeds.insert("y".into(), Tensor::i32([2], &[2, 0]).unwrap());
        let out = evaluate(model.graph(), &feeds, Precision::F64).unwrap();
        // Row 0: log(e^1 + e^2 + e^3) - 3 = 0.40760596; row 1: ~0.
        let expected = (0.407_605_964_444_380_8 + 0.0) / 2.0;
        let loss = out.outputs["loss"].scalar().unwrap();
        assert!((loss - expected).abs() < 1e-12, "loss {loss}");
        assert_eq!(out.outputs["loss"].shape(), &[] as &[usize]);
    }

    #[test]
    fn cross_entropy_stays_finite_in_f32_for_logits_near_the_f32_limits() {
        let mut b = ModelBuilder::new("ce", 0);
        let z = b.input("z", TensorType::f32([3, 3])).unwrap();
        let y = b.input("y", TensorType::i32([3])).unwrap();
        let loss = softmax_cross_entropy(&mut b, z, y).unwrap();
        b.output("loss", loss).unwrap();
        let model = b.finish().unwrap();
        let big = f32::MAX;
        let mut feeds = Feeds::new();
        #[rustfmt::skip]
        let logits = [
            big, -big, 0.0, // label 2: loss f32::MAX
            0.0, big, -big, // label 0: loss f32::MAX
            -big, -big, -big, // label 1: loss ln 3
        ];
        feeds.insert("z".into(), Tensor::f32([3, 3], &logits).unwrap());
        feeds.insert("y".into(), Tensor::i32([3], &[2, 0, 1]).unwrap());
        let expected = (2.0 * f64::from(big) + 3f64.ln()) / 3.0;
        // Before, `-big - big` shifted to -inf and its one-hot product `0 * -inf` made
        // the f32 loss NaN, and summing before dividing overflowed.
        for precision in [Precision::F32, Precision::F64] {
            let out = evaluate(model.graph(), &feeds, precision).unwrap();
            let loss = out.outputs["loss"].scalar().unwrap();
            assert!(
                ((loss - expected) / expected).abs() < 1e-6,
                "{precision:?}: loss {loss}, expected {expected}"
            );
        }
    }

    #[test]
    fn logits_without_classes_are_rejected() {
        let mut b = ModelBuilder::new("ce", 0);
        let z = b.input("z", TensorType::f32([2, 0])).unwrap();
        let y = b.input("y", TensorType::i32([2])).unwrap();
        let err = softmax_cross_entropy(&mut b, z, y).unwrap_err().to_string();
        assert_eq!(
            err,
            "softmax_cross_entropy logits: expected f32[batch,classes] with at least one \
             class, found f32[2,0]"
        );
    }

    #[test]
    fn labels_of_wrong_length_are_rejected() {
        let mut b = ModelBuilder::new("ce", 0);
        let z = b.input("z", TensorType::f32([2, 3])).unwrap();
        let y = b.input("y", TensorType::i32([3])).unwrap();
        let err = softmax_cross_entropy(&mut b, z, y).unwrap_err().to_string();
        assert_eq!(
            err,
            "softmax_cross_entropy labels: expected i32[2], found i32[3]"
        );
    }
}
