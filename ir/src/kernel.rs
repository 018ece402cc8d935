//! The kernel IR: a program of loop nests over flat buffers, between the tensor graph
//! and the code generators.
//!
//! A [`Program`] owns a list of [`Buffer`]s (each a contiguous row-major array whose
//! element size comes from its dtype, with a storage class: caller-fed input,
//! persistent parameter, or scratch) and an ordered launch list of [`Kernel`]s.
//! Outputs and parameter updates are names bound to buffers, so several names may
//! share one buffer (an output that is a reshaped input, an update whose value is
//! also an output) without copies.
//!
//! A kernel is a tree of statements: counted loops, stores of an expression to a
//! buffer, assignments to locals, and calls of named routines (a matmul microkernel
//! driver) on slices of buffers. Buffer indices are affine in the loop variables
//! (`sum(var * stride) + offset`), so a broadcast is a zero stride and a transpose is
//! a permutation of strides, and tiling or fusion only rewrites loops and indices.
//!
//! The one exception to affine indexing is an [`Indirect`] element: `buffer[index +
//! at * stride]` for a computed i32 `at` (a gather reads it as [`Expr::Gather`], a
//! scatter-add adds to it with [`Stmt::ScatterAdd`]). It is defined only for `0 <= at
//! < extent`; out of range a gather gives 0 and a scatter-add does nothing, so the
//! bounds proof covers all `extent` positions and never depends on data.
//!
//! Loops run `for var in start..end step s` with static bounds (a tile loop and its
//! remainder are two loops). Their [`LoopKind`] says how the iterations may run:
//! one after the other, `w` at a time in SIMD lanes (the scheduler's
//! auto-vectorisation: the body is stores only and its iterations are independent),
//! unrolled, or spread over threads (iterations independent, disjoint writes).
//!
//! Values have a [`VType`]: a dtype and a lane count. A load of `x4` lanes reads
//! four consecutive elements, `splat` widens a scalar, and locals may be vectors, so
//! a register tile is a set of vector locals; f16/bf16/i8 and wider vectors only add
//! dtypes and lane counts. GPU grid and block loops, shared-memory buffers and
//! barriers are meant to be added as further loop kinds, storage classes and
//! statements without reshaping the rest.
//!
//! [`Program::check`] verifies types, scoping and, because every bound is static,
//! that no access (nor any call's slice) can leave its buffer. The printed form reads
//! back with [`crate::kernel_text::parse`], and [`crate::kernel_interp::run`] defines
//! what a program computes.
//!
//! ```text
//! kernel k0 add {
//!   for i0 in 0..6 vec4 {
//!     b2[i0] = add(b0[i0], b1[3*i0])
//!   }
//! }
//! ```

use crate::op::{BinaryOp, CmpOp, Distribution, UnaryOp};
use crate::text::quote;
use crate::types::{DType, TensorType};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use thiserror::Error;

/// A buffer of a program, printed `b3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub usize);

/// A loop variable of a kernel, printed `i2`. Unique within its kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarId(pub u32);

/// A scalar local (register) of a kernel, printed `r0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalId(pub u32);

impl fmt::Display for BufferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", self.0)
    }
}

impl fmt::Display for VarId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

impl fmt::Display for LocalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// Who fills a buffer and how long its contents live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Copied in from the caller's argument of this name before every run.
    Input(String),
    /// Persistent state: set by the caller, kept across runs, replaced by its update.
    Param(String),
    /// Written by kernels during a run before anything reads it.
    Temp,
}

/// A contiguous row-major array of elements of its dtype
/// ([`DType::size_bytes`]; bool is a 0/1 word on the CPU).
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// The type of the value first stored here; views of it (reshapes) may use other
    /// shapes with the same element count.
    pub ty: TensorType,
    pub storage: Storage,
}

impl Buffer {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.ty.num_elements()
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> usize {
        self.len().saturating_mul(self.ty.dtype.size_bytes())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A named result: the contents of `buffer` after a run, read as `ty`.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub name: String,
    pub buffer: BufferId,
    pub ty: TensorType,
}

/// After a run, parameter `param` takes the contents of buffer `value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    pub param: String,
    pub value: BufferId,
}

/// An affine index `sum(var * stride) + offset`, in elements. Terms never have a zero
/// stride and name each variable at most once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Index {
    pub terms: Vec<(VarId, i64)>,
    pub offset: i64,
}

impl Index {
    /// Builds an index, merging repeated variables and dropping zero strides.
    pub fn new(terms: impl IntoIterator<Item = (VarId, i64)>, offset: i64) -> Index {
        let mut merged: Vec<(VarId, i64)> = Vec::new();
        for (var, stride) in terms {
            match merged.iter_mut().find(|(seen, _)| *seen == var) {
                Some((_, total)) => *total += stride,
                None => merged.push((var, stride)),
            }
        }
        merged.retain(|&(_, stride)| stride != 0);
        Index {
            terms: merged,
            offset,
        }
    }

    /// The fixed element `offset`.
    pub fn constant(offset: i64) -> Index {
        Index {
            terms: Vec::new(),
            offset,
        }
    }

    /// The stride of `var` (0 when the index does not depend on it).
    pub fn stride_of(&self, var: VarId) -> i64 {
        self.terms
            .iter()
            .find(|(seen, _)| *seen == var)
            .map_or(0, |&(_, stride)| stride)
    }

    /// The same index without the term of `var`.
    pub fn without(&self, var: VarId) -> Index {
        Index {
            terms: self
                .terms
                .iter()
                .copied()
                .filter(|&(seen, _)| seen != var)
                .collect(),
            offset: self.offset,
        }
    }
}

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for &(var, stride) in &self.terms {
            let (sign, magnitude) = if stride < 0 {
                ("-", stride.unsigned_abs())
            } else {
                ("+", stride.unsigned_abs())
            };
            match (first, sign) {
                (true, "-") => f.write_str("-")?,
                (true, _) => {}
                (false, sign) => write!(f, " {sign} ")?,
            }
            if magnitude == 1 {
                write!(f, "{var}")?;
            } else {
                write!(f, "{magnitude}*{var}")?;
            }
            first = false;
        }
        if first {
            write!(f, "{}", self.offset)
        } else if self.offset > 0 {
            write!(f, " + {}", self.offset)
        } else if self.offset < 0 {
            write!(f, " - {}", self.offset.unsigned_abs())
        } else {
            Ok(())
        }
    }
}

/// A constant element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    F32(f32),
    I32(i32),
    Bool(bool),
}

impl Scalar {
    pub fn dtype(self) -> DType {
        match self {
            Scalar::F32(_) => DType::F32,
            Scalar::I32(_) => DType::I32,
            Scalar::Bool(_) => DType::Bool,
        }
    }

    /// A graph constant's value in `dtype` (interpreter tensors hold every dtype as f64),
    /// converted as [`crate::scalar::to_dtype`] converts it: rounded to f32, `as i32`,
    /// or `!= 0`.
    pub fn from_f64(value: f64, dtype: DType) -> Scalar {
        match dtype {
            DType::F32 => Scalar::F32(value as f32),
            DType::I32 => Scalar::I32(value as i32),
            DType::Bool => Scalar::Bool(value != 0.0),
        }
    }

    /// The value as an interpreter element (exact for every dtype).
    pub fn to_f64(self) -> f64 {
        match self {
            Scalar::F32(value) => f64::from(value),
            Scalar::I32(value) => f64::from(value),
            Scalar::Bool(value) => f64::from(u8::from(value)),
        }
    }

    /// The 32-bit word that stores this value in a buffer.
    pub fn to_bits(self) -> u32 {
        match self {
            Scalar::F32(value) => value.to_bits(),
            Scalar::I32(value) => value as u32,
            Scalar::Bool(value) => u32::from(value),
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // `{:?}` always shows a decimal point (or inf/NaN), so f32 constants are
            // told apart from integers.
            Scalar::F32(value) => write!(f, "{value:?}"),
            Scalar::I32(value) => write!(f, "{value}i"),
            Scalar::Bool(value) => write!(f, "{value}"),
        }
    }
}

/// The type of a kernel value: a dtype and a number of SIMD lanes (1 for a scalar).
/// Printed `f32`, `f32x4`, `i32x8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VType {
    pub dtype: DType,
    pub lanes: u32,
}

impl VType {
    /// The lane counts a value may have.
    pub const LANES: [u32; 5] = [1, 2, 4, 8, 16];

    pub fn scalar(dtype: DType) -> VType {
        VType { dtype, lanes: 1 }
    }

    pub fn vector(dtype: DType, lanes: u32) -> VType {
        VType { dtype, lanes }
    }

    pub fn is_vector(self) -> bool {
        self.lanes > 1
    }

    /// Size in bytes of the whole value.
    pub fn size_bytes(self) -> usize {
        self.dtype.size_bytes() * self.lanes as usize
    }
}

impl fmt::Display for VType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lanes == 1 {
            write!(f, "{}", self.dtype)
        } else {
            write!(f, "{}x{}", self.dtype, self.lanes)
        }
    }
}

