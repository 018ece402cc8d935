//! Random convolutions for the tests of the window ops (`conv_ops.rs`) and of the
//! GPU's implicit GEMM (`ptx_exec.rs`): odd sizes in one, two and three spatial
//! dimensions with strides, dilations, uneven padding and groups.

use kiln::ir::op::ConvSpec;
use kiln::ir::{Graph, Op, Rng, TensorType};

/// A random convolution: the spec, `x`'s, `w`'s and the output's shapes.
pub struct Case {
    pub spec: ConvSpec,
    pub x: Vec<usize>,
    pub w: Vec<usize>,
    pub y: Vec<usize>,
}

pub fn random_case(rng: &mut Rng) -> Case {
    let rank = 1 + rng.below(3);
    let groups = 1 + rng.below(3);
    let (c, o) = ((1 + rng.below(3)) * groups, (1 + rng.below(3)) * groups);
    loop {
        let pick = |rng: &mut Rng, n: usize| (0..rank).map(|_| rng.below(n)).collect::<Vec<_>>();
        let spec = ConvSpec {
            stride: pick(rng, 3).into_iter().map(|s| s + 1).collect(),
            low: pick(rng, 3),
            high: pick(rng, 3),
            dilation: pick(rng, 2).into_iter().map(|d| d + 1).collect(),
            groups,
        };
        let spatial: Vec<usize> = pick(rng, 6).into_iter().map(|n| n + 1).collect();
        let taps: Vec<usize> = pick(rng, 3).into_iter().map(|t| t + 1).collect();
        let out: Option<Vec<usize>> = (0..rank)
            .map(|a| spec.out_extent(a, spatial[a], taps[a]))
            .collect();
        if let Some(out) = out {
            let batch = 1 + rng.below(2);
            return Case {
                x: [batch, c].into_iter().chain(spatial).collect(),
                w: [o, c / groups].into_iter().chain(taps).collect(),
                y: [batch, o].into_iter().chain(out).collect(),
                spec,
            };
        }
    }
}

/// A graph of the three ops on inputs `x`, `w` and `dy` of the case's shapes.
pub fn graph_of(case: &Case) -> Graph {
    let mut g = Graph::new("conv_ops");
    let x = g.input("x", TensorType::f32(case.x.clone())).unwrap();
    let w = g.input("w", TensorType::f32(case.w.clone())).unwrap();
    let dy = g.input("dy", TensorType::f32(case.y.clone())).unwrap();
    let y = g.add(Op::Conv(case.spec.clone()), &[x, w]).unwrap();
    let dx = Op::ConvInputGrad {
        spec: case.spec.clone(),
        input: case.x[2..].to_vec(),
    };
    let dx = g.add(dx, &[dy, w]).unwrap();
    let dw = Op::ConvFilterGrad {
        spec: case.spec.clone(),
        taps: case.w[2..].to_vec(),
    };
    let dw = g.add(dw, &[x, dy]).unwrap();
    assert_eq!(g.ty(y).shape, case.y);
    assert_eq!(g.ty(dx).shape, case.x);
    assert_eq!(g.ty(dw).shape, case.w);
    g.set_output("y", y).unwrap();
    g.set_output("dx", dx).unwrap();
    g.set_output("dw", dw).unwrap();
    g
}
