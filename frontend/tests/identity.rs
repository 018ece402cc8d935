//! Node ids are tied to the graph that made them: every public API of the frontend
//! that takes one answers an id from another model with an error naming it, and
//! lookups keyed by ids find nothing for a foreign id, even where its index exists.

use kiln_frontend::activations::{relu, softmax};
use kiln_frontend::layers::{linear, Linear};
use kiln_frontend::loss::{mean_squared_error, softmax_cross_entropy};
use kiln_frontend::{FrontendError, Init, ModelBuilder};
use kiln_ir::{evaluate, BinaryOp, Feeds, IrError, NodeId, Precision, Tensor, TensorType};

/// A builder whose nodes `%0` (an f32[2,3] input) and `%1` (an i32[2] input) mirror the
/// ids of `other`, so that an index-only id would silently resolve in both.
fn twin_builders() -> (ModelBuilder, ModelBuilder, NodeId, NodeId) {
    let mut own = ModelBuilder::new("own", 0);
    own.input("x", TensorType::f32([2, 3])).unwrap();
    own.input("y", TensorType::i32([2])).unwrap();
    let mut other = ModelBuilder::new("other", 0);
    let x = other.input("x", TensorType::f32([2, 3])).unwrap();
    let y = other.input("y", TensorType::i32([2])).unwrap();
    (own, other, x, y)
}

fn is_foreign(result: Result<NodeId, FrontendError>) -> bool {
    matches!(
        result,
        Err(FrontendError::Ir {
            source: IrError::ForeignNode(_),
            ..
        })
    )
}

#[test]
fn every_builder_api_rejects_a_foreign_value() {
    let (mut own, _other, x, y) = twin_builders();
    assert!(own.ty(x).is_err());
    assert!(is_foreign(own.scalar_like(1.0, x)));
    assert!(is_foreign(own.broadcast_to(x, &[4, 2, 3])));
    assert!(is_foreign(own.binary(BinaryOp::Add, x, x)));
    assert!(is_foreign(relu(&mut own, x)));
    assert!(is_foreign(softmax(&mut own, x, -1)));
    assert!(is_foreign(linear(&mut own, "fc", x, 2, Init::Zeros)));
    assert!(is_foreign(softmax_cross_entropy(&mut own, x, y)));
    assert!(is_foreign(mean_squared_error(&mut own, x, x)));
    assert_eq!(own.graph().exp(x), Err(IrError::ForeignNode(0)));
    let err = own.output("out", x).unwrap_err();
    assert_eq!(
        err.to_string(),
        "output \"out\": node %0 belongs to another graph"
    );
    // None of the failed calls left a node or output behind.
    let model = own.finish().unwrap();
    assert_eq!(model.graph().node_count(), 2);
    assert!(model.graph().outputs().is_empty());
}

#[test]
fn a_layer_is_checked_against_the_builder_it_is_applied_in() {
    let (mut own, mut other, x, _) = twin_builders();
    let layer = Linear::new(&mut other, "fc", 3, 2, Init::Zeros).unwrap();
    let own_x = own.graph().input_by_name("x").unwrap();
    let err = layer.forward(&mut own, own_x).unwrap_err();
    assert_eq!(
        err.to_string(),
        "linear layer: node %2 belongs to another graph"
    );
    assert!(layer.forward(&mut other, x).is_ok());
}

#[test]
fn an_evaluation_has_no_value_for_a_foreign_id() {
    let (mut own, mut other, x, _) = twin_builders();
    let own_x = own.graph().input_by_name("x").unwrap();
    let doubled = own.binary(BinaryOp::Add, own_x, own_x).unwrap();
    own.output("doubled", doubled).unwrap();
    other.output("x", x).unwrap();
    let model = own.finish().unwrap();
    let mut feeds = Feeds::new();
    feeds.insert(
        "x".into(),
        Tensor::f32([2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap(),
    );
    feeds.insert("y".into(), Tensor::i32([2], &[0, 1]).unwrap());
    let evaluation = evaluate(model.graph(), &feeds, Precision::F32).unwrap();
    assert_eq!(
        evaluation.values[&own_x].data(),
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
    // The other model's `x` has the same index as this one's, but is not this node.
    assert_eq!(x.index(), own_x.index());
    assert!(!evaluation.values.contains_key(&x));
}

#[test]
#[should_panic(expected = "is from another graph")]
fn reading_a_foreign_id_panics_like_indexing() {
    // `operands` and `users` used to read whichever node had the same index here.
    let (mut own, _other, x, _) = twin_builders();
    own.graph().users(x);
}
