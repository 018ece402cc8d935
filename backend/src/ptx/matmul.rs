//! The tiled matmul kernel (`Launch::Matmul`): `C = op(A) · op(B)` for each batch,
//! then the epilogue (bias, relu, or the descent step) the schedule fused; or a
//! contraction (`KernelOp::Contraction`, a convolution as an implicit GEMM), the same
//! kernel with every operand addressed through its axes' strides: a row, a column or
//! a k position is split into its axes' coordinates (a mixed-radix division by
//! constants), a row's and a column's once per kernel, a k position's per panel. A
//! plain matmul is the contraction of one axis each.
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
use kiln_ir::kernel::{BufferId, Contraction, ContractionAxis, KernelOp, TapAxis};
use kiln_ir::{CmpOp, Launch};

/// The threads of a block: a 16×16 grid, each with a `part×part` piece of a square
/// tile `16·part` on a side (`Launch::MATMUL_PARTS`).
const THREADS: u32 = 256;
/// The depth of a panel: 16 consecutive threads read 16 consecutive k.
const DEPTH: u32 = 16;

/// The tile's side and the part per thread of `launch`, if the kernel is written for
/// it.
fn tiling(launch: &Launch) -> Option<(u32, u32)> {
    let &Launch::Matmul {
        tile_m,
        tile_n,
        tile_k,
        thread_m,
        thread_n,
    } = launch
    else {
        return None;
    };
    let written = Launch::MATMUL_PARTS.contains(&thread_m)
        && (tile_m, tile_n, tile_k, thread_n) == (16 * thread_m, 16 * thread_m, DEPTH, thread_m);
    written.then_some((tile_m, thread_m))
}

/// The matmul of a kernel and its epilogue, as the emitter needs it.
pub struct MatmulShape {
    pub contraction: Contraction,
    /// The epilogue (only for a plain matmul, whose C is row-major m×n).
    pub bias: Option<BufferId>,
    pub relu: bool,
    pub update: Option<(BufferId, f32)>,
}

impl MatmulShape {
    pub fn of(op: &KernelOp) -> MatmulShape {
        match *op {
            KernelOp::Matmul(matmul) => MatmulShape {
                contraction: matmul.contraction(),
                bias: matmul.bias,
                relu: matmul.relu,
                update: matmul
                    .update
                    .map(|(param, scale)| (param, f32::from_bits(scale))),
            },
            KernelOp::Contraction(ref contraction) => MatmulShape {
                contraction: contraction.clone(),
                bias: None,
                relu: false,
                update: None,
            },
        }
    }

    /// The grid under tiles `tile` on a side: tiles of columns, tiles of rows,
    /// batches.
    pub fn grid(&self, tile: u32) -> [u32; 3] {
        let tiles = |extent: usize| extent.div_ceil(tile as usize) as u32;
        let c = &self.contraction;
        [tiles(c.columns()), tiles(c.rows()), c.batches as u32]
    }
}

/// `total + coordinate·stride` (just the product without a total), in the fewest
/// instructions.
fn scaled_add(f: &mut Func, coordinate: Reg, stride: usize, total: Option<Reg>) -> Reg {
    match total {
        Some(total) if stride == 1 => {
            f.op(Class::B32, "add.s32", format_args!("{coordinate}, {total}"))
        }
        Some(total) => f.op(
            Class::B32,
            "mad.lo.s32",
            format_args!("{coordinate}, {stride}, {total}"),
        ),
        None if stride == 1 => coordinate,
        None => f.op(
            Class::B32,
            "mul.lo.s32",
            format_args!("{coordinate}, {stride}"),
        ),
    }
}

/// The offset of position `index` (a register) along `axes` taken in row-major
/// order, each coordinate times its stride `which`, plus `base` if any: the
/// outermost coordinate is not reduced, so a position past the end gives an offset
/// past the end (only ever for a load the kernel predicates off, or a store it
/// skips).
fn offset(
    f: &mut Func,
    base: Option<Reg>,
    index: Reg,
    axes: &[ContractionAxis],
    which: usize,
) -> Reg {
    let extents: Vec<usize> = axes.iter().map(|axis| axis.extent).collect();
    let mut total = base;
    for (coordinate, axis) in coordinates(f, index, &extents).into_iter().zip(axes).rev() {
        total = Some(scaled_add(f, coordinate, axis.strides[which], total));
    }
    total.unwrap_or_else(|| f.int_const(0))
}

