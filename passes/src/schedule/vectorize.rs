//! Vectorisation: an innermost loop whose body is independent stores runs
//! `target.vector_lanes` iterations at a time (`LoopKind::Vector`).
//!
//! Assumes a checked program. A loop qualifies when it is serial with step 1, has
//! at least as many iterations as lanes, and its body is only stores of scalar
//! values, each with unit stride along the loop variable, reading every buffer with
//! unit or zero stride (a splat) along it, and reading a buffer it writes only at
//! the element it writes; then its iterations are independent. Loops that gather or
//! scatter (computed positions, one element at a time) stay scalar. Every dtype is one 32-bit lane, so i32 and bool loops qualify too. The
//! code generator runs the remainder one element at a time.
//!
//! ```text
//! for i0 in 0..6 {                ==>    for i0 in 0..6 vec4 {
//!   b2[i0] = add(b0[i0], b1[0])            b2[i0] = add(b0[i0], b1[0])
//! ```

use kiln_ir::kernel::{BufferId, Expr, Index, LoopKind, Program, Stmt, VarId};
use kiln_ir::Target;

/// Vectorises every qualifying innermost loop of `program`.
pub fn run(program: &Program, target: &Target) -> Program {
    let mut program = program.clone();
    let lanes = target.vector_lanes;
    if lanes < 2 {
        return program;
    }
    for kernel in &mut program.kernels {
        for stmt in &mut kernel.body {
            visit(stmt, lanes);
        }
    }
    program
}

fn visit(stmt: &mut Stmt, lanes: u32) {
    if let Stmt::Loop {
        var,
        start,
        end,
        step,
        kind,
        body,
    } = stmt
    {
        if body.iter().any(|stmt| matches!(stmt, Stmt::Loop { .. })) {
            for stmt in body {
                visit(stmt, lanes);
            }
        } else if *kind == LoopKind::Serial
            && *step == 1
            && end.saturating_sub(*start) >= lanes as usize
            && independent_stores(*var, body)
        {
            *kind = LoopKind::Vector(lanes);
        }
    }
}

/// Whether `body` is stores only, of scalars, with unit stride along `var`, reading
/// with unit or zero stride along it.
fn independent_stores(var: VarId, body: &[Stmt]) -> bool {
    let stores: Vec<(BufferId, &Index)> = body
        .iter()
        .filter_map(|stmt| match stmt {
            Stmt::Store { buffer, index, .. } => Some((*buffer, index)),
            _ => None,
        })
        .collect();
    let mut ok = true;
    for stmt in body {
        match stmt {
            Stmt::Store { index, value, .. } => {
                ok &= index.stride_of(var) == 1;
                value.visit(&mut |expr| match expr {
                    Expr::Load {
                        buffer,
                        index,
                        lanes,
                    } => {
                        ok &= *lanes == 1 && matches!(index.stride_of(var), 0 | 1);
                        // A buffer the loop writes may only be read at the element the
                        // same iteration writes (in-place accumulation), or lanes would
                        // see other iterations' writes out of order.
                        ok &= stores
                            .iter()
                            .all(|&(stored, at)| stored != *buffer || at == index);
                    }
                    Expr::Splat(..) => ok = false,
                    // A computed position is per element: no vector load reads it.
                    Expr::Gather(_) => ok = false,
                    _ => {}
                });
            }
            // Iterations of a scatter may add to the same element.
            Stmt::Loop { .. }
            | Stmt::Assign { .. }
            | Stmt::Call { .. }
            | Stmt::ScatterAdd { .. } => ok = false,
        }
    }
    ok
}
