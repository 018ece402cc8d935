//! Layers built from IR primitives.

use crate::builder::{Context, FrontendError, ModelBuilder};
use crate::init::Init;
use kiln_ir::{BinaryOp, DType, NodeId};

/// A fully connected layer `y = x·W + b`, `W: [in, out]`, `b: [out]`. Built only by
/// `new`, so its parameters always exist in the builder that declared them with
/// these shapes; applying it to another model's builder is an error.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: NodeId,
    /// Weight normalisation's per-output scale `g`, when the layer has it: the
    /// weight used is then `g · v / ‖v‖` per output column, `weight` being `v`.
    norm_scale: Option<NodeId>,
    bias: Option<NodeId>,
    in_features: usize,
    out_features: usize,
}

impl Linear {
    /// Declares parameters `<name>.weight` (drawn from `init`) and `<name>.bias` (zeros).
    pub fn new(
        builder: &mut ModelBuilder,
        name: &str,
        in_features: usize,
        out_features: usize,
        init: Init,
    ) -> Result<Linear, FrontendError> {
        Linear::with_bias(
            builder,
            name,
            in_features,
            out_features,
            init,
            Some(Init::Zeros),
        )
    }

    /// Declares `<name>.weight` (drawn from `init`) and, unless `bias` is `None`,
    /// `<name>.bias` (drawn from it), in that order.
    pub fn with_bias(
        builder: &mut ModelBuilder,
        name: &str,
        in_features: usize,
        out_features: usize,
        init: Init,
        bias: Option<Init>,
    ) -> Result<Linear, FrontendError> {
        let weight = builder.parameter(
            &format!("{name}.weight"),
            &[in_features, out_features],
            init,
        )?;
        Linear::declare_bias(builder, name, weight, None, bias)
    }

    /// The layer over `weight` (and `norm_scale`), after declaring `<name>.bias` from
    /// `bias` unless it is `None`.
    fn declare_bias(
        builder: &mut ModelBuilder,
        name: &str,
        weight: NodeId,
        norm_scale: Option<NodeId>,
        bias: Option<Init>,
    ) -> Result<Linear, FrontendError> {
        let shape = builder.ty(weight)?.shape.clone();
        let (in_features, out_features) = (shape[0], shape[1]);
        let bias = bias
            .map(|init| builder.parameter(&format!("{name}.bias"), &[out_features], init))
            .transpose()?;
        Ok(Linear {
            weight,
            norm_scale,
            bias,
            in_features,
            out_features,
        })
    }

    /// A weight-normalised layer (Salimans & Kingma; PyTorch's
    /// `weight_norm(nn.Linear(…))`): parameters `<name>.weight_g: [out]` and
    /// `<name>.weight_v: [in, out]` (drawn from `init`), the weight used being
    /// `g · v / ‖v‖` for each output's column; `g` starts at `‖v‖`, so the layer
    /// starts as the plain one. Then `<name>.bias` as in [`Linear::with_bias`].
    pub fn weight_normed(
        builder: &mut ModelBuilder,
        name: &str,
        in_features: usize,
        out_features: usize,
        init: Init,
        bias: Option<Init>,
    ) -> Result<Linear, FrontendError> {
        let v_name = format!("{name}.weight_v");
        let weight = builder.parameter(&v_name, &[in_features, out_features], init)?;
        let v = builder
            .param_values(&v_name)
            .expect("weight_v was declared just above");
        let norms: Vec<f32> = (0..out_features)
            .map(|o| {
                let squares: f64 = (0..in_features)
                    .map(|i| f64::from(v[i * out_features + o]).powi(2))
                    .sum();
                squares.sqrt() as f32
            })
            .collect();
        let norm_scale =
            builder.parameter_with_values(&format!("{name}.weight_g"), &[out_features], norms)?;
        Linear::declare_bias(builder, name, weight, Some(norm_scale), bias)
    }

    /// The weight the layer multiplies by: the parameter itself, or `g · v / ‖v‖`.
    fn effective_weight(&self, builder: &mut ModelBuilder) -> Result<NodeId, FrontendError> {
        let Some(scale) = self.norm_scale else {
            return Ok(self.weight);
        };
        let context = "weight_norm";
        let (v, shape) = (self.weight, [self.in_features, self.out_features]);
        let graph = builder.graph();
        let squares = graph.mul(v, v).context(context)?;
        let sums = graph.reduce_sum(squares, &[0]).context(context)?;
        let inverse = graph.rsqrt(sums).context(context)?;
        let scale = graph.reshape(scale, vec![1, shape[1]]).context(context)?;
        let factor = graph.mul(scale, inverse).context(context)?;
        let factor = graph.broadcast(factor, shape).context(context)?;
        graph.mul(v, factor).context(context)
    }

    /// The `[in, out]` weight parameter.
    pub fn weight(&self) -> NodeId {
        self.weight
    }

