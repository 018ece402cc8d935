//! The text form's fixed points: parse errors with their exact line:column and
//! message, a golden print of a hand-built MLP training step, declaration order and
//! float literals through round trips, and damaged text or JSON that must give an
//! error, never a panic.

use kiln_ir::random::{random_graph, RandomGraphOptions};
use kiln_ir::serial::{from_json, to_json};
use kiln_ir::text::{parse, print};
use kiln_ir::{CmpOp, DType, Graph, Op, Rng, TensorType};
use proptest::prelude::*;

// ---- parse errors ---------------------------------------------------------------------

/// Each case starts with a comment saying what it checks; the error names the line and
/// column of the offending token and what was expected there.
const ERROR_CASES: &[(&str, &str)] = &[
    (
        "// an unknown mnemonic\ngraph g {\n  %0 = input \"x\" : f32[2]\n  %1 = frob %0 : f32[2]\n}\n",
        "4:8: unknown op 'frob'",
    ),
    (
        "// an unknown comparison\ngraph g {\n  %0 = input \"x\" : f32[2]\n  %1 = cmp.gte %0, %0 : bool[2]\n}\n",
        "4:8: unknown op 'cmp.gte'",
    ),
    (
        "// an unknown dtype\ngraph g {\n  %0 = input \"x\" : f64[2]\n}\n",
        "3:20: unknown dtype 'f64': expected f32, i32 or bool",
    ),
    (
        "// a shape that is not a list\ngraph g {\n  %0 = input \"x\" : f32 2\n}\n",
        "3:24: expected '[' to open a shape, found number 2",
    ),
    (
        "// a negative extent\ngraph g {\n  %0 = input \"x\" : f32[2,-3]\n}\n",
        "3:26: expected a non-negative integer, found number -3",
    ),
    (
        "// an extent with a sign the printer never writes\ngraph g {\n  %0 = input \"x\" : f32[+2]\n}\n",
        "3:24: expected a non-negative integer, found number +2",
    ),
    (
        "// a shape without its comma\ngraph g {\n  %0 = input \"x\" : f32[2 3]\n}\n",
        "3:26: expected ',' or ']' in a shape, found number 3",
    ),
    (
        "// a type too large to address\ngraph g {\n  %0 = input \"x\" : f32[4294967296,4294967296]\n}\n",
        "3:8: input: shape [4294967296, 4294967296] has more than 2147483647 elements, the most a tensor may have",
    ),
    (
        "// a parameter of 100 000 x 100 000 (40 GB of f32) is beyond the size limit\ngraph g {\n  %0 = param \"w\" : f32[100000,100000]\n}\n",
        "3:8: param: shape [100000, 100000] has more than 2147483647 elements, the most a tensor may have",
    ),
    (
        "// a reshape whose element count wraps to 2 in unchecked arithmetic\ngraph g {\n  %0 = input \"x\" : f32[2]\n  %1 = reshape %0 : f32[9223372036854775809,2]\n}\n",
        "4:8: reshape: shape [9223372036854775809, 2] has more than 2147483647 elements, the most a tensor may have",
    ),
    (
        "// a broadcast result beyond the size limit\ngraph g {\n  %0 = const 1.0 : f32[1,1]\n  %1 = broadcast %0 : f32[65536,65536]\n}\n",
        "4:8: broadcast: shape [65536, 65536] has more than 2147483647 elements, the most a tensor may have",
    ),
    (
        "// an empty type whose strides would not fit: zero extents count as 1\ngraph g {\n  %0 = input \"x\" : f32[0,65536,65536]\n}\n",
        "3:8: input: shape [0, 65536, 65536] has more than 2147483647 elements, the most a tensor may have (counting extents of 0 as 1)",
    ),
    (
        "// operands of different shapes\ngraph g {\n  %0 = input \"x\" : f32[2]\n  %1 = input \"y\" : f32[3]\n  %2 = add %0, %1 : f32[2]\n}\n",
        "5:8: add: operand types f32[2] and f32[3] differ",
    ),
    (
        "// a declared type the operands do not give\ngraph g {\n  %0 = input \"x\" : f32[2,3]\n  %1 = reduce_sum %0 axes=[1] : f32[2]\n}\n",
        "4:8: reduce_sum: declared type f32[2] but the operands give f32[2,1]",
    ),
    (
        "// a matmul whose contraction extents differ\ngraph g {\n  %0 = input \"a\" : f32[2,3]\n  %1 = matmul.nt %0, %0 : f32[2,2]\n  %2 = matmul %0, %0 : f32[2,3]\n}\n",
        "5:8: matmul: contraction extents differ: f32[2,3] gives k = 3, f32[2,3] gives k = 2",
    ),
    (
        "// an undefined operand\ngraph g {\n  %0 = input \"x\" : f32[2]\n  %1 = neg %7 : f32[2] // %7 does not exist\n}\n",
        "4:12: value %7 is not defined",
    ),
    (
        "// an output of an undefined value\ngraph g {\n  %0 = input \"x\" : f32[2]\n  output \"y\" = %x\n}\n",
        "4:16: value %x is not defined",
    ),
    (
        "// a value defined twice\ngraph g {\n  %0 = input \"x\" : f32[2]\n  %0 = neg %0 : f32[2]\n}\n",
        "4:3: value %0 is defined twice",
    ),
    (
        "// two inputs with one name\ngraph g {\n  %0 = input \"x\" : f32[2]\n  %1 = input \"x\" : f32[2]\n}\n",
        "4:8: input name \"x\" is used twice",
    ),
    (
        "// two outputs with one name\ngraph g {\n  %0 = input \"x\" : f32[2]\n  output \"y\" = %0\n  output \"y\" = %0\n}\n",
        "5:3: output name \"y\" is used twice",
    ),
    (
        "// an update of something that is not a parameter\ngraph g {\n  %0 = input \"x\" : f32[2]\n  update \"x\" = %0\n}\n",
        "4:3: update of \"x\": no parameter has that name",
    ),
    (
        "// an update of another type\ngraph g {\n  %0 = param \"w\" : f32[2]\n  %1 = cast %0 : i32[2]\n  update \"w\" = %1\n}\n",
        "5:3: update of w: value type i32[2] differs from parameter type f32[2]",
    ),
    (
        "// a missing comma between operands\ngraph g {\n  %0 = input \"x\" : f32[2]\n  %1 = add %0 %0 : f32[2]\n}\n",
        "4:15: expected ',' after operand (add takes 2 operands), found '%0'",
    ),
    (
        "// too few operands\ngraph g {\n  %0 = input \"x\" : f32[2]\n  %1 = select %0, %0 : f32[2]\n}\n",
        "4:22: expected ',' after operand (select takes 3 operands), found ':'",
    ),
    (
        "// too many operands\ngraph g {\n  %0 = input \"x\" : f32[2]\n  %1 = neg %0, %0 : f32[2]\n}\n",
        "4:14: neg takes 1 operands, found more",
    ),
    (
        "// a reduction without its axes\ngraph g {\n  %0 = input \"x\" : f32[2]\n  %1 = reduce_max %0 : f32[1]\n}\n",
        "4:22: expected attribute axes=..., found ':'",
    ),
    (
        "// a missing result type\ngraph g {\n  %0 = input \"x\" f32[2]\n}\n",
        "3:18: expected ':' before the result type, found 'f32'",
    ),
    (
        "// an i32 constant that is not whole\ngraph g {\n  %0 = const 1.5 : i32[2]\n}\n",
        "3:8: const: 1.5 is not a valid i32 value",
    ),
    (
        "// a constant that is not a number\ngraph g {\n  %0 = const one : f32[2]\n}\n",
        "3:14: expected a number, found 'one'",
    ),
    (
        "// a name without quotes\ngraph g {\n  %0 = input x : f32[2]\n}\n",
        "3:14: expected a quoted input name, found 'x'",
    ),
    (
        "// a string left open\ngraph g {\n  %0 = input \"x : f32[2]\n}\n",
        "3:14: unterminated string",
    ),
    (
        "// an unknown escape\ngraph g {\n  %0 = input \"a\\tb\" : f32[2]\n}\n",
        "3:16: unknown escape in string: expected \\\", \\\\ or \\n",
    ),
    (
        "// a stray character\ngraph g {\n  %0 = input \"x\" : f32[2] ;\n}\n",
        "3:27: unexpected character ';'",
    ),
    (
        "// the closing brace is missing\ngraph g {\n  %0 = input \"x\" : f32[2]\n",
        "4:1: expected '}' to close the graph, found end of input",
    ),
    (
        "// text after the graph\ngraph g {\n}\ngraph h {\n}\n",
        "4:1: expected end of input after the graph, found 'graph'",
    ),
    (
        "// no graph at all\n",
        "2:1: expected 'graph', found end of input",
    ),
];

