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
        let bias = bias
            .map(|init| builder.parameter(&format!("{name}.bias"), &[out_features], init))
            .transpose()?;
        Ok(Linear {
            weight,
            bias,
            in_features,
            out_features,
        })
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
        let product = builder
            .graph()
            .matmul(flat, self.weight)
            .context("linear")?;
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
