//! Matrix multiplication at the speed of the machine: a BLIS-style blocked GEMM whose
//! loops and packing are Cranelift IR (`driver.rs`) around one small microkernel per
//! tile of C, either 512-bit AVX-512F ([`avx512`], 12×32 tile) or 256-bit AVX2/FMA
//! ([`avx2`], 6×16 tile) machine code emitted with iced-x86 from one generator
//! (`x86_kernel.rs`), or pure Cranelift `f32x4` IR ([`f32x4`], 5×8 tile, the portable
//! fallback). See DESIGN.md "Performance model" for why only the microkernel is
//! machine code.
//!
//! # Use
//!
//! [`define_gemm`] defines, in any `cranelift_module::Module` (so JIT and AOT share
//! it), an exported function with the C signature
//!
//! ```text
//! extern "C" fn(a: *const f32, b: *const f32, c: *mut f32, workspace: *mut u8,
//!               row_begin: i64, row_end: i64, col_begin: i64, col_end: i64
//!               [, bias: *const f32] [, param: *const f32])
//! ```
//!
//! (`bias` exists only when the epilogue adds a bias, `param` only with an update
//! epilogue, which needs k in one KC block; `param` may be C itself, as each of its
//! elements is read just before the same element of C is written). It computes the
//! block of rows `[row_begin, row_end)` and columns `[col_begin, col_end)` of `C =
//! op(A)·op(B)`, row-major, where `op` transposes when the spec's flag is set: A is
//! m×k (or k×m when `trans_a`), B is k×n (or n×k when `trans_b`), C is m×n and that
//! block is fully overwritten. The ranges are clamped to `[0, m]` and `[0, n]`.
//! `workspace` must hold [`GemmSpec::workspace_bytes`] bytes (64-byte alignment is
//! best, 4 is enough) and belong to the calling thread: threads call the function on
//! disjoint blocks, each with its own workspace; each packs the A rows and B columns
//! of its block, so a split by rows repeats B's packing and a split by columns A's.
//! Splitting at multiples of [`MicroKernelCode::mr`] rows or
//! [`MicroKernelCode::nr`] columns avoids partial tiles at the seam.
//!
//! Typical use: `define_gemm(&mut module, "kiln_mm3", &spec, MicroKernel::Avx2Fma6x16,
//! &blocking)` with the schedule's blocking, then per thread a workspace of
//! `spec.workspace_bytes(kernel, &blocking)` bytes.
//!
//! # Numeric contract
//!
//! Each `C[i][j]` is exactly the f32 chain `acc = +0.0; for p in 0..k { acc =
//! fma(a[i][p], b[p][j], acc) }` (then `acc + bias[j]`, then kiln's relu `acc > 0 ?
//! acc : +0`, as the epilogue says), bit for bit with the interpreter: the k
//! dimension is never split, the first KC block starts from +0.0 accumulators and
//! every later one reloads C into them, and edge tiles either run a kernel that
//! reads and writes only their part of C (x86, see [`TileShape`]) or go through a
//! zero-padded scratch tile, so that padding never mixes into valid elements. A NaN
//! result is a NaN wherever the chain's is; its payload is not part of the contract
//! (tests compare NaNs as equal).
//!
//! # Workspace layout (per thread)
//!
//! Packed B panel (`kc × nc` floats, NR-column micro-panels), packed A block (`mc ×
//! kc` floats, MR-row micro-panels), the scratch tile (`MR × NR`), and with a bias
//! the zero-padded bias of the current B panel (`nc` floats), each 64-byte aligned.

pub mod avx2;
pub mod avx512;
mod driver;
pub mod f32x4;
#[cfg(test)]
mod tests;
mod x86_kernel;

use crate::BackendError;
use cranelift_codegen::ir::{types, AbiParam, FuncRef, Signature};
use cranelift_codegen::isa::{CallConv, TargetIsa};
use cranelift_frontend::FunctionBuilderContext;
use cranelift_module::{FuncId, Linkage, Module, ModuleError};

/// The microkernel's `flags` argument (every microkernel).
pub mod flags {
    /// Load C into the accumulators (every KC block after the first); otherwise
    /// start from +0.0.
    pub const ACCUMULATE: i64 = 1;
    /// Add the (packed, zero padded) bias row to every row of the tile.
    pub const ADD_BIAS: i64 = 2;
    /// Apply kiln's relu, `x > 0 ? x : +0`, after the bias.
    pub const RELU: i64 = 4;
}

