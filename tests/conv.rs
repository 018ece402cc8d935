//! Convolution and pooling (`kiln_frontend::conv`): values against direct loops in
//! f64 over strides, paddings, dilations and groups at odd sizes; compiled code
//! against the interpreter bit for bit; gradients against finite differences; and
//! the output-size rule with its errors.

use kiln::frontend::conv::{self, ConvOptions, Padding, Pool};
use kiln::frontend::{Init, ModelBuilder};
use kiln::ir::{evaluate, Feeds, Graph, Precision, Rng, Tensor, TensorType};
use kiln::passes::autodiff::{self, grad_name, AutodiffOptions};

#[path = "support/compiled.rs"]
mod compiled;

fn random(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let count: usize = shape.iter().product();
    let data = (0..count)
        .map(|_| f64::from(rng.uniform(-1.0, 1.0) as f32))
        .collect();
    Tensor::new(TensorType::f32(shape), data).unwrap()
}

/// The convolution by its definition, in f64: `pads` are `(low, high)` per axis.
#[allow(clippy::too_many_arguments)]
fn reference_conv(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: [usize; 2],
    pads: [(usize, usize); 2],
    dilation: [usize; 2],
    groups: usize,
) -> Vec<f64> {
    let (xs, ws) = (x.ty().shape, w.ty().shape);
    let [n, c, h, wd] = [xs[0], xs[1], xs[2], xs[3]];
    let [o, cg, kh, kw] = [ws[0], ws[1], ws[2], ws[3]];
    let out = |i: usize, p: (usize, usize), k: usize, d: usize, s: usize| {
        (i + p.0 + p.1 - d * (k - 1) - 1) / s + 1
    };
    let ho = out(h, pads[0], kh, dilation[0], stride[0]);
    let wo = out(wd, pads[1], kw, dilation[1], stride[1]);
    let og = o / groups;
    let mut y = Vec::new();
    for batch in 0..n {
        for oc in 0..o {
            let group = oc / og;
            for i in 0..ho {
                for j in 0..wo {
                    let mut sum = b.data()[oc];
                    for ci in 0..cg {
                        let channel = group * cg + ci;
                        for di in 0..kh {
                            for dj in 0..kw {
                                let row = (i * stride[0] + di * dilation[0]) as isize
                                    - pads[0].0 as isize;
                                let col = (j * stride[1] + dj * dilation[1]) as isize
                                    - pads[1].0 as isize;
                                if row < 0 || col < 0 || row as usize >= h || col as usize >= wd {
                                    continue;
                                }
                                let xv = x.data()[((batch * c + channel) * h + row as usize) * wd
                                    + col as usize];
                                let wv = w.data()[((oc * cg + ci) * kh + di) * kw + dj];
                                sum += xv * wv;
                            }
                        }
                    }
                    y.push(sum);
                }
            }
        }
    }
    y
}

struct Case {
    x: [usize; 4],
    out_channels: usize,
    kernel: [usize; 2],
    options: ConvOptions,
}

fn cases() -> Vec<Case> {
    let options = |stride, padding, dilation, groups| ConvOptions {
        stride,
        padding,
        dilation,
        groups,
    };
    vec![
        Case {
            x: [2, 3, 7, 5],
            out_channels: 4,
            kernel: [3, 3],
            options: ConvOptions::default(),
        },
        Case {
            x: [1, 2, 9, 8],
            out_channels: 3,
            kernel: [3, 2],
            options: options([2, 3], Padding::Explicit([1, 2]), [1, 1], 1),
        },
        Case {
            x: [2, 4, 6, 7],
            out_channels: 6,
            kernel: [3, 3],
            options: options([1, 1], Padding::Same, [2, 1], 2),
        },
        Case {
            x: [1, 6, 5, 5],
            out_channels: 3,
            kernel: [1, 1],
            options: options([1, 2], Padding::Valid, [1, 1], 3),
        },
        Case {
            x: [3, 1, 4, 4],
            out_channels: 2,
            kernel: [4, 4],
            options: options([1, 1], Padding::Same, [1, 1], 1),
        },
    ]
}

/// A model computing `conv2d(x)` with the case's layer, its graph and feeds.
fn conv_model(case: &Case, seed: u64) -> (Graph, Feeds, Tensor, Tensor) {
    let mut builder = ModelBuilder::new("conv", seed);
    let x = builder.input("x", TensorType::f32(case.x)).unwrap();
    let groups = case.options.groups;
    let w_shape = [
        case.out_channels,
        case.x[1] / groups,
        case.kernel[0],
        case.kernel[1],
    ];
    let w = builder.parameter("w", &w_shape, Init::HeUniform).unwrap();
    let b = builder
        .parameter("b", &[case.out_channels], Init::Normal { std: 0.5 })
        .unwrap();
    let y = conv::conv2d(&mut builder, x, w, Some(b), &case.options).unwrap();
    builder.output("y", y).unwrap();
    let model = builder.finish().unwrap();
    let mut rng = Rng::new(seed);
    let x_value = random(&mut rng, &case.x);
    let mut feeds = Feeds::new();
    feeds.insert("x".into(), x_value);
    let mut params = Vec::new();
    for (name, shape) in [("w", w_shape.to_vec()), ("b", vec![case.out_channels])] {
        let tensor = Tensor::f32(shape, model.param(name).unwrap()).unwrap();
        feeds.insert(name.into(), tensor.clone());
        params.push(tensor);
    }
    let b_value = params.pop().unwrap();
    let w_value = params.pop().unwrap();
    (model.into_parts().0, feeds, w_value, b_value)
}

