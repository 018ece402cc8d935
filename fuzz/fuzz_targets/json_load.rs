//! Fuzzes the JSON graph loader (`kiln_ir::serial::from_json`) with arbitrary bytes.
//!
//! Checks that loading never panics, and that a graph it accepts passes the
//! verifier and round-trips through JSON (`to_json`, `from_json`, `to_json` gives
//! the same document) and through the text printer and parser (the same printed
//! text).

#![no_main]

use kiln_ir::{serial, text, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(src) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(graph) = serial::from_json(src) else {
        return;
    };
    if let Err(err) = verify(&graph) {
        panic!("a loaded graph fails the verifier: {err}\n{src}");
    }
    let json = serial::to_json(&graph);
    let reloaded = serial::from_json(&json)
        .unwrap_or_else(|err| panic!("written JSON does not load: {err}\n{json}"));
    assert_eq!(
        serial::to_json(&reloaded),
        json,
        "writing the reloaded graph changes the JSON"
    );
    let printed = text::print(&graph);
    let reparsed = text::parse(&printed)
        .unwrap_or_else(|err| panic!("printed text does not parse: {err}\n{printed}"));
    assert_eq!(
        text::print(&reparsed),
        printed,
        "printing the re-parsed graph changes the text"
    );
    assert_eq!(
        serial::to_json(&reparsed),
        json,
        "the text round trip changes the JSON"
    );
});
