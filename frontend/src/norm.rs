//! Batch normalisation (PyTorch's `nn.BatchNorm1d` / `nn.BatchNorm2d`), the layer
//! whose behaviour depends on the mode: in training it normalises each channel by
//! the batch's statistics and updates its running statistics, buffers the step
//! writes in place; in evaluation it normalises by those running statistics.

use crate::builder::{Context, FrontendError, ModelBuilder};
use crate::init::Init;
use kiln_ir::{DType, NodeId};

/// Batch normalisation over axis 1 (the channels) of `x: [B, C, …]`:
/// `(x − mean) / sqrt(var + eps) · weight + bias`, per channel. `weight` starts at
/// ones and `bias` at zeros (trained); `running_mean` at zeros and `running_var` at
/// ones (buffers).
///
/// Training (the builder's default mode): `mean` and the biased `var` are the
/// batch's, over every axis but 1, and each run updates the buffers as PyTorch does,
/// `running ← (1 − momentum)·running + momentum·batch`, with the unbiased variance
/// (divided by `n − 1`, `n` the values per channel). Evaluation
/// ([`ModelBuilder::set_evaluation`]): `mean` and `var` are the running ones, and
/// nothing is updated. A layer is applied once per model in training (its buffers
/// take one update per run).
#[derive(Clone, Debug)]
pub struct BatchNorm {
    weight: NodeId,
    bias: NodeId,
    running_mean: NodeId,
    running_var: NodeId,
    features: usize,
    /// The rank `x` must have, when the layer fixes it (`BatchNorm2d`: 4).
    rank: Option<usize>,
    eps: f64,
    momentum: f64,
}

impl BatchNorm {
    /// A batch norm of `features` channels on an input of any rank ≥ 2 (`rank` fixes
    /// it: `Some(4)` is PyTorch's `BatchNorm2d`), with PyTorch's parameter names
    /// under `name` (`name.weight`, `name.running_mean`, …).
    pub fn new(
        builder: &mut ModelBuilder,
        name: &str,
        features: usize,
        rank: Option<usize>,
        eps: f64,
        momentum: f64,
    ) -> Result<BatchNorm, FrontendError> {
        let argument = |message: String| FrontendError::Argument {
            context: "BatchNorm".to_string(),
            message,
        };
        if !(eps.is_finite() && eps > 0.0) {
            return Err(argument(format!("eps {eps} must be a positive number")));
        }
        if !(0.0..=1.0).contains(&momentum) {
            return Err(argument(format!("momentum {momentum} must be in [0, 1]")));
        }
        let weight =
            builder.parameter(&format!("{name}.weight"), &[features], Init::Constant(1.0))?;
        let bias = builder.parameter(&format!("{name}.bias"), &[features], Init::Zeros)?;
        let running_mean = builder.buffer(
            &format!("{name}.running_mean"),
            &[features],
            vec![0.0; features],
        )?;
        let running_var = builder.buffer(
            &format!("{name}.running_var"),
            &[features],
            vec![1.0; features],
        )?;
        Ok(BatchNorm {
            weight,
            bias,
            running_mean,
            running_var,
            features,
            rank,
            eps,
            momentum,
        })
    }

