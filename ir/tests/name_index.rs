//! Lookups by name (`input_by_name`, `param_by_name`, `output_by_name`,
//! `update_of`) answer from indexes that `Graph` keeps in step with its lists; they
//! stay right after `remove_output`, `retain_outputs`, `replace_uses`, `prune` and
//! `clone`, and duplicate names are still refused.

use kiln_ir::{text, Graph, IrError, NodeId, TensorType};

struct Built {
    graph: Graph,
    x: NodeId,
    z: NodeId,
    w: NodeId,
    values: Vec<NodeId>,
}

/// Inputs `x`, `z`, parameter `w`, outputs `y0..y4` (`y_i = x` negated `i + 1`
/// times), an unused `exp` and an update of `w`.
fn build() -> Built {
    let mut graph = Graph::new("names");
    let x = graph.input("x", TensorType::f32([2])).unwrap();
    let z = graph.input("z", TensorType::f32([2])).unwrap();
    let w = graph.parameter("w", TensorType::f32([2])).unwrap();
    let mut values = Vec::new();
    let mut value = x;
    for i in 0..5 {
        value = graph.neg(value).unwrap();
        graph.set_output(&format!("y{i}"), value).unwrap();
        values.push(value);
    }
    graph.exp(z).unwrap();
    let new_w = graph.add_(w, x).unwrap();
    graph.set_update(w, new_w).unwrap();
    Built {
        graph,
        x,
        z,
        w,
        values,
    }
}

fn output_names(graph: &Graph) -> Vec<&str> {
    graph
        .outputs()
        .iter()
        .map(|(name, _)| name.as_str())
        .collect()
}

#[test]
fn lookups_find_each_kind_of_name_and_nothing_else() {
    let built = build();
    let graph = &built.graph;
    assert_eq!(graph.input_by_name("x"), Some(built.x));
    assert_eq!(graph.input_by_name("z"), Some(built.z));
    assert_eq!(graph.param_by_name("w"), Some(built.w));
    // Inputs and parameters share one namespace but are looked up by kind.
    assert_eq!(graph.input_by_name("w"), None);
    assert_eq!(graph.param_by_name("x"), None);
    assert_eq!(graph.output_by_name("x"), None);
    for (i, &value) in built.values.iter().enumerate() {
        assert_eq!(graph.output_by_name(&format!("y{i}")), Some(value));
    }
    assert_eq!(graph.output_by_name("y5"), None);
    let new_w = graph.updates()[0].1;
    assert_eq!(graph.update_of(built.w), Some(new_w));
    assert_eq!(graph.update_of(built.x), None);
}

#[test]
fn duplicate_names_are_refused() {
    let mut built = build();
    let graph = &mut built.graph;
    let ty = TensorType::f32([2]);
    let duplicate = |err: IrError| err.to_string();
    assert_eq!(
        duplicate(graph.input("w", ty.clone()).unwrap_err()),
        "input name \"w\" is used twice"
    );
    assert_eq!(
        duplicate(graph.parameter("x", ty).unwrap_err()),
        "parameter name \"x\" is used twice"
    );
    assert_eq!(
        duplicate(graph.set_output("y3", built.x).unwrap_err()),
        "output name \"y3\" is used twice"
    );
    assert_eq!(
        duplicate(graph.set_update(built.w, built.x).unwrap_err()),
        "update name \"w\" is used twice"
    );
}

#[test]
fn removing_outputs_keeps_the_others_findable() {
    let mut built = build();
    let graph = &mut built.graph;
    assert_eq!(graph.remove_output("y1"), Some(built.values[1]));
    assert_eq!(graph.remove_output("y1"), None);
    assert_eq!(output_names(graph), ["y0", "y2", "y3", "y4"]);
    assert_eq!(graph.output_by_name("y1"), None);
    for i in [0, 2, 3, 4] {
        assert_eq!(
            graph.output_by_name(&format!("y{i}")),
            Some(built.values[i]),
            "y{i}"
        );
    }
    // The name is free again, and the new output comes last.
    graph.set_output("y1", built.x).unwrap();
    assert_eq!(output_names(graph), ["y0", "y2", "y3", "y4", "y1"]);
    assert_eq!(graph.output_by_name("y1"), Some(built.x));
    assert_eq!(graph.output_by_name("y4"), Some(built.values[4]));

    graph.retain_outputs(|name, _| name != "y0" && name != "y3");
    assert_eq!(output_names(graph), ["y2", "y4", "y1"]);
    assert_eq!(graph.output_by_name("y0"), None);
    assert_eq!(graph.output_by_name("y3"), None);
    assert_eq!(graph.output_by_name("y2"), Some(built.values[2]));
    assert_eq!(graph.output_by_name("y4"), Some(built.values[4]));
    assert_eq!(graph.output_by_name("y1"), Some(built.x));
    graph.set_output("y0", built.z).unwrap();
    assert_eq!(graph.output_by_name("y0"), Some(built.z));
}

#[test]
fn replace_uses_and_prune_keep_lookups_right() {
    let mut built = build();
    let graph = &mut built.graph;
    // y2 now names what y0 names; the nodes between become dead.
    graph.remove_output("y3").unwrap();
    graph.remove_output("y4").unwrap();
    graph
        .replace_uses(built.values[2], built.values[0])
        .unwrap();
    graph.prune();
    assert_eq!(output_names(graph), ["y0", "y1", "y2"]);
    assert_eq!(graph.output_by_name("y2"), Some(built.values[0]));
    assert_eq!(graph.output_by_name("y1"), Some(built.values[1]));
    assert_eq!(graph.output_by_name("y3"), None);
    assert!(!graph.contains(built.values[3]));
    // Unused leaves are the signature: pruning keeps them and their names.
    assert_eq!(graph.input_by_name("z"), Some(built.z));
    assert_eq!(graph.param_by_name("w"), Some(built.w));
    assert!(graph.update_of(built.w).is_some());
    assert_eq!(
        text::print(graph),
        "graph names {\n  %0 = input \"x\" : f32[2]\n  %1 = input \"z\" : f32[2]\n  %2 = param \"w\" : f32[2]\n  %3 = neg %0 : f32[2]\n  %4 = neg %3 : f32[2]\n  %5 = add %2, %0 : f32[2]\n  output \"y0\" = %3\n  output \"y1\" = %4\n  output \"y2\" = %3\n  update \"w\" = %5\n}\n"
    );
}

#[test]
fn a_clone_has_its_own_indexes() {
    let built = build();
    let mut copy = built.graph.clone();
    copy.remove_output("y0").unwrap();
    copy.set_output("extra", built.x).unwrap();
    let v = copy.input("v", TensorType::f32([1])).unwrap();
    assert_eq!(copy.input_by_name("v"), Some(v));
    assert_eq!(copy.output_by_name("extra"), Some(built.x));
    assert_eq!(copy.output_by_name("y0"), None);
    // The original is untouched.
    let graph = &built.graph;
    assert_eq!(graph.input_by_name("v"), None);
    assert_eq!(graph.output_by_name("extra"), None);
    assert_eq!(graph.output_by_name("y0"), Some(built.values[0]));
    assert_eq!(output_names(graph), ["y0", "y1", "y2", "y3", "y4"]);
}
