//! Epilogue fusion: a kernel that adds a bias row to a matmul's result and/or applies
//! relu to it, or takes a gradient-descent step with it (`param - scale * c`, the
//! SGD update of a weight whose gradient the matmul computes, when k fits one KC
//! block of the target's blocking), when nothing else reads that result, becomes the
//! matmul's epilogue, applied by the matmul routine to each tile of C while it is in
//! registers or L1 (see [`kiln_ir::kernel::Epilogue`]). One kernel and one pass over
//! C disappear.
//!
//! The matmul kernel's plain loop nest then stores `relu(acc + bias[j])` (or the parts
//! present) instead of `acc`, into the consumer's buffer, and its `KernelOp` records
//! the epilogue so that [`super::matmul`] calls the routine with it. Every element
//! keeps its value bit for bit: the same f32 add and relu on the same fma chain.
//!
//! ```text
//! kernel k0 matmul {                          kernel k0 matmul {
//!   op matmul.nn a=b0 b=b1 c=b3 ...             op matmul.nn a=b0 b=b1 c=b4 ... bias=b2 relu
//!   ... b3[8*i0 + i1] = r0                ==>   ... b4[8*i0 + i1] = relu(add(r0, b2[i1]))
//! kernel k1 fused.broadcast.add.relu {
//!   ... b4[8*i0 + i1] = relu(add(b3[8*i0 + i1], b2[i1]))
//! ```
//!
//! Matched semantically, not by the consumer's name: a perfect nest of serial loops
//! over the m×n elements in row-major order storing one expression, which reads C at
//! the element being stored and the bias at its column.

use kiln_ir::kernel::{
    BufferId, Expr, Index, KernelOp, LoopKind, MatmulOp, Program, Scalar, Stmt, Storage, VarId,
};
use kiln_ir::{BinaryOp, DType, Target, UnaryOp};

/// Fuses every bias-add/relu or descent-step consumer it can into its matmul.
pub fn run(program: &Program, target: &Target) -> Program {
    let mut program = program.clone();
    let mut position = 0;
    while position < program.kernels.len() {
        if let Some(fusion) = find(&program, position, target) {
            apply(&mut program, position, &fusion);
        }
        position += 1;
    }
    program
}

/// A consumer kernel that can become matmul `position`'s epilogue.
#[derive(Debug)]
struct Fusion {
    consumer: usize,
    out: BufferId,
    bias: Option<BufferId>,
    relu: bool,
    /// The parameter and the f32 bits of the scale of a descent step.
    update: Option<(BufferId, u32)>,
}

