//! The rewrite rule tables, one file per topic, and the side conditions they share.
//!
//! A rule is a named entry of a table; its conditions read the analysis (types,
//! splat constants) and attribute leaves (permutations), never guess.

pub mod algebra;

use crate::egraph::language::{dims_leaf, type_leaf, KilnAnalysis, KilnEGraph, KilnLang};
use egg::{ConditionalApplier, Id, Pattern, Rewrite, Subst, Var};
use kiln_ir::DType;

/// The default rule set of the pipeline: simplification only, no commutativity or
/// associativity, so it saturates in a few iterations.
pub fn rules() -> Vec<Rewrite<KilnLang, KilnAnalysis>> {
    algebra::rules()
}

/// One entry of a rule table: a name, a left-hand side, a right-hand side, and an
/// optional side condition.
pub struct Rule {
    pub name: &'static str,
    pub lhs: &'static str,
    pub rhs: &'static str,
    pub condition: Option<Condition>,
}

impl Rule {
    pub fn new(name: &'static str, lhs: &'static str, rhs: &'static str) -> Rule {
        Rule {
            name,
            lhs,
            rhs,
            condition: None,
        }
    }

    /// The rule fires only where `condition` holds.
    pub fn when(self, condition: Condition) -> Rule {
        Rule {
            condition: Some(condition),
            ..self
        }
    }

    /// The egg rewrite. The patterns are fixed text, so a failure is a kiln bug.
    pub fn into_rewrite(self) -> Rewrite<KilnLang, KilnAnalysis> {
        let pattern = |text: &str| -> Pattern<KilnLang> {
            text.parse().unwrap_or_else(|err| {
                panic!("rule {}: bad pattern {text}: {err} (a kiln bug)", self.name)
            })
        };
        let (lhs, rhs) = (pattern(self.lhs), pattern(self.rhs));
        let rewrite = match self.condition {
            Some(condition) => Rewrite::new(
                self.name,
                lhs,
                ConditionalApplier {
                    condition,
                    applier: rhs,
                },
            ),
            None => Rewrite::new(self.name, lhs, rhs),
        };
        rewrite.unwrap_or_else(|err| panic!("rule {}: {err} (a kiln bug)", self.name))
    }
}

/// A side condition of a conditional rewrite.
pub type Condition = Box<dyn Fn(&mut KilnEGraph, Id, &Subst) -> bool + Send + Sync>;

fn var(name: &str) -> Var {
    name.parse()
        .unwrap_or_else(|_| panic!("{name} is not a pattern variable (a kiln bug in a rule)"))
}

/// The class bound to `x` is a splat constant with exactly the bits of `value` (so
/// -0.0 is not 0.0).
pub fn is_splat(x: &str, value: f64) -> Condition {
    let x = var(x);
    Box::new(move |egraph, _, subst| {
        egraph[subst[x]]
            .data
            .splat
            .is_some_and(|splat| kiln_ir::scalar::same(splat, value))
    })
}

/// The class bound to `x` is a splat zero that leaves every value unchanged when it is
/// added (`negative`) or subtracted (not `negative`): in f32 that is -0 for `add`
/// (`-0 + +0` is +0, but `x + -0` is `x` for every `x`) and +0 for `sub`; an i32 zero
/// has no sign and serves both.
pub fn is_zero_identity(x: &str, negative: bool) -> Condition {
    let x = var(x);
    Box::new(move |egraph, _, subst| {
        let data = &egraph[subst[x]].data;
        let Some(splat) = data.splat else {
            return false;
        };
        match data.ty.as_ref().map(|ty| ty.dtype) {
            Some(DType::F32) => kiln_ir::scalar::same(splat, if negative { -0.0 } else { 0.0 }),
            Some(DType::I32) => splat == 0.0,
            _ => false,
        }
    })
}

/// Applying permutation `p` and then `q` gives the identity.
pub fn perms_cancel(p: &str, q: &str) -> Condition {
    let (p, q) = (var(p), var(q));
    Box::new(move |egraph, _, subst| {
        match (dims_leaf(egraph, subst[p]), dims_leaf(egraph, subst[q])) {
            (Some(p), Some(q)) => compose_to_identity(p, q),
            _ => false,
        }
    })
}

/// Output axis `i` of `transpose(transpose(x, p), q)` is axis `p[q[i]]` of `x`.
pub fn compose_to_identity(p: &[usize], q: &[usize]) -> bool {
    p.len() == q.len()
        && q.iter()
            .enumerate()
            .all(|(i, &axis)| p.get(axis) == Some(&i))
}

/// Permutation `p` swaps the last two axes and keeps the leading (batch) axes.
pub fn swaps_last_two(p: &str) -> Condition {
    let p = var(p);
    Box::new(move |egraph, _, subst| dims_leaf(egraph, subst[p]).is_some_and(is_last_two_swap))
}

/// Whether `perm` is `[0, 1, .., r-3, r-1, r-2]` with `r >= 2`.
pub fn is_last_two_swap(perm: &[usize]) -> bool {
    let rank = perm.len();
    rank >= 2
        && perm[..rank - 2]
            .iter()
            .enumerate()
            .all(|(i, &axis)| axis == i)
        && perm[rank - 2] == rank - 1
        && perm[rank - 1] == rank - 2
}

/// The value class bound to `x` has exactly the type in the type leaf bound to `t`.
pub fn has_type(x: &str, t: &str) -> Condition {
    let (x, t) = (var(x), var(t));
    Box::new(move |egraph, _, subst| {
        type_leaf(egraph, subst[t]).is_some_and(|ty| egraph[subst[x]].data.ty.as_ref() == Some(ty))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_permutations_compose_to_identity() {
        assert!(compose_to_identity(&[1, 0], &[1, 0]));
        assert!(compose_to_identity(&[1, 2, 0], &[2, 0, 1]));
        assert!(!compose_to_identity(&[1, 2, 0], &[1, 2, 0]));
        assert!(!compose_to_identity(&[1, 0], &[0, 1, 2]));
    }

    #[test]
    fn last_two_swap_keeps_batch_axes() {
        assert!(is_last_two_swap(&[1, 0]));
        assert!(is_last_two_swap(&[0, 1, 3, 2]));
        assert!(!is_last_two_swap(&[1, 0, 2]));
        assert!(!is_last_two_swap(&[0]));
        assert!(!is_last_two_swap(&[1, 0, 3, 2]));
    }
}