/// A value computed per element. Operand types follow the graph ops' rules; see
/// [`Program::check`].
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// `lanes` consecutive elements of `buffer` from `index` (one element when
    /// `lanes` is 1), read with the buffer's dtype.
    Load {
        buffer: BufferId,
        index: Index,
        lanes: u32,
    },
    /// A scalar repeated in `lanes` lanes.
    Splat(u32, Box<Expr>),
    Const(Scalar),
    /// The current value of a loop variable, as i32 (for `one_hot`).
    LoopIndex(VarId),
    /// The current value of a local.
    Local(LocalId),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// 0/1 as bool.
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    /// `select(cond, on_true, on_false)`.
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// Conversion with Rust `as` semantics (saturating float to int, NaN to 0).
    Cast(DType, Box<Expr>),
    /// `a * b + c` on f32 with one rounding.
    Fma(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `random.<dist>(key0, key1, counter)`: the f32 sample of the counter-based
    /// generator keyed by two i32 words ([`crate::scalar::random_bits`]); lanes as
    /// the operands'. A graph `random` op keys it with its seed and stream and counts
    /// its elements in row-major order.
    Random(Distribution, Box<Expr>, Box<Expr>, Box<Expr>),
    /// The element an [`Indirect`] picks, or 0 of the buffer's dtype when its
    /// computed position is out of range (the graph's `gather`).
    Gather(Indirect),
}

/// An element of `buffer` picked by a computed i32 `at`: `buffer[index + at *
/// stride]`, defined only for `0 <= at < extent` (the code reading or writing it
/// tests that first, so a data-dependent position never leaves the buffer).
/// [`Program::check`] proves `index + j * stride` in bounds for every `j` in
/// `0..extent`, the way it proves an affine index. Printed `b0[i1], b1[i0],
/// stride=4, extent=10`.
#[derive(Clone, Debug, PartialEq)]
pub struct Indirect {
    pub buffer: BufferId,
    pub index: Index,
    /// A scalar i32 value (typically a load of an indices buffer).
    pub at: Box<Expr>,
    pub stride: i64,
    pub extent: u32,
}

impl Indirect {
    /// Whether `at` (an i32 value) picks an element: `0 <= at < extent`.
    pub fn in_range(&self, at: i64) -> bool {
        (0..i64::from(self.extent)).contains(&at)
    }
}

impl fmt::Display for Indirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}], {}, stride={}, extent={}",
            self.buffer, self.index, self.at, self.stride, self.extent
        )
    }
}

impl Expr {
    /// One element of `buffer`.
    pub fn load(buffer: BufferId, index: Index) -> Expr {
        Expr::Load {
            buffer,
            index,
            lanes: 1,
        }
    }

    /// `lanes` consecutive elements of `buffer` as one vector.
    pub fn load_vector(buffer: BufferId, index: Index, lanes: u32) -> Expr {
        Expr::Load {
            buffer,
            index,
            lanes,
        }
    }

    pub fn splat(lanes: u32, x: Expr) -> Expr {
        Expr::Splat(lanes, Box::new(x))
    }

    pub fn unary(op: UnaryOp, x: Expr) -> Expr {
        Expr::Unary(op, Box::new(x))
    }

    pub fn binary(op: BinaryOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }

    pub fn compare(op: CmpOp, a: Expr, b: Expr) -> Expr {
        Expr::Compare(op, Box::new(a), Box::new(b))
    }

    pub fn select(cond: Expr, on_true: Expr, on_false: Expr) -> Expr {
        Expr::Select(Box::new(cond), Box::new(on_true), Box::new(on_false))
    }

    pub fn cast(to: DType, x: Expr) -> Expr {
        Expr::Cast(to, Box::new(x))
    }

    pub fn fma(a: Expr, b: Expr, c: Expr) -> Expr {
        Expr::Fma(Box::new(a), Box::new(b), Box::new(c))
    }

    pub fn random(dist: Distribution, key0: Expr, key1: Expr, counter: Expr) -> Expr {
        Expr::Random(dist, Box::new(key0), Box::new(key1), Box::new(counter))
    }

    /// The value of an affine index as an i32 expression (`i0*3 + i1 + 2`): what a
    /// loop nest's position means in element numbers.
    pub fn index_value(index: &Index) -> Expr {
        let mut sum: Option<Expr> = None;
        for &(var, stride) in &index.terms {
            let part = match stride {
                1 => Expr::LoopIndex(var),
                _ => Expr::binary(
                    BinaryOp::Mul,
                    Expr::LoopIndex(var),
                    Expr::Const(Scalar::I32(stride as i32)),
                ),
            };
            sum = Some(match sum {
                None => part,
                Some(sum) => Expr::binary(BinaryOp::Add, sum, part),
            });
        }
        let offset = Expr::Const(Scalar::I32(index.offset as i32));
        match sum {
            None => offset,
            Some(sum) if index.offset == 0 => sum,
            Some(sum) => Expr::binary(BinaryOp::Add, sum, offset),
        }
    }

    /// The direct operands of this expression.
    pub fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Load { .. } | Expr::Const(_) | Expr::LoopIndex(_) | Expr::Local(_) => Vec::new(),
            Expr::Unary(_, x) | Expr::Cast(_, x) | Expr::Splat(_, x) => vec![x],
            Expr::Binary(_, a, b) | Expr::Compare(_, a, b) => vec![a, b],
            Expr::Select(a, b, c) | Expr::Fma(a, b, c) | Expr::Random(_, a, b, c) => {
                vec![a, b, c]
            }
            Expr::Gather(indirect) => vec![&indirect.at],
        }
    }

    /// Calls `f` on this expression and every subexpression, parents first.
    pub fn visit(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        for child in self.children() {
            child.visit(f);
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Load {
                buffer,
                index,
                lanes: 1,
            } => write!(f, "{buffer}[{index}]"),
            Expr::Load {
                buffer,
                index,
                lanes,
            } => write!(f, "{buffer}[{index}]x{lanes}"),
            Expr::Splat(lanes, x) => write!(f, "splat.x{lanes}({x})"),
            Expr::Const(value) => write!(f, "{value}"),
            Expr::LoopIndex(var) => write!(f, "index({var})"),
            Expr::Local(local) => write!(f, "{local}"),
            Expr::Unary(op, x) => write!(f, "{}({x})", op.name()),
            Expr::Binary(op, a, b) => write!(f, "{}({a}, {b})", op.name()),
            Expr::Compare(op, a, b) => write!(f, "cmp.{}({a}, {b})", op.name()),
            Expr::Select(c, a, b) => write!(f, "select({c}, {a}, {b})"),
            Expr::Cast(to, x) => write!(f, "cast.{to}({x})"),
            Expr::Fma(a, b, c) => write!(f, "fma({a}, {b}, {c})"),
            Expr::Random(dist, a, b, c) => write!(f, "random.{}({a}, {b}, {c})", dist.name()),
            Expr::Gather(indirect) => write!(f, "gather({indirect})"),
        }
    }
}

/// How a loop's iterations run. Every kind means the same as `Serial`; the others
/// are promises the scheduler makes and the code generators may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopKind {
    Serial,
    /// `w` iterations at a time in SIMD lanes, then a scalar remainder. The body is
    /// stores only of scalar values, and its iterations are independent.
    Vector(u32),
    /// The body repeated `n` times per trip of the loop, then a remainder.
    Unroll(u32),
    /// Iterations spread over the executable's threads: they are independent and
    /// write disjoint elements. Only at the top of a kernel, not nested in another
    /// parallel loop.
    Parallel,
}

impl fmt::Display for LoopKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoopKind::Serial => Ok(()),
            LoopKind::Vector(width) => write!(f, " vec{width}"),
            LoopKind::Unroll(times) => write!(f, " unroll{times}"),
            LoopKind::Parallel => write!(f, " parallel"),
        }
    }
}

/// `len` consecutive elements of `buffer` from `offset` (which may depend on the
/// enclosing loop variables): a call's argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    pub buffer: BufferId,
    pub offset: Index,
    pub len: usize,
}

impl fmt::Display for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}; {}]", self.buffer, self.offset, self.len)
    }
}

/// Which part of C a matmul call computes: one task's block when the parallel loop
/// around the call splits C between threads (each task's workspace slice its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// All of C.
    All,
    /// Rows `var * rows .. min(m, (var + 1) * rows)`: each task packs all of B.
    Rows { var: VarId, rows: usize },
    /// Columns `var * cols .. min(n, (var + 1) * cols)`: each task packs all of A,
    /// which costs less than packing B twice when A has fewer rows than B columns.
    Cols { var: VarId, cols: usize },
}

impl Split {
    /// The task variable and block size, for a split.
    pub fn block(self) -> Option<(VarId, usize)> {
        match self {
            Split::All => None,
            Split::Rows { var, rows } => Some((var, rows)),
            Split::Cols { var, cols } => Some((var, cols)),
        }
    }
}

/// The microkernel a matmul call runs, picked by the schedule for its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MicroKernel {
    /// 12x32 register tile of 512-bit AVX-512F code.
    Avx512F12x32,
    /// 6x16 register tile of 256-bit AVX2/FMA code.
    Avx2Fma6x16,
    /// Pure Cranelift `f32x4` code: the portable fallback.
    F32x4,
}

