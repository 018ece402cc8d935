//! The tiled matmul kernel (`Launch::Matmul`): `C = op(A) · op(B)` for each batch,
//! then the epilogue (bias, relu, or the descent step) the schedule fused.
//!
//! Block `(x, y, z)` computes the `tile_m × tile_n` tile of C at rows `tile_m·y`,
//! columns `tile_n·x` of batch `z`. Its threads stage `tile_k`-deep panels of A and B
//! in shared memory, stored k-major (`a[kk][row]`, `b[kk][col]`) in two buffers: the
//! next panel is read from global memory into registers while the current one is
//! used, then written to the other buffer, with one barrier per panel. Thread
//! `t` holds a `thread_m × thread_n` part of the tile in registers, rows `t / 16 +
//! 16 i` and columns `t % 16 + 16 j`, and accumulates each element as the fma chain
//! over k in increasing order from +0, exactly as the loop nest (and the CPU's
//! routine) does: a panel of depth `tile_k` is `tile_k` fma steps, and the last,
//! shorter panel only as many as remain, never a step on padding. Elements outside
//! C's edges are computed on zeros and not stored.

use super::func::{Class, Func, Reg};
use super::kernel::NestWriter;
use crate::math::Arith;
use crate::BackendError;
use kiln_ir::kernel::{BufferId, KernelOp};
use kiln_ir::{CmpOp, Launch};

/// The tile sizes this kernel is written for: 256 threads in a 16×16 grid, each with
/// a 4×4 part of a 64×64 tile.
const TILE: u32 = 64;
const PART: u32 = 4;
/// The depth of a panel: 16 consecutive threads read 16 consecutive k.
const DEPTH: u32 = 16;

/// The matmul of a kernel and its epilogue, as the emitter needs it.
pub struct MatmulShape {
    pub a: BufferId,
    pub b: BufferId,
    pub c: BufferId,
    pub batches: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub bias: Option<BufferId>,
    pub relu: bool,
    pub update: Option<(BufferId, f32)>,
}

impl MatmulShape {
    pub fn of(op: &KernelOp) -> MatmulShape {
        let KernelOp::Matmul {
            a,
            b,
            c,
            batches,
            m,
            n,
            k,
            trans_a,
            trans_b,
            bias,
            relu,
            update,
        } = *op;
        MatmulShape {
            a,
            b,
            c,
            batches,
            m,
            n,
            k,
            trans_a,
            trans_b,
            bias,
            relu,
            update: update.map(|(param, scale)| (param, f32::from_bits(scale))),
        }
    }

    /// The grid: tiles of columns, tiles of rows, batches.
    pub fn grid(&self) -> [u32; 3] {
        let tiles = |extent: usize| extent.div_ceil(TILE as usize) as u32;
        [tiles(self.n), tiles(self.m), self.batches as u32]
    }
}

/// One operand's panel: where its elements are in global memory and in shared
/// memory.
struct Panel {
    buffer: BufferId,
    /// Elements of the operand per batch.
    batch_elements: usize,
    /// The extent along the tile's side (m for A, n for B).
    side: usize,
    /// Whether consecutive elements in memory run along k (A as stored m×k, B as
    /// stored n×k) rather than along the side.
    k_fast: bool,
    /// The shared array's name.
    shared: &'static str,
    /// Which grid coordinate picks the tile along the side: y for A, x for B.
    tile_register: &'static str,
}