    pub fn forward(&self, builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
        let context = "batch_norm";
        builder.check_own(self.weight, "BatchNorm layer")?;
        let ty = builder.ty(x)?.clone();
        let rank_ok = match self.rank {
            Some(rank) => ty.rank() == rank,
            None => ty.rank() >= 2,
        };
        if ty.dtype != DType::F32 || !rank_ok || ty.shape.get(1) != Some(&self.features) {
            let rest = match self.rank {
                Some(rank) => ", …".repeat(rank - 2),
                None => ", …".to_string(),
            };
            return Err(FrontendError::Operand {
                context: context.to_string(),
                expected: format!("f32[B, {}{rest}]", self.features),
                found: ty,
            });
        }
        // Per channel: the shape [1, C, 1, …] that broadcasts along x.
        let mut channel_shape = vec![1; ty.rank()];
        channel_shape[1] = self.features;
        let axes: Vec<usize> = (0..ty.rank()).filter(|&axis| axis != 1).collect();
        let per_channel = ty.num_elements() / self.features.max(1);
        let (mean, var) = if builder.evaluation() {
            let graph = builder.graph();
            let mean = graph
                .reshape(self.running_mean, channel_shape.clone())
                .context(context)?;
            let var = graph
                .reshape(self.running_var, channel_shape.clone())
                .context(context)?;
            (mean, var)
        } else {
            if per_channel < 2 {
                return Err(FrontendError::Argument {
                    context: context.to_string(),
                    message: format!(
                        "training needs more than one value per channel, as the batch \
                         variance of one value is 0 (input {ty})"
                    ),
                });
            }
            let graph = builder.graph();
            let mean = graph.reduce_mean(x, &axes).context(context)?;
            let wide = graph.broadcast(mean, ty.shape.clone()).context(context)?;
            let centred = graph.sub(x, wide).context(context)?;
            let square = graph.mul(centred, centred).context(context)?;
            let var = graph.reduce_mean(square, &axes).context(context)?;
            let unbiased = per_channel as f64 / (per_channel - 1) as f64;
            self.update(builder, self.running_mean, mean, 1.0)?;
            self.update(builder, self.running_var, var, unbiased)?;
            (mean, var)
        };
        let graph = builder.graph();
        let eps = graph.constant_like(self.eps, var).context(context)?;
        let var = graph.add_(var, eps).context(context)?;
        let scale = graph.rsqrt(var).context(context)?;
        let weight = graph
            .reshape(self.weight, channel_shape.clone())
            .context(context)?;
        let scale = graph.mul(scale, weight).context(context)?;
        let bias = graph
            .reshape(self.bias, channel_shape.clone())
            .context(context)?;
        let mean = graph.broadcast(mean, ty.shape.clone()).context(context)?;
        let scale = graph.broadcast(scale, ty.shape.clone()).context(context)?;
        let bias = graph.broadcast(bias, ty.shape.clone()).context(context)?;
        let centred = graph.sub(x, mean).context(context)?;
        let scaled = graph.mul(centred, scale).context(context)?;
        graph.add_(scaled, bias).context(context)
    }

