//! The rewrite rule tables, one file per topic, and the conditions they share.

pub mod algebra;

use crate::egraph::language::{leaf, KilnAnalysis, KilnEGraph, KilnLang, Type};
use egg::{Id, Rewrite, Subst, Var};

/// The default rule set of the pipeline.
pub fn rules() -> Vec<Rewrite<KilnLang, KilnAnalysis>> {
    algebra::rules()
}

fn var(name: &str) -> Var {
    name.parse().expect("a pattern variable")
}

fn dims_of(egraph: &KilnEGraph, id: Id) -> Option<&[usize]> {
    match leaf(egraph, id) {
        KilnLang::Dims(dims) => Some(&dims.0),
        _ => None,
    }
}

/// True when applying permutation `p` and then `q` gives the identity.
pub fn composes_to_identity(p: &str, q: &str) -> impl Fn(&mut KilnEGraph, Id, &Subst) -> bool {
    let (p, q) = (var(p), var(q));
    move |egraph, _, subst| {
        let (Some(p), Some(q)) = (dims_of(egraph, subst[p]), dims_of(egraph, subst[q])) else {
            return false;
        };
        // Output axis i of the outer transpose reads axis q[i] of the inner one, which
        // reads axis p[q[i]] of x.
        p.len() == q.len()
            && q.iter()
                .enumerate()
                .all(|(i, &axis)| p.get(axis) == Some(&i))
    }
}

/// True when the permutation swaps the last two axes and keeps the others.
pub fn swaps_last_two(p: &str) -> impl Fn(&mut KilnEGraph, Id, &Subst) -> bool {
    let p = var(p);
    move |egraph, _, subst| {
        let Some(perm) = dims_of(egraph, subst[p]) else {
            return false;
        };
        let rank = perm.len();
        rank >= 2
            && perm[..rank - 2]
                .iter()
                .enumerate()
                .all(|(i, &axis)| axis == i)
            && perm[rank - 2] == rank - 1
            && perm[rank - 1] == rank - 2
    }
}

/// True when the value class `x` has exactly the type of the type leaf `t`.
pub fn same_type(x: &str, t: &str) -> impl Fn(&mut KilnEGraph, Id, &Subst) -> bool {
    let (x, t) = (var(x), var(t));
    move |egraph, _, subst| match leaf(egraph, subst[t]) {
        KilnLang::Type(Type(ty)) => egraph[subst[x]].data.ty.as_ref() == Some(ty),
        _ => false,
    }
}
