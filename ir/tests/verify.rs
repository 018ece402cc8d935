//! Graph-level checks through the public API: `verify` accepts every graph the
//! builder makes, and the builder refuses what would break a graph, with errors that
//! name the op (or the name) and the types involved.

use kiln_ir::random::{random_graph, RandomGraphOptions};
use kiln_ir::text::{parse, print};
use kiln_ir::{verify, BinaryOp, CmpOp, DType, Graph, IrError, NodeId, Op, Rng, TensorType};

/// A graph with a node of every op kind, outputs and updates.
fn every_op() -> Graph {
    let mut g = Graph::new("every_op");
    let x = g.input("x", TensorType::f32([2, 3])).unwrap();
    let labels = g.input("labels", TensorType::i32([2])).unwrap();
    let w = g.parameter("w", TensorType::f32([3, 4])).unwrap();
    let bias = g.parameter("bias", TensorType::f32([1, 4])).unwrap();
    let h = g.matmul(x, w).unwrap();
    let wide = g.broadcast(bias, [2, 4]).unwrap();
    let h = g.add_(h, wide).unwrap();
    let h = g.relu(h).unwrap();
    let shifted = g.reduce_max(h, &[1]).unwrap();
    let shifted = g.broadcast(shifted, [2, 4]).unwrap();
    let h = g.sub(h, shifted).unwrap();
    let e = g.exp(h).unwrap();
    let total = g.reduce_sum(e, &[1]).unwrap();
    let total = g.broadcast(total, [2, 4]).unwrap();
    let p = g.div(e, total).unwrap();
    let logp = g.log(p).unwrap();
    let target = g.one_hot(labels, 4).unwrap();
    let picked = g.mul(target, logp).unwrap();
    let loss = g.reduce_mean(picked, &[0, 1]).unwrap();
    let loss = g.neg(loss).unwrap();
    let zero = g.constant_like(0.0, p).unwrap();
    let positive = g.compare(CmpOp::Gt, p, zero).unwrap();
    let masked = g.select(positive, p, zero).unwrap();
    let best = g.max(masked, p).unwrap();
    let as_int = g.cast(best, DType::I32).unwrap();
    let as_float = g.cast(as_int, DType::F32).unwrap();
    let flat = g.reshape(as_float, [8]).unwrap();
    let grad = g.matmul_t(x, p, true, false).unwrap();
    let grad_t = g.transpose(grad, &[1, 0]).unwrap();
    let grad = g.transpose(grad_t, &[1, 0]).unwrap();
    let rate = g.constant_like(0.1, grad).unwrap();
    let step = g.mul(rate, grad).unwrap();
    let new_w = g.sub(w, step).unwrap();
    g.set_output("loss", loss).unwrap();
    g.set_output("flat", flat).unwrap();
    g.set_update(w, new_w).unwrap();
    g
}

// ---- verify accepts what the builder makes ----------------------------------------

#[test]
fn verify_accepts_a_graph_with_every_op() {
    let g = every_op();
    verify(&g).unwrap();
    let mnemonics: std::collections::BTreeSet<&str> =
        g.node_ids().iter().map(|&id| g.op(id).mnemonic()).collect();
    for op in [
        "matmul",
        "matmul.tn",
        "one_hot",
        "select",
        "cast",
        "transpose",
        "reduce_mean",
    ] {
        assert!(mnemonics.contains(op), "{op} missing from {mnemonics:?}");
    }
}

#[test]
fn verify_accepts_an_empty_graph_and_a_bare_input() {
    verify(&Graph::new("empty")).unwrap();
    let mut g = Graph::new("echo");
    let x = g.input("x", TensorType::bool(Vec::new())).unwrap();
    g.set_output("x", x).unwrap();
    verify(&g).unwrap();
}

#[test]
fn verify_accepts_parsed_pruned_and_rewired_graphs() {
    let g = every_op();
    let parsed = parse(&print(&g)).unwrap();
    verify(&parsed).unwrap();
    assert_eq!(print(&parsed), print(&g));

    let mut pruned = every_op();
    let before = pruned.node_count();
    pruned.remove_output("flat").unwrap();
    pruned.prune();
    verify(&pruned).unwrap();
    assert!(pruned.node_count() < before);

    // Replacing `relu(h)` by `h` itself, as a simplification pass might.
    let mut rewired = Graph::new("rewired");
    let x = rewired.input("x", TensorType::f32([3])).unwrap();
    let r = rewired.relu(x).unwrap();
    let y = rewired.exp(r).unwrap();
    rewired.set_output("y", y).unwrap();
    rewired.replace_uses(r, x).unwrap();
    rewired.prune();
    verify(&rewired).unwrap();
    assert_eq!(rewired.operands(y), vec![x]);
    assert!(!rewired.contains(r));
}

