//! Losses, built from primitives so that autodiff derives their gradients.

use crate::builder::{Context, FrontendError, ModelBuilder};
use kiln_ir::{DType, NodeId, TensorType};

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
    let graph = builder.graph();
    let diff = graph.sub(prediction, target).context(context)?;
    let square = graph.mul(diff, diff).context(context)?;
    mean_all(builder, square, context)
}

/// A prediction and a target of one f32 type: what the elementwise losses below
/// take. Returns the type.
fn check_pair(
    builder: &ModelBuilder,
    prediction: NodeId,
    target: NodeId,
    context: &str,
) -> Result<TensorType, FrontendError> {
    let p = builder.ty(prediction)?.clone();
    let t = builder.ty(target)?.clone();
    if p.dtype != DType::F32 || p != t {
        return Err(FrontendError::Operand {
            context: context.to_string(),
            expected: format!("a target of the prediction's type {p} (f32)"),
            found: t,
        });
    }
    Ok(p)
}

/// The mean of every element of `x`, as a scalar `f32[]`.
fn mean_all(builder: &mut ModelBuilder, x: NodeId, context: &str) -> Result<NodeId, FrontendError> {
    let rank = builder.ty(x)?.rank();
    let axes: Vec<usize> = (0..rank).collect();
    let graph = builder.graph();
    let mean = graph.reduce_mean(x, &axes).context(context)?;
    graph.reshape(mean, Vec::new()).context(context)
}

/// Mean binary cross-entropy of `logits` against `targets` in [0, 1] (one shape), as
/// PyTorch's `binary_cross_entropy_with_logits`: per element
/// `softplus(z) − y·z` = `−y·log σ(z) − (1 − y)·log(1 − σ(z))`, with kiln's
/// `softplus`, which is exact in both tails, so no logit overflows it.
pub fn binary_cross_entropy_with_logits(
    builder: &mut ModelBuilder,
    logits: NodeId,
    targets: NodeId,
) -> Result<NodeId, FrontendError> {
    let context = "binary_cross_entropy_with_logits";
    check_pair(builder, logits, targets, context)?;
    let graph = builder.graph();
    let soft = graph.softplus(logits).context(context)?;
    let picked = graph.mul(targets, logits).context(context)?;
    let per_element = graph.sub(soft, picked).context(context)?;
    mean_all(builder, per_element, context)
}

/// Mean over the rows of `logits: f32[batch, classes]` of the cross-entropy
/// `−Σ_c p_c · log_softmax(z / T)_c` against target distributions `targets` (rows of
/// probabilities, e.g. a teacher's `softmax(z_teacher / T)`), at temperature `T`:
/// the soft-target loss of distillation (Hinton et al. scale it by `T²` to keep its
/// gradients' size; multiply the result to do so).
pub fn soft_cross_entropy(
    builder: &mut ModelBuilder,
    logits: NodeId,
    targets: NodeId,
    temperature: f64,
) -> Result<NodeId, FrontendError> {
    let context = "soft_cross_entropy";
    let ty = check_pair(builder, logits, targets, context)?;
    if ty.rank() != 2 || ty.shape[1] == 0 {
        return Err(FrontendError::Operand {
            context: context.to_string(),
            expected: "logits f32[batch, classes] with at least one class".to_string(),
            found: ty,
        });
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(FrontendError::Argument {
            context: context.to_string(),
            message: format!("the temperature {temperature} must be a positive number"),
        });
    }
    let scaled = if temperature == 1.0 {
        logits
    } else {
        let t = builder.scalar_like(temperature, logits)?;
        builder.graph().div(logits, t).context(context)?
    };
    let log_p = crate::activations::log_softmax(builder, scaled, -1)?;
    let graph = builder.graph();
    let weighted = graph.mul(targets, log_p).context(context)?;
    let per_row = graph.reduce_sum(weighted, &[1]).context(context)?;
    let per_row = graph.neg(per_row).context(context)?;
    mean_all(builder, per_row, context)
}

/// Mean hinge loss `max(0, 1 − y·s)` of scores `s` against targets `y` in {−1, +1}
/// (one shape): the support-vector machine's loss.
pub fn hinge_loss(
    builder: &mut ModelBuilder,
    scores: NodeId,
    targets: NodeId,
) -> Result<NodeId, FrontendError> {
    margin_loss(builder, scores, targets, 1.0, "hinge_loss")
}

/// Mean perceptron loss `max(0, −y·s)` of scores `s` against targets `y` in
/// {−1, +1}: zero for every correctly classified example, so its gradient steps are
/// Rosenblatt's updates on the mistakes.
pub fn perceptron_loss(
    builder: &mut ModelBuilder,
    scores: NodeId,
    targets: NodeId,
) -> Result<NodeId, FrontendError> {
    margin_loss(builder, scores, targets, 0.0, "perceptron_loss")
}

/// Mean `max(0, margin − y·s)`.
fn margin_loss(
    builder: &mut ModelBuilder,
    scores: NodeId,
    targets: NodeId,
    margin: f64,
    context: &str,
) -> Result<NodeId, FrontendError> {
    check_pair(builder, scores, targets, context)?;
    let product = builder.graph().mul(targets, scores).context(context)?;
    let margin = builder.scalar_like(margin, product)?;
    let graph = builder.graph();
    let shortfall = graph.sub(margin, product).context(context)?;
    let clipped = graph.relu(shortfall).context(context)?;
    mean_all(builder, clipped, context)
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
