//! Parallel elementwise loops: a kernel that is one large loop of independent stores
//! is split into one block per thread.
//!
//! A kernel qualifies when its whole body is one serial loop with step 1 whose body
//! is stores only with unit stride along the loop variable, reading any buffer it
//! writes only at the element it writes (and gathering from none of them, as a
//! gather may read any element), and which covers at least [`PARALLEL_ELEMENTS`]
//! elements (smaller loops are not worth waking threads for). A scatter_add is no
//! store: its iterations may add to the same element, so its loop stays serial.
//! The loop `for i in 0..n` becomes `for t in 0..T parallel { for i in 0..B { ..
//! B*t + i .. } }` over whole blocks of B (a multiple of 64 elements) and a serial
//! remainder loop; every element is computed exactly as before.
//!
//! ```text
//! for i0 in 0..1000000 {            ==>   for i1 in 0..2 parallel {
//!   b1[i0] = exp(b0[i0])                     for i2 in 0..500000 { b1[500000*i1 + i2] = exp(b0[500000*i1 + i2]) }
//! ```

use kiln_ir::kernel::{Expr, Index, Indirect, LoopKind, Program, Stmt, VarId};
use kiln_ir::Target;

/// Loops over fewer elements than this stay on one thread.
pub const PARALLEL_ELEMENTS: usize = 1 << 16;

/// Splits every qualifying kernel's loop over the target's threads.
pub fn run(program: &Program, target: &Target) -> Program {
    let mut program = program.clone();
    if target.threads < 2 {
        return program;
    }
    for kernel in &mut program.kernels {
        let [Stmt::Loop {
            var,
            start: 0,
            end,
            step: 1,
            kind: LoopKind::Serial,
            body,
        }] = kernel.body.as_slice()
        else {
            continue;
        };
        if *end < PARALLEL_ELEMENTS || !independent(*var, body) {
            continue;
        }
        let block = end.div_ceil(target.threads).div_ceil(64) * 64;
        let tasks = end / block;
        let next = next_var(&kernel.body);
        let (task, inner) = (VarId(next), VarId(next + 1));
        let rename = |offset: Index| -> Vec<Stmt> {
            body.iter()
                .map(|stmt| substitute(stmt, *var, &offset))
                .collect()
        };
        let mut stmts = vec![Stmt::for_range(
            task,
            tasks,
            LoopKind::Parallel,
            vec![Stmt::for_range(
                inner,
                block,
                LoopKind::Serial,
                rename(Index::new([(task, block as i64), (inner, 1)], 0)),
            )],
        )];
        if tasks * block < *end {
            stmts.push(Stmt::Loop {
                var: *var,
                start: tasks * block,
                end: *end,
                step: 1,
                kind: LoopKind::Serial,
                body: body.clone(),
            });
        }
        kernel.body = stmts;
    }
    program
}

/// One past the largest loop variable of `body`.
fn next_var(body: &[Stmt]) -> u32 {
    let mut next = 0;
    for stmt in body {
        stmt.visit(&mut |stmt| {
            if let Stmt::Loop { var, .. } = stmt {
                next = next.max(var.0 + 1);
            }
        });
    }
    next
}

/// Whether `body` is stores with unit stride along `var`, each reading the buffers
/// the body writes only at the element it writes.
fn independent(var: VarId, body: &[Stmt]) -> bool {
    body.iter().all(|stmt| match stmt {
        Stmt::Store {
            buffer,
            index,
            value,
        } => {
            let mut ok = index.stride_of(var) == 1;
            value.visit(&mut |expr| match expr {
                Expr::Load {
                    buffer: read,
                    index: at,
                    ..
                } => ok &= read != buffer || at == index,
                // A gathered element may be any element of its buffer.
                Expr::Gather(Indirect { buffer: read, .. }) => ok &= read != buffer,
                _ => {}
            });
            // Other stores of the body must not be read by this one at other elements.
            ok && body.iter().all(|other| match other {
                Stmt::Store { buffer: b, .. } if b != buffer => {
                    let mut clean = true;
                    value.visit(&mut |expr| {
                        if let Expr::Load { buffer: read, .. }
                        | Expr::Gather(Indirect { buffer: read, .. }) = expr
                        {
                            clean &= read != b;
                        }
                    });
                    clean
                }
                _ => true,
            })
        }
        _ => false,
    })
}

/// `index` with `var` replaced by the affine `with`.
fn rebase(index: &Index, var: VarId, with: &Index) -> Index {
    let stride = index.stride_of(var);
    Index::new(
        index
            .without(var)
            .terms
            .into_iter()
            .chain(with.terms.iter().map(|&(v, s)| (v, s * stride))),
        index.offset + with.offset * stride,
    )
}

/// `stmt` (a store) with `var` replaced by the affine `with`.
fn substitute(stmt: &Stmt, var: VarId, with: &Index) -> Stmt {
    match stmt {
        Stmt::Store {
            buffer,
            index,
            value,
        } => Stmt::Store {
            buffer: *buffer,
            index: rebase(index, var, with),
            value: substitute_expr(value, var, with),
        },
        other => other.clone(),
    }
}

fn substitute_expr(value: &Expr, var: VarId, with: &Index) -> Expr {
    let go = |x: &Expr| Box::new(substitute_expr(x, var, with));
    match value {
        Expr::Load {
            buffer,
            index,
            lanes,
        } => Expr::Load {
            buffer: *buffer,
            index: rebase(index, var, with),
            lanes: *lanes,
        },
        // The loop index as a value: `B*t + i` in i32 arithmetic.
        Expr::LoopIndex(v) if *v == var => Expr::index_value(with),
        Expr::Splat(lanes, x) => Expr::Splat(*lanes, go(x)),
        Expr::Unary(op, x) => Expr::Unary(*op, go(x)),
        Expr::Cast(to, x) => Expr::Cast(*to, go(x)),
        Expr::Binary(op, a, b) => Expr::Binary(*op, go(a), go(b)),
        Expr::Compare(op, a, b) => Expr::Compare(*op, go(a), go(b)),
        Expr::Select(c, a, b) => Expr::Select(go(c), go(a), go(b)),
        Expr::Fma(a, b, c) => Expr::Fma(go(a), go(b), go(c)),
        Expr::Random(dist, a, b, c) => Expr::Random(*dist, go(a), go(b), go(c)),
        Expr::Gather(indirect) => Expr::Gather(Indirect {
            index: rebase(&indirect.index, var, with),
            at: go(&indirect.at),
            ..indirect.clone()
        }),
        Expr::Const(_) | Expr::LoopIndex(_) | Expr::Local(_) => value.clone(),
    }
}
