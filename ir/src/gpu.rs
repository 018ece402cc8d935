//! What a GPU schedule decides about a kernel program: the NVIDIA target it is
//! written for and, for every kernel, how its work is spread over a grid of thread
//! blocks.
//!
//! A [`GpuSchedule`] is plain data beside an unchanged [`crate::kernel::Program`]:
//! the schedule step (`kiln_passes::schedule::gpu`) derives it from the loop nests
//! (which loops are independent, how many threads a block has, the matmul tiles) and
//! the PTX emitter (`kiln_backend::ptx`) follows it. Every launch computes exactly
//! what the kernel's loop nest means, element for element: threads only change which
//! iterations run where, never the order of operations inside an element's value.

use crate::kernel::{Expr, Kernel, LocalId, LoopKind, Scalar, Stmt, VarId};
use crate::{BinaryOp, DType};
use std::fmt;

/// An NVIDIA GPU architecture the PTX is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GpuTarget {
    /// The compute capability times ten: 80 (A100) or 90 (H100, H200).
    pub sm: u32,
    /// Streaming multiprocessors: the grid of a grid-stride loop is a few blocks per
    /// multiprocessor.
    pub multiprocessors: u32,
}

impl GpuTarget {
    /// The architectures kiln writes PTX for.
    pub const SUPPORTED_SM: [u32; 2] = [80, 90];

    /// An A100 (sm_80, 108 multiprocessors).
    pub fn sm80() -> GpuTarget {
        GpuTarget {
            sm: 80,
            multiprocessors: 108,
        }
    }

    /// An H100 or H200 (sm_90, 132 multiprocessors).
    pub fn sm90() -> GpuTarget {
        GpuTarget {
            sm: 90,
            multiprocessors: 132,
        }
    }

    /// The architecture name of `.target` and `ptxas -arch`: `sm_80`.
    pub fn arch(&self) -> String {
        format!("sm_{}", self.sm)
    }
}

impl fmt::Display for GpuTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sm_{} sms={}", self.sm, self.multiprocessors)
    }
}

/// How one kernel runs on the GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// The kernel's leading `depth` nested loops are independent (each iteration
    /// writes its own elements and reads nothing another iteration writes): every
    /// combination of their variables is one thread's work, handed out by a
    /// grid-stride loop in row-major order (the innermost of the `depth` loops
    /// fastest, so neighbouring threads touch neighbouring elements). The rest of
    /// the body runs serially in each thread.
    Threads {
        depth: usize,
        /// Consecutive iterations of the innermost of the `depth` loops one thread
        /// takes at a time: 1, or 4 when the body is stores of elements that run
        /// along that loop 16-byte aligned, so each is one `ld/st.global.v4`.
        lanes: u32,
        /// Threads per block (a multiple of 32).
        block: u32,
        /// Blocks in the grid.
        grid: u32,
    },
    /// The kernel's leading `depth` loops are independent, as for `Threads`, and each
    /// of their iterations is a reduction ([`Reduction`]) whose operator gives the
    /// same bits in any order (a max, an i32 sum, a bool or): a whole block reduces
    /// each output, every thread folding a strided share of the elements, then the
    /// warps' lanes combined by shuffles and the warps through shared memory; the
    /// first thread runs the rest of the iteration (the stores of the result). Blocks
    /// take outputs in a grid-stride loop.
    Reduce {
        depth: usize,
        /// Threads per block (a multiple of 32, at most 1024).
        block: u32,
        grid: u32,
    },
    /// The kernel runs as written on one thread: its loops carry a dependence (a
    /// scatter-add, a running value) or it is too small to be worth splitting.
    Single,
    /// The kernel is a matmul or a contraction (`KernelOp::Matmul`,
    /// `KernelOp::Contraction`): a tiled kernel where each block computes a
    /// `tile_m`×`tile_n` tile of C, each thread a `thread_m`×`thread_n` part of it,
    /// staging `tile_k`-deep panels of A and B in shared memory (two buffers, so the
    /// next panel loads while this one is used). Every C element is the fma chain
    /// over k in increasing order from +0 (summed over taps for a contraction with
    /// taps), as the loop nest.
    Matmul {
        tile_m: u32,
        tile_n: u32,
        tile_k: u32,
        thread_m: u32,
        thread_n: u32,
    },
}

impl Launch {
    /// The elements per thread on a side of the matmul tilings the PTX kernel is
    /// written for: square tiles of `16·p` on a side, `p×p` elements per thread (256
    /// threads), 16-deep panels.
    pub const MATMUL_PARTS: [u32; 3] = [2, 4, 8];

    /// The tiled matmul with `part×part` elements per thread.
    pub fn matmul(part: u32) -> Launch {
        Launch::Matmul {
            tile_m: 16 * part,
            tile_n: 16 * part,
            tile_k: 16,
            thread_m: part,
            thread_n: part,
        }
    }

    /// Threads per block.
    pub fn block_threads(&self) -> u32 {
        match *self {
            Launch::Threads { block, .. } | Launch::Reduce { block, .. } => block,
            Launch::Single => 1,
            Launch::Matmul {
                tile_m,
                tile_n,
                thread_m,
                thread_n,
                ..
            } => (tile_m / thread_m) * (tile_n / thread_n),
        }
    }
}