/// The coordinates of position `index` (a register) along axes of `extents` in
/// row-major order; the outermost is not reduced.
fn coordinates(f: &mut Func, index: Reg, extents: &[usize]) -> Vec<Reg> {
    let mut rest = index;
    let mut coordinates = Vec::with_capacity(extents.len());
    for &extent in extents.iter().skip(1).rev() {
        coordinates.push(f.op(Class::B32, "rem.u32", format_args!("{rest}, {extent}")));
        rest = f.op(Class::B32, "div.u32", format_args!("{rest}, {extent}"));
    }
    if !extents.is_empty() {
        coordinates.push(rest);
    }
    coordinates.reverse();
    coordinates
}

/// For positions `i` (registers, one per tap axis) and tap `t`: whether the tap
/// reads each position from an output position `y` (`s·y + d·t = i + low` with
/// `0 ≤ y < out` on every axis), and `Σ y·out_stride` (meaningless where it does
/// not).
fn tap_reads(f: &mut Func, positions: &[Reg], tap: &[Reg], axes: &[TapAxis]) -> (Reg, Reg) {
    let mut reads: Option<Reg> = None;
    let mut offset: Option<Reg> = None;
    for ((&i, &t), axis) in positions.iter().zip(tap).zip(axes) {
        let shifted = f.op(Class::B32, "add.s32", format_args!("{i}, {}", axis.low));
        let back = f.op(
            Class::B32,
            "mul.lo.s32",
            format_args!("{t}, {}", axis.dilation),
        );
        let j = f.op(Class::B32, "sub.s32", format_args!("{shifted}, {back}"));
        let mut holds = f.op(Class::Pred, "setp.ge.s32", format_args!("{j}, 0"));
        let y = if axis.stride > 1 {
            let rest = f.op(Class::B32, "rem.s32", format_args!("{j}, {}", axis.stride));
            let exact = f.op(Class::Pred, "setp.eq.s32", format_args!("{rest}, 0"));
            holds = f.op(Class::Pred, "and.pred", format_args!("{holds}, {exact}"));
            f.op(Class::B32, "div.s32", format_args!("{j}, {}", axis.stride))
        } else {
            j
        };
        let inside = f.op(
            Class::Pred,
            "setp.lt.s32",
            format_args!("{y}, {}", axis.out),
        );
        holds = f.op(Class::Pred, "and.pred", format_args!("{holds}, {inside}"));
        reads = Some(match reads {
            None => holds,
            Some(all) => f.op(Class::Pred, "and.pred", format_args!("{all}, {holds}")),
        });
        offset = Some(scaled_add(f, y, axis.out_stride, offset));
    }
    // (No tap axes: every tap reads every position, at offset 0.)
    let offset = offset.unwrap_or_else(|| f.int_const(0));
    let reads = reads.unwrap_or_else(|| {
        f.op(
            Class::Pred,
            "setp.eq.s32",
            format_args!("{offset}, {offset}"),
        )
    });
    (reads, offset)
}

/// One operand's panel: where its elements are in global memory and in shared
/// memory.
struct Panel<'a> {
    buffer: BufferId,
    /// The stride from one batch to the next.
    batch_stride: usize,
    /// The axes along the tile's side (m for A, n for B) and which of their strides
    /// is this operand's (always the first).
    side: &'a [ContractionAxis],
    /// Which of the k axes' strides is this operand's: 0 for A, 1 for B.
    k_stride: usize,
    /// Whether neighbouring threads read along k (A as stored m×k, B as stored n×k)
    /// rather than along the side: whichever is closer together in memory.
    k_fast: bool,
    /// The shared array's name.
    shared: &'static str,
    /// Which grid coordinate picks the tile along the side: y for A, x for B.
    tile_register: &'static str,
}

impl Panel<'_> {
    fn extent(&self) -> usize {
        self.side.iter().map(|axis| axis.extent).product()
    }
}

/// Whether the innermost k axis is at most as far apart in memory (stride `k`) as
/// the innermost side axis: a missing axis counts as infinitely far.
fn k_fast(k: &[ContractionAxis], k_stride: usize, side: &[ContractionAxis]) -> bool {
    let innermost = |axes: &[ContractionAxis], which: usize| {
        axes.last().map_or(usize::MAX, |axis| axis.strides[which])
    };
    innermost(k, k_stride) <= innermost(side, 0)
}

