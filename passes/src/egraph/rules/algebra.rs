//! Algebraic simplification rules: identities that remove work, and transposes that
//! fold into matmul flags. Every rule is an equality that holds for all values,
//! NaN and infinities included (so `x * 0 == 0` is not here). No commutativity or
//! associativity: mirrored forms are written out, which keeps saturation fast.

use super::{composes_to_identity, same_type, swaps_last_two};
use crate::egraph::language::{KilnAnalysis, KilnLang};
use egg::{rewrite, Rewrite};

/// The simplification rules, by name.
pub fn rules() -> Vec<Rewrite<KilnLang, KilnAnalysis>> {
    let mut rules = vec![
        // x * 1 == x
        rewrite!("mul-one-right"; "(mul ?x (const 1.0 ?t))" => "?x"),
        // 1 * x == x
        rewrite!("mul-one-left"; "(mul (const 1.0 ?t) ?x)" => "?x"),
        // x + 0 == x
        rewrite!("add-zero-right"; "(add ?x (const 0.0 ?t))" => "?x"),
        // 0 + x == x
        rewrite!("add-zero-left"; "(add (const 0.0 ?t) ?x)" => "?x"),
        // x - 0 == x
        rewrite!("sub-zero"; "(sub ?x (const 0.0 ?t))" => "?x"),
        // x / 1 == x
        rewrite!("div-one"; "(div ?x (const 1.0 ?t))" => "?x"),
        // -(-x) == x
        rewrite!("neg-neg"; "(neg (neg ?x))" => "?x"),
        // transpose(transpose(x, p), q) == x when q undoes p
        rewrite!("transpose-inverse"; "(transpose (transpose ?x ?p) ?q)" => "?x"
            if composes_to_identity("?p", "?q")),
        // reshape(reshape(x)) == reshape(x): a reshape only depends on the element order
        rewrite!("reshape-reshape"; "(reshape (reshape ?x ?s) ?t)" => "(reshape ?x ?t)"),
        // reshape(x) == x when the shape does not change
        rewrite!("reshape-identity"; "(reshape ?x ?t)" => "?x" if same_type("?x", "?t")),
        // broadcast(x) == x when no axis stretches
        rewrite!("broadcast-identity"; "(broadcast ?x ?t)" => "?x" if same_type("?x", "?t")),
        // cast(x) == x when the dtype does not change
        rewrite!("cast-identity"; "(cast ?x ?t)" => "?x" if same_type("?x", "?t")),
    ];
    rules.extend(fold_transposes_into_matmul());
    rules
}

/// `matmul(transpose(a), b) == matmul.tn(a, b)` and its relatives: a transpose of the
/// last two axes of either operand flips that operand's flag (a transposed operand
/// of a flagged matmul drops the flag).
fn fold_transposes_into_matmul() -> Vec<Rewrite<KilnLang, KilnAnalysis>> {
    // (flags of the matched matmul, flags after folding the left operand, after
    // folding the right operand); flags are "transpose a, transpose b".
    let ops = [
        ("matmul", "nn", "matmul.tn", "matmul.nt"),
        ("matmul.tn", "tn", "matmul", "matmul.tt"),
        ("matmul.nt", "nt", "matmul.tt", "matmul"),
        ("matmul.tt", "tt", "matmul.nt", "matmul.tn"),
    ];
    let mut rules = Vec::new();
    for (op, flags, left_folded, right_folded) in ops {
        let left: egg::Pattern<KilnLang> = format!("({op} (transpose ?a ?p) ?b)")
            .parse()
            .expect("valid pattern");
        let left_to: egg::Pattern<KilnLang> = format!("({left_folded} ?a ?b)")
            .parse()
            .expect("valid pattern");
        rules.push(
            Rewrite::new(
                format!("fold-transpose-lhs-{flags}"),
                left,
                egg::ConditionalApplier {
                    condition: swaps_last_two("?p"),
                    applier: left_to,
                },
            )
            .expect("valid rule"),
        );
        let right: egg::Pattern<KilnLang> = format!("({op} ?a (transpose ?b ?p))")
            .parse()
            .expect("valid pattern");
        let right_to: egg::Pattern<KilnLang> = format!("({right_folded} ?a ?b)")
            .parse()
            .expect("valid pattern");
        rules.push(
            Rewrite::new(
                format!("fold-transpose-rhs-{flags}"),
                right,
                egg::ConditionalApplier {
                    condition: swaps_last_two("?p"),
                    applier: right_to,
                },
            )
            .expect("valid rule"),
        );
    }
    rules
}
