//! Inputs found by the fuzz targets in `fuzz/` that once crashed the parsers, kept
//! as plain tests so that stable CI checks them without a fuzzer.

use kiln_ir::serial::from_json;

/// `json_load`: a reshape whose target extents multiply past `usize::MAX` made the
/// reshape typing rule overflow (a panic with overflow checks on; without them the
/// count wrapped); the size limit now refuses the target before its count is used. It is the document's mistake, reported for the node at fault.
#[test]
fn json_reshape_to_an_overflowing_shape_is_an_error() {
    let src = r#"{
      "name": "g",
      "nodes": [
        { "op": { "Input": { "name": "x" } }, "ty": { "dtype": "I32", "shape": [6] } },
        { "op": { "Reshape": { "shape": [6, 18446744073709551615] } },
          "ty": { "dtype": "I32", "shape": [6, 1] }, "operands": [0] }
      ],
      "outputs": [ { "name": "y", "value": 1 } ]
    }"#;
    let err = from_json(src).unwrap_err().to_string();
    assert_eq!(
        err,
        "node 1: reshape: shape [6, 18446744073709551615] has more than 2147483647 \
         elements, the most a tensor may have"
    );
    // A count that wraps to exactly the operand's would be accepted by wrapping
    // arithmetic: 2^63 + 1 times 2 is 2 modulo 2^64.
    let wrapping = src.replace("[6, 18446744073709551615]", "[9223372036854775809, 2]");
    let src = wrapping.replace(r#""shape": [6] }"#, r#""shape": [2] }"#);
    let err = from_json(&src).unwrap_err().to_string();
    assert_eq!(
        err,
        "node 1: reshape: shape [9223372036854775809, 2] has more than 2147483647 \
         elements, the most a tensor may have"
    );
}