impl MicroKernel {
    /// Every microkernel, fastest first.
    pub const ALL: [MicroKernel; 3] = [
        MicroKernel::Avx512F12x32,
        MicroKernel::Avx2Fma6x16,
        MicroKernel::F32x4,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MicroKernel::Avx512F12x32 => "avx512",
            MicroKernel::Avx2Fma6x16 => "avx2",
            MicroKernel::F32x4 => "f32x4",
        }
    }
}

/// What a matmul applies to each finished element of C (its fma chain `acc`): either
/// `acc + bias[j]` (an f32 add) and/or relu (`x > 0 ? x : +0`), in that order, or a
/// gradient-descent step `param[i][j] - scale * acc` (an f32 multiply, then an f32
/// subtract: the SGD update of a weight whose gradient the matmul computes). The
/// routine applies it to each tile of C while it is in registers or L1, so the
/// following elementwise pass over memory disappears.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Epilogue {
    /// Add a row vector of n elements (the call's fifth argument) to every row.
    pub bias: bool,
    pub relu: bool,
    /// The f32 bits of `scale` for the descent step, whose m×n `param` is the call's
    /// last argument. Only alone, and only when k fits one KC block (the routine
    /// has then no partial sums to keep while it overwrites C).
    pub update: Option<u32>,
}

impl Epilogue {
    /// Whether C is the plain product.
    pub fn is_none(self) -> bool {
        !self.bias && !self.relu && self.update.is_none()
    }

    /// The descent step's scale.
    pub fn update_scale(self) -> Option<f32> {
        self.update.map(f32::from_bits)
    }

    /// The epilogue `param - scale * acc`.
    pub fn update(scale: f32) -> Epilogue {
        Epilogue {
            update: Some(scale.to_bits()),
            ..Epilogue::default()
        }
    }

    /// The epilogue named `name` (see the `Display` form), except `update(..)`.
    pub fn from_name(name: &str) -> Option<Epilogue> {
        let (bias, relu) = match name {
            "none" => (false, false),
            "bias" => (true, false),
            "relu" => (false, true),
            "bias.relu" => (true, true),
            _ => return None,
        };
        Some(Epilogue {
            bias,
            relu,
            update: None,
        })
    }
}

impl fmt::Display for Epilogue {
    /// `bias`, `relu`, `bias.relu`, `update(0.01)` or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scale) = self.update_scale() {
            return write!(f, "update({})", Scalar::F32(scale));
        }
        f.write_str(match (self.bias, self.relu) {
            (false, false) => "none",
            (true, false) => "bias",
            (false, true) => "relu",
            (true, true) => "bias.relu",
        })
    }
}

/// A packed, register-blocked f32 matmul `C = op(A) * op(B)` (row-major, `op`
/// transposes when its flag is set) with arguments `[a, b, c, workspace]`, and the
/// bias as a fifth when the epilogue adds one: A is m×k (k×m transposed), B k×n
/// (n×k transposed), C m×n, fully overwritten. Each C element is the f32 fma chain
/// over k in increasing order from +0, exactly as the loop nest it replaces, whatever
/// the blocking, then the [`Epilogue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matmul {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub split: Split,
    pub kernel: MicroKernel,
    /// Cache blocking: rows of A, depth, and columns of B per packed panel.
    pub mc: usize,
    pub kc: usize,
    pub nc: usize,
    pub epilogue: Epilogue,
}

/// A named routine a kernel calls on buffer slices.
#[derive(Clone, Debug, PartialEq)]
pub enum Routine {
    Matmul(Matmul),
}

impl Routine {
    /// Element counts of the arguments, in order, and whether each is written.
    pub fn params(&self) -> Vec<(&'static str, usize, bool)> {
        match self {
            Routine::Matmul(mm) => {
                let mut params = vec![
                    ("a", mm.m * mm.k, false),
                    ("b", mm.k * mm.n, false),
                    ("c", mm.m * mm.n, true),
                    ("workspace", mm.workspace_len(), true),
                ];
                if mm.epilogue.bias {
                    params.push(("bias", mm.n, false));
                }
                if mm.epilogue.update.is_some() {
                    params.push(("param", mm.m * mm.n, false));
                }
                params
            }
        }
    }
}

impl Matmul {
    /// Microkernel tile: rows and columns of C held in registers.
    pub fn tile(&self) -> (usize, usize) {
        match self.kernel {
            MicroKernel::Avx512F12x32 => (12, 32),
            MicroKernel::Avx2Fma6x16 => (6, 16),
            MicroKernel::F32x4 => (5, 8),
        }
    }

    /// f32 elements of one task's workspace: a packed panel of B (kc×nc, nc rounded
    /// up to whole tiles), one of A (mc×kc likewise), one C tile for the edges and,
    /// with a bias, the panel's bias (nc), each starting at a 64-byte boundary; none
    /// when there is nothing to multiply.
    pub fn workspace_len(&self) -> usize {
        if self.m == 0 || self.n == 0 || self.k == 0 {
            return 0;
        }
        let (mr, nr) = self.tile();
        let round = |x: usize, to: usize| x.div_ceil(to).saturating_mul(to);
        let mc = round(self.mc.min(self.m), mr);
        let nc = round(self.nc.min(self.n), nr);
        let kc = self.kc.min(self.k);
        let bias = if self.epilogue.bias { nc } else { 0 };
        // 16 f32 are 64 bytes.
        round(kc * nc, 16) + round(mc * kc, 16) + round(mr * nr, 16) + round(bias, 16)
    }
}

impl fmt::Display for Routine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Routine::Matmul(mm) => {
                write!(
                    f,
                    "matmul.{}{}.{} m={} n={} k={} mc={} kc={} nc={}",
                    if mm.trans_a { "t" } else { "n" },
                    if mm.trans_b { "t" } else { "n" },
                    mm.kernel.name(),
                    mm.m,
                    mm.n,
                    mm.k,
                    mm.mc,
                    mm.kc,
                    mm.nc
                )?;
                match mm.split {
                    Split::All => {}
                    Split::Rows { var, rows } => write!(f, " rows={rows}*{var}")?,
                    Split::Cols { var, cols } => write!(f, " cols={cols}*{var}")?,
                }
                if !mm.epilogue.is_none() {
                    write!(f, " epilogue={}", mm.epilogue)?;
                }
                Ok(())
            }
        }
    }
}

/// One statement of a kernel.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `for var in start..end step step { body }`: `var` takes `start`,
    /// `start + step`, ... while below `end`. `step` is at least 1.
    Loop {
        var: VarId,
        start: usize,
        end: usize,
        step: usize,
        kind: LoopKind,
        body: Vec<Stmt>,
    },
    /// `call routine(args)`.
    Call { routine: Routine, args: Vec<Slice> },
    /// `buffer[index] = value`.
    Store {
        buffer: BufferId,
        index: Index,
        value: Expr,
    },
    /// `local = value`.
    Assign { local: LocalId, value: Expr },
    /// Adds `value` to the element `target` picks, when it picks one (the graph's
    /// `scatter_add`); an out-of-range position drops the value. Iterations that
    /// scatter may hit the same element, so loops around it stay serial.
    ScatterAdd { target: Indirect, value: Expr },
}

/// How many iterations `for var in start..end step step` runs (`step` at least 1).
pub fn loop_trips(start: usize, end: usize, step: usize) -> usize {
    end.saturating_sub(start).div_ceil(step)
}

impl Stmt {
    /// `for var in 0..end` with step 1.
    pub fn for_range(var: VarId, end: usize, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
        Stmt::Loop {
            var,
            start: 0,
            end,
            step: 1,
            kind,
            body,
        }
    }

    /// Calls `f` on this statement and every statement nested in it, parents first.
    pub fn visit(&self, f: &mut dyn FnMut(&Stmt)) {
        f(self);
        if let Stmt::Loop { body, .. } = self {
            for stmt in body {
                stmt.visit(f);
            }
        }
    }

    /// Calls `f` on every expression of this statement and its nested statements.
    pub fn visit_exprs(&self, f: &mut dyn FnMut(&Expr)) {
        self.visit(&mut |stmt| match stmt {
            Stmt::Store { value, .. } | Stmt::Assign { value, .. } => value.visit(f),
            Stmt::ScatterAdd { target, value } => {
                target.at.visit(f);
                value.visit(f);
            }
            Stmt::Loop { .. } | Stmt::Call { .. } => {}
        });
    }
}

/// One launch: a loop nest with its locals.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// What the kernel computes (the op it was lowered from), for dumps and symbols.
    pub name: String,
    /// The type of every local, indexed by `LocalId`.
    pub locals: Vec<VType>,
    pub body: Vec<Stmt>,
    /// The graph operation the body computes, when a schedule may replace the plain
    /// loop nest by a routine for it (TVM's per-op strategies); `None` for kernels
    /// that are only ever scheduled loop by loop.
    pub op: Option<KernelOp>,
}