#[test]
fn parse_errors_give_line_column_and_what_was_expected() {
    for (src, expected) in ERROR_CASES {
        let err = parse(src).expect_err(src);
        assert_eq!(&err.to_string(), expected, "{src}");
        assert_eq!(
            format!("{}:{}: {}", err.line, err.column, err.message),
            *expected
        );
    }
}

// ---- golden -----------------------------------------------------------------------------

/// One SGD step of a two-layer MLP with a softmax cross-entropy loss, built through
/// the builder in an order unlike the printed one: a constant comes before the
/// inputs, parameters and an input are declared between ops, and dead nodes remain.
fn mlp_step() -> Graph {
    let mut g = Graph::new("mlp");
    let lr = g.constant(0.1, TensorType::f32([3, 5])).unwrap();
    let x = g.input("x", TensorType::f32([4, 3])).unwrap();
    let w1 = g.parameter("w1", TensorType::f32([3, 5])).unwrap();
    let h = g.matmul(x, w1).unwrap();
    let b1 = g.parameter("b1", TensorType::f32([1, 5])).unwrap();
    let bias = g.broadcast(b1, [4, 5]).unwrap();
    let h = g.add_(h, bias).unwrap();
    let h = g.relu(h).unwrap();
    let w2 = g.parameter("w2", TensorType::f32([5, 2])).unwrap();
    let logits = g.matmul(h, w2).unwrap();
    let labels = g.input("labels", TensorType::i32([4])).unwrap();
    let max = g.reduce_max(logits, &[1]).unwrap();
    let max = g.broadcast(max, [4, 2]).unwrap();
    let shifted = g.sub(logits, max).unwrap();
    let sum = g.exp(shifted).unwrap();
    let sum = g.reduce_sum(sum, &[1]).unwrap();
    let lse = g.log(sum).unwrap();
    let lse = g.broadcast(lse, [4, 2]).unwrap();
    let log_probs = g.sub(shifted, lse).unwrap();
    let target = g.one_hot(labels, 2).unwrap();
    let picked = g.mul(target, log_probs).unwrap();
    let loss = g.reduce_mean(picked, &[0, 1]).unwrap();
    let loss = g.neg(loss).unwrap();
    let loss = g.reshape(loss, Vec::new()).unwrap();
    g.set_output("loss", loss).unwrap();
    // Dead code (no output reads it) is printed too, in topological order.
    let grad = g.matmul_t(x, h, true, false).unwrap();
    let grad = g.transpose(grad, &[1, 0]).unwrap();
    let grad = g.matmul_t(grad, grad, false, true).unwrap();
    let zero = g.constant_like(0.0, grad).unwrap();
    let positive = g.compare(CmpOp::Gt, grad, zero).unwrap();
    let grad = g.select(positive, grad, zero).unwrap();
    let grad = g.reduce_sum(grad, &[0]).unwrap();
    g.broadcast(grad, [5, 5]).unwrap();
    let step = g.mul(lr, w1).unwrap();
    let new_w1 = g.sub(w1, step).unwrap();
    g.set_update(w1, new_w1).unwrap();
    let predicted = g.cast(logits, DType::I32).unwrap();
    g.set_output("predicted", predicted).unwrap();
    g
}