/// What is applied to each finished element of C while the tile is in registers
/// (the kernel IR's choice, made by the schedule): `+ bias[j]`, then relu.
pub use kiln_ir::kernel::Epilogue;

/// The microkernel flags that apply `epilogue`.
pub(super) fn epilogue_flags(epilogue: Epilogue) -> i64 {
    let bias = if epilogue.bias { flags::ADD_BIAS } else { 0 };
    let relu = if epilogue.relu { flags::RELU } else { 0 };
    bias | relu
}

/// One matrix multiplication with static sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmSpec {
    /// Rows of op(A) and of C.
    pub m: usize,
    /// Columns of op(B) and of C.
    pub n: usize,
    /// Columns of op(A), rows of op(B): the length of each fma chain.
    pub k: usize,
    /// A is stored k×m (row-major) and used transposed.
    pub trans_a: bool,
    /// B is stored n×k (row-major) and used transposed.
    pub trans_b: bool,
    pub epilogue: Epilogue,
}

/// The innermost tile kernel (the kernel IR's choice, made by the schedule).
pub use kiln_ir::kernel::MicroKernel;

/// What the code generator knows of each microkernel beyond the kernel IR.
pub trait MicroKernelCode {
    /// Whether code for `isa` may use this kernel.
    fn runs_on(self, isa: &dyn TargetIsa) -> bool;
    /// Rows of the tile.
    fn mr(self) -> usize;
    /// Columns of the tile.
    fn nr(self) -> usize;
}

impl MicroKernelCode for MicroKernel {
    fn runs_on(self, isa: &dyn TargetIsa) -> bool {
        // The x64 settings that cranelift-native enables from the host's cpuid.
        let has = |name: &str| {
            isa.isa_flags()
                .iter()
                .any(|flag| flag.name == name && flag.as_bool() == Some(true))
        };
        match self {
            MicroKernel::F32x4 => true,
            MicroKernel::Avx512F12x32 => isa.name() == "x64" && has("has_avx512f"),
            MicroKernel::Avx2Fma6x16 => isa.name() == "x64" && has("has_avx2") && has("has_fma"),
        }
    }

    fn mr(self) -> usize {
        match self {
            MicroKernel::Avx512F12x32 => avx512::MR,
            MicroKernel::Avx2Fma6x16 => avx2::MR,
            MicroKernel::F32x4 => f32x4::MR,
        }
    }

    fn nr(self) -> usize {
        match self {
            MicroKernel::Avx512F12x32 => avx512::NR,
            MicroKernel::Avx2Fma6x16 => avx2::NR,
            MicroKernel::F32x4 => f32x4::NR,
        }
    }
}

/// The part of a tile a microkernel computes and writes: its first `rows` rows and
/// `cols` columns. The full tile is `mr × nr`; an edge shape reads the same packed
/// panels (strides `mr` and `nr`) and leaves the rest of C alone, so the driver calls
/// it directly on C instead of going through the scratch tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileShape {
    pub rows: usize,
    pub cols: usize,
}

/// Cache blocking: a KC×NR micro-panel of B stays in L1, an MC×KC block of A in L2,
/// a KC×NC panel of B in L3. The driver rounds MC down to a multiple of the tile's
/// rows and NC to a multiple of its columns (at least one tile) and clamps all three
/// to the problem, so any values are valid; zero means "as small as possible".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    pub mc: usize,
    pub kc: usize,
    pub nc: usize,
}

impl Default for Blocking {
    /// MC 252, KC 256, NC 8192: a 16-column B micro-panel in half of a 32 KiB L1d, the
    /// A block in half of a 512 KiB L2 (Zen 3). Compiled programs get their blocking
    /// from the schedule (`kiln_passes::schedule::matmul::blocking`), which derives it
    /// from the target's caches and the chosen kernel's tile.
    fn default() -> Blocking {
        Blocking {
            mc: 252,
            kc: 256,
            nc: 8192,
        }
    }
}

