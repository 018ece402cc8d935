//! The size limit through the graph builder: every way a type enters a graph (leaves
//! and each op's inferred result) refuses a shape beyond `MAX_ELEMENTS` with an error
//! naming the op and the shape, accepts one at the limit, and never lets a count wrap.

use kiln_ir::types::MAX_ELEMENTS;
use kiln_ir::{Graph, IrError, TensorType};

fn too_large(op: &'static str, shape: &[usize]) -> IrError {
    IrError::TooLarge {
        op,
        shape: shape.to_vec(),
        max: MAX_ELEMENTS,
    }
}

#[test]
fn leaves_beyond_the_limit_are_refused_and_at_the_limit_accepted() {
    let mut graph = Graph::new("leaves");
    let over = [MAX_ELEMENTS / 2 + 1, 2];
    assert_eq!(
        graph.input("x", TensorType::f32(over)).unwrap_err(),
        too_large("input", &over)
    );
    assert_eq!(
        graph
            .parameter("w", TensorType::f32([100_000, 100_000]))
            .unwrap_err(),
        too_large("param", &[100_000, 100_000])
    );
    assert_eq!(
        graph.constant(1.0, TensorType::i32(over)).unwrap_err(),
        too_large("const", &over)
    );
    // Refused leaves leave nothing behind: the names are still free.
    assert_eq!(graph.node_count(), 0);
    graph.input("x", TensorType::f32([MAX_ELEMENTS])).unwrap();
    graph
        .parameter("w", TensorType::f32([0, MAX_ELEMENTS]))
        .unwrap();
    graph
        .constant(0.0, TensorType::bool([1, MAX_ELEMENTS, 1]))
        .unwrap();
}

#[test]
fn op_results_beyond_the_limit_are_refused() {
    let mut graph = Graph::new("ops");
    let x = graph.input("x", TensorType::f32([2])).unwrap();
    // The example: (2^63 + 1) * 2 wraps to 2, which reshape used to accept.
    let wrapping = [(1usize << 63) + 1, 2];
    let err = graph.reshape(x, wrapping).unwrap_err();
    assert_eq!(err, too_large("reshape", &wrapping));
    assert_eq!(
        err.to_string(),
        "reshape: shape [9223372036854775809, 2] has more than 2147483647 elements, the most a tensor may have"
    );
    let unit = graph.input("unit", TensorType::f32([1, 1])).unwrap();
    assert_eq!(
        graph.broadcast(unit, [1 << 16, 1 << 16]).unwrap_err(),
        too_large("broadcast", &[1 << 16, 1 << 16])
    );
    let column = graph
        .input("column", TensorType::f32([1 << 16, 1]))
        .unwrap();
    let row = graph.input("row", TensorType::f32([1, 1 << 16])).unwrap();
    assert_eq!(
        graph.matmul(column, row).unwrap_err(),
        too_large("matmul", &[1 << 16, 1 << 16])
    );
    let labels = graph.input("labels", TensorType::i32([1 << 16])).unwrap();
    assert_eq!(
        graph.one_hot(labels, 1 << 16).unwrap_err(),
        too_large("one_hot", &[1 << 16, 1 << 16])
    );
    // An empty result whose strides would not fit is refused as well.
    let empty = graph.input("empty", TensorType::f32([0])).unwrap();
    assert_eq!(
        graph.reshape(empty, [0, 1 << 16, 1 << 16]).unwrap_err(),
        too_large("reshape", &[0, 1 << 16, 1 << 16])
    );
    // Within the limit, empty reshapes follow NumPy.
    let reshaped = graph.reshape(empty, [4, 0, 3]).unwrap();
    assert_eq!(graph.ty(reshaped), &TensorType::f32([4, 0, 3]));
}