const MLP_STEP: &str = r#"graph mlp {
  %0 = input "x" : f32[4,3]
  %1 = input "labels" : i32[4]
  %2 = param "w1" : f32[3,5]
  %3 = param "b1" : f32[1,5]
  %4 = param "w2" : f32[5,2]
  %5 = const 0.1 : f32[3,5]
  %6 = matmul %0, %2 : f32[4,5]
  %7 = broadcast %3 : f32[4,5]
  %8 = add %6, %7 : f32[4,5]
  %9 = relu %8 : f32[4,5]
  %10 = matmul %9, %4 : f32[4,2]
  %11 = reduce_max %10 axes=[1] : f32[4,1]
  %12 = broadcast %11 : f32[4,2]
  %13 = sub %10, %12 : f32[4,2]
  %14 = exp %13 : f32[4,2]
  %15 = reduce_sum %14 axes=[1] : f32[4,1]
  %16 = log %15 : f32[4,1]
  %17 = broadcast %16 : f32[4,2]
  %18 = sub %13, %17 : f32[4,2]
  %19 = one_hot %1 depth=2 : f32[4,2]
  %20 = mul %19, %18 : f32[4,2]
  %21 = reduce_mean %20 axes=[0,1] : f32[1,1]
  %22 = neg %21 : f32[1,1]
  %23 = reshape %22 : f32[]
  %24 = matmul.tn %0, %9 : f32[3,5]
  %25 = transpose %24 perm=[1,0] : f32[5,3]
  %26 = matmul.nt %25, %25 : f32[5,5]
  %27 = const 0.0 : f32[5,5]
  %28 = cmp.gt %26, %27 : bool[5,5]
  %29 = select %28, %26, %27 : f32[5,5]
  %30 = reduce_sum %29 axes=[0] : f32[1,5]
  %31 = broadcast %30 : f32[5,5]
  %32 = mul %5, %2 : f32[3,5]
  %33 = sub %2, %32 : f32[3,5]
  %34 = cast %10 : i32[4,2]
  output "loss" = %23
  output "predicted" = %34
  update "w1" = %33
}
"#;