/// Block sizes and workspace layout for one spec and kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    mr: usize,
    nr: usize,
    mc: usize,
    kc: usize,
    nc: usize,
    b_offset: usize,
    a_offset: usize,
    tile_offset: usize,
    bias_offset: usize,
    bytes: usize,
}

fn round_up(value: usize, multiple: usize) -> usize {
    value.div_ceil(multiple).saturating_mul(multiple)
}

impl GemmSpec {
    fn plan(&self, kernel: MicroKernel, blocking: &Blocking) -> Plan {
        let (mr, nr) = (kernel.mr(), kernel.nr());
        let kc = blocking.kc.clamp(1, self.k.max(1));
        let mc = (blocking.mc / mr * mr).clamp(mr, round_up(self.m.max(1), mr));
        let nc = (blocking.nc / nr * nr).clamp(nr, round_up(self.n.max(1), nr));
        let floats = |count: usize| round_up(count.saturating_mul(4), 64);
        let b_offset = 0;
        let a_offset = b_offset + floats(kc.saturating_mul(nc));
        let tile_offset = a_offset.saturating_add(floats(mc.saturating_mul(kc)));
        let bias_offset = tile_offset.saturating_add(floats(mr * nr));
        let bias_floats = if self.epilogue.bias { nc } else { 0 };
        let bytes = bias_offset.saturating_add(floats(bias_floats));
        Plan {
            mr,
            nr,
            mc,
            kc,
            nc,
            b_offset,
            a_offset,
            tile_offset,
            bias_offset,
            bytes,
        }
    }

    /// Bytes of workspace each calling thread needs: packed A block, packed B panel,
    /// scratch tile (and packed bias). Zero when there is nothing to multiply.
    pub fn workspace_bytes(&self, kernel: MicroKernel, blocking: &Blocking) -> usize {
        if self.m == 0 || self.n == 0 || self.k == 0 {
            return 0;
        }
        self.plan(kernel, blocking).bytes
    }

    /// Whether every byte offset the code computes fits in an i64.
    fn fits(&self) -> bool {
        let limit = (i64::MAX / 8) as u128;
        let (m, n, k) = (self.m as u128, self.n as u128, self.k as u128);
        [m * k, k * n, m * n, m, n, k]
            .iter()
            .all(|&count| count * 4 < limit)
    }
}

/// The microkernel's signature: System V whatever the module's default, because the
/// AVX2 and AVX-512 bytes are written for it.
fn microkernel_signature(pointer: types::Type) -> Signature {
    let mut sig = Signature::new(CallConv::SystemV);
    for ty in [
        pointer,
        pointer,
        pointer,
        types::I64,
        types::I64,
        types::I64,
        pointer,
    ] {
        sig.params.push(AbiParam::new(ty));
    }
    sig
}

/// How a microkernel is defined: x86 machine code, or the portable kernel's IR.
enum KernelCode {
    Bytes(Vec<u8>),
    F32x4,
}

