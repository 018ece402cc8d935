//! Algebraic simplification: identities that remove work, and transposes that fold
//! into matmul flags.
//!
//! Every rule is an equality bit for bit in f32 (any NaN standing for any NaN) for all
//! values, signed zeros, NaN and infinities included: `x * 0 == 0` is not here (NaN * 0
//! and inf * 0 are NaN, -1 * 0 is -0), and `x + 0 == x` only with the zero -0
//! (`-0 + +0` is +0) or an i32 zero; `x - 0 == x` needs +0 (`-0 - -0` is +0).
//! `x * 1`, `x / 1` and `-(-x)` are exact for every f32, NaN included. Constants are
//! matched through the analysis, so a splat of 1 made by `broadcast` or `reshape` of
//! a scalar `const 1.0` counts as 1. There is no commutativity or associativity: each mirrored
//! form is its own rule, which keeps saturation to a few iterations.

use super::{has_type, is_splat, is_zero_identity, perms_cancel, swaps_last_two, Rule};
use crate::egraph::language::{KilnAnalysis, KilnLang};
use egg::Rewrite;

/// The rule table.
pub fn table() -> Vec<Rule> {
    vec![
        // x * 1 == x
        Rule::new("mul-one-right", "(mul ?x ?one)", "?x").when(is_splat("?one", 1.0)),
        // 1 * x == x
        Rule::new("mul-one-left", "(mul ?one ?x)", "?x").when(is_splat("?one", 1.0)),
        // x + (-0) == x (an i32 zero too; +0 would turn x = -0 into +0)
        Rule::new("add-zero-right", "(add ?x ?zero)", "?x").when(is_zero_identity("?zero", true)),
        // (-0) + x == x (an i32 zero too)
        Rule::new("add-zero-left", "(add ?zero ?x)", "?x").when(is_zero_identity("?zero", true)),
        // x - (+0) == x (an i32 zero too; -0 would turn x = -0 into +0)
        Rule::new("sub-zero", "(sub ?x ?zero)", "?x").when(is_zero_identity("?zero", false)),
        // x / 1 == x
        Rule::new("div-one", "(div ?x ?one)", "?x").when(is_splat("?one", 1.0)),
        // -(-x) == x
        Rule::new("neg-neg", "(neg (neg ?x))", "?x"),
        // transpose(transpose(x, p), q) == x when q undoes p
        Rule::new(
            "transpose-inverse",
            "(transpose (transpose ?x ?p) ?q)",
            "?x",
        )
        .when(perms_cancel("?p", "?q")),
        // reshape(reshape(x, s), t) == reshape(x, t): a reshape keeps the row-major order
        Rule::new(
            "reshape-reshape",
            "(reshape (reshape ?x ?s) ?t)",
            "(reshape ?x ?t)",
        ),
        // reshape(x, type(x)) == x
        Rule::new("reshape-identity", "(reshape ?x ?t)", "?x").when(has_type("?x", "?t")),
        // broadcast(x, type(x)) == x: no axis stretches
        Rule::new("broadcast-identity", "(broadcast ?x ?t)", "?x").when(has_type("?x", "?t")),
        // cast(x, dtype(x)) == x
        Rule::new("cast-identity", "(cast ?x ?t)", "?x").when(has_type("?x", "?t")),
        // A transpose of the last two axes of a matmul operand flips that operand's
        // flag; `x^T` below is that transpose (rank 2, or batched with the batch axes kept).
        // matmul(a^T, b) == matmul.tn(a, b)
        Rule::new(
            "fold-transpose-lhs-nn",
            "(matmul (transpose ?a ?p) ?b)",
            "(matmul.tn ?a ?b)",
        )
        .when(swaps_last_two("?p")),
        // matmul(a, b^T) == matmul.nt(a, b)
        Rule::new(
            "fold-transpose-rhs-nn",
            "(matmul ?a (transpose ?b ?p))",
            "(matmul.nt ?a ?b)",
        )
        .when(swaps_last_two("?p")),
        // matmul.tn(a^T, b) == matmul(a, b)
        Rule::new(
            "fold-transpose-lhs-tn",
            "(matmul.tn (transpose ?a ?p) ?b)",
            "(matmul ?a ?b)",
        )
        .when(swaps_last_two("?p")),
        // matmul.tn(a, b^T) == matmul.tt(a, b)
        Rule::new(
            "fold-transpose-rhs-tn",
            "(matmul.tn ?a (transpose ?b ?p))",
            "(matmul.tt ?a ?b)",
        )
        .when(swaps_last_two("?p")),
        // matmul.nt(a^T, b) == matmul.tt(a, b)
        Rule::new(
            "fold-transpose-lhs-nt",
            "(matmul.nt (transpose ?a ?p) ?b)",
            "(matmul.tt ?a ?b)",
        )
        .when(swaps_last_two("?p")),
        // matmul.nt(a, b^T) == matmul(a, b)
        Rule::new(
            "fold-transpose-rhs-nt",
            "(matmul.nt ?a (transpose ?b ?p))",
            "(matmul ?a ?b)",
        )
        .when(swaps_last_two("?p")),
        // matmul.tt(a^T, b) == matmul.nt(a, b)
        Rule::new(
            "fold-transpose-lhs-tt",
            "(matmul.tt (transpose ?a ?p) ?b)",
            "(matmul.nt ?a ?b)",
        )
        .when(swaps_last_two("?p")),
        // matmul.tt(a, b^T) == matmul.tn(a, b)
        Rule::new(
            "fold-transpose-rhs-tt",
            "(matmul.tt ?a (transpose ?b ?p))",
            "(matmul.tn ?a ?b)",
        )
        .when(swaps_last_two("?p")),
    ]
}

/// The table as egg rewrites.
pub fn rules() -> Vec<Rewrite<KilnLang, KilnAnalysis>> {
    table().into_iter().map(Rule::into_rewrite).collect()
}