#[test]
fn conv2d_equals_its_definition_over_strides_paddings_dilations_and_groups() {
    for (seed, case) in cases().iter().enumerate() {
        let (graph, feeds, w, b) = conv_model(case, seed as u64);
        let result = evaluate(&graph, &feeds, Precision::F64).unwrap();
        let pads = |axis: usize| match case.options.padding {
            Padding::Valid => (0, 0),
            Padding::Explicit(p) => (p[axis], p[axis]),
            Padding::Same => {
                let total = case.options.dilation[axis] * (case.kernel[axis] - 1);
                (total / 2, total - total / 2)
            }
        };
        let expected = reference_conv(
            &feeds["x"],
            &w,
            &b,
            case.options.stride,
            [pads(0), pads(1)],
            case.options.dilation,
            case.options.groups,
        );
        let got = result.outputs["y"].data();
        assert_eq!(got.len(), expected.len(), "case {seed}");
        for (index, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!((g - e).abs() < 1e-12, "case {seed} [{index}]: {g} vs {e}");
        }
        if case.options.padding == Padding::Same {
            let shape = result.outputs["y"].ty().shape;
            assert_eq!(shape[2..], case.x[2..], "'same' keeps the spatial extents");
        }
    }
}

#[test]
fn compiled_convolutions_and_pools_equal_the_interpreter_bit_for_bit() {
    for (seed, case) in cases().iter().enumerate() {
        let (graph, feeds, _, _) = conv_model(case, seed as u64);
        compiled::assert_compiled_matches(&graph, &feeds);
    }
    let mut builder = ModelBuilder::new("pools", 0);
    let x = builder.input("x", TensorType::f32([2, 3, 7, 6])).unwrap();
    let max = conv::pool2d(&mut builder, x, Pool::Max, [3, 2], [2, 2], [1, 1]).unwrap();
    let avg = conv::pool2d(&mut builder, x, Pool::Avg, [2, 2], [1, 2], [0, 1]).unwrap();
    builder.output("max", max).unwrap();
    builder.output("avg", avg).unwrap();
    let graph = builder.finish().unwrap().into_parts().0;
    let mut feeds = Feeds::new();
    feeds.insert("x".into(), random(&mut Rng::new(5), &[2, 3, 7, 6]));
    compiled::assert_compiled_matches(&graph, &feeds);
}

#[test]
fn pools_equal_their_definitions_including_padding() {
    let x = random(&mut Rng::new(2), &[1, 2, 5, 5]);
    let mut builder = ModelBuilder::new("pool", 0);
    let input = builder.input("x", TensorType::f32([1, 2, 5, 5])).unwrap();
    let max = conv::pool2d(&mut builder, input, Pool::Max, [3, 3], [2, 2], [1, 1]).unwrap();
    let avg = conv::pool2d(&mut builder, input, Pool::Avg, [3, 3], [2, 2], [1, 1]).unwrap();
    builder.output("max", max).unwrap();
    builder.output("avg", avg).unwrap();
    let graph = builder.finish().unwrap().into_parts().0;
    let feeds = Feeds::from([("x".to_string(), x.clone())]);
    let result = evaluate(&graph, &feeds, Precision::F64).unwrap();
    assert_eq!(result.outputs["max"].ty(), TensorType::f32([1, 2, 3, 3]));
    let at = |c: usize, i: isize, j: isize| -> Option<f64> {
        (0..5).contains(&i).then_some(())?;
        (0..5).contains(&j).then_some(())?;
        Some(x.data()[(c * 5 + i as usize) * 5 + j as usize])
    };
    for c in 0..2 {
        for i in 0..3 {
            for j in 0..3 {
                let window: Vec<Option<f64>> = (0..3)
                    .flat_map(|di| (0..3).map(move |dj| (di, dj)))
                    .map(|(di, dj)| at(c, (2 * i + di) as isize - 1, (2 * j + dj) as isize - 1))
                    .collect();
                let max = window
                    .iter()
                    .flatten()
                    .copied()
                    .fold(f64::NEG_INFINITY, f64::max);
                // Padding counts as zeros in the mean (count_include_pad).
                let mean = window.iter().map(|v| v.unwrap_or(0.0)).sum::<f64>() / 9.0;
                let index = (c * 3 + i) * 3 + j;
                assert_eq!(result.outputs["max"].data()[index], max);
                assert!((result.outputs["avg"].data()[index] - mean).abs() < 1e-15);
            }
        }
    }
}

