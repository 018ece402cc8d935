//! The PTX emitter: kernel-IR programs as PTX text for NVIDIA GPUs, written by kiln
//! itself (no CUDA toolkit, LLVM or NVRTC), following a [`GpuSchedule`].
//!
//! One module per program: `.version 7.8`, `.target sm_80` or `sm_90`, and one
//! `.visible .entry` per kernel whose parameters are the device addresses of the
//! buffers it uses ([`PtxEntry::buffers`]). A kernel launched as
//! [`Launch::Threads`] runs its independent loops as a grid-stride loop and the rest
//! of its nest in each thread (`kernel.rs`), one launched as [`Launch::Matmul`] is
//! the tiled matmul (`matmul.rs`), one launched as [`Launch::Single`] runs its nest
//! on one thread. Every value is computed as `kiln_ir::scalar` defines it
//! (`func.rs` lists the instructions), so the GPU computes what the interpreter and
//! the CPU compute, bit for bit.
//!
//! The program is the lowered one after the epilogue fusion, not a CPU schedule:
//! vector lanes, parallel loops and routine calls are the CPU's and are refused.

mod func;
mod kernel;
mod matmul;

use crate::BackendError;
use func::{Class, Func};
use kernel::NestWriter;
use kiln_ir::gpu::leading_nest;
use kiln_ir::kernel::{BufferId, Program, Stmt, VarId};
use kiln_ir::{GpuSchedule, GpuTarget, Launch};
use matmul::MatmulShape;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// The PTX ISA version of the modules (CUDA 11.8 and later drivers load it).
pub const PTX_VERSION: &str = "7.8";

/// A program's kernels as one PTX module, and how to launch each.
#[derive(Clone, Debug, PartialEq)]
pub struct PtxModule {
    pub target: GpuTarget,
    /// The module's text: `.version`, `.target sm_XX`, `.address_size 64`, then one
    /// `.visible .entry` per kernel.
    pub text: String,
    /// One entry per kernel of the program, in launch order.
    pub entries: Vec<PtxEntry>,
}

/// One `.entry` of a module and its launch configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxEntry {
    /// The index of the kernel in the program.
    pub kernel: usize,
    /// The entry's symbol (`k3_add`).
    pub name: String,
    /// Blocks along x, y, z.
    pub grid: [u32; 3],
    /// Threads per block along x (y and z are 1).
    pub block: u32,
    /// Dynamic shared memory in bytes (0: the kernel declares its own).
    pub shared_bytes: u32,
    /// The entry's parameters, in order: each the device address (`.u64`) of the
    /// start of this buffer, which holds `program.buffer(id).len()` elements.
    pub buffers: Vec<BufferId>,
}

/// Writes `program` (checked; lowered and fused, not scheduled for a CPU) as PTX for
/// `schedule`'s target, one entry per kernel launched as the schedule says.
pub fn emit(program: &Program, schedule: &GpuSchedule) -> Result<PtxModule, BackendError> {
    program.check()?;
    if schedule.launches.len() != program.kernels.len() {
        return Err(BackendError::Unsupported {
            kernel: program.name.clone(),
            message: format!(
                "the GPU schedule has {} launches for {} kernels",
                schedule.launches.len(),
                program.kernels.len()
            ),
        });
    }
    let target = schedule.target;
    if !GpuTarget::SUPPORTED_SM.contains(&target.sm) {
        return Err(BackendError::Unsupported {
            kernel: program.name.clone(),
            message: format!("sm_{}: kiln writes PTX for sm_80 and sm_90", target.sm),
        });
    }
    let mut text = format!(
        "//\n// {} for {}: written by kiln\n//\n\n.version {PTX_VERSION}\n.target {}\n.address_size 64\n",
        program.name,
        target.arch(),
        target.arch()
    );
    let mut entries = Vec::with_capacity(program.kernels.len());
    for (index, launch) in schedule.launches.iter().enumerate() {
        let (entry_text, entry) = write_entry(program, index, launch)?;
        text.push('\n');
        text.push_str(&entry_text);
        entries.push(entry);
    }
    Ok(PtxModule {
        target,
        text,
        entries,
    })
}

