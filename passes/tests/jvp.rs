//! Forward mode against reverse mode: on random graphs, the directional derivative
//! of the loss along random tangents (`jvp.loss`) equals the inner product of the
//! reverse-mode gradients with those tangents, for parameters and inputs alike.

use kiln_ir::random::{
    random_feeds, random_graph, random_tensor, with_sum_loss, RandomGraphOptions,
};
use kiln_ir::{evaluate, text, verify, DType, Graph, Precision, Rng};
use kiln_passes::autodiff::{self, grad_name, AutodiffOptions};
use kiln_passes::jvp::{self, jvp_name, tangent_name, JvpError, JvpOptions};

/// The f32 parameters and inputs of `graph`, by name.
fn f32_leaves(graph: &Graph) -> (Vec<String>, Vec<String>) {
    let names = |ids: &[kiln_ir::NodeId]| -> Vec<String> {
        ids.iter()
            .filter(|&&id| graph.ty(id).dtype == DType::F32)
            .map(|&id| graph.leaf_name(id).unwrap().to_string())
            .collect()
    };
    (names(graph.params()), names(graph.inputs()))
}

#[test]
fn forward_mode_agrees_with_reverse_mode_on_random_graphs() {
    let mut checked = 0;
    for seed in 0..300 {
        let mut rng = Rng::new(seed);
        let graph = random_graph(&mut rng, &RandomGraphOptions::default());
        let Some(graph) = with_sum_loss(&graph) else {
            continue;
        };
        let (params, inputs) = f32_leaves(&graph);
        let mut wrt = params.clone();
        wrt.extend(inputs.iter().cloned());
        if wrt.is_empty() {
            continue;
        }
        let reverse = autodiff::run(
            &graph,
            &AutodiffOptions {
                loss: "loss".to_string(),
                inputs: inputs.clone(),
            },
        )
        .unwrap();
        let forward = jvp::run(&graph, &JvpOptions { wrt: wrt.clone() }).unwrap();
        verify(&forward).unwrap_or_else(|err| panic!("seed {seed}: {err}"));

        let feeds = random_feeds(&graph, &mut rng);
        let mut with_tangents = feeds.clone();
        for name in &wrt {
            let leaf = graph
                .param_by_name(name)
                .or_else(|| graph.input_by_name(name));
            let tangent = random_tensor(&mut rng, graph.ty(leaf.unwrap()));
            with_tangents.insert(tangent_name(name), tangent);
        }
        let gradients = evaluate(&reverse, &feeds, Precision::F64).unwrap();
        let tangents = evaluate(&forward, &with_tangents, Precision::F64).unwrap();
        let directional = tangents.outputs[&jvp_name("loss")].data()[0];
        let mut inner = 0.0;
        let mut scale = directional.abs();
        for name in &wrt {
            let gradient = gradients.outputs[&grad_name(name)].data();
            let tangent = with_tangents[&tangent_name(name)].data();
            for (g, t) in gradient.iter().zip(tangent) {
                inner += g * t;
                scale += (g * t).abs();
            }
        }
        if !directional.is_finite() || !inner.is_finite() {
            continue;
        }
        assert!(
            (directional - inner).abs() <= 1e-9 * scale.max(1.0),
            "seed {seed}: jvp {directional}, <grad, tangent> {inner}\n{}",
            text::print(&forward)
        );
        checked += 1;
    }
    assert!(checked > 150, "only {checked} graphs were checked");
}

#[test]
fn the_pass_adds_tangent_inputs_and_jvp_outputs() {
    let src = r#"graph g {
  %0 = param "w" : f32[3]
  %1 = input "x" : f32[3]
  %2 = mul %0, %1 : f32[3]
  %3 = exp %2 : f32[3]
  output "y" = %3
}"#;
    let graph = text::parse(src).unwrap();
    let forward = jvp::run(
        &graph,
        &JvpOptions {
            wrt: vec!["w".to_string()],
        },
    )
    .unwrap();
    // d exp(w·x) = exp(w·x) · (dw·x): the mul rule, then the exp rule's reuse of y.
    insta::assert_snapshot!(text::print(&forward), @r#"
    graph g {
      %0 = input "x" : f32[3]
      %1 = input "tangent.w" : f32[3]
      %2 = param "w" : f32[3]
      %3 = mul %2, %0 : f32[3]
      %4 = exp %3 : f32[3]
      %5 = mul %1, %0 : f32[3]
      %6 = mul %5, %4 : f32[3]
      output "y" = %4
      output "jvp.y" = %6
    }
    "#);
}

#[test]
fn gather_and_scatter_add_apply_to_the_tangent_with_the_same_indices() {
    let src = r#"graph g {
  %0 = param "w" : f32[5,2]
  %1 = input "ids" : i32[3]
  %2 = gather %0, %1 axis=0 batch_dims=0 : f32[3,2]
  %3 = scatter_add %2, %1 axis=0 batch_dims=0 extent=4 : f32[4,2]
  output "y" = %3
}"#;
    let graph = text::parse(src).unwrap();
    let forward = jvp::run(
        &graph,
        &JvpOptions {
            wrt: vec!["w".to_string()],
        },
    )
    .unwrap();
    // The tangent takes the same gather and scatter_add as the value.
    insta::assert_snapshot!(text::print(&forward), @r#"
    graph g {
      %0 = input "ids" : i32[3]
      %1 = input "tangent.w" : f32[5,2]
      %2 = param "w" : f32[5,2]
      %3 = gather %2, %0 axis=0 batch_dims=0 : f32[3,2]
      %4 = scatter_add %3, %0 axis=0 batch_dims=0 extent=4 : f32[4,2]
      %5 = gather %1, %0 axis=0 batch_dims=0 : f32[3,2]
      %6 = scatter_add %5, %0 axis=0 batch_dims=0 extent=4 : f32[4,2]
      output "y" = %4
      output "jvp.y" = %6
    }
    "#);
}

#[test]
fn unknown_and_integer_leaves_are_refused() {
    let mut graph = Graph::new("g");
    graph
        .input("labels", kiln_ir::TensorType::i32([2]))
        .unwrap();
    let err = jvp::run(
        &graph,
        &JvpOptions {
            wrt: vec!["w".to_string()],
        },
    )
    .unwrap_err();
    assert_eq!(err, JvpError::Unknown("w".to_string()));
    assert_eq!(
        err.to_string(),
        "\"w\" is neither a parameter nor an input of the graph"
    );
    let err = jvp::run(
        &graph,
        &JvpOptions {
            wrt: vec!["labels".to_string()],
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"labels\" must be f32 to be differentiated, found i32[2]"
    );
}