fn find(program: &Program, position: usize, target: &Target) -> Option<Fusion> {
    let Some(KernelOp::Matmul(
        matmul @ MatmulOp {
            a,
            b,
            c,
            batches: 1,
            m,
            n,
            k,
            ..
        },
    )) = program.kernels[position].op
    else {
        return None;
    };
    if matmul.has_epilogue() {
        return None;
    }
    let elements = m.checked_mul(n)?;
    // C must be a temporary that only one later kernel reads.
    let shown = program.outputs.iter().any(|output| output.buffer == c)
        || program.updates.iter().any(|update| update.value == c);
    if shown || program.buffer(c).storage != Storage::Temp {
        return None;
    }
    let mut users = (0..program.kernels.len())
        .filter(|&other| other != position && program.kernels[other].buffers().contains(&c));
    let consumer = users.next()?;
    if users.next().is_some() || consumer < position {
        return None;
    }
    let kernel = &program.kernels[consumer];
    if kernel.op.is_some() || !kernel.locals.is_empty() {
        return None;
    }
    let Nest {
        loops,
        out,
        index,
        value,
    } = perfect_nest(&kernel.body)?;
    if !row_major(&loops, index, elements) {
        return None;
    }
    let f32_of = |buffer: BufferId, len: usize| {
        let ty = &program.buffer(buffer).ty;
        ty.dtype == DType::F32 && ty.num_elements() == len
    };
    if !f32_of(out, elements) || [a, b, c].contains(&out) {
        return None;
    }
    let between = &program.kernels[position + 1..consumer];
    // The matmul now writes `out` where it runs: nothing in between may see `out`
    // or change what the epilogue reads.
    let untouched = |read: BufferId| {
        read != out
            && read != c
            && !between
                .iter()
                .any(|kernel| kernel.accesses().writes.contains(&read))
    };
    if between.iter().any(|kernel| kernel.buffers().contains(&out)) {
        return None;
    }
    if let Some((param, scale)) = descent_step(value, c, index) {
        // One KC block: the routine overwrites C (in place of the parameter) with no
        // partial sums to keep.
        let (_, _, kc, _) = super::matmul::blocking(target, m, n, k);
        let fits = kc >= k && f32_of(param, elements) && untouched(param);
        return fits.then_some(Fusion {
            consumer,
            out,
            bias: None,
            relu: false,
            update: Some((param, scale.to_bits())),
        });
    }
    let (relu, sum) = match value {
        Expr::Unary(UnaryOp::Relu, x) => (true, &**x),
        other => (false, other),
    };
    let column = column_index(&loops, index, n);
    let bias = match sum {
        Expr::Binary(BinaryOp::Add, x, y) => {
            let bias = match (&**x, &**y) {
                (product, row) | (row, product) if reads(product, c, index) => {
                    read_buffer(row, column.as_ref()?)?
                }
                _ => return None,
            };
            Some(bias)
        }
        product if relu && reads(product, c, index) => None,
        _ => return None,
    };
    if bias.is_some_and(|bias| !f32_of(bias, n) || !untouched(bias)) {
        return None;
    }
    Some(Fusion {
        consumer,
        out,
        bias,
        relu,
        update: None,
    })
}

/// A perfect nest of serial `0..end step 1` loops around one store.
struct Nest<'a> {
    /// (variable, extent), outermost first.
    loops: Vec<(VarId, usize)>,
    out: BufferId,
    index: &'a Index,
    value: &'a Expr,
}

/// `body` as a [`Nest`], if it is one.
fn perfect_nest(body: &[Stmt]) -> Option<Nest<'_>> {
    let mut loops = Vec::new();
    let mut body = body;
    loop {
        match body {
            [Stmt::Loop {
                var,
                start: 0,
                end,
                step: 1,
                kind: LoopKind::Serial,
                body: inner,
            }] => {
                loops.push((*var, *end));
                body = inner;
            }
            [Stmt::Store {
                buffer,
                index,
                value,
            }] => {
                return Some(Nest {
                    loops,
                    out: *buffer,
                    index,
                    value,
                })
            }
            _ => return None,
        }
    }
}

/// Whether `index` numbers the iterations of `loops` 0, 1, 2, ... in order (each
/// loop's stride the product of the inner extents), over `elements` in all.
fn row_major(loops: &[(VarId, usize)], index: &Index, elements: usize) -> bool {
    let mut stride = 1i64;
    for &(var, extent) in loops.iter().rev() {
        if index.stride_of(var) != stride {
            return false;
        }
        stride = stride.saturating_mul(extent as i64);
    }
    index.offset == 0 && index.terms.len() == loops.len() && stride == elements as i64
}

/// The column (`j` of a row-major m×n element) at `index`: its terms with a stride
/// below n; `None` unless every loop walks whole rows or stays within one.
fn column_index(loops: &[(VarId, usize)], index: &Index, n: usize) -> Option<Index> {
    let n = n as i64;
    let mut column = Vec::new();
    for &(var, extent) in loops {
        let stride = index.stride_of(var);
        if stride >= n {
            // A row loop: a whole number of rows per step.
            if stride % n != 0 {
                return None;
            }
        } else if stride.saturating_mul(extent as i64) > n {
            // A loop that walks across rows in one go (columns and rows merged).
            return None;
        } else {
            column.push((var, stride));
        }
    }
    Some(Index::new(column, 0))
}

