//! Accumulations as reductions: a kernel that fills its output with a constant and
//! then folds a loop nest into it element by element (how lowering writes a
//! reduction over a leading axis, streaming the input in memory order) becomes, for
//! each output element, a register started at the constant, the fold over the
//! reduced loops, and one store: the kept loops move outside, the reduced ones keep
//! their order inside. Each element sees the same operations in the same order, so
//! its value is the same bit for bit; what changes is that the elements are now
//! independent loops (a thread each on a GPU, or a block when the operator allows
//! any order), where before the whole kernel was one running accumulation.
//!
//! ```text
//! for i0 in 0..3 { b2[i0] = 0.0 }              for i2 in 0..3 {
//! for i1 in 0..700 {                     ==>     r0 = 0.0
//!   for i2 in 0..3 {                             for i1 in 0..700 { r0 = add(r0, b0[3*i1 + i2]) }
//!     b2[i2] = add(b2[i2], b0[3*i1 + i2])        b2[i2] = r0
//! ```
//!
//! Applied only when it provably keeps every value: the fill and the fold write
//! the same elements through the same strides (one per kept loop, the fill's loops
//! matching the kept loops in order), distinct kept positions write distinct
//! elements, and the folded value reads no local and no element of the output.

use kiln_ir::kernel::{BufferId, Expr, Index, Kernel, LocalId, LoopKind, Program, Stmt};
use kiln_ir::kernel::{VType, VarId};

/// Rewrites every kernel of `program` that is a fill and a fold.
pub fn run(program: &Program) -> Program {
    let mut program = program.clone();
    for kernel in &mut program.kernels {
        if let Some(body) = rewrite(kernel, &program.buffers) {
            kernel.body = body;
        }
    }
    program
}

/// `stmt` as a perfect nest of loops from 0 by 1 (`(var, trips)`, outermost
/// first) and the innermost body.
fn perfect_nest(stmt: &Stmt) -> Option<(Nest, &[Stmt])> {
    let nest = kiln_ir::gpu::leading_nest(std::slice::from_ref(stmt));
    let body = nest.last()?.2;
    Some((
        nest.iter().map(|&(var, trips, _)| (var, trips)).collect(),
        body,
    ))
}

/// Loops as `(var, trips)`, outermost first.
type Nest = Vec<(VarId, usize)>;

fn rewrite(kernel: &mut Kernel, buffers: &[kiln_ir::kernel::Buffer]) -> Option<Vec<Stmt>> {
    let [fill, fold] = kernel.body.as_slice() else {
        return None;
    };
    let (fill_loops, fill_body) = perfect_nest(fill)?;
    let [Stmt::Store {
        buffer: out,
        index: fill_index,
        value: Expr::Const(init),
    }] = fill_body
    else {
        return None;
    };
    let (fold_loops, fold_body) = perfect_nest(fold)?;
    let [Stmt::Store {
        buffer,
        index,
        value: Expr::Binary(op, a, b),
    }] = fold_body
    else {
        return None;
    };
    if buffer != out {
        return None;
    }
    let reads_out = |expr: &Expr, at: &Index| matches!(expr, Expr::Load { buffer, index, lanes: 1 } if buffer == out && index == at);
    let (element, accumulator_first) = if reads_out(a, index) {
        (&**b, true)
    } else if reads_out(b, index) {
        (&**a, false)
    } else {
        return None;
    };
    if touches(element, *out) {
        return None;
    }
    // The kept loops: those the stored element depends on, in order.
    let kept: Vec<(VarId, usize)> = fold_loops
        .iter()
        .copied()
        .filter(|&(var, _)| index.stride_of(var) != 0)
        .collect();
    let reduced: Vec<(VarId, usize)> = fold_loops
        .iter()
        .copied()
        .filter(|&(var, _)| index.stride_of(var) == 0)
        .collect();
    // The fill writes the same elements in the same pattern.
    let same_pattern = fill_loops.len() == kept.len()
        && fill_index.offset == index.offset
        && fill_index.terms.len() == fill_loops.len()
        && fill_loops.iter().zip(&kept).all(
            |(&(fill_var, fill_trips), &(kept_var, kept_trips))| {
                fill_trips == kept_trips
                    && fill_index.stride_of(fill_var) == index.stride_of(kept_var)
            },
        );
    if !same_pattern || !injective(index, &kept) {
        return None;
    }
    let dtype = buffers.get(out.0)?.ty.dtype;
    if init.dtype() != dtype {
        return None;
    }
    let local = LocalId(kernel.locals.len() as u32);
    let accumulator = Expr::Local(local);
    let update = if accumulator_first {
        Expr::binary(*op, accumulator.clone(), element.clone())
    } else {
        Expr::binary(*op, element.clone(), accumulator.clone())
    };
    let mut inner = vec![Stmt::Assign {
        local,
        value: update,
    }];
    for &(var, trips) in reduced.iter().rev() {
        inner = vec![Stmt::for_range(var, trips, LoopKind::Serial, inner)];
    }
    let mut body = vec![Stmt::Assign {
        local,
        value: Expr::Const(*init),
    }];
    body.extend(inner);
    body.push(Stmt::Store {
        buffer: *out,
        index: index.clone(),
        value: accumulator,
    });
    for &(var, trips) in kept.iter().rev() {
        body = vec![Stmt::for_range(var, trips, LoopKind::Serial, body)];
    }
    kernel.locals.push(VType::scalar(dtype));
    Some(body)
}