#[test]
fn verify_accepts_random_graphs() {
    for seed in 0..50 {
        let options = RandomGraphOptions {
            max_nodes: 30,
            ..RandomGraphOptions::default()
        };
        let g = random_graph(&mut Rng::new(seed), &options);
        verify(&g).unwrap_or_else(|err| panic!("seed {seed}: {err}\n{}", print(&g)));
    }
}

// ---- names, updates and node ids -----------------------------------------------------

#[test]
fn duplicate_names_are_refused() {
    let mut g = Graph::new("names");
    let x = g.input("x", TensorType::f32([2])).unwrap();
    let err = g.input("x", TensorType::f32([3])).unwrap_err();
    assert_eq!(
        err,
        IrError::DuplicateName {
            kind: "input",
            name: "x".to_string()
        }
    );
    assert_eq!(err.to_string(), "input name \"x\" is used twice");
    // Inputs and parameters share one namespace: feeds are looked up by name.
    let err = g.parameter("x", TensorType::f32([2])).unwrap_err();
    assert_eq!(err.to_string(), "parameter name \"x\" is used twice");
    let w = g.parameter("w", TensorType::f32([2])).unwrap();
    assert!(matches!(
        g.input("w", TensorType::f32([2])),
        Err(IrError::DuplicateName { kind: "input", .. })
    ));
    g.set_output("y", x).unwrap();
    let err = g.set_output("y", w).unwrap_err();
    assert_eq!(err.to_string(), "output name \"y\" is used twice");
    let doubled = g.add_(w, w).unwrap();
    g.set_update(w, doubled).unwrap();
    let err = g.set_update(w, x).unwrap_err();
    assert_eq!(
        err,
        IrError::DuplicateName {
            kind: "update",
            name: "w".to_string()
        }
    );
    // The refused calls left the graph as it was.
    assert_eq!(g.inputs(), &[x]);
    assert_eq!(g.params(), &[w]);
    assert_eq!(g.outputs().len(), 1);
    assert_eq!(g.updates(), &[(w, doubled)]);
    verify(&g).unwrap();
}