/// Defines `name` (exported, the driver) and `<name>_microkernel` (local) in
/// `module`; see the module documentation for the function's signature and contract.
/// Each call defines its own copy of the microkernel (a few hundred bytes), and of
/// the edge variants its sizes call for (`<name>_microkernel_<rows>x<cols>`).
///
/// Errors: the module's target cannot run `kernel` (the caller chose wrongly, see
/// `cpu::target::host_target`), the sizes are too large to address, or Cranelift
/// rejected a function (a kiln bug).
pub fn define_gemm<M: Module>(
    module: &mut M,
    name: &str,
    spec: &GemmSpec,
    kernel: MicroKernel,
    blocking: &Blocking,
) -> Result<FuncId, BackendError> {
    if !kernel.runs_on(module.isa()) {
        return Err(BackendError::Unsupported {
            kernel: name.to_string(),
            message: format!("the target cpu cannot run the {kernel:?} gemm microkernel"),
        });
    }
    if !spec.fits() {
        return Err(BackendError::Unsupported {
            kernel: name.to_string(),
            message: format!(
                "gemm {}x{}x{} is too large to address",
                spec.m, spec.n, spec.k
            ),
        });
    }
    let module_error = |what: String| {
        move |err: ModuleError| BackendError::Cranelift {
            what,
            message: match &err {
                ModuleError::Compilation(inner) => format!("{err}: {inner:?}"),
                other => other.to_string(),
            },
        }
    };
    let pointer = module.target_config().pointer_type();
    let plan = spec.plan(kernel, blocking);
    if spec.epilogue.update.is_some() && plan.kc < spec.k {
        // The driver overwrites C with the step after the first KC block: a second
        // block would need sums it no longer has.
        return Err(BackendError::Unsupported {
            kernel: name.to_string(),
            message: format!(
                "an update epilogue needs k = {} in one KC block, the blocking has {}",
                spec.k, plan.kc
            ),
        });
    }

    let kernel_sig = microkernel_signature(pointer);
    let mut ctx = module.make_context();
    let mut builder_ctx = FunctionBuilderContext::new();
    // The full tile, then the edge shapes the sizes make static: the rows of C after
    // the last whole tile of rows (`m % mr`, the last tile of every range split at
    // multiples of `mr`) and the columns after the last whole tile of columns
    // (`n % nr`: column blocks start at multiples of `nr`), and their corner. Other
    // edge tiles (odd row splits, shapes a kernel has no code for) use the scratch
    // tile.
    let full = TileShape {
        rows: plan.mr,
        cols: plan.nr,
    };
    let mut shapes = vec![full];
    for rows in [plan.mr, spec.m % plan.mr] {
        for cols in [plan.nr, spec.n % plan.nr] {
            let shape = TileShape { rows, cols };
            if rows > 0 && cols > 0 && !shapes.contains(&shape) {
                shapes.push(shape);
            }
        }
    }
    let mut kernels = Vec::new();
    for shape in shapes {
        let code = match kernel {
            MicroKernel::Avx512F12x32 => avx512::microkernel_bytes(shape)?.map(KernelCode::Bytes),
            MicroKernel::Avx2Fma6x16 => avx2::microkernel_bytes(shape)?.map(KernelCode::Bytes),
            // The portable kernel has no edge shapes.
            MicroKernel::F32x4 => (shape == full).then_some(KernelCode::F32x4),
        };
        let Some(code) = code else { continue };
        // The full tile keeps the plain name, which profiles show.
        let kernel_name = if shape == full {
            format!("{name}_microkernel")
        } else {
            format!("{name}_microkernel_{}x{}", shape.rows, shape.cols)
        };
        let kernel_id = module
            .declare_function(&kernel_name, Linkage::Local, &kernel_sig)
            .map_err(module_error(kernel_name.clone()))?;
        match code {
            KernelCode::Bytes(bytes) => {
                // 64: the kernel's loop then starts at a known place in a cache line.
                module
                    .define_function_bytes(kernel_id, 64, &bytes, &[])
                    .map_err(module_error(kernel_name.clone()))?;
            }
            KernelCode::F32x4 => {
                ctx.func.signature = kernel_sig.clone();
                f32x4::build(&mut ctx.func, &mut builder_ctx, module.target_config());
                module
                    .define_function(kernel_id, &mut ctx)
                    .map_err(module_error(kernel_name.clone()))?;
                module.clear_context(&mut ctx);
            }
        }
        kernels.push((shape, kernel_id));
    }

    let mut driver_sig = module.make_signature();
    // a, b, c, workspace; the row and column ranges.
    for ty in [pointer; 4].into_iter().chain([types::I64; 4]) {
        driver_sig.params.push(AbiParam::new(ty));
    }
    if spec.epilogue.bias {
        driver_sig.params.push(AbiParam::new(pointer));
    }
    if spec.epilogue.update.is_some() {
        driver_sig.params.push(AbiParam::new(pointer));
    }
    let driver_id = module
        .declare_function(name, Linkage::Local, &driver_sig)
        .map_err(module_error(name.to_string()))?;
    ctx.func.signature = driver_sig;
    let kernel_refs: Vec<(TileShape, FuncRef)> = kernels
        .iter()
        .map(|&(shape, id)| (shape, module.declare_func_in_func(id, &mut ctx.func)))
        .collect();
    driver::build(
        &mut ctx.func,
        &mut builder_ctx,
        spec,
        &plan,
        &kernel_refs,
        module.target_config(),
    );
    module
        .define_function(driver_id, &mut ctx)
        .map_err(module_error(name.to_string()))?;
    Ok(driver_id)
}