/// Writes the tiled kernel for `shape` with `launch`'s tiles into `w`.
pub fn write(
    w: &mut NestWriter<'_>,
    shape: &MatmulShape,
    launch: &Launch,
) -> Result<(), BackendError> {
    let &Launch::Matmul {
        tile_m,
        tile_n,
        tile_k,
        thread_m,
        thread_n,
    } = launch
    else {
        return Err(w.unsupported(format!("a matmul kernel launched as {launch}")));
    };
    if (tile_m, tile_n, tile_k, thread_m, thread_n) != (TILE, TILE, DEPTH, PART, PART) {
        return Err(w.unsupported(format!(
            "matmul tiles {launch}: the PTX kernel is written for 64x64x16 tiles of 4x4 per \
             thread"
        )));
    }
    let largest = (shape.m * shape.k)
        .max(shape.k * shape.n)
        .max(shape.m * shape.n);
    if largest > i32::MAX as usize / 4 {
        return Err(w.unsupported(format!(
            "a matmul operand of {largest} elements: element offsets are 32-bit"
        )));
    }
    if shape.batches > 65_535 || shape.m.div_ceil(TILE as usize) > 65_535 {
        return Err(w.unsupported(format!(
            "a matmul of {} batches of {} rows: the grid's y and z are at most 65535",
            shape.batches, shape.m
        )));
    }
    let panels = [
        Panel {
            buffer: shape.a,
            batch_elements: shape.m * shape.k,
            side: shape.m,
            k_fast: !shape.trans_a,
            shared: "panel_a",
            tile_register: "%ctaid.y",
        },
        Panel {
            buffer: shape.b,
            batch_elements: shape.k * shape.n,
            side: shape.n,
            k_fast: shape.trans_b,
            shared: "panel_b",
            tile_register: "%ctaid.x",
        },
    ];
    let depth = tile_k as usize;
    let panel_bytes = depth * TILE as usize * 4;
    let f = &mut w.f;
    f.ins(format_args!(
        ".shared .align 16 .b8 panel_a[{}]",
        2 * panel_bytes
    ));
    f.ins(format_args!(
        ".shared .align 16 .b8 panel_b[{}]",
        2 * panel_bytes
    ));
    let thread = f.op(Class::B32, "mov.u32", format_args!("%tid.x"));
    let batch = f.op(Class::B32, "mov.u32", format_args!("%ctaid.z"));
    let column_of_thread = f.op(Class::B32, "rem.u32", format_args!("{thread}, 16"));
    let row_of_thread = f.op(Class::B32, "div.u32", format_args!("{thread}, 16"));

    // Each thread loads (16 · 64) / 256 = 4 elements of each panel per step.
    let loads = depth * TILE as usize / 256;
    // Per panel and load: the element's side position and depth within the panel,
    // the side position in C, the batch's base address, and its shared offset.
    struct Load {
        side: Reg,
        kk: Reg,
        side_valid: Reg,
        global: Reg,
        shared: Reg,
    }
    let mut plan: Vec<Vec<Load>> = Vec::new();
    for panel in &panels {
        let f = &mut w.f;
        let tile = f.op(
            Class::B32,
            "mov.u32",
            format_args!("{}", panel.tile_register),
        );
        let tile_start = f.op(Class::B32, "mul.lo.s32", format_args!("{tile}, {TILE}"));
        let batch_offset = f.op(
            Class::B64,
            "mul.wide.u32",
            format_args!("{batch}, {}", panel.batch_elements * 4),
        );
        // (At most 2^31 bytes per batch, checked above, so the immediate fits.)
        let base = w.bases[&panel.buffer];
        let f = &mut w.f;
        let batch_base = f.op(
            Class::B64,
            "add.s64",
            format_args!("{base}, {batch_offset}"),
        );
        let shared_base = f.op(Class::B32, "mov.u32", format_args!("{}", panel.shared));
        let mut loads_of_panel = Vec::new();
        for q in 0..loads {
            // k-fast: 16 consecutive threads read 16 consecutive k; side-fast: 64
            // consecutive threads read 64 consecutive rows or columns.
            let (side, kk) = if panel.k_fast {
                let side = f.op(
                    Class::B32,
                    "add.s32",
                    format_args!("{row_of_thread}, {}", 16 * q),
                );
                let kk = f.op(Class::B32, "mov.b32", format_args!("{column_of_thread}"));
                (side, kk)
            } else {
                let side = f.op(Class::B32, "rem.u32", format_args!("{thread}, {TILE}"));
                let above = f.op(Class::B32, "div.u32", format_args!("{thread}, {TILE}"));
                let kk = f.op(Class::B32, "add.s32", format_args!("{above}, {}", 4 * q));
                (side, kk)
            };
            let side_in_c = f.op(Class::B32, "add.s32", format_args!("{tile_start}, {side}"));
            let side_valid = f.op(
                Class::Pred,
                "setp.lt.s32",
                format_args!("{side_in_c}, {}", panel.side),
            );
            let slot = f.op(
                Class::B32,
                "mad.lo.s32",
                format_args!("{kk}, {TILE}, {side}"),
            );
            let shared = f.op(
                Class::B32,
                "mad.lo.s32",
                format_args!("{slot}, 4, {shared_base}"),
            );
            loads_of_panel.push(Load {
                side: side_in_c,
                kk,
                side_valid,
                global: batch_base,
                shared,
            });
        }
        plan.push(loads_of_panel);
    }

    let panels_total = shape.k.div_ceil(depth);
    let last_depth = shape.k - (panels_total - 1) * depth;
    let staged: Vec<Vec<Reg>> = plan
        .iter()
        .map(|loads| loads.iter().map(|_| w.f.reg(Class::F32)).collect())
        .collect();
    let accumulators: Vec<Reg> = (0..PART * PART)
        .map(|_| {
            let acc = w.f.reg(Class::F32);
            w.f.ins(format_args!("mov.b32 {acc}, 0f00000000"));
            acc
        })
        .collect();

    // Reads panel `k_start` (a register holding its first k) into the staging
    // registers; zeros outside A and B.
    let fetch = |f: &mut Func, k_start: Reg| {
        for (panel, (loads, staged)) in panels.iter().zip(plan.iter().zip(&staged)) {
            for (load, &value) in loads.iter().zip(staged) {
                let k = f.op(
                    Class::B32,
                    "add.s32",
                    format_args!("{k_start}, {}", load.kk),
                );
                let k_valid = f.op(Class::Pred, "setp.lt.s32", format_args!("{k}, {}", shape.k));
                let valid = f.op(
                    Class::Pred,
                    "and.pred",
                    format_args!("{k_valid}, {}", load.side_valid),
                );
                let element = if panel.k_fast {
                    f.op(
                        Class::B32,
                        "mad.lo.s32",
                        format_args!("{}, {}, {k}", load.side, shape.k),
                    )
                } else {
                    f.op(
                        Class::B32,
                        "mad.lo.s32",
                        format_args!("{k}, {}, {}", panel.side, load.side),
                    )
                };
                let offset = f.op(Class::B64, "mul.wide.s32", format_args!("{element}, 4"));
                let address = f.op(
                    Class::B64,
                    "add.s64",
                    format_args!("{}, {offset}", load.global),
                );
                f.ins(format_args!("mov.b32 {value}, 0f00000000"));
                f.ins(format_args!(
                    "@{valid} ld.global.nc.f32 {value}, [{address}]"
                ));
            }
        }
    };
    // Writes the staging registers to shared buffer `which` (a register: 0 or the
    // byte size of one panel).
    let stash = |f: &mut Func, which: Reg| {
        for (loads, staged) in plan.iter().zip(&staged) {
            for (load, &value) in loads.iter().zip(staged) {
                let at = f.op(
                    Class::B32,
                    "add.s32",
                    format_args!("{}, {which}", load.shared),
                );
                f.ins(format_args!("st.shared.f32 [{at}], {value}"));
            }
        }
    };
    // `steps` fma steps on shared buffer `which`.
    let compute = |f: &mut Func, which: Reg, steps: usize| {
        let a_base = f.op(Class::B32, "mov.u32", format_args!("panel_a"));
        let a_base = f.op(Class::B32, "add.s32", format_args!("{a_base}, {which}"));
        let a_row = f.op(
            Class::B32,
            "mad.lo.s32",
            format_args!("{row_of_thread}, 4, {a_base}"),
        );
        let b_base = f.op(Class::B32, "mov.u32", format_args!("panel_b"));
        let b_base = f.op(Class::B32, "add.s32", format_args!("{b_base}, {which}"));
        let b_column = f.op(
            Class::B32,
            "mad.lo.s32",
            format_args!("{column_of_thread}, 4, {b_base}"),
        );
        for kk in 0..steps {
            let a: Vec<Reg> = (0..PART as usize)
                .map(|i| {
                    let offset = (kk * TILE as usize + 16 * i) * 4;
                    f.op(
                        Class::F32,
                        "ld.shared.f32",
                        format_args!("[{a_row}+{offset}]"),
                    )
                })
                .collect();
            let b: Vec<Reg> = (0..PART as usize)
                .map(|j| {
                    let offset = (kk * TILE as usize + 16 * j) * 4;
                    f.op(
                        Class::F32,
                        "ld.shared.f32",
                        format_args!("[{b_column}+{offset}]"),
                    )
                })
                .collect();
            for i in 0..PART as usize {
                for j in 0..PART as usize {
                    let acc = accumulators[i * PART as usize + j];
                    f.ins(format_args!("fma.rn.f32 {acc}, {}, {}, {acc}", a[i], b[j]));
                }
            }
        }
    };

    let f = &mut w.f;
    let k_start = f.int_const(0);
    let which = f.int_const(0);
    fetch(f, k_start);
    stash(f, which);
    f.ins(format_args!("bar.sync 0"));
    let panel = f.int_const(0);
    let (top, last, after, done) = (f.label(), f.label(), f.label(), f.label());
    f.place(&top);
    let is_last = f.op(
        Class::Pred,
        "setp.eq.s32",
        format_args!("{panel}, {}", panels_total - 1),
    );
    f.ins(format_args!("@{is_last} bra {last}"));
    // Not the last panel: fetch the next, use this one, stash the next.
    f.ins(format_args!("add.s32 {k_start}, {k_start}, {depth}"));
    fetch(f, k_start);
    compute(f, which, depth);
    f.ins(format_args!("xor.b32 {which}, {which}, {panel_bytes}"));
    stash(f, which);
    f.ins(format_args!("bar.sync 0"));
    f.ins(format_args!("add.s32 {panel}, {panel}, 1"));
    f.ins(format_args!("bra.uni {top}"));
    f.place(&last);
    compute(f, which, last_depth);
    f.place(&after);

    // The epilogue, element by element, in the loop nest's order of operations.
    let row_tile = f.op(Class::B32, "mov.u32", format_args!("%ctaid.y"));
    let column_tile = f.op(Class::B32, "mov.u32", format_args!("%ctaid.x"));
    let row0 = f.op(
        Class::B32,
        "mad.lo.s32",
        format_args!("{row_tile}, {TILE}, {row_of_thread}"),
    );
    let column0 = f.op(
        Class::B32,
        "mad.lo.s32",
        format_args!("{column_tile}, {TILE}, {column_of_thread}"),
    );
    let c_batch = f.op(
        Class::B64,
        "mul.wide.u32",
        format_args!("{batch}, {}", shape.m * shape.n * 4),
    );
    let c_base = w.bases[&shape.c];
    let bias_base = shape.bias.map(|bias| w.bases[&bias]);
    let param_base = shape.update.map(|(param, _)| w.bases[&param]);
    let f = &mut w.f;
    let c_base = f.op(Class::B64, "add.s64", format_args!("{c_base}, {c_batch}"));
    for i in 0..PART as usize {
        for j in 0..PART as usize {
            let skip = f.label();
            let row = f.op(Class::B32, "add.s32", format_args!("{row0}, {}", 16 * i));
            let column = f.op(Class::B32, "add.s32", format_args!("{column0}, {}", 16 * j));
            let row_out = f.op(
                Class::Pred,
                "setp.ge.s32",
                format_args!("{row}, {}", shape.m),
            );
            f.ins(format_args!("@{row_out} bra {skip}"));
            let column_out = f.op(
                Class::Pred,
                "setp.ge.s32",
                format_args!("{column}, {}", shape.n),
            );
            f.ins(format_args!("@{column_out} bra {skip}"));
            let element = f.op(
                Class::B32,
                "mad.lo.s32",
                format_args!("{row}, {}, {column}", shape.n),
            );
            let offset = f.op(Class::B64, "mul.wide.s32", format_args!("{element}, 4"));
            let mut value = accumulators[i * PART as usize + j];
            if let Some(bias_base) = bias_base {
                let column_offset = f.op(Class::B64, "mul.wide.s32", format_args!("{column}, 4"));
                let address = f.op(
                    Class::B64,
                    "add.s64",
                    format_args!("{bias_base}, {column_offset}"),
                );
                let bias = f.op(Class::F32, "ld.global.nc.f32", format_args!("[{address}]"));
                value = f.fadd(value, bias);
            }
            if shape.relu {
                let zero = f.float_const(0.0);
                let positive = f.fcmp(CmpOp::Gt, value, zero);
                value = f.select(positive, value, zero);
            }
            if let (Some(param_base), Some((_, scale))) = (param_base, shape.update) {
                let address = f.op(
                    Class::B64,
                    "add.s64",
                    format_args!("{param_base}, {offset}"),
                );
                let param = f.op(Class::F32, "ld.global.f32", format_args!("[{address}]"));
                let scale = f.float_const(scale);
                let step = f.fmul(scale, value);
                value = f.fsub(param, step);
            }
            let address = f.op(Class::B64, "add.s64", format_args!("{c_base}, {offset}"));
            f.ins(format_args!("st.global.f32 [{address}], {value}"));
            f.place(&skip);
        }
    }
    f.place(&done);
    Ok(())
}
