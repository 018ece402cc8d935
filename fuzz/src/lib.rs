//! Checks shared by the fuzz targets in `fuzz_targets/`.

use kiln_ir::{text, verify, Graph};

/// Panics unless `graph` (accepted by the parser or loader named in `source`, from
/// input `src`) passes the verifier and round-trips through the text form: printing
/// it, parsing the printed text and printing again gives the same text. Returns the
/// re-parsed graph.
pub fn check_verifies_and_prints_back(graph: &Graph, source: &str, src: &str) -> Graph {
    if let Err(err) = verify(graph) {
        panic!("a graph from {source} fails the verifier: {err}\n{src}");
    }
    let printed = text::print(graph);
    let reparsed = text::parse(&printed)
        .unwrap_or_else(|err| panic!("printed text does not parse: {err}\n{printed}"));
    assert_eq!(
        text::print(&reparsed),
        printed,
        "printing the re-parsed graph changes the text"
    );
    reparsed
}