#[test]
fn golden_mlp_step_prints_exactly() {
    let graph = mlp_step();
    assert_eq!(print(&graph), MLP_STEP);
    assert_eq!(graph.to_string(), MLP_STEP);
    // The golden text is itself a parser input that prints back unchanged, and so is
    // the graph read back from its JSON form.
    assert_eq!(print(&parse(MLP_STEP).unwrap()), MLP_STEP);
    assert_eq!(print(&from_json(&to_json(&graph)).unwrap()), MLP_STEP);
}

// ---- round trips of fixed graphs -----------------------------------------------------------

#[test]
fn declaration_order_of_inputs_and_parameters_survives_round_trips() {
    let mut g = Graph::new("order");
    let b = g.parameter("b", TensorType::f32([2])).unwrap();
    let z = g.input("z", TensorType::f32([2])).unwrap();
    let a = g.parameter("a", TensorType::f32([2])).unwrap();
    let sum = g.add_(b, a).unwrap();
    let y = g.input("y", TensorType::f32([2])).unwrap();
    let sum = g.add_(sum, y).unwrap();
    let sum = g.add_(sum, z).unwrap();
    g.set_output("out", sum).unwrap();
    let names = |g: &Graph| -> Vec<String> {
        g.inputs()
            .iter()
            .chain(g.params())
            .map(|&id| g.leaf_name(id).unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&g), ["z", "y", "b", "a"]);
    let parsed = parse(&print(&g)).unwrap();
    assert_eq!(names(&parsed), ["z", "y", "b", "a"]);
    assert_eq!(
        names(&from_json(&to_json(&g)).unwrap()),
        ["z", "y", "b", "a"]
    );
    assert_eq!(
        print(&parsed),
        "graph order {\n  %0 = input \"z\" : f32[2]\n  %1 = input \"y\" : f32[2]\n  %2 = param \"b\" : f32[2]\n  %3 = param \"a\" : f32[2]\n  %4 = add %2, %3 : f32[2]\n  %5 = add %4, %1 : f32[2]\n  %6 = add %5, %0 : f32[2]\n  output \"out\" = %6\n}\n"
    );
}