    /// The `[out]` bias parameter, if the layer has one.
    pub fn bias(&self) -> Option<NodeId> {
        self.bias
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Applies the layer to an f32 value `[…, in]` of rank 2 or more (PyTorch's
    /// `[*, in]`: leading axes are batch axes) of the builder that declared it.
    pub fn forward(&self, builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
        // Checked first so that a layer from another builder is named as the mistake,
        // rather than an operand that happens to be foreign too.
        builder.check_own(self.weight, "linear layer")?;
        let x_ty = builder.ty(x)?.clone();
        let in_features = self.in_features;
        if x_ty.dtype != DType::F32 || x_ty.rank() < 2 || x_ty.shape.last() != Some(&in_features) {
            return Err(FrontendError::Operand {
                context: "linear".to_string(),
                expected: format!("f32[batch,{in_features}] (or more leading axes)"),
                found: x_ty,
            });
        }
        let leading = &x_ty.shape[..x_ty.rank() - 1];
        let rows = leading.iter().product();
        let flat = if x_ty.rank() == 2 {
            x
        } else {
            builder
                .graph()
                .reshape(x, vec![rows, in_features])
                .context("linear")?
        };
        let weight = self.effective_weight(builder)?;
        let product = builder.graph().matmul(flat, weight).context("linear")?;
        let y = match self.bias {
            Some(bias) => builder.binary(BinaryOp::Add, product, bias)?,
            None => product,
        };
        if x_ty.rank() == 2 {
            return Ok(y);
        }
        let mut shape = leading.to_vec();
        shape.push(self.out_features);
        builder.graph().reshape(y, shape).context("linear")
    }
}

/// Declares a linear layer and applies it: the common case in one call.
pub fn linear(
    builder: &mut ModelBuilder,
    name: &str,
    x: NodeId,
    out_features: usize,
    init: Init,
) -> Result<NodeId, FrontendError> {
    let in_features = builder.ty(x)?.shape.last().copied().unwrap_or(1);
    Linear::new(builder, name, in_features, out_features, init)?.forward(builder, x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activations::{relu, softmax};
    use kiln_ir::TensorType;

    #[test]
    fn a_value_from_another_model_is_an_error_not_a_panic() {
        let mut other = ModelBuilder::new("other", 0);
        for index in 0..5 {
            other
                .input(&format!("x{index}"), TensorType::f32([2, 2]))
                .unwrap();
        }
        let foreign = other.input("y", TensorType::f32([2, 3])).unwrap();
        let mut builder = ModelBuilder::new("m", 0);
        let err = linear(&mut builder, "fc", foreign, 4, Init::Zeros).unwrap_err();
        assert_eq!(err.to_string(), "value: node %5 belongs to another graph");
        assert!(relu(&mut builder, foreign).is_err());
        assert!(softmax(&mut builder, foreign, -1).is_err());
    }

    #[test]
    fn a_layer_declared_in_another_model_is_an_error_not_its_namesake() {
        // Both builders declare the same layer first, so its parameters have the same
        // indices in each: an id without its graph's identity would silently pick the
        // second model's own weight.
        let mut first = ModelBuilder::new("first", 0);
        let layer = Linear::new(&mut first, "fc", 3, 2, Init::Zeros).unwrap();
        let mut second = ModelBuilder::new("second", 0);
        let own = Linear::new(&mut second, "fc", 3, 2, Init::Zeros).unwrap();
        assert_eq!(own.weight().index(), layer.weight().index());
        let x = second.input("x", TensorType::f32([4, 3])).unwrap();
        let err = layer.forward(&mut second, x).unwrap_err();
        assert_eq!(
            err.to_string(),
            "linear layer: node %0 belongs to another graph"
        );
        let y = own.forward(&mut second, x).unwrap();
        assert_eq!(second.ty(y).unwrap(), &TensorType::f32([4, 2]));
        assert_eq!((own.in_features(), own.out_features()), (3, 2));
    }
}

#[cfg(test)]
mod weight_norm_tests {
    use super::*;
    use kiln_ir::{evaluate, Feeds, Precision, Tensor, TensorType};

    #[test]
    fn a_weight_normed_layer_starts_as_the_plain_one_and_scales_by_g() {
        let mut builder = ModelBuilder::new("wn", 7);
        let x = builder.input("x", TensorType::f32([2, 3])).unwrap();
        let layer =
            Linear::weight_normed(&mut builder, "fc", 3, 2, Init::GlorotUniform, None).unwrap();
        let y = layer.forward(&mut builder, x).unwrap();
        builder.output("y", y).unwrap();
        let model = builder.finish().unwrap();
        let v = model.params()["fc.weight_v"].clone();
        let g = model.params()["fc.weight_g"].clone();
        // g starts at each output column's norm.
        for (o, &scale) in g.iter().enumerate() {
            let norm = (0..3).map(|i| v[i * 2 + o].powi(2)).sum::<f32>().sqrt();
            assert!((scale - norm).abs() < 1e-6, "{scale} vs {norm}");
        }
        let data = [0.5, -1.0, 2.0, 1.5, 0.25, -0.75];
        let mut feeds = Feeds::new();
        feeds.insert("x".into(), Tensor::f32([2, 3], &data).unwrap());
        feeds.insert("fc.weight_v".into(), Tensor::f32([3, 2], &v).unwrap());
        // Doubling g doubles the output; at g = ‖v‖ it is x @ v.
        for factor in [1.0f32, 2.0] {
            let scaled: Vec<f32> = g.iter().map(|s| s * factor).collect();
            feeds.insert("fc.weight_g".into(), Tensor::f32([2], &scaled).unwrap());
            let out = evaluate(model.graph(), &feeds, Precision::F64).unwrap();
            for row in 0..2 {
                for o in 0..2 {
                    let plain: f64 = (0..3)
                        .map(|i| f64::from(data[row * 3 + i]) * f64::from(v[i * 2 + o]))
                        .sum();
                    let got = out.outputs["y"].data()[row * 2 + o];
                    let want = f64::from(factor) * plain;
                    assert!(
                        (got - want).abs() < 1e-5 * want.abs().max(1.0),
                        "{got} vs {want}"
                    );
                }
            }
        }
    }
}