/// Whether `expr` reads `buffer` (a load or a gather) or any local.
fn touches(expr: &Expr, buffer: BufferId) -> bool {
    let mut found = false;
    expr.visit(&mut |e| match e {
        Expr::Load { buffer: read, .. } => found |= *read == buffer,
        Expr::Gather(indirect) => found |= indirect.buffer == buffer,
        Expr::Local(_) => found = true,
        _ => {}
    });
    found
}

/// Whether distinct positions of `loops` give distinct elements of `index`: with
/// the strides sorted, each exceeds everything the smaller ones can add.
fn injective(index: &Index, loops: &[(VarId, usize)]) -> bool {
    let mut steps: Vec<(i64, i64)> = loops
        .iter()
        .filter(|&&(_, trips)| trips > 1)
        .map(|&(var, trips)| (index.stride_of(var), trips as i64))
        .collect();
    steps.sort_unstable();
    let mut reach = 0i64;
    for (stride, trips) in steps {
        if stride <= reach {
            return false;
        }
        reach = reach.saturating_add(stride.saturating_mul(trips - 1));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::kernel_text;

    /// The one kernel of a program over input `b0: f32[700,3]` into `b1: f32[3]`.
    fn rewritten(body: &str) -> (Program, Program) {
        let text = format!(
            "program \"p\" {{\n  b0: f32[700,3] input \"x\"\n  b1: f32[3] temp\n  output \"y\" = b1: f32[3]\n\n  kernel k0 reduce {{\n{body}\n  }}\n}}\n"
        );
        let program = kernel_text::parse(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
        program.check().unwrap();
        let after = run(&program);
        after.check().unwrap();
        (program, after)
    }

    #[test]
    fn a_fill_and_a_fold_become_a_register_per_element() {
        let (_, after) = rewritten(
            "for i0 in 0..3 {\n b1[i0] = 0.0\n }\nfor i1 in 0..700 {\n for i2 in 0..3 {\n b1[i2] = add(b1[i2], b0[3*i1 + i2])\n }\n }",
        );
        let expected = "for i2 in 0..3 {\n      r0 = 0.0\n      for i1 in 0..700 {\n        r0 = add(r0, b0[3*i1 + i2])\n      }\n      b1[i2] = r0\n    }";
        assert!(after.to_string().contains(expected), "{after}");
    }

    #[test]
    fn folds_that_read_other_elements_or_fill_others_are_left_alone() {
        // The fold reads another element of the output.
        let body = "for i0 in 0..3 {\n b1[i0] = 0.0\n }\nfor i1 in 0..700 {\n for i2 in 0..3 {\n b1[i2] = add(b1[i2], b1[0])\n }\n }";
        let (before, after) = rewritten(body);
        assert_eq!(before, after);
        // The fill covers other elements than the fold.
        let body = "for i0 in 0..2 {\n b1[i0] = 0.0\n }\nfor i1 in 0..700 {\n for i2 in 0..3 {\n b1[i2] = add(b1[i2], b0[3*i1 + i2])\n }\n }";
        let (before, after) = rewritten(body);
        assert_eq!(before, after);
        // Two kept positions write one element.
        let body = "for i0 in 0..3 {\n b1[i0] = 0.0\n }\nfor i1 in 0..700 {\n for i2 in 0..3 {\n b1[0] = add(b1[0], b0[3*i1 + i2])\n }\n }";
        let (before, after) = rewritten(body);
        assert_eq!(before, after);
    }
}