/// A graph operation a kernel's plain loop nest computes, with everything a
/// schedule needs to call a routine for it instead.
#[derive(Clone, Debug, PartialEq)]
pub enum KernelOp {
    /// A batched matmul of row-major matrices ([`MatmulOp`]).
    Matmul(MatmulOp),
    /// A matmul over strided views of its operands ([`Contraction`]): a convolution as
    /// an implicit GEMM, the patch matrix never stored.
    Contraction(Contraction),
}

/// `c = op(a) * op(b)` for each of `batches` row-major f32 matrices stored one after
/// the other (A is m×k, or k×m when `trans_a`; B is k×n, or n×k), then the epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulOp {
    pub a: BufferId,
    pub b: BufferId,
    pub c: BufferId,
    pub batches: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    /// The epilogue's bias, n elements added to every row of C (see [`Epilogue`]);
    /// only with one batch.
    pub bias: Option<BufferId>,
    /// Then relu; only with one batch.
    pub relu: bool,
    /// Instead, the descent step `param - scale * c` (see [`Epilogue`]): the
    /// parameter's buffer and the f32 bits of the scale; only with one batch.
    pub update: Option<(BufferId, u32)>,
}

impl MatmulOp {
    /// Whether the op has an epilogue (bias, relu or a descent step).
    pub fn has_epilogue(&self) -> bool {
        self.bias.is_some() || self.relu || self.update.is_some()
    }

    /// The same product as a one-axis [`Contraction`] (without the epilogue): the
    /// transposes become strides.
    pub fn contraction(&self) -> Contraction {
        let (m, n, k) = (self.m, self.n, self.k);
        let axis = |extent: usize, strides: [usize; 2]| vec![ContractionAxis { extent, strides }];
        Contraction {
            a: self.a,
            b: self.b,
            c: self.c,
            batches: self.batches,
            batch_strides: [m * k, k * n, m * n],
            m: axis(m, [if self.trans_a { 1 } else { k }, n]),
            n: axis(n, [if self.trans_b { k } else { 1 }, 1]),
            k: axis(
                k,
                [
                    if self.trans_a { m } else { 1 },
                    if self.trans_b { 1 } else { n },
                ],
            ),
            taps: Vec::new(),
        }
    }
}

/// One axis of a [`Contraction`]: its extent and the stride (in elements) of one step
/// along it in each of the two buffers it indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContractionAxis {
    pub extent: usize,
    pub strides: [usize; 2],
}

/// `c[g, m, n] = Σ_k a[g, m, k] · b[g, k, n]` where each of m, n and k is a list of
/// axes taken in row-major order (the last fastest) and every buffer is addressed
/// through strides, so an operand may be a view no buffer holds as a matrix: the
/// patch matrix of a convolution (`a[(n, y), (t, c)] = x[n, c, s·y + d·t]`, the
/// tap and position axes both strided into the padded input), or a channels-first
/// tensor read as channels-last rows.
///
/// Every element is the f32 fma chain over k's positions in row-major order from +0,
/// as for [`KernelOp::Matmul`]; the kernel's loop nest says the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contraction {
    pub a: BufferId,
    pub b: BufferId,
    pub c: BufferId,
    /// Independent problems (a convolution's groups) and the strides of one step to
    /// the next in a, b and c.
    pub batches: usize,
    pub batch_strides: [usize; 3],
    /// The rows: strides in a and c.
    pub m: Vec<ContractionAxis>,
    /// The columns: strides in b and c.
    pub n: Vec<ContractionAxis>,
    /// The summed axes: strides in a and b.
    pub k: Vec<ContractionAxis>,
    /// Empty, or a sum over taps around the contraction ([`TapAxis`]): a
    /// convolution's input gradient (col2im) as an implicit GEMM.
    pub taps: Vec<TapAxis>,
}

/// One spatial axis of a [`Contraction`] summed over taps: `conv_input_grad`'s
/// `dx[n, c, i] = Σ_t dy[n, o, y] · w[o, c, t]` where tap `t` reads position `i` from
/// output position `y` when `s·y + d·t = i + low`.
///
/// The taps' axes pair with the last `taps.len()` axes of m (the positions `i`,
/// whose strides in a are not used). For each tap `t` in row-major order the
/// contraction runs with a's row offset plus `Σ y·out_stride` and b's offset plus
/// `Σ t·tap_stride`, giving `p_t` (the fma chain over k from +0), or `p_t = +0` where
/// some axis has no such `y` (`i + low − d·t` negative, not a multiple of `s`, or
/// `y ≥ out`); each element is then `p_0 + p_1 + …`, added in tap order, the order
/// `conv_input_grad` defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapAxis {
    pub taps: usize,
    pub dilation: usize,
    pub stride: usize,
    pub low: usize,
    /// The extent of the gathered axis of a (the output positions `y`) and its stride.
    pub out: usize,
    pub out_stride: usize,
    /// The stride of one tap in b.
    pub tap_stride: usize,
}

impl Contraction {
    /// The number of rows (the product of m's extents).
    pub fn rows(&self) -> usize {
        self.m.iter().map(|axis| axis.extent).product()
    }

    /// The number of columns.
    pub fn columns(&self) -> usize {
        self.n.iter().map(|axis| axis.extent).product()
    }

    /// The length of each sum.
    pub fn depth(&self) -> usize {
        self.k.iter().map(|axis| axis.extent).product()
    }

    /// One past the largest element offset the contraction reads or writes in a, b
    /// and c (0 for an operand it never touches: an empty problem).
    pub fn extents(&self) -> [usize; 3] {
        let reach = |axes: &[ContractionAxis], which: usize| -> usize {
            axes.iter()
                .map(|axis| axis.extent.saturating_sub(1) * axis.strides[which])
                .sum()
        };
        let batch = |which: usize| self.batches.saturating_sub(1) * self.batch_strides[which];
        let empty = self.batches == 0 || self.rows() == 0 || self.columns() == 0;
        let end = |sum: usize, touched: bool| if touched && !empty { sum + 1 } else { 0 };
        let has_depth = self.depth() > 0;
        let gathered: usize = self
            .taps
            .iter()
            .map(|tap| tap.out.saturating_sub(1) * tap.out_stride)
            .sum();
        let shifted: usize = self
            .taps
            .iter()
            .map(|tap| tap.taps.saturating_sub(1) * tap.tap_stride)
            .sum();
        [
            end(
                batch(0) + reach(&self.m, 0) + reach(&self.k, 0) + gathered,
                has_depth,
            ),
            end(
                batch(1) + reach(&self.n, 0) + reach(&self.k, 1) + shifted,
                has_depth,
            ),
            end(batch(2) + reach(&self.m, 1) + reach(&self.n, 1), true),
        ]
    }
}

/// The buffers a kernel loads from (or passes to a routine to read) and stores to
/// (or passes to a routine that writes them), see [`Kernel::accesses`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accesses {
    pub reads: BTreeSet<BufferId>,
    pub writes: BTreeSet<BufferId>,
}

impl Kernel {
    /// The buffers the kernel reads or writes, in increasing order.
    pub fn buffers(&self) -> Vec<BufferId> {
        let Accesses { reads, writes } = self.accesses();
        reads.union(&writes).copied().collect()
    }

    /// What the kernel reads and writes. A routine argument counts by its parameter's
    /// `written` flag only: a written argument is a write, even if the routine also
    /// reads it (C when accumulating, its workspace).
    pub fn accesses(&self) -> Accesses {
        let mut accesses = Accesses::default();
        for stmt in &self.body {
            stmt.visit(&mut |stmt| match stmt {
                Stmt::Store { buffer, .. } => {
                    accesses.writes.insert(*buffer);
                }
                Stmt::Call { routine, args } => {
                    for ((_, _, written), slice) in routine.params().iter().zip(args) {
                        if *written {
                            accesses.writes.insert(slice.buffer);
                        } else {
                            accesses.reads.insert(slice.buffer);
                        }
                    }
                }
                // It also reads the element it adds to; as for a routine's C, the
                // write is what counts.
                Stmt::ScatterAdd { target, .. } => {
                    accesses.writes.insert(target.buffer);
                }
                Stmt::Loop { .. } | Stmt::Assign { .. } => {}
            });
            stmt.visit_exprs(&mut |expr| match expr {
                Expr::Load { buffer, .. } | Expr::Gather(Indirect { buffer, .. }) => {
                    accesses.reads.insert(*buffer);
                }
                _ => {}
            });
        }
        accesses
    }
}

/// A whole lowered graph: buffers, the launch list and the names bound to buffers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Program {
    pub name: String,
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    pub outputs: Vec<Output>,
    pub updates: Vec<Update>,
}

/// A program that breaks the kernel IR's rules. After lowering this is a kiln bug.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum KernelError {
    /// The signature (buffers, outputs, updates) is inconsistent.
    #[error("program {program:?}: {message}")]
    Program { program: String, message: String },
    /// A kernel body is ill-typed, ill-scoped or can access memory out of bounds.
    #[error("kernel {kernel} ({name}): {message}")]
    Kernel {
        kernel: usize,
        name: String,
        message: String,
    },
}

impl Program {
    pub fn new(name: impl Into<String>) -> Program {
        Program {
            name: name.into(),
            ..Program::default()
        }
    }

