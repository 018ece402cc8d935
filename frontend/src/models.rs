//! Ready-made networks built from the layer library.

use crate::activations::relu;
use crate::builder::{FrontendError, Model, ModelBuilder};
use crate::init::Init;
use crate::layers::linear;
use crate::loss::softmax_cross_entropy;
use kiln_ir::TensorType;

/// A ReLU multilayer perceptron classifier over `[batch, sizes[0]]` inputs named `x`,
/// with layers `fc1, fc2, ...` of widths `sizes[1..]` (the last is the class count).
///
/// With `training`, it also takes `labels: i32[batch]` and outputs the mean softmax
/// cross-entropy as `loss`; otherwise it outputs `logits`. Both variants declare the
/// same parameters in the same order, so with one seed they start from equal weights
/// and trained values move from one to the other by name.
pub fn mlp_classifier(
    name: &str,
    batch: usize,
    sizes: &[usize],
    training: bool,
    seed: u64,
) -> Result<Model, FrontendError> {
    let mut builder = ModelBuilder::new(name, seed);
    let (&inputs, layers) = sizes.split_first().ok_or_else(|| FrontendError::Operand {
        context: "mlp_classifier".to_string(),
        expected: "at least an input and an output size".to_string(),
        found: TensorType::f32(Vec::new()),
    })?;
    let mut h = builder.input("x", TensorType::f32([batch, inputs]))?;
    for (index, &width) in layers.iter().enumerate() {
        let last = index + 1 == layers.len();
        let init = if last {
            Init::GlorotUniform
        } else {
            Init::HeUniform
        };
        h = linear(&mut builder, &format!("fc{}", index + 1), h, width, init)?;
        if !last {
            h = relu(&mut builder, h)?;
        }
    }
    if training {
        let labels = builder.input("labels", TensorType::i32([batch]))?;
        let loss = softmax_cross_entropy(&mut builder, h, labels)?;
        builder.output("loss", loss)?;
    } else {
        builder.output("logits", h)?;
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_and_inference_variants_share_parameters() {
        let train = mlp_classifier("m", 8, &[4, 5, 3], true, 1).unwrap();
        let infer = mlp_classifier("m", 2, &[4, 5, 3], false, 1).unwrap();
        assert_eq!(train.params(), infer.params());
        let names: Vec<&String> = train.params().keys().collect();
        assert_eq!(names, ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]);
        assert!(train.graph().output_by_name("loss").is_some());
        assert_eq!(
            infer
                .graph()
                .ty(infer.graph().output_by_name("logits").unwrap()),
            &TensorType::f32([2, 3])
        );
    }
}
