//! Threads change where work runs, never what it computes: large elementwise kernels
//! and matmuls are split over the executable's pool, and every result equals the
//! interpreter's (f32 mode) bit for bit with one thread and with two, at sizes that
//! do not divide into the blocks.

use kiln::ir::{evaluate, Feeds, Graph, Precision, Rng, Tensor, TensorType};
use kiln::passes::pipeline::{self, PipelineOptions};

fn random_tensor(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.uniform(-2.0, 2.0) as f32).collect();
    Tensor::f32(shape.to_vec(), &data).unwrap()
}

fn bits(tensor: &Tensor) -> Vec<u64> {
    tensor
        .data()
        .iter()
        .map(|x| if x.is_nan() { u64::MAX } else { x.to_bits() })
        .collect()
}

fn check(graph: &Graph, feeds: &Feeds) {
    let expected = evaluate(graph, feeds, Precision::F32).unwrap();
    for threads in [1, 2] {
        let options = PipelineOptions {
            threads: Some(threads),
            ..PipelineOptions::default()
        };
        let mut exe = kiln::compile::compile_with(graph, pipeline::INFERENCE, &options).unwrap();
        assert_eq!(exe.threads(), threads, "the large kernels are parallel");
        let (outputs, _) = exe.run_feeds(feeds).unwrap();
        for (name, value) in &outputs {
            let want = &expected.outputs[name];
            assert_eq!(bits(value), bits(want), "{name} with {threads} threads");
        }
    }
}

#[test]
fn large_elementwise_kernels_split_over_threads_exactly() {
    // 300 007 elements: not a multiple of the 64-element blocks.
    let n = 300_007;
    let mut g = Graph::new("wide");
    let x = g.input("x", TensorType::f32([n])).unwrap();
    let y = g.input("y", TensorType::f32([n])).unwrap();
    let e = g.exp(x).unwrap();
    let s = g.add_(e, y).unwrap();
    let r = g.relu(s).unwrap();
    g.set_output("r", r).unwrap();
    let mut rng = Rng::new(7);
    let mut feeds = Feeds::new();
    feeds.insert("x".into(), random_tensor(&mut rng, &[n]));
    feeds.insert("y".into(), random_tensor(&mut rng, &[n]));
    check(&g, &feeds);
}