    /// Updates `buffer: [C]` to `(1 − momentum)·buffer + momentum·factor·batch`, for
    /// the batch statistic `batch: [1, C, 1, …]`.
    fn update(
        &self,
        builder: &mut ModelBuilder,
        buffer: NodeId,
        batch: NodeId,
        factor: f64,
    ) -> Result<(), FrontendError> {
        let context = "batch_norm running statistics";
        let graph = builder.graph();
        let batch = graph.reshape(batch, [self.features]).context(context)?;
        let keep = graph
            .constant_like(1.0 - self.momentum, buffer)
            .context(context)?;
        let take = graph
            .constant_like(self.momentum * factor, buffer)
            .context(context)?;
        let kept = graph.mul(buffer, keep).context(context)?;
        let taken = graph.mul(batch, take).context(context)?;
        let next = graph.add_(kept, taken).context(context)?;
        builder.set_update(buffer, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{evaluate, Feeds, Precision, Tensor, TensorType};

    /// `x: f32[4, 2, 3]` through a batch norm, built in `evaluation` mode or not.
    fn built(evaluation: bool) -> crate::Model {
        let mut b = ModelBuilder::new("bn", 1);
        b.set_evaluation(evaluation);
        let x = b.input("x", TensorType::f32([4, 2, 3])).unwrap();
        let norm = BatchNorm::new(&mut b, "bn", 2, None, 1e-5, 0.1).unwrap();
        let y = norm.forward(&mut b, x).unwrap();
        b.output("y", y).unwrap();
        b.finish().unwrap()
    }

    fn input() -> Vec<f64> {
        (0..24).map(|i| f64::from(i * i % 7) - 2.5).collect()
    }

    /// The statistics of channel `c` of `input()` over the batch and length axes.
    fn stats(c: usize) -> (f64, f64) {
        let x = input();
        let values: Vec<f64> = (0..4)
            .flat_map(|b| (0..3).map(move |l| (b * 2 + c) * 3 + l))
            .map(|i| x[i])
            .collect();
        let mean = values.iter().sum::<f64>() / 12.0;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 12.0;
        (mean, var)
    }

    fn run(model: &crate::Model, running: Option<([f64; 2], [f64; 2])>) -> kiln_ir::Evaluation {
        let mut feeds = Feeds::new();
        let x = Tensor::new(TensorType::f32([4, 2, 3]), input()).unwrap();
        feeds.insert("x".to_string(), x);
        for (name, values) in model.params() {
            let mut data: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
            if let Some((mean, var)) = running {
                if name.ends_with("running_mean") {
                    data = mean.to_vec();
                } else if name.ends_with("running_var") {
                    data = var.to_vec();
                }
            }
            feeds.insert(
                name.clone(),
                Tensor::new(TensorType::f32([2]), data).unwrap(),
            );
        }
        evaluate(model.graph(), &feeds, Precision::F64).unwrap()
    }

    #[test]
    fn training_normalises_by_the_batch_and_updates_the_running_statistics() {
        let model = built(false);
        let evaluation = run(&model, None);
        let y = evaluation.outputs["y"].data();
        for c in 0..2 {
            let (mean, var) = stats(c);
            let x = input();
            let i = c * 3 + 1;
            let expected = (x[i] - mean) / (var + 1e-5).sqrt();
            assert!(
                (y[i] - expected).abs() < 1e-9,
                "channel {c}: {} vs {expected}",
                y[i]
            );
            let running_mean = evaluation.updates["bn.running_mean"].data()[c];
            assert!((running_mean - 0.1 * mean).abs() < 1e-12);
            let running_var = evaluation.updates["bn.running_var"].data()[c];
            assert!((running_var - (0.9 + 0.1 * var * 12.0 / 11.0)).abs() < 1e-12);
        }
        let graph = model.graph();
        let frozen: Vec<&str> = graph
            .params()
            .iter()
            .filter(|&&p| graph.is_frozen(p))
            .map(|&p| graph.leaf_name(p).unwrap())
            .collect();
        assert_eq!(frozen, ["bn.running_mean", "bn.running_var"]);
    }

    #[test]
    fn evaluation_normalises_by_the_running_statistics_and_updates_nothing() {
        let model = built(true);
        let evaluation = run(&model, Some(([1.0, -2.0], [4.0, 0.25])));
        assert!(evaluation.updates.is_empty());
        let x = input();
        let y = evaluation.outputs["y"].data();
        for (i, (&x, &y)) in x.iter().zip(y).enumerate() {
            let c = (i / 3) % 2;
            let (mean, var) = [(1.0, 4.0), (-2.0, 0.25)][c];
            let expected = (x - mean) / (var + 1e-5f64).sqrt();
            assert!((y - expected).abs() < 1e-9, "{i}: {y} vs {expected}");
        }
    }

    #[test]
    fn bad_inputs_and_arguments_are_errors() {
        let mut b = ModelBuilder::new("bn", 1);
        let norm2d = BatchNorm::new(&mut b, "bn", 3, Some(4), 1e-5, 0.1).unwrap();
        let flat = b.input("flat", TensorType::f32([2, 3])).unwrap();
        let err = norm2d.forward(&mut b, flat).unwrap_err();
        assert_eq!(
            err.to_string(),
            "batch_norm: expected f32[B, 3, …, …], found f32[2,3]"
        );
        let single = b.input("single", TensorType::f32([1, 3])).unwrap();
        let norm = BatchNorm::new(&mut b, "bn1", 3, None, 1e-5, 0.1).unwrap();
        let err = norm.forward(&mut b, single).unwrap_err();
        assert!(
            err.to_string().contains("more than one value per channel"),
            "{err}"
        );
        for (eps, momentum) in [(0.0, 0.1), (1e-5, 1.5), (f64::NAN, 0.1)] {
            assert!(BatchNorm::new(&mut b, "bad", 3, None, eps, momentum).is_err());
        }
    }
}