#[test]
fn constants_print_shortest_and_parse_to_the_same_bits() {
    let cases: [(f64, &str); 10] = [
        (1.0, "1.0"),
        (0.1, "0.1"),
        (1e-7, "1e-7"),
        (-0.0, "-0.0"),
        (5e-324, "5e-324"),
        (f64::MAX, "1.7976931348623157e308"),
        (1e21, "1e21"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (f64::NAN, "nan"),
    ];
    for (value, literal) in cases {
        let mut g = Graph::new("c");
        let id = g.constant(value, TensorType::f32([1])).unwrap();
        g.set_output("c", id).unwrap();
        let text = print(&g);
        assert_eq!(
            text,
            format!("graph c {{\n  %0 = const {literal} : f32[1]\n  output \"c\" = %0\n}}\n")
        );
        let parsed = parse(&text).unwrap();
        let Op::Constant { value: back } = parsed.op(parsed.output_by_name("c").unwrap()) else {
            panic!("the output is the constant");
        };
        if value.is_nan() {
            assert!(back.is_nan());
        } else {
            assert_eq!(back.to_bits(), value.to_bits(), "{literal}");
        }
    }
}

#[test]
fn comments_blank_lines_and_named_values_are_accepted() {
    let src = "// checks: comments, blank lines and free value names\n\ngraph g { // the body\n\n  %x = input \"x\" : f32[2] // an input\n  // a whole-line comment\n  %double = add %x, %x : f32[2]\n\n  output \"y\" = %double\n}\n// after the graph\n";
    assert_eq!(
        print(&parse(src).unwrap()),
        "graph g {\n  %0 = input \"x\" : f32[2]\n  %1 = add %0, %0 : f32[2]\n  output \"y\" = %1\n}\n"
    );
}

// ---- damaged input ---------------------------------------------------------------------------

/// Strings spliced into printed text: each breaks a different part of the grammar.
const STRAY_TEXT: [&str; 16] = [
    "%",
    "\"",
    "%999",
    ",",
    "}",
    "{",
    "[",
    "f32[4294967296,4294967296]",
    "-",
    "axes=[9]",
    "1e999",
    "//",
    "\\",
    "cmp.",
    "=",
    "\n",
];

/// Strings spliced into JSON documents.
const STRAY_JSON: [&str; 8] = ["0", "\"", "9", "-1", "{}", "[]", "null", "1e400"];

/// `text` with `length` characters from `at` (modulo its length) replaced by `stray`.
fn splice(text: &str, at: usize, length: usize, stray: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = at % chars.len();
    let end = (at + length).min(chars.len());
    let mut damaged: String = chars[..at].iter().collect();
    damaged.push_str(stray);
    damaged.extend(&chars[end..]);
    damaged
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Damaged text parses or gives an error located inside the text; damaged JSON
    /// reads or gives an error. Neither panics.
    #[test]
    fn damaged_input_gives_errors_not_panics(
        seed in any::<u64>(),
        at in any::<usize>(),
        length in 0usize..12,
        stray in 0usize..16,
    ) {
        let graph = random_graph(&mut Rng::new(seed), &RandomGraphOptions::default());
        let damaged = splice(&print(&graph), at, length, STRAY_TEXT[stray]);
        if let Err(err) = parse(&damaged) {
            let lines = damaged.lines().count() + 1;
            prop_assert!((1..=lines).contains(&err.line), "{}\n{}", err, damaged);
            prop_assert!(err.column >= 1, "{}", err);
            prop_assert!(!err.message.is_empty());
        }
        let damaged_json = splice(&to_json(&graph), at, length, STRAY_JSON[stray % STRAY_JSON.len()]);
        if let Err(err) = from_json(&damaged_json) {
            prop_assert!(!err.to_string().is_empty());
        }
    }
}
