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
    bias: NodeId,
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
        let weight = builder.parameter(
            &format!("{name}.weight"),
            &[in_features, out_features],
            init,
        )?;
        let bias = builder.parameter(&format!("{name}.bias"), &[out_features], Init::Zeros)?;
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

    /// The `[out]` bias parameter.
    pub fn bias(&self) -> NodeId {
        self.bias
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Applies the layer to a `[batch, in]` f32 value of the builder that declared it.
    pub fn forward(&self, builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
        // Checked first so that a layer from another builder is named as the mistake,
        // rather than an operand that happens to be foreign too.
        builder.check_own(self.weight, "linear layer")?;
        let x_ty = builder.ty(x)?.clone();
        let in_features = self.in_features;
        if x_ty.dtype != DType::F32 || x_ty.rank() != 2 || x_ty.shape[1] != in_features {
            return Err(FrontendError::Operand {
                context: "linear".to_string(),
                expected: format!("f32[batch,{in_features}]"),
                found: x_ty,
            });
        }
        let product = builder.graph().matmul(x, self.weight).context("linear")?;
        builder.binary(BinaryOp::Add, product, self.bias)
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

pub fn relu(builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
    builder.graph().relu(x).context("relu")
}

/// Softmax over the last axis, stabilised by subtracting the row maximum.
pub fn softmax(builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
    let x_ty = builder.ty(x)?.clone();
    let shape = x_ty.shape.clone();
    let last = shape
        .len()
        .checked_sub(1)
        .ok_or_else(|| FrontendError::Operand {
            context: "softmax".to_string(),
            expected: "a tensor of rank 1 or more".to_string(),
            found: x_ty,
        })?;
    let graph = builder.graph();
    let max = graph.reduce_max(x, &[last]).context("softmax")?;
    let max = graph.broadcast(max, shape.clone()).context("softmax")?;
    let shifted = graph.sub(x, max).context("softmax")?;
    let exp = graph.exp(shifted).context("softmax")?;
    let total = graph.reduce_sum(exp, &[last]).context("softmax")?;
    let total = graph.broadcast(total, shape).context("softmax")?;
    graph.div(exp, total).context("softmax")
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(softmax(&mut builder, foreign).is_err());
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