#[test]
fn an_update_of_a_non_parameter_is_refused() {
    let mut g = Graph::new("update");
    let x = g.input("x", TensorType::f32([2])).unwrap();
    let y = g.neg(x).unwrap();
    let err = g.set_update(x, y).unwrap_err();
    assert!(matches!(err, IrError::BadUpdate { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("update of {x}: target (input) is not a parameter")
    );
    let err = g.set_update(y, x).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("update of {y}: target (neg) is not a parameter")
    );
    assert!(g.updates().is_empty());
}

#[test]
fn an_update_of_another_type_is_refused() {
    let mut g = Graph::new("update");
    let w = g.parameter("w", TensorType::f32([2, 3])).unwrap();
    let v = g.input("v", TensorType::f32([3, 2])).unwrap();
    let err = g.set_update(w, v).unwrap_err();
    assert_eq!(
        err,
        IrError::BadUpdate {
            target: "w".to_string(),
            message: "value type f32[3,2] differs from parameter type f32[2,3]".to_string(),
        }
    );
    assert_eq!(
        err.to_string(),
        "update of w: value type f32[3,2] differs from parameter type f32[2,3]"
    );
    let ints = g.input("i", TensorType::i32([2, 3])).unwrap();
    let err = g.set_update(w, ints).unwrap_err().to_string();
    assert!(
        err.contains("i32[2,3]") && err.contains("f32[2,3]"),
        "{err}"
    );
}

#[test]
fn a_node_id_from_another_graph_is_an_error_even_where_its_index_exists_here() {
    let mut big = Graph::new("big");
    let a = big.input("a", TensorType::f32([2])).unwrap();
    let b = big.neg(a).unwrap();
    let foreign = big.exp(b).unwrap();
    assert_eq!(foreign.index(), 2);

    let mut small = Graph::new("small");
    let x = small.input("x", TensorType::f32([2])).unwrap();
    // Index 2 exists in `small` too: the id must still be refused, not taken as
    // whichever node has that index here.
    let y = small.neg(x).unwrap();
    let z = small.exp(y).unwrap();
    assert_eq!(z.index(), 2);
    let foreign_err = IrError::ForeignNode(2);
    assert_eq!(small.neg(foreign).unwrap_err(), foreign_err);
    assert_eq!(small.add_(x, foreign).unwrap_err(), foreign_err);
    assert_eq!(small.set_output("y", foreign).unwrap_err(), foreign_err);
    assert_eq!(small.set_update(foreign, x).unwrap_err(), foreign_err);
    assert_eq!(small.constant_like(1.0, foreign).unwrap_err(), foreign_err);
    assert_eq!(small.replace_uses(x, foreign).unwrap_err(), foreign_err);
    assert_eq!(small.try_ty(foreign).unwrap_err(), foreign_err);
    assert_eq!(foreign_err.to_string(), "node %2 belongs to another graph");
    assert!(!small.contains(foreign));
    assert!(small.get(foreign).is_none());
    assert_eq!(small.node_count(), 3);
    verify(&small).unwrap();

    // A clone is the same graph: its ids name the same nodes.
    let copy = big.clone();
    assert_eq!(copy.ty(foreign), big.ty(foreign));
}

#[test]
fn a_removed_node_is_unknown() {
    let mut g = Graph::new("g");
    let x = g.input("x", TensorType::f32([2])).unwrap();
    let dead = g.neg(x).unwrap();
    g.prune();
    assert_eq!(g.neg(dead).unwrap_err(), IrError::UnknownNode(1));
    assert_eq!(
        IrError::UnknownNode(1).to_string(),
        "node %1 is not in the graph (it was removed)"
    );
}

#[test]
#[should_panic(expected = "is from another graph")]
fn reading_a_foreign_id_panics_like_indexing() {
    let mut big = Graph::new("big");
    let a = big.input("a", TensorType::f32([2])).unwrap();
    let mut small = Graph::new("small");
    small.input("x", TensorType::f32([2])).unwrap();
    let _ = small.ty(a);
}

#[test]
fn a_rewiring_that_would_make_a_cycle_is_refused() {
    let mut g = Graph::new("cycle");
    let x = g.input("x", TensorType::f32([2])).unwrap();
    let y = g.neg(x).unwrap();
    let z = g.exp(y).unwrap();
    g.set_output("z", z).unwrap();
    // z depends on y, so using z in y's place would make z its own operand.
    assert!(matches!(g.replace_uses(y, z), Err(IrError::Invalid(_))));
    verify(&g).unwrap();
    assert_eq!(g.operands(z), vec![y]);
}

// ---- op typing errors --------------------------------------------------------------------

fn inputs(g: &mut Graph, types: &[TensorType]) -> Vec<NodeId> {
    types
        .iter()
        .enumerate()
        .map(|(position, ty)| g.input(&format!("in{position}"), ty.clone()).unwrap())
        .collect()
}

#[test]
fn binary_shape_errors_name_the_op_and_both_shapes() {
    let mut g = Graph::new("shapes");
    let v = inputs(&mut g, &[TensorType::f32([2, 3]), TensorType::f32([3, 2])]);
    for op in BinaryOp::ALL {
        let err = g.binary(op, v[0], v[1]).unwrap_err();
        assert_eq!(
            err,
            IrError::Mismatch {
                op: op.name(),
                lhs: TensorType::f32([2, 3]),
                rhs: TensorType::f32([3, 2]),
            }
        );
        assert_eq!(
            err.to_string(),
            format!("{}: operand types f32[2,3] and f32[3,2] differ", op.name())
        );
    }
    let err = g.compare(CmpOp::Lt, v[0], v[1]).unwrap_err().to_string();
    assert_eq!(err, "cmp.lt: operand types f32[2,3] and f32[3,2] differ");
    // Nothing was added by the refused calls.
    assert_eq!(g.node_count(), 2);
}

#[test]
fn matmul_errors_name_both_operand_types() {
    let mut g = Graph::new("matmul");
    let v = inputs(
        &mut g,
        &[
            TensorType::f32([2, 3]),
            TensorType::f32([4, 5]),
            TensorType::f32([2, 2, 3]),
            TensorType::f32([3]),
        ],
    );
    let err = g.matmul(v[0], v[1]).unwrap_err().to_string();
    assert_eq!(
        err,
        "matmul: contraction extents differ: f32[2,3] gives k = 3, f32[4,5] gives k = 4"
    );
    let err = g.matmul_t(v[0], v[1], true, true).unwrap_err().to_string();
    assert!(err.starts_with("matmul.tt: ") && err.contains("k = 2") && err.contains("k = 5"));
    let err = g.matmul(v[2], v[1]).unwrap_err().to_string();
    assert!(
        err.contains("f32[2,2,3]") && err.contains("f32[4,5]"),
        "{err}"
    );
    let err = g.matmul(v[3], v[0]).unwrap_err().to_string();
    assert!(
        err.starts_with("matmul: ") && err.contains("f32[3]"),
        "{err}"
    );
}

#[test]
fn movement_and_reduction_errors_name_the_op_and_shapes() {
    let mut g = Graph::new("movement");
    let v = inputs(&mut g, &[TensorType::f32([2, 3]), TensorType::i32([4])]);
    let err = g.broadcast(v[0], [4, 3]).unwrap_err().to_string();
    assert!(err.starts_with("broadcast: ") && err.contains("f32[2,3]") && err.contains("[4, 3]"));
    let err = g.reshape(v[0], [4, 2]).unwrap_err().to_string();
    assert_eq!(
        err,
        "reshape: cannot reshape f32[2,3] (6 elements) to [4, 2] (8 elements)"
    );
    let err = g.transpose(v[0], &[0, 0]).unwrap_err().to_string();
    assert_eq!(
        err,
        "transpose: [0, 0] is not a permutation of the 2 axes of f32[2,3]"
    );
    let err = g.reduce_sum(v[0], &[2]).unwrap_err().to_string();
    assert!(
        err.starts_with("reduce_sum: ") && err.contains("f32[2,3]"),
        "{err}"
    );
    let err = g.reduce_mean(v[1], &[0]).unwrap_err().to_string();
    assert_eq!(err, "reduce_mean: reduce_mean needs f32, found i32[4]");
    let err = g.one_hot(v[0], 3).unwrap_err().to_string();
    assert_eq!(err, "one_hot: labels must be i32, found f32[2,3]");
    let err = g.one_hot(v[1], 0).unwrap_err().to_string();
    assert_eq!(err, "one_hot: depth must be at least 1");
}

#[test]
fn dtype_errors_name_the_op_and_the_type() {
    let mut g = Graph::new("dtypes");
    let v = inputs(
        &mut g,
        &[
            TensorType::f32([2]),
            TensorType::i32([2]),
            TensorType::bool([2]),
            TensorType::bool([3]),
        ],
    );
    assert_eq!(
        g.exp(v[1]).unwrap_err().to_string(),
        "exp: operand must be f32, found i32[2]"
    );
    assert_eq!(
        g.div(v[1], v[1]).unwrap_err().to_string(),
        "div: operand must be f32, found i32[2]"
    );
    assert_eq!(
        g.neg(v[2]).unwrap_err().to_string(),
        "neg: operand must be f32 or i32, found bool[2]"
    );
    assert_eq!(
        g.compare(CmpOp::Eq, v[0], v[1]).unwrap_err().to_string(),
        "cmp.eq: operand types f32[2] and i32[2] differ"
    );
    assert_eq!(
        g.select(v[0], v[0], v[0]).unwrap_err().to_string(),
        "select: condition must be bool, found f32[2]"
    );
    assert_eq!(
        g.select(v[3], v[0], v[0]).unwrap_err().to_string(),
        "select: condition bool[3] and value f32[2] have different shapes"
    );
    assert_eq!(
        g.select(v[2], v[0], v[1]).unwrap_err().to_string(),
        "select: operand types f32[2] and i32[2] differ"
    );
    assert_eq!(
        g.matmul(v[1], v[1]).unwrap_err().to_string(),
        "matmul: operands must be f32, found i32[2] and i32[2]"
    );
}

#[test]
fn arity_leaf_and_constant_errors() {
    let mut g = Graph::new("misc");
    let x = g.input("x", TensorType::f32([2])).unwrap();
    let err = g.add(Op::Binary(BinaryOp::Add), &[x]).unwrap_err();
    assert_eq!(
        err,
        IrError::Arity {
            op: "add",
            expected: 2,
            found: 1
        }
    );
    assert_eq!(err.to_string(), "add: expected 2 operands, found 1");
    let err = g
        .add(Op::Constant { value: 1.0 }, &[])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "const: leaves are added with input, parameter or constant"
    );
    let err = g.constant(1.5, TensorType::i32([2])).unwrap_err();
    assert_eq!(err.to_string(), "const: 1.5 is not a valid i32 value");
    let err = g.constant(2.0, TensorType::bool([2])).unwrap_err();
    assert_eq!(err.to_string(), "const: 2 is not a valid bool value");
    assert!(g.constant(3e9, TensorType::i32([1])).is_err());
    // A declared type that the operands do not give is refused and leaves no node.
    let err = g
        .add_typed(Op::Unary(kiln_ir::UnaryOp::Neg), &[x], TensorType::f32([3]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "neg: declared type f32[3] but the operands give f32[2]"
    );
    assert_eq!(g.node_count(), 1);
    verify(&g).unwrap();
}