impl fmt::Display for Launch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Launch::Threads {
                depth,
                lanes,
                block,
                grid,
            } => {
                write!(f, "threads depth={depth}")?;
                if *lanes > 1 {
                    write!(f, " lanes={lanes}")?;
                }
                write!(f, " block={block} grid={grid}")
            }
            Launch::Reduce { depth, block, grid } => {
                write!(f, "reduce depth={depth} block={block} grid={grid}")
            }
            Launch::Single => f.write_str("single"),
            Launch::Matmul {
                tile_m,
                tile_n,
                tile_k,
                thread_m,
                thread_n,
            } => write!(
                f,
                "matmul tile={tile_m}x{tile_n}x{tile_k} thread={thread_m}x{thread_n}"
            ),
        }
    }
}

/// A launch per kernel of a program, in its launch order, for one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuSchedule {
    pub target: GpuTarget,
    pub launches: Vec<Launch>,
}

impl fmt::Display for GpuSchedule {
    /// One line per kernel: `k3: threads depth=2 block=256 grid=40`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "gpu schedule for {}", self.target)?;
        for (kernel, launch) in self.launches.iter().enumerate() {
            writeln!(f, "k{kernel}: {launch}")?;
        }
        Ok(())
    }
}

/// A reduction a thread runs in a kernel body, recognised so that a block may
/// share it: `r = init; for j.. { r = op(r, element) }; stores of r`, where the
/// loops are a perfect nest from 0 by 1, `element` reads no local, the stores read
/// `r` after the loops, and `op` on the local's dtype is exact in any order with
/// `init` its identity, so folding the elements in another order gives the same
/// bits: `max` on f32 (NaN wins, +0 above -0: a total order) from -inf, on i32 from
/// `i32::MIN`, on bool (or) from false; wrapping `add` on i32 from 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Reduction<'a> {
    pub local: LocalId,
    pub op: BinaryOp,
    pub dtype: DType,
    pub init: Scalar,
    /// The reduced loops, outermost first, as `(var, trips)`.
    pub loops: Vec<(VarId, usize)>,
    pub element: &'a Expr,
    /// The statements after the loops: stores only.
    pub tail: &'a [Stmt],
}

impl Reduction<'_> {
    /// How many elements each output folds.
    pub fn elements(&self) -> usize {
        self.loops.iter().map(|&(_, trips)| trips).product()
    }
}

/// The reduction `body` (of `kernel`) is, if it is one whose order does not matter.
pub fn reduction_of<'a>(kernel: &Kernel, body: &'a [Stmt]) -> Option<Reduction<'a>> {
    let [Stmt::Assign {
        local,
        value: Expr::Const(init),
    }, first, tail @ ..] = body
    else {
        return None;
    };
    let dtype = kernel.locals.get(local.0 as usize)?.dtype;
    let mut loops = Vec::new();
    let mut stmt = first;
    let update = loop {
        match stmt {
            Stmt::Loop {
                var,
                start: 0,
                end,
                step: 1,
                body,
                ..
            } => {
                loops.push((*var, *end));
                match body.as_slice() {
                    [inner @ Stmt::Loop { .. }] => stmt = inner,
                    [Stmt::Assign {
                        local: target,
                        value,
                    }] if target == local => break value,
                    _ => return None,
                }
            }
            _ => return None,
        }
    };
    let Expr::Binary(op, a, b) = update else {
        return None;
    };
    let element = match (&**a, &**b) {
        (Expr::Local(r), element) | (element, Expr::Local(r)) if r == local => element,
        _ => return None,
    };
    let mut reads_local = false;
    element.visit(&mut |e| reads_local |= matches!(e, Expr::Local(_)));
    let exact = match (op, dtype, *init) {
        (BinaryOp::Max, DType::F32, Scalar::F32(x)) => x == f32::NEG_INFINITY,
        (BinaryOp::Max, DType::I32, Scalar::I32(x)) => x == i32::MIN,
        (BinaryOp::Max, DType::Bool, Scalar::Bool(x)) => !x,
        (BinaryOp::Add, DType::I32, Scalar::I32(x)) => x == 0,
        _ => false,
    };
    let stores_only = tail.iter().all(|stmt| matches!(stmt, Stmt::Store { .. }));
    (exact && !reads_local && stores_only).then_some(Reduction {
        local: *local,
        op: *op,
        dtype,
        init: *init,
        loops,
        element,
        tail,
    })
}

/// The loops `for var in 0..trips` (step 1, serial) that each make up the whole body
/// of the one before (the first the whole of `body`), with each loop's body: the
/// loops a GPU launch may hand to threads, outermost first.
pub fn leading_nest(body: &[Stmt]) -> Vec<(VarId, usize, &[Stmt])> {
    let mut nest = Vec::new();
    let mut stmts = body;
    while let [Stmt::Loop {
        var,
        start: 0,
        end,
        step: 1,
        kind: LoopKind::Serial,
        body,
    }] = stmts
    {
        nest.push((*var, *end, body.as_slice()));
        stmts = body;
    }
    nest
}
