//! Fuzzes the JSON graph loader (`kiln_ir::serial::from_json`) with arbitrary bytes.
//!
//! Checks that loading never panics, and that a graph it accepts passes the
//! verifier and round-trips through JSON (`to_json`, `from_json`, `to_json` gives
//! the same document) and through the text printer and parser (the same printed
//! text).

#![no_main]

use kiln_fuzz::check_verifies_and_prints_back;
use kiln_ir::serial;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(src) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(graph) = serial::from_json(src) else {
        return;
    };
    let reparsed = check_verifies_and_prints_back(&graph, "the JSON loader", src);
    let json = serial::to_json(&graph);
    let reloaded = serial::from_json(&json)
        .unwrap_or_else(|err| panic!("written JSON does not load: {err}\n{json}"));
    assert_eq!(
        serial::to_json(&reloaded),
        json,
        "writing the reloaded graph changes the JSON"
    );
    assert_eq!(
        serial::to_json(&reparsed),
        json,
        "the text round trip changes the JSON"
    );
});