    pub fn buffer(&self, id: BufferId) -> &Buffer {
        &self.buffers[id.0]
    }

    /// Appends a buffer and returns its id.
    pub fn add_buffer(&mut self, ty: TensorType, storage: Storage) -> BufferId {
        self.buffers.push(Buffer { ty, storage });
        BufferId(self.buffers.len() - 1)
    }

    /// `(name, buffer)` of every buffer whose storage `name_of` names, in buffer order.
    fn named_buffers(&self, name_of: fn(&Storage) -> Option<&str>) -> Vec<(&str, BufferId)> {
        self.buffers
            .iter()
            .enumerate()
            .filter_map(|(index, buffer)| Some((name_of(&buffer.storage)?, BufferId(index))))
            .collect()
    }

    /// `(name, buffer)` of every input, in buffer order.
    pub fn inputs(&self) -> Vec<(&str, BufferId)> {
        self.named_buffers(|storage| match storage {
            Storage::Input(name) => Some(name),
            _ => None,
        })
    }

    /// `(name, buffer)` of every parameter, in buffer order.
    pub fn params(&self) -> Vec<(&str, BufferId)> {
        self.named_buffers(|storage| match storage {
            Storage::Param(name) => Some(name),
            _ => None,
        })
    }

    /// Whether any kernel has a (top-level) parallel loop, so that the program needs
    /// a thread pool to run on more than one thread.
    pub fn has_parallel_loops(&self) -> bool {
        self.kernels.iter().any(|kernel| {
            kernel.body.iter().any(|stmt| {
                matches!(
                    stmt,
                    Stmt::Loop {
                        kind: LoopKind::Parallel,
                        ..
                    }
                )
            })
        })
    }

    /// The buffer of parameter `name`.
    pub fn param_buffer(&self, name: &str) -> Option<BufferId> {
        self.params()
            .into_iter()
            .find(|(param, _)| *param == name)
            .map(|(_, id)| id)
    }

    /// The dtype an expression's lanes have, assuming the program checks.
    pub fn expr_dtype(&self, kernel: &Kernel, expr: &Expr) -> DType {
        self.expr_type(kernel, expr).dtype
    }

    /// The type an expression evaluates to, assuming the program checks.
    pub fn expr_type(&self, kernel: &Kernel, expr: &Expr) -> VType {
        match expr {
            Expr::Load { buffer, lanes, .. } => {
                VType::vector(self.buffer(*buffer).ty.dtype, *lanes)
            }
            Expr::Splat(lanes, x) => VType::vector(self.expr_dtype(kernel, x), *lanes),
            Expr::Const(value) => VType::scalar(value.dtype()),
            Expr::LoopIndex(_) => VType::scalar(DType::I32),
            Expr::Local(local) => kernel.locals[local.0 as usize],
            Expr::Unary(_, x) => self.expr_type(kernel, x),
            Expr::Binary(_, a, _) | Expr::Fma(a, ..) => self.expr_type(kernel, a),
            Expr::Compare(_, a, _) => VType::vector(DType::Bool, self.expr_type(kernel, a).lanes),
            Expr::Select(_, a, _) => self.expr_type(kernel, a),
            Expr::Cast(to, x) => VType::vector(*to, self.expr_type(kernel, x).lanes),
            Expr::Random(_, _, _, counter) => {
                VType::vector(DType::F32, self.expr_type(kernel, counter).lanes)
            }
            Expr::Gather(indirect) => VType::scalar(self.buffer(indirect.buffer).ty.dtype),
        }
    }

    /// Checks the signature, then every kernel: variables are bound by an enclosing
    /// loop and bound once, locals are assigned before they are read, operand types
    /// fit their ops, stored values have the buffer's dtype, and every access stays
    /// inside its buffer for all values of the loop variables.
    pub fn check(&self) -> Result<(), KernelError> {
        self.check_signature()?;
        for (position, kernel) in self.kernels.iter().enumerate() {
            let mut checker = KernelChecker {
                program: self,
                kernel,
                scope: Vec::new(),
                kinds: Vec::new(),
                bound: BTreeSet::new(),
                assigned: vec![false; kernel.locals.len()],
            };
            checker
                .stmts(&kernel.body)
                .and_then(|()| self.check_op(kernel))
                .map_err(|message| KernelError::Kernel {
                    kernel: position,
                    name: kernel.name.clone(),
                    message,
                })?;
        }
        Ok(())
    }

    /// The kernel's op stays inside its buffers: the schedule's routines and the GPU's
    /// tiled kernel address through the op, not through the checked loop nest.
    fn check_op(&self, kernel: &Kernel) -> Result<(), String> {
        let len = |buffer: BufferId, role: &str| {
            self.buffers
                .get(buffer.0)
                .map(Buffer::len)
                .ok_or_else(|| format!("the {role} is {buffer}, which does not exist"))
        };
        let (contraction, what) = match &kernel.op {
            None => return Ok(()),
            Some(KernelOp::Contraction(contraction)) => (Cow::Borrowed(contraction), "contraction"),
            Some(KernelOp::Matmul(matmul)) => {
                if matmul.has_epilogue() && matmul.batches != 1 {
                    return Err(format!(
                        "the matmul's epilogue needs one batch, not {}",
                        matmul.batches
                    ));
                }
                let epilogue = [
                    (matmul.bias, matmul.n, "bias"),
                    (
                        matmul.update.map(|(param, _)| param),
                        matmul.m * matmul.n,
                        "update's parameter",
                    ),
                ];
                for (buffer, need, role) in epilogue {
                    let Some(buffer) = buffer else { continue };
                    let have = len(buffer, &format!("matmul's {role}"))?;
                    if have != need {
                        return Err(format!(
                            "the matmul's {role} ({buffer}) has {have} elements, not {need}"
                        ));
                    }
                }
                (Cow::Owned(matmul.contraction()), "matmul")
            }
        };
        if contraction.taps.len() > contraction.m.len()
            || contraction
                .taps
                .iter()
                .any(|tap| tap.taps == 0 || tap.stride == 0 || tap.dilation == 0)
        {
            return Err(format!(
                "the contraction's {} tap axes need as many position axes in m (it has {}), \
                 and at least one tap, a stride and a dilation of 1 or more each",
                contraction.taps.len(),
                contraction.m.len()
            ));
        }
        let buffers = [contraction.a, contraction.b, contraction.c];
        for ((buffer, reach), role) in buffers
            .into_iter()
            .zip(contraction.extents())
            .zip(["a", "b", "c"])
        {
            let len = len(buffer, &format!("{what}'s {role}"))?;
            if reach > len {
                return Err(format!(
                    "the {what} reaches element {} of its {role} ({buffer}), which has {len}",
                    reach - 1
                ));
            }
        }
        Ok(())
    }

    fn check_signature(&self) -> Result<(), KernelError> {
        let bad = |message: String| KernelError::Program {
            program: self.name.clone(),
            message,
        };
        let mut names = BTreeSet::new();
        // Parameter buffers by name, for the updates below: `param_buffer` scans.
        let mut params = BTreeMap::new();
        for (index, buffer) in self.buffers.iter().enumerate() {
            // Buffer lengths, and the byte offsets generated code computes from them,
            // are exact only within the size limit.
            crate::types::check_size("buffer", &buffer.ty.shape)
                .map_err(|err| bad(err.to_string()))?;
            if let Storage::Input(name) | Storage::Param(name) = &buffer.storage {
                if !names.insert(name.as_str()) {
                    return Err(bad(format!("input or parameter {name:?} is bound twice")));
                }
            }
            if let Storage::Param(name) = &buffer.storage {
                params.insert(name.as_str(), BufferId(index));
            }
        }
        let known = |id: BufferId| {
            if id.0 < self.buffers.len() {
                Ok(())
            } else {
                Err(bad(format!("{id} does not exist")))
            }
        };
        let mut outputs = BTreeSet::new();
        for output in &self.outputs {
            known(output.buffer)?;
            if !outputs.insert(output.name.as_str()) {
                return Err(bad(format!("output {:?} is bound twice", output.name)));
            }
            let buffer = self.buffer(output.buffer);
            if buffer.ty.dtype != output.ty.dtype || buffer.len() != output.ty.num_elements() {
                return Err(bad(format!(
                    "output {:?} of type {} cannot view {} of type {}",
                    output.name, output.ty, output.buffer, buffer.ty
                )));
            }
        }
        let mut updated = BTreeSet::new();
        for update in &self.updates {
            known(update.value)?;
            let param = *params
                .get(update.param.as_str())
                .ok_or_else(|| bad(format!("update of unknown parameter {:?}", update.param)))?;
            if !updated.insert(update.param.as_str()) {
                return Err(bad(format!(
                    "parameter {:?} is updated twice",
                    update.param
                )));
            }
            let (target, value) = (self.buffer(param), self.buffer(update.value));
            if target.ty.dtype != value.ty.dtype || target.len() != value.len() {
                return Err(bad(format!(
                    "update of {:?} ({}) from {} of type {}",
                    update.param, target.ty, update.value, value.ty
                )));
            }
        }
        Ok(())
    }
}