/// `param[index] - scale * c[index]` (the product in either order): the parameter
/// and the scale.
fn descent_step(value: &Expr, c: BufferId, index: &Index) -> Option<(BufferId, f32)> {
    let Expr::Binary(BinaryOp::Sub, param, step) = value else {
        return None;
    };
    let param = read_buffer(param, index)?;
    let Expr::Binary(BinaryOp::Mul, x, y) = &**step else {
        return None;
    };
    match (&**x, &**y) {
        (Expr::Const(Scalar::F32(scale)), product) | (product, Expr::Const(Scalar::F32(scale)))
            if reads(product, c, index) =>
        {
            Some((param, *scale))
        }
        _ => None,
    }
}

/// Whether `expr` is one element of `buffer` at exactly `index`.
fn reads(expr: &Expr, buffer: BufferId, index: &Index) -> bool {
    read_buffer(expr, index) == Some(buffer)
}

/// The buffer `expr` reads one element of at `index`, if that is all it is.
fn read_buffer(expr: &Expr, index: &Index) -> Option<BufferId> {
    match expr {
        Expr::Load {
            buffer,
            index: at,
            lanes: 1,
        } if same(at, index) => Some(*buffer),
        _ => None,
    }
}

/// Equal indices, whatever the order of their terms.
fn same(x: &Index, y: &Index) -> bool {
    x.offset == y.offset
        && x.terms.len() == y.terms.len()
        && x.terms
            .iter()
            .all(|&(var, stride)| y.stride_of(var) == stride)
}

/// Makes `fusion.consumer`'s expression the epilogue of matmul `position` and drops
/// the consumer.
fn apply(program: &mut Program, position: usize, fusion: &Fusion) {
    let kernel = &mut program.kernels[position];
    let Some(KernelOp::Matmul(matmul)) = &mut kernel.op else {
        unreachable!("find only fuses into matmul kernels");
    };
    let (old_c, n) = (matmul.c, matmul.n);
    matmul.c = fusion.out;
    matmul.bias = fusion.bias;
    matmul.relu = fusion.relu;
    matmul.update = fusion.update;
    let loops = nest_of_matmul(&kernel.body);
    for stmt in &mut kernel.body {
        rewrite_store(stmt, old_c, &|index, value| {
            let mut value = value;
            if let Some(bias) = fusion.bias {
                let column = column_index(&loops, index, n)
                    .expect("a matmul's own loops split into rows and columns");
                value = Expr::binary(BinaryOp::Add, value, Expr::load(bias, column));
            }
            if fusion.relu {
                value = Expr::unary(UnaryOp::Relu, value);
            }
            if let Some((param, scale)) = fusion.update {
                let step = Expr::binary(
                    BinaryOp::Mul,
                    Expr::Const(Scalar::F32(f32::from_bits(scale))),
                    value,
                );
                value = Expr::binary(BinaryOp::Sub, Expr::load(param, index.clone()), step);
            }
            (fusion.out, value)
        });
    }
    program.kernels.remove(fusion.consumer);
}

/// The loops around a matmul kernel's store of C (its row and column loops).
fn nest_of_matmul(body: &[Stmt]) -> Vec<(VarId, usize)> {
    let mut loops = Vec::new();
    let mut body = body;
    while let [Stmt::Loop {
        var,
        end,
        body: inner,
        ..
    }] = body
    {
        // The reduction loop over k is beside the store, not around it.
        loops.push((*var, *end));
        body = inner;
    }
    loops
}

/// Replaces every store to `buffer` in `stmt` by `replace(index, value)`'s buffer and
/// value at the same index.
fn rewrite_store(
    stmt: &mut Stmt,
    buffer: BufferId,
    replace: &dyn Fn(&Index, Expr) -> (BufferId, Expr),
) {
    match stmt {
        Stmt::Store {
            buffer: to,
            index,
            value,
        } if *to == buffer => {
            let (new_buffer, new_value) = replace(index, value.clone());
            *to = new_buffer;
            *value = new_value;
        }
        Stmt::Loop { body, .. } => {
            for inner in body {
                rewrite_store(inner, buffer, replace);
            }
        }
        Stmt::Store { .. } | Stmt::Assign { .. } | Stmt::Call { .. } => {}
        // Lowering never scatters into a matmul's result.
        Stmt::ScatterAdd { .. } => {}
    }
}