#[test]
fn one_dimensional_convolution_and_pooling() {
    let mut builder = ModelBuilder::new("conv1d", 1);
    let x = builder.input("x", TensorType::f32([2, 3, 11])).unwrap();
    let layer = conv::Conv2d::new(
        &mut builder,
        "c",
        3,
        4,
        [1, 3],
        ConvOptions {
            stride: [1, 2],
            padding: Padding::Explicit([0, 2]),
            dilation: [1, 2],
            groups: 1,
        },
        true,
        true,
    )
    .unwrap();
    let y = layer.forward(&mut builder, x).unwrap();
    // o = floor((11 + 4 - 2·2 - 1) / 2) + 1 = 6
    assert_eq!(builder.ty(y).unwrap(), &TensorType::f32([2, 4, 6]));
    let pooled = conv::pool1d(&mut builder, y, Pool::Max, 2, 2, 1).unwrap();
    assert_eq!(builder.ty(pooled).unwrap(), &TensorType::f32([2, 4, 4]));
    builder.output("pooled", pooled).unwrap();
    let model = builder.finish().unwrap();
    assert_eq!(model.params()["c.weight"].len(), 4 * 3 * 3);
    let mut feeds = Feeds::new();
    feeds.insert("x".into(), random(&mut Rng::new(4), &[2, 3, 11]));
    for name in ["c.weight", "c.bias"] {
        let ty = model.graph().ty(model.graph().param_by_name(name).unwrap());
        feeds.insert(
            name.into(),
            Tensor::f32(ty.shape.clone(), model.param(name).unwrap()).unwrap(),
        );
    }
    compiled::assert_compiled_matches(model.graph(), &feeds);
}

#[test]
fn convolution_gradients_match_finite_differences() {
    let case = Case {
        x: [1, 4, 5, 4],
        out_channels: 2,
        kernel: [2, 3],
        options: ConvOptions {
            stride: [2, 1],
            padding: Padding::Explicit([1, 1]),
            dilation: [1, 2],
            groups: 2,
        },
    };
    let (mut graph, mut feeds, _, _) = conv_model(&case, 7);
    // loss = Σ y · weights, with gradients for the input, the weight and the bias.
    let y = graph.output_by_name("y").unwrap();
    let shape = graph.ty(y).shape.clone();
    let weights = graph
        .input("weights", TensorType::f32(shape.clone()))
        .unwrap();
    let weighted = graph.mul(y, weights).unwrap();
    let sum = graph.reduce_sum(weighted, &[0, 1, 2, 3]).unwrap();
    let loss = graph.reshape(sum, Vec::new()).unwrap();
    graph.set_output("loss", loss).unwrap();
    feeds.insert("weights".into(), random(&mut Rng::new(8), &shape));
    let backward = autodiff::run(
        &graph,
        &AutodiffOptions {
            loss: "loss".to_string(),
            inputs: vec!["x".to_string()],
        },
    )
    .unwrap();
    let gradients = evaluate(&backward, &feeds, Precision::F64).unwrap();
    let loss_at =
        |feeds: &Feeds| evaluate(&graph, feeds, Precision::F64).unwrap().outputs["loss"].data()[0];
    for leaf in ["x", "w", "b"] {
        let gradient = gradients.outputs[&grad_name(leaf)].data().to_vec();
        for (index, &analytic) in gradient.iter().enumerate() {
            let nudged = |delta: f64| {
                let mut moved = feeds.clone();
                moved
                    .get_mut(leaf)
                    .unwrap()
                    .edit(|d| d[index] += delta)
                    .unwrap();
                loss_at(&moved)
            };
            let numeric = (nudged(1e-6) - nudged(-1e-6)) / 2e-6;
            assert!(
                (analytic - numeric).abs() < 1e-6 * analytic.abs().max(1.0),
                "d loss / d {leaf}[{index}]: {analytic} vs {numeric}"
            );
        }
    }
}

#[test]
fn sizes_that_do_not_fit_are_errors() {
    let mut builder = ModelBuilder::new("bad", 0);
    let x = builder.input("x", TensorType::f32([1, 3, 4, 4])).unwrap();
    let w = builder.parameter("w", &[2, 3, 5, 5], Init::Zeros).unwrap();
    let err = conv::conv2d(&mut builder, x, w, None, &ConvOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv2d: a kernel spanning 5 elements does not fit a padded extent of 4"
    );
    let grouped = ConvOptions {
        groups: 2,
        ..ConvOptions::default()
    };
    let err = conv::conv2d(&mut builder, x, w, None, &grouped).unwrap_err();
    assert!(err.to_string().contains("divisible by groups = 2"), "{err}");
    let strided_same = ConvOptions {
        stride: [2, 2],
        padding: Padding::Same,
        ..ConvOptions::default()
    };
    let err = conv::conv2d(&mut builder, x, w, None, &strided_same).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv2d: padding 'same' needs stride 1 (as in PyTorch)"
    );
    let err = conv::pool2d(&mut builder, x, Pool::Max, [2, 2], [2, 2], [2, 2]).unwrap_err();
    assert!(
        err.to_string().contains("more than half the kernel"),
        "{err}"
    );
}