/// The entry of kernel `index` and how to launch it.
fn write_entry(
    program: &Program,
    index: usize,
    launch: &Launch,
) -> Result<(String, PtxEntry), BackendError> {
    let kernel = &program.kernels[index];
    let name = format!("k{index}_{}", symbol(&kernel.name));
    let mut used: BTreeSet<BufferId> = kernel.buffers().into_iter().collect();
    let matmul = match (launch, &kernel.op) {
        (Launch::Matmul { .. }, Some(op)) => {
            let shape = MatmulShape::of(op);
            let c = &shape.contraction;
            used.extend([c.a, c.b, c.c]);
            used.extend(shape.bias);
            used.extend(shape.update.map(|(param, _)| param));
            Some(shape)
        }
        _ => None,
    };
    let buffers: Vec<BufferId> = used.into_iter().collect();

    let mut f = Func::default();
    let mut bases = BTreeMap::new();
    for &buffer in &buffers {
        let param = f.op(
            Class::B64,
            "ld.param.u64",
            format_args!("[{name}_{buffer}]"),
        );
        let base = f.op(Class::B64, "cvta.to.global.u64", format_args!("{param}"));
        bases.insert(buffer, base);
    }
    let mut w = NestWriter::new(program, index, f, bases);
    let (grid, block) = match launch {
        Launch::Single => {
            w.single()?;
            ([1, 1, 1], 1)
        }
        Launch::Threads {
            depth,
            lanes,
            block,
            grid,
        } => {
            let Some((nest, body)) = nest(&kernel.body, *depth) else {
                return Err(w.unsupported(format!(
                    "launched as {launch}, but the kernel does not start with {depth} nested \
                     loops from 0 by 1"
                )));
            };
            w.threads(&nest, body, *lanes)?;
            ([(*grid).max(1), 1, 1], (*block).max(1))
        }
        Launch::Reduce { depth, block, grid } => {
            let found = nest(&kernel.body, *depth)
                .and_then(|(nest, body)| Some((nest, kiln_ir::gpu::reduction_of(kernel, body)?)));
            let Some((nest, reduction)) = found else {
                return Err(w.unsupported(format!(
                    "launched as {launch}, but the kernel is no reduction under {depth} loops"
                )));
            };
            w.reduce(&nest, &reduction, *block)?;
            ([(*grid).max(1), 1, 1], *block)
        }
        Launch::Matmul { .. } => {
            let Some(shape) = &matmul else {
                return Err(w.unsupported(format!("launched as {launch}, but it is no matmul")));
            };
            let tile = matmul::write(&mut w, shape, launch)?;
            (shape.grid(tile), launch.block_threads())
        }
    };
    w.f.ins(format_args!("ret"));

    let mut out = String::new();
    let _ = writeln!(out, "// kernel k{index} ({}): {launch}", kernel.name);
    let _ = writeln!(out, ".visible .entry {name}(");
    let params: Vec<String> = buffers
        .iter()
        .map(|buffer| format!("\t.param .u64 {name}_{buffer}"))
        .collect();
    let _ = writeln!(out, "{}\n)", params.join(",\n"));
    let _ = writeln!(out, ".maxntid {block}, 1, 1");
    let _ = writeln!(out, "{{\n{}}}", w.f.finish());
    let entry = PtxEntry {
        kernel: index,
        name,
        grid,
        block,
        shared_bytes: 0,
        buffers,
    };
    Ok((out, entry))
}

/// Loops as `(var, trips)`, outermost first.
type Nest = Vec<(VarId, usize)>;

/// The kernel's leading `depth` loops (`kiln_ir::gpu::leading_nest`), and the
/// innermost one's body.
fn nest(body: &[Stmt], depth: usize) -> Option<(Nest, &[Stmt])> {
    let loops = leading_nest(body);
    let innermost = match depth {
        0 => body,
        _ => loops.get(depth - 1)?.2,
    };
    let nest = loops[..depth]
        .iter()
        .map(|&(var, trips, _)| (var, trips))
        .collect();
    Some((nest, innermost))
}

/// A kernel's name as part of a PTX identifier: letters, digits and `_`.
fn symbol(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
