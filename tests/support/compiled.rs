//! Compiled code against the interpreter for the layer tests (tests/conv.rs,
//! tests/sequence_layers.rs), shared through `#[path]`.

use kiln::ir::{evaluate, scalar, Feeds, Graph, Precision};
use kiln::passes::pipeline::{self, PipelineOptions};

/// Compiles `graph` for inference, runs it on `feeds`, and asserts every output
/// equals the interpreter's (f32) bit for bit, with its type.
pub fn assert_compiled_matches(graph: &Graph, feeds: &Feeds) {
    let expected = evaluate(graph, feeds, Precision::F32).unwrap();
    let mut exe =
        kiln::compile::compile_with(graph, pipeline::INFERENCE, &PipelineOptions::default())
            .unwrap();
    let (outputs, _) = exe.run_feeds(feeds).unwrap();
    for (name, want) in &expected.outputs {
        let got = &outputs[name];
        assert_eq!(got.ty(), want.ty(), "{name}");
        for (index, (a, e)) in got.data().iter().zip(want.data()).enumerate() {
            assert!(
                scalar::same(*a, *e),
                "{name}[{index}]: compiled {a}, interpreter {e}"
            );
        }
    }
}