/// Writes the tiled kernel for `shape` with `launch`'s tiles into `w`; returns the
/// tile's side.
pub fn write(
    w: &mut NestWriter<'_>,
    shape: &MatmulShape,
    launch: &Launch,
) -> Result<u32, BackendError> {
    let Some((tile, part)) = tiling(launch) else {
        return Err(w.unsupported(format!(
            "a matmul kernel launched as {launch}: the PTX kernel is written for square tiles \
             of 16p on a side, p x p per thread for p in {:?}, 16-deep panels",
            Launch::MATMUL_PARTS
        )));
    };
    let c = &shape.contraction;
    let (rows, columns, depth_total) = (c.rows(), c.columns(), c.depth());
    let largest = c.extents().into_iter().max().unwrap_or(0);
    if largest > i32::MAX as usize / 4 {
        return Err(w.unsupported(format!(
            "a matmul operand of {largest} elements: element offsets are 32-bit"
        )));
    }
    if c.batches > 65_535 || rows.div_ceil(tile as usize) > 65_535 {
        return Err(w.unsupported(format!(
            "a matmul of {} batches of {rows} rows: the grid's y and z are at most 65535",
            c.batches
        )));
    }
    let panels = [
        Panel {
            buffer: c.a,
            batch_stride: c.batch_strides[0],
            side: &c.m,
            k_stride: 0,
            k_fast: k_fast(&c.k, 0, &c.m),
            shared: "panel_a",
            tile_register: "%ctaid.y",
        },
        Panel {
            buffer: c.b,
            batch_stride: c.batch_strides[1],
            side: &c.n,
            k_stride: 1,
            k_fast: k_fast(&c.k, 1, &c.n),
            shared: "panel_b",
            tile_register: "%ctaid.x",
        },
    ];
    let depth = DEPTH as usize;
    let panel_bytes = depth * tile as usize * 4;
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

    // Each thread loads 16 · tile / 256 elements of each panel per step.
    let loads = depth * tile as usize / THREADS as usize;
    // Per panel and load: the element offset of its side position, its depth within
    // the panel, the batch's base address, and its shared offset.
    struct Load {
        side_offset: Reg,
        kk: Reg,
        side_valid: Reg,
        global: Reg,
        shared: Reg,
        /// With taps: the offset and validity of the side position itself (which
        /// each tap shifts into `side_offset` and `side_valid`), and for A the
        /// position's coordinates along the tap axes.
        tap: Option<(Reg, Reg, Vec<Reg>)>,
    }
    let taps = &c.taps;
    let tap_extents: Vec<usize> = taps.iter().map(|tap| tap.taps).collect();
    // The m axes the taps gather through: the last `taps.len()`.
    let position_axes = c.m.len() - taps.len();
    let m_extents: Vec<usize> = c.m.iter().map(|axis| axis.extent).collect();
    let mut plan: Vec<Vec<Load>> = Vec::new();
    for panel in &panels {
        let f = &mut w.f;
        let tile_index = f.op(
            Class::B32,
            "mov.u32",
            format_args!("{}", panel.tile_register),
        );
        let tile_start = f.op(
            Class::B32,
            "mul.lo.s32",
            format_args!("{tile_index}, {tile}"),
        );
        let batch_offset = f.op(
            Class::B64,
            "mul.wide.u32",
            format_args!("{batch}, {}", panel.batch_stride * 4),
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
            // k-fast: 16 consecutive threads read 16 consecutive k; side-fast: `tile`
            // consecutive threads read `tile` consecutive rows or columns.
            let (side, kk) = if panel.k_fast {
                let side = f.op(
                    Class::B32,
                    "add.s32",
                    format_args!("{row_of_thread}, {}", 16 * q),
                );
                let kk = f.op(Class::B32, "mov.b32", format_args!("{column_of_thread}"));
                (side, kk)
            } else {
                let side = f.op(Class::B32, "rem.u32", format_args!("{thread}, {tile}"));
                let above = f.op(Class::B32, "div.u32", format_args!("{thread}, {tile}"));
                let kk = f.op(
                    Class::B32,
                    "add.s32",
                    format_args!("{above}, {}", THREADS / tile * q as u32),
                );
                (side, kk)
            };
            let side_in_c = f.op(Class::B32, "add.s32", format_args!("{tile_start}, {side}"));
            let side_valid = f.op(
                Class::Pred,
                "setp.lt.s32",
                format_args!("{side_in_c}, {}", panel.extent()),
            );
            let side_offset = offset(f, None, side_in_c, panel.side, 0);
            let slot = f.op(
                Class::B32,
                "mad.lo.s32",
                format_args!("{kk}, {tile}, {side}"),
            );
            let shared = f.op(
                Class::B32,
                "mad.lo.s32",
                format_args!("{slot}, 4, {shared_base}"),
            );
            let (side_offset, side_valid, tap) = if taps.is_empty() {
                (side_offset, side_valid, None)
            } else {
                let positions = if panel.k_stride == 0 {
                    coordinates(f, side_in_c, &m_extents)[position_axes..].to_vec()
                } else {
                    Vec::new()
                };
                let tap = Some((side_offset, side_valid, positions));
                (f.reg(Class::B32), f.reg(Class::Pred), tap)
            };
            loads_of_panel.push(Load {
                side_offset,
                kk,
                side_valid,
                global: batch_base,
                shared,
                tap,
            });
        }
        plan.push(loads_of_panel);
    }

    let panels_total = depth_total.div_ceil(depth);
    let last_depth = depth_total - (panels_total - 1) * depth;
    let staged: Vec<Vec<Reg>> = plan
        .iter()
        .map(|loads| loads.iter().map(|_| w.f.reg(Class::F32)).collect())
        .collect();
    let accumulators: Vec<Reg> = (0..part * part).map(|_| w.f.reg(Class::F32)).collect();

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
                let k_valid = f.op(
                    Class::Pred,
                    "setp.lt.s32",
                    format_args!("{k}, {depth_total}"),
                );
                let valid = f.op(
                    Class::Pred,
                    "and.pred",
                    format_args!("{k_valid}, {}", load.side_valid),
                );
                let element = offset(f, Some(load.side_offset), k, &c.k, panel.k_stride);
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
            let a: Vec<Reg> = (0..part as usize)
                .map(|i| {
                    let offset = (kk * tile as usize + 16 * i) * 4;
                    f.op(
                        Class::F32,
                        "ld.shared.f32",
                        format_args!("[{a_row}+{offset}]"),
                    )
                })
                .collect();
            let b: Vec<Reg> = (0..part as usize)
                .map(|j| {
                    let offset = (kk * tile as usize + 16 * j) * 4;
                    f.op(
                        Class::F32,
                        "ld.shared.f32",
                        format_args!("[{b_column}+{offset}]"),
                    )
                })
                .collect();
            for i in 0..part as usize {
                for j in 0..part as usize {
                    let acc = accumulators[i * part as usize + j];
                    f.ins(format_args!("fma.rn.f32 {acc}, {}, {}, {acc}", a[i], b[j]));
                }
            }
        }
    };

    let f = &mut w.f;
    // With taps: the thread's rows and their coordinates along the tap axes (for
    // which taps reach them), the running sums, the tap, and the loop over the taps.
    let row_tile = f.op(Class::B32, "mov.u32", format_args!("%ctaid.y"));
    let row0 = f.op(
        Class::B32,
        "mad.lo.s32",
        format_args!("{row_tile}, {tile}, {row_of_thread}"),
    );
    let mut tap_loop = None;
    if !taps.is_empty() {
        let thread_rows: Vec<Vec<Reg>> = (0..part)
            .map(|i| {
                let row = f.op(Class::B32, "add.s32", format_args!("{row0}, {}", 16 * i));
                coordinates(f, row, &m_extents)[position_axes..].to_vec()
            })
            .collect();
        let totals: Vec<Reg> = (0..part * part)
            .map(|_| {
                let total = f.reg(Class::F32);
                f.ins(format_args!("mov.b32 {total}, 0f00000000"));
                total
            })
            .collect();
        let tap = f.int_const(0);
        let top = f.label();
        f.place(&top);
        let tap_coordinates = coordinates(f, tap, &tap_extents);
        // b's column of this tap: Σ t·tap_stride.
        let mut shift = None;
        for (&t, axis) in tap_coordinates.iter().zip(taps) {
            shift = Some(scaled_add(f, t, axis.tap_stride, shift));
        }
        let shift = shift.unwrap_or_else(|| f.int_const(0));
        for loads in &plan {
            for load in loads {
                let Some((static_offset, static_valid, positions)) = &load.tap else {
                    continue;
                };
                if positions.is_empty() {
                    // b: the tap's column of w.
                    f.ins(format_args!(
                        "add.s32 {}, {static_offset}, {shift}",
                        load.side_offset
                    ));
                    f.ins(format_args!("mov.pred {}, {static_valid}", load.side_valid));
                } else {
                    let (reads, gathered) = tap_reads(f, positions, &tap_coordinates, taps);
                    f.ins(format_args!(
                        "add.s32 {}, {static_offset}, {gathered}",
                        load.side_offset
                    ));
                    f.ins(format_args!(
                        "and.pred {}, {static_valid}, {reads}",
                        load.side_valid
                    ));
                }
            }
        }
        // The previous tap's last panel may still be read from shared memory.
        f.ins(format_args!("bar.sync 0"));
        tap_loop = Some((thread_rows, totals, tap, top, tap_coordinates));
    }
    for &acc in &accumulators {
        f.ins(format_args!("mov.b32 {acc}, 0f00000000"));
    }
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
    // With taps: this tap's part of each element (+0 where the tap reads nothing
    // for its row) added to the running sum (assigned at the first tap); the next
    // tap.
    let results = match &tap_loop {
        None => accumulators.clone(),
        Some((thread_rows, totals, tap, top, tap_coordinates)) => {
            let first = f.op(Class::Pred, "setp.eq.s32", format_args!("{tap}, 0"));
            for (i, positions) in thread_rows.iter().enumerate() {
                let (reads, _) = tap_reads(f, positions, tap_coordinates, taps);
                for j in 0..part as usize {
                    let slot = i * part as usize + j;
                    let (acc, total) = (accumulators[slot], totals[slot]);
                    let term = f.op(
                        Class::F32,
                        "selp.f32",
                        format_args!("{acc}, 0f00000000, {reads}"),
                    );
                    let sum = f.fadd(total, term);
                    f.ins(format_args!("selp.f32 {total}, {term}, {sum}, {first}"));
                }
            }
            let count: usize = tap_extents.iter().product();
            f.ins(format_args!("add.s32 {tap}, {tap}, 1"));
            let more = f.op(Class::Pred, "setp.lt.s32", format_args!("{tap}, {count}"));
            f.ins(format_args!("@{more} bra {top}"));
            totals.clone()
        }
    };

    // The epilogue, element by element, in the loop nest's order of operations.
    let column_tile = f.op(Class::B32, "mov.u32", format_args!("%ctaid.x"));
    let column0 = f.op(
        Class::B32,
        "mad.lo.s32",
        format_args!("{column_tile}, {tile}, {column_of_thread}"),
    );
    let c_batch = f.op(
        Class::B64,
        "mul.wide.u32",
        format_args!("{batch}, {}", c.batch_strides[2] * 4),
    );
    let c_base = w.bases[&c.c];
    let bias_base = shape.bias.map(|bias| w.bases[&bias]);
    let param_base = shape.update.map(|(param, _)| w.bases[&param]);
    let f = &mut w.f;
    let c_base = f.op(Class::B64, "add.s64", format_args!("{c_base}, {c_batch}"));
    // The thread's rows and columns, and their element offsets in C.
    let mut positions = |start: Reg, axes: &[ContractionAxis]| -> Vec<(Reg, Reg)> {
        (0..part)
            .map(|i| {
                let position = f.op(Class::B32, "add.s32", format_args!("{start}, {}", 16 * i));
                (position, offset(f, None, position, axes, 1))
            })
            .collect()
    };
    let rows_of_thread = positions(row0, &c.m);
    let columns_of_thread = positions(column0, &c.n);
    for (i, &(row, row_offset)) in rows_of_thread.iter().enumerate() {
        for (j, &(column, column_offset)) in columns_of_thread.iter().enumerate() {
            let skip = f.label();
            let row_out = f.op(Class::Pred, "setp.ge.s32", format_args!("{row}, {rows}"));
            f.ins(format_args!("@{row_out} bra {skip}"));
            let column_out = f.op(
                Class::Pred,
                "setp.ge.s32",
                format_args!("{column}, {columns}"),
            );
            f.ins(format_args!("@{column_out} bra {skip}"));
            let element = f.op(
                Class::B32,
                "add.s32",
                format_args!("{row_offset}, {column_offset}"),
            );
            let offset = f.op(Class::B64, "mul.wide.s32", format_args!("{element}, 4"));
            let mut value = results[i * part as usize + j];
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
    Ok(tile)
}
