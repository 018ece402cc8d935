//! Property tests: the text form and the JSON form are inverses of the printer on
//! random well-typed graphs, and a parsed graph computes what the original computes.

use kiln_ir::random::{random_feeds, random_graph, RandomGraphOptions};
use kiln_ir::serial::{from_json, to_json};
use kiln_ir::text::{parse, print};
use kiln_ir::{evaluate, Graph, Precision, Rng};
use proptest::prelude::*;

fn signature(graph: &Graph) -> Vec<String> {
    let leaves = graph.inputs().iter().chain(graph.params());
    let mut items: Vec<String> = leaves
        .map(|&id| format!("{} {}", graph.leaf_name(id).unwrap_or("?"), graph.ty(id)))
        .collect();
    items.extend(
        graph
            .outputs()
            .iter()
            .map(|(name, _)| format!("output {name}")),
    );
    items.extend(
        graph
            .updates()
            .iter()
            .map(|(param, _)| format!("update {}", graph.leaf_name(*param).unwrap_or("?"))),
    );
    items
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn parse_inverts_print(seed in any::<u64>(), max_nodes in 1usize..30, max_rank in 1usize..4) {
        let options = RandomGraphOptions { max_nodes, max_rank, ..RandomGraphOptions::default() };
        let graph = random_graph(&mut Rng::new(seed), &options);
        let text = print(&graph);
        let parsed = parse(&text).map_err(|err| TestCaseError::fail(format!("{err}\n{text}")))?;
        prop_assert_eq!(print(&parsed), text.clone());
        prop_assert_eq!(parsed.node_count(), graph.node_count());
        prop_assert_eq!(signature(&parsed), signature(&graph));

        let feeds = random_feeds(&graph, &mut Rng::new(seed ^ 1));
        let expected = evaluate(&graph, &feeds, Precision::F64).unwrap();
        let actual = evaluate(&parsed, &feeds, Precision::F64).unwrap();
        for (name, value) in &expected.outputs {
            let same = value.data.iter().zip(&actual.outputs[name].data)
                .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
            prop_assert!(same, "output {} differs\n{}", name, text);
        }
    }

    #[test]
    fn from_json_inverts_to_json(seed in any::<u64>(), max_nodes in 1usize..30) {
        let options = RandomGraphOptions { max_nodes, ..RandomGraphOptions::default() };
        let graph = random_graph(&mut Rng::new(seed), &options);
        let back = from_json(&to_json(&graph)).map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(print(&back), print(&graph));
        prop_assert_eq!(signature(&back), signature(&graph));
    }
}