/// The values a loop variable takes: `first, first + step, ..., last`, or none.
#[derive(Clone, Copy, Debug)]
struct Range {
    var: VarId,
    /// `None` when the loop runs no iteration.
    bounds: Option<(i128, i128)>,
}

/// Walks one kernel with the loop variables in scope.
struct KernelChecker<'a> {
    program: &'a Program,
    kernel: &'a Kernel,
    /// The enclosing loops, outermost first.
    scope: Vec<Range>,
    /// Kinds of the enclosing loops, outermost first.
    kinds: Vec<LoopKind>,
    /// Every variable bound so far in this kernel.
    bound: BTreeSet<VarId>,
    /// Which locals are certainly assigned at this point.
    assigned: Vec<bool>,
}

impl KernelChecker<'_> {
    fn stmts(&mut self, stmts: &[Stmt]) -> Result<(), String> {
        for stmt in stmts {
            self.stmt(stmt)?;
        }
        Ok(())
    }

    fn in_vector_loop(&self) -> bool {
        self.kinds
            .iter()
            .any(|kind| matches!(kind, LoopKind::Vector(_)))
    }

    fn stmt(&mut self, stmt: &Stmt) -> Result<(), String> {
        match stmt {
            Stmt::Loop {
                var,
                start,
                end,
                step,
                kind,
                body,
            } => {
                if !self.bound.insert(*var) {
                    return Err(format!("loop variable {var} is bound twice"));
                }
                if *step == 0 {
                    return Err(format!("loop over {var} has step 0"));
                }
                if *end > i32::MAX as usize || *step > i32::MAX as usize {
                    return Err(format!("loop over {var} runs to {end}, too far"));
                }
                match kind {
                    LoopKind::Vector(width) => {
                        if !VType::LANES.contains(width) || *width < 2 {
                            return Err(format!("loop over {var} has vector width {width}"));
                        }
                        if body.iter().any(|stmt| !matches!(stmt, Stmt::Store { .. })) {
                            return Err(format!("vector loop over {var} may only contain stores"));
                        }
                    }
                    LoopKind::Unroll(times) => {
                        if *times < 2 {
                            return Err(format!("loop over {var} is unrolled {times} times"));
                        }
                    }
                    LoopKind::Parallel => {
                        if !self.scope.is_empty() {
                            return Err(format!(
                                "parallel loop over {var} is nested in another loop"
                            ));
                        }
                    }
                    LoopKind::Serial => {}
                }
                let trips = loop_trips(*start, *end, *step);
                let bounds = (trips > 0).then(|| {
                    let last = start + (trips - 1) * step;
                    (*start as i128, last as i128)
                });
                self.scope.push(Range { var: *var, bounds });
                self.kinds.push(*kind);
                // Locals assigned in the body are only certainly assigned afterwards if
                // the body runs at least once.
                let before = self.assigned.clone();
                let result = self.stmts(body);
                self.scope.pop();
                self.kinds.pop();
                if bounds.is_none() {
                    self.assigned = before;
                }
                result
            }
            Stmt::Store {
                buffer,
                index,
                value,
            } => {
                let ty = self.expr(value)?;
                self.access(*buffer, index, ty.lanes)?;
                let expected = self.program.buffer(*buffer).ty.dtype;
                if ty.dtype != expected {
                    return Err(format!(
                        "store of a {ty} value into {buffer} of dtype {expected}"
                    ));
                }
                Ok(())
            }
            Stmt::Assign { local, value } => {
                let expected = *self
                    .kernel
                    .locals
                    .get(local.0 as usize)
                    .ok_or_else(|| format!("local {local} is not declared"))?;
                let ty = self.expr(value)?;
                if ty != expected {
                    return Err(format!(
                        "assignment of a {ty} value to local {local} of type {expected}"
                    ));
                }
                self.assigned[local.0 as usize] = true;
                Ok(())
            }
            Stmt::Call { routine, args } => self.call(routine, args),
            Stmt::ScatterAdd { target, value } => {
                let ty = self.expr(value)?;
                let dtype = self.indirect(target)?;
                if ty != VType::scalar(dtype) || dtype == DType::Bool {
                    return Err(format!(
                        "scatter_add of a {ty} value into {} of dtype {dtype} (scalar f32 or i32 only)",
                        target.buffer
                    ));
                }
                Ok(())
            }
        }
    }

    /// Checks an [`Indirect`]: outside vector loops (its position is per element), a
    /// scalar i32 `at`, and `index + j * stride` within the buffer for every `j` in
    /// `0..extent` and every value of the loop variables. Returns the buffer's dtype.
    fn indirect(&self, indirect: &Indirect) -> Result<DType, String> {
        let Indirect {
            buffer,
            index,
            at,
            stride,
            extent,
        } = indirect;
        if self.in_vector_loop() {
            return Err(format!(
                "{indirect}: a computed position inside a vector loop"
            ));
        }
        let at_ty = self.expr(at)?;
        if at_ty != VType::scalar(DType::I32) {
            return Err(format!(
                "the position {at} is {at_ty}, not i32, in {indirect}"
            ));
        }
        let len = self.buffer_len(*buffer)?;
        let limit = crate::types::MAX_ELEMENTS as u64;
        if stride.unsigned_abs() > limit || u64::from(*extent) > limit {
            return Err(format!(
                "{indirect} has a stride or extent beyond {limit} elements"
            ));
        }
        // No position is in range, so nothing is ever accessed.
        if *extent == 0 {
            return Ok(self.program.buffer(*buffer).ty.dtype);
        }
        if let Some((low, high)) = self.span(*buffer, index)? {
            let last = i128::from(*stride) * (i128::from(*extent) - 1);
            let (low, high) = (low + last.min(0), high + last.max(0));
            if low < 0 || high >= len as i128 {
                return Err(format!(
                    "{indirect} reaches elements {low}..={high} of a buffer of {len}"
                ));
            }
        }
        Ok(self.program.buffer(*buffer).ty.dtype)
    }

    fn call(&self, routine: &Routine, args: &[Slice]) -> Result<(), String> {
        if self.in_vector_loop() {
            return Err(format!("call of {routine} inside a vector loop"));
        }
        let params = routine.params();
        if params.len() != args.len() {
            return Err(format!(
                "{routine} takes {} arguments, not {}",
                params.len(),
                args.len()
            ));
        }
        for ((name, len, _), slice) in params.iter().zip(args) {
            if slice.len != *len {
                return Err(format!(
                    "argument {name} of {routine} is {slice}, not {len} elements"
                ));
            }
            let dtype = self
                .program
                .buffers
                .get(slice.buffer.0)
                .ok_or_else(|| format!("{} does not exist", slice.buffer))?
                .ty
                .dtype;
            if dtype != DType::F32 {
                return Err(format!("argument {name} of {routine} is {dtype}, not f32"));
            }
            self.slice(slice)?;
        }
        match routine {
            Routine::Matmul(mm) => {
                let (mr, nr) = mm.tile();
                if mm.mc == 0 || mm.kc == 0 || mm.nc == 0 || mm.mc % mr != 0 || mm.nc % nr != 0 {
                    return Err(format!(
                        "{routine}: blocking must be positive multiples of the {mr}x{nr} tile"
                    ));
                }
                if mm.epilogue.update.is_some() && (mm.epilogue.bias || mm.epilogue.relu) {
                    return Err(format!("{routine}: an update epilogue comes alone"));
                }
                if mm.epilogue.update.is_some() && mm.kc < mm.k {
                    return Err(format!(
                        "{routine}: an update epilogue needs k in one KC block (kc >= {})",
                        mm.k
                    ));
                }
                if let Some((var, size)) = mm.split.block() {
                    let range = self
                        .scope
                        .iter()
                        .find(|range| range.var == var)
                        .ok_or_else(|| format!("{routine} uses {var} outside its loop"))?;
                    let (what, tile, extent) = match mm.split {
                        Split::Cols { .. } => ("column", nr, mm.n),
                        _ => ("row", mr, mm.m),
                    };
                    if size == 0 || size % tile != 0 {
                        return Err(format!(
                            "{routine}: {what} blocks must be multiples of {tile}"
                        ));
                    }
                    // Tasks beyond the end of C would compute nothing; more likely a
                    // scheduling bug.
                    if let Some((_, last)) = range.bounds {
                        if last as usize * size >= extent.max(1) {
                            return Err(format!(
                                "{routine}: task {last} starts beyond {what} {extent}"
                            ));
                        }
                    }
                    // Each task has its own workspace: the slice must move with the task.
                    let stride = args[3].offset.stride_of(var);
                    if range.bounds.is_some_and(|(first, last)| first != last)
                        && stride.unsigned_abs() < mm.workspace_len() as u64
                    {
                        return Err(format!(
                            "{routine}: the workspace of task {var} overlaps the next task's"
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// Checks that a call's slice stays within its buffer for every value of the loop
    /// variables.
    fn slice(&self, slice: &Slice) -> Result<(), String> {
        match self.span(slice.buffer, &slice.offset)? {
            None => Ok(()),
            Some((low, high)) => {
                let len = self.program.buffer(slice.buffer).len() as i128;
                if low < 0 || high + slice.len as i128 > len {
                    return Err(format!(
                        "slice {slice} reaches elements {low}..{} of a buffer of {len}",
                        high + slice.len as i128
                    ));
                }
                Ok(())
            }
        }
    }

    /// The lowest and highest value of `index` over the enclosing loops, or `None`
    /// when it is inside a loop that runs no iteration.
    fn span(&self, buffer: BufferId, index: &Index) -> Result<Option<(i128, i128)>, String> {
        // Generated code scales offsets and strides to bytes in i64; within the size
        // limit that cannot overflow (a loop of one iteration may carry any stride).
        let limit = crate::types::MAX_ELEMENTS as u64;
        if index.offset.unsigned_abs() > limit
            || index
                .terms
                .iter()
                .any(|&(_, stride)| stride.unsigned_abs() > limit)
        {
            return Err(format!(
                "access {buffer}[{index}] has an offset or stride beyond {limit} elements"
            ));
        }
        let (mut low, mut high) = (i128::from(index.offset), i128::from(index.offset));
        let mut empty = false;
        for &(var, stride) in &index.terms {
            let range = self
                .scope
                .iter()
                .find(|range| range.var == var)
                .ok_or_else(|| format!("index of {buffer} uses {var} outside its loop"))?;
            match range.bounds {
                None => empty = true,
                Some((first, last)) => {
                    let (a, b) = (i128::from(stride) * first, i128::from(stride) * last);
                    low += a.min(b);
                    high += a.max(b);
                }
            }
        }
        // A body inside an empty loop never runs, so it cannot go out of bounds.
        if empty || self.scope.iter().any(|range| range.bounds.is_none()) {
            return Ok(None);
        }
        Ok(Some((low, high)))
    }

    /// The number of elements of `buffer`, which must exist.
    fn buffer_len(&self, buffer: BufferId) -> Result<usize, String> {
        self.program
            .buffers
            .get(buffer.0)
            .map(Buffer::len)
            .ok_or_else(|| format!("{buffer} does not exist"))
    }

    /// Checks that `lanes` elements from `index` stay within `buffer` for every value
    /// of the loop variables.
    fn access(&self, buffer: BufferId, index: &Index, lanes: u32) -> Result<(), String> {
        let len = self.buffer_len(buffer)?;
        if let Some((low, high)) = self.span(buffer, index)? {
            let high = high + i128::from(lanes) - 1;
            if low < 0 || high >= len as i128 {
                return Err(format!(
                    "access {buffer}[{index}] reaches elements {low}..={high} of a buffer of {len}"
                ));
            }
        }
        Ok(())
    }

    fn expr(&self, expr: &Expr) -> Result<VType, String> {
        let numeric = |dtype: DType, what: &str| {
            if dtype == DType::Bool {
                Err(format!(
                    "{what} needs f32 or i32 operands, found bool in {expr}"
                ))
            } else {
                Ok(())
            }
        };
        let lanes = |lanes: u32| {
            if VType::LANES.contains(&lanes) {
                if lanes > 1 && self.in_vector_loop() {
                    Err(format!("{expr}: vector values inside a vector loop"))
                } else {
                    Ok(())
                }
            } else {
                Err(format!("{expr} has {lanes} lanes"))
            }
        };
        match expr {
            Expr::Load {
                buffer,
                index,
                lanes: count,
            } => {
                lanes(*count)?;
                self.access(*buffer, index, *count)?;
                Ok(VType::vector(self.program.buffer(*buffer).ty.dtype, *count))
            }
            Expr::Splat(count, x) => {
                lanes(*count)?;
                let ty = self.expr(x)?;
                if ty.is_vector() {
                    return Err(format!("splat of the vector {x}"));
                }
                Ok(VType::vector(ty.dtype, *count))
            }
            Expr::Const(value) => Ok(VType::scalar(value.dtype())),
            Expr::LoopIndex(var) => {
                if self.scope.iter().any(|range| range.var == *var) {
                    Ok(VType::scalar(DType::I32))
                } else {
                    Err(format!("index({var}) outside the loop over {var}"))
                }
            }
            Expr::Local(local) => match self.assigned.get(local.0 as usize) {
                Some(true) => Ok(self.kernel.locals[local.0 as usize]),
                Some(false) => Err(format!("local {local} is read before it is assigned")),
                None => Err(format!("local {local} is not declared")),
            },
            Expr::Unary(op, x) => {
                let ty = self.expr(x)?;
                let ok = ty.dtype == DType::F32 || (ty.dtype == DType::I32 && op.accepts_int());
                if !ok {
                    return Err(format!("{} does not accept {ty} in {expr}", op.name()));
                }
                Ok(ty)
            }
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                if a != b {
                    return Err(format!("operands {a} and {b} differ in {expr}"));
                }
                // Max also orders bools (a reduce_max over a mask).
                let ok = match a.dtype {
                    DType::F32 => true,
                    DType::I32 => op.accepts_int(),
                    DType::Bool => *op == BinaryOp::Max,
                };
                if !ok {
                    return Err(format!("{} does not accept {a} in {expr}", op.name()));
                }
                Ok(a)
            }
            Expr::Compare(_, a, b) => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                if a != b {
                    return Err(format!("operands {a} and {b} differ in {expr}"));
                }
                numeric(a.dtype, "a comparison")?;
                Ok(VType::vector(DType::Bool, a.lanes))
            }
            Expr::Select(cond, a, b) => {
                let cond = self.expr(cond)?;
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                if cond != VType::vector(DType::Bool, a.lanes) {
                    return Err(format!(
                        "select condition is {cond}, not bool with {} lanes, in {expr}",
                        a.lanes
                    ));
                }
                if a != b {
                    return Err(format!("select arms {a} and {b} differ in {expr}"));
                }
                Ok(a)
            }
            Expr::Cast(to, x) => {
                let ty = self.expr(x)?;
                Ok(VType::vector(*to, ty.lanes))
            }
            Expr::Fma(a, b, c) => {
                let a = self.expr(a)?;
                for operand in [b, c] {
                    let ty = self.expr(operand)?;
                    if ty != a {
                        return Err(format!("fma operands {a} and {ty} differ in {expr}"));
                    }
                }
                if a.dtype != DType::F32 {
                    return Err(format!("fma needs f32 operands, found {a} in {expr}"));
                }
                Ok(a)
            }
            Expr::Random(_, key0, key1, counter) => {
                let counter = self.expr(counter)?;
                for operand in [key0, key1] {
                    let ty = self.expr(operand)?;
                    if ty != counter {
                        return Err(format!(
                            "random operands {ty} and {counter} differ in {expr}"
                        ));
                    }
                }
                if counter.dtype != DType::I32 {
                    return Err(format!(
                        "random needs i32 operands, found {counter} in {expr}"
                    ));
                }
                Ok(VType::vector(DType::F32, counter.lanes))
            }
            Expr::Gather(indirect) => Ok(VType::scalar(self.indirect(indirect)?)),
        }
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names are quoted as the graph text quotes them, so `kernel_text` reads them
        // back with the same escapes.
        writeln!(f, "program {} {{", quote(&self.name))?;
        for (index, buffer) in self.buffers.iter().enumerate() {
            write!(f, "  {}: {}", BufferId(index), buffer.ty)?;
            match &buffer.storage {
                Storage::Input(name) => writeln!(f, " input {}", quote(name))?,
                Storage::Param(name) => writeln!(f, " param {}", quote(name))?,
                Storage::Temp => writeln!(f, " temp")?,
            }
        }
        for output in &self.outputs {
            writeln!(
                f,
                "  output {} = {}: {}",
                quote(&output.name),
                output.buffer,
                output.ty
            )?;
        }
        for update in &self.updates {
            writeln!(f, "  update {} = {}", quote(&update.param), update.value)?;
        }
        for (index, kernel) in self.kernels.iter().enumerate() {
            writeln!(f)?;
            // Kernel names are op mnemonics (`matmul.tn`); anything else is quoted so
            // that the name stays one token.
            let name = if is_kernel_name(&kernel.name) {
                kernel.name.clone()
            } else {
                quote(&kernel.name)
            };
            writeln!(f, "  kernel k{index} {name} {{")?;
            for (local, ty) in kernel.locals.iter().enumerate() {
                writeln!(f, "    local {}: {ty}", LocalId(local as u32))?;
            }
            if let Some(op) = &kernel.op {
                writeln!(f, "    op {op}")?;
            }
            let mut text = String::new();
            for stmt in &kernel.body {
                print_stmt(&mut text, stmt, 2)?;
            }
            f.write_str(&text)?;
            writeln!(f, "  }}")?;
        }
        writeln!(f, "}}")
    }
}

/// Whether `name` prints bare as a kernel name: a word of the text form (letters,
/// digits, `_` and `.`, starting with a letter or `_`).
pub(crate) fn is_kernel_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !name.contains("..")
}

impl fmt::Display for KernelOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelOp::Matmul(matmul) => write!(f, "{matmul}"),
            KernelOp::Contraction(contraction) => write!(f, "{contraction}"),
        }
    }
}

