//! Fuzzes the text IR parser (`kiln_ir::text::parse`) with arbitrary bytes.
//!
//! Checks that parsing never panics, and that a graph it accepts passes the
//! verifier and round-trips: printing it, parsing the printed text and printing
//! again gives the same text.

#![no_main]

use kiln_ir::{text, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(src) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(graph) = text::parse(src) else {
        return;
    };
    if let Err(err) = verify(&graph) {
        panic!("a parsed graph fails the verifier: {err}\n{src}");
    }
    let printed = text::print(&graph);
    let reparsed = text::parse(&printed)
        .unwrap_or_else(|err| panic!("printed text does not parse: {err}\n{printed}"));
    assert_eq!(
        text::print(&reparsed),
        printed,
        "printing the re-parsed graph changes the text"
    );
});
