//! Fuzzes the text IR parser (`kiln_ir::text::parse`) with arbitrary bytes.
//!
//! Checks that parsing never panics, and that a graph it accepts passes the
//! verifier and round-trips: printing it, parsing the printed text and printing
//! again gives the same text.

#![no_main]

use kiln_fuzz::check_verifies_and_prints_back;
use kiln_ir::text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(src) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(graph) = text::parse(src) else {
        return;
    };
    check_verifies_and_prints_back(&graph, "the text parser", src);
});