impl fmt::Display for MatmulOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = |trans| if trans { "t" } else { "n" };
        write!(
            f,
            "matmul.{}{} a={} b={} c={} batches={} m={} n={} k={}",
            flag(self.trans_a),
            flag(self.trans_b),
            self.a,
            self.b,
            self.c,
            self.batches,
            self.m,
            self.n,
            self.k,
        )?;
        if let Some(bias) = self.bias {
            write!(f, " bias={bias}")?;
        }
        if self.relu {
            write!(f, " relu")?;
        }
        if let Some((param, scale)) = self.update {
            write!(
                f,
                " update={param} scale={}",
                Scalar::F32(f32::from_bits(scale))
            )?;
        }
        Ok(())
    }
}

/// `contraction a=b0 b=b1 c=b2 batches=2:8:4:6 m=[3:12:4 5:2:1] n=[4:9:1] k=[3:1:1]`:
/// the batch count and its strides in a, b and c, then each axis as
/// `extent:stride:stride`; with taps, then `taps=[3:1:2:1:4:1:1]`, each
/// `taps:dilation:stride:low:out:out_stride:tap_stride`.
impl fmt::Display for Contraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [sa, sb, sc] = self.batch_strides;
        write!(
            f,
            "contraction a={} b={} c={} batches={}:{sa}:{sb}:{sc}",
            self.a, self.b, self.c, self.batches
        )?;
        for (name, axes) in [("m", &self.m), ("n", &self.n), ("k", &self.k)] {
            write!(f, " {name}=[")?;
            for (position, axis) in axes.iter().enumerate() {
                let sep = if position == 0 { "" } else { " " };
                let [first, second] = axis.strides;
                write!(f, "{sep}{}:{first}:{second}", axis.extent)?;
            }
            f.write_str("]")?;
        }
        if !self.taps.is_empty() {
            f.write_str(" taps=[")?;
            for (position, tap) in self.taps.iter().enumerate() {
                let sep = if position == 0 { "" } else { " " };
                write!(
                    f,
                    "{sep}{}:{}:{}:{}:{}:{}:{}",
                    tap.taps,
                    tap.dilation,
                    tap.stride,
                    tap.low,
                    tap.out,
                    tap.out_stride,
                    tap.tap_stride
                )?;
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}

fn print_stmt(out: &mut String, stmt: &Stmt, depth: usize) -> fmt::Result {
    let pad = "  ".repeat(depth);
    match stmt {
        Stmt::Loop {
            var,
            start,
            end,
            step,
            kind,
            body,
        } => {
            let step = if *step == 1 {
                String::new()
            } else {
                format!(" step {step}")
            };
            writeln!(out, "{pad}for {var} in {start}..{end}{step}{kind} {{")?;
            for stmt in body {
                print_stmt(out, stmt, depth + 1)?;
            }
            writeln!(out, "{pad}}}")
        }
        Stmt::Store {
            buffer,
            index,
            value,
        } => writeln!(out, "{pad}{buffer}[{index}] = {value}"),
        Stmt::Assign { local, value } => writeln!(out, "{pad}{local} = {value}"),
        Stmt::ScatterAdd { target, value } => {
            writeln!(out, "{pad}scatter_add({target}) += {value}")
        }
        Stmt::Call { routine, args } => {
            let args: Vec<String> = args.iter().map(Slice::to_string).collect();
            writeln!(out, "{pad}call {routine} ({})", args.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_program() -> Program {
        let mut program = Program::new("add");
        let a = program.add_buffer(TensorType::f32([2, 3]), Storage::Input("a".into()));
        let b = program.add_buffer(TensorType::f32([1, 3]), Storage::Param("b".into()));
        let out = program.add_buffer(TensorType::f32([2, 3]), Storage::Temp);
        let (i0, i1) = (VarId(0), VarId(1));
        program.kernels.push(Kernel {
            name: "add".into(),
            op: None,
            locals: Vec::new(),
            body: vec![Stmt::for_range(
                i0,
                2,
                LoopKind::Serial,
                vec![Stmt::for_range(
                    i1,
                    3,
                    LoopKind::Vector(4),
                    vec![Stmt::Store {
                        buffer: out,
                        index: Index::new([(i0, 3), (i1, 1)], 0),
                        value: Expr::binary(
                            BinaryOp::Add,
                            Expr::load(a, Index::new([(i0, 3), (i1, 1)], 0)),
                            Expr::load(b, Index::new([(i0, 0), (i1, 1)], 0)),
                        ),
                    }],
                )],
            )],
        });
        program.outputs.push(Output {
            name: "y".into(),
            buffer: out,
            ty: TensorType::f32([6]),
        });
        program.updates.push(Update {
            param: "b".into(),
            value: BufferId(1),
        });
        program
    }

    #[test]
    fn printer_shows_buffers_bindings_and_loops() {
        let text = add_program().to_string();
        let expected = r#"program "add" {
  b0: f32[2,3] input "a"
  b1: f32[1,3] param "b"
  b2: f32[2,3] temp
  output "y" = b2: f32[6]
  update "b" = b1

  kernel k0 add {
    for i0 in 0..2 {
      for i1 in 0..3 vec4 {
        b2[3*i0 + i1] = add(b0[3*i0 + i1], b1[i1])
      }
    }
  }
}
"#;
        assert_eq!(text, expected);
    }

    #[test]
    fn printer_shows_the_kernel_op_and_quotes_odd_names() {
        let mut program = add_program();
        program.name = "two words \"quoted\"".into();
        program.kernels[0].name = "add then mul".into();
        program.kernels[0].op = Some(KernelOp::Matmul(MatmulOp {
            a: BufferId(0),
            b: BufferId(1),
            c: BufferId(2),
            batches: 1,
            m: 2,
            n: 3,
            k: 1,
            trans_a: false,
            trans_b: true,
            bias: None,
            relu: false,
            update: None,
        }));
        let text = program.to_string();
        assert!(
            text.starts_with("program \"two words \\\"quoted\\\"\" {\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  kernel k0 \"add then mul\" {\n    op matmul.nt a=b0 b=b1 c=b2 batches=1 m=2 n=3 k=1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn check_accepts_a_well_formed_program() {
        assert_eq!(add_program().check(), Ok(()));
    }

    #[test]
    fn check_rejects_out_of_bounds_access() {
        let mut program = add_program();
        if let Stmt::Loop { body, .. } = &mut program.kernels[0].body[0] {
            if let Stmt::Loop { body, .. } = &mut body[0] {
                if let Stmt::Store { index, .. } = &mut body[0] {
                    *index = Index::new([(VarId(0), 3), (VarId(1), 1)], 1);
                }
            }
        }
        let err = program.check().unwrap_err().to_string();
        assert!(
            err.contains("reaches elements 1..=6 of a buffer of 6"),
            "{err}"
        );
    }

    #[test]
    fn check_rejects_type_errors_and_unbound_variables() {
        let mut program = add_program();
        program.kernels[0].body = vec![Stmt::Store {
            buffer: BufferId(2),
            index: Index::new([(VarId(7), 1)], 0),
            value: Expr::Const(Scalar::F32(0.0)),
        }];
        let err = program.check().unwrap_err().to_string();
        assert!(err.contains("uses i7 outside its loop"), "{err}");

        program.kernels[0].body = vec![Stmt::Store {
            buffer: BufferId(2),
            index: Index::constant(0),
            value: Expr::Const(Scalar::I32(1)),
        }];
        let err = program.check().unwrap_err().to_string();
        assert!(
            err.contains("store of a i32 value into b2 of dtype f32"),
            "{err}"
        );

        program.kernels[0].locals = vec![VType::scalar(DType::F32)];
        program.kernels[0].body = vec![Stmt::Store {
            buffer: BufferId(2),
            index: Index::constant(0),
            value: Expr::Local(LocalId(0)),
        }];
        let err = program.check().unwrap_err().to_string();
        assert!(err.contains("read before it is assigned"), "{err}");
    }

    #[test]
    fn check_rejects_bad_signatures() {
        let mut program = add_program();
        program.updates[0].value = BufferId(2);
        let err = program.check().unwrap_err().to_string();
        assert!(err.contains("update of \"b\" (f32[1,3]) from b2"), "{err}");
        program.updates[0].value = BufferId(1);
        program.updates.push(Update {
            param: "b".into(),
            value: BufferId(1),
        });
        let err = program.check().unwrap_err().to_string();
        assert!(err.contains("updated twice"), "{err}");
        program.updates.truncate(1);
        program.updates[0].param = "nope".into();
        let err = program.check().unwrap_err().to_string();
        assert!(err.contains("unknown parameter \"nope\""), "{err}");
    }

    #[test]
    fn index_merges_terms_and_prints_signs() {
        let index = Index::new([(VarId(0), 2), (VarId(1), 0), (VarId(0), 3)], -4);
        assert_eq!(index.terms, vec![(VarId(0), 5)]);
        assert_eq!(index.to_string(), "5*i0 - 4");
        let index = Index::new([(VarId(2), -1), (VarId(3), 1)], 0);
        assert_eq!(index.to_string(), "-i2 + i3");
        assert_eq!(Index::constant(0).to_string(), "0");
    }
}
