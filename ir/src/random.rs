//! Seeded random well-typed graphs and feeds for differential tests: compiled code
//! against the interpreter, rewritten graphs against their originals, gradients
//! against finite differences.
//!
//! A graph from [`random_graph`] uses the whole op set on odd shapes and extent-1
//! axes, shares values between ops, and mixes f32, i32 and bool values. It is also
//! *well conditioned* on the feeds of [`random_feeds`], so that a comparison at a
//! tolerance of about 1e-5 fails only on a real bug:
//!
//! - the generator tracks an interval that holds every element of every value
//!   (f32 feeds lie in `[-2, 2]`); a value that could exceed 64 in magnitude is
//!   multiplied by an exact power of two, and only the scaled value is read by
//!   later ops, so every f32 operand lies in `[-64, 64]` (an update or output made
//!   by the last op may reach 128);
//! - sums, means and matmuls add up at most 256 terms (longer reductions become
//!   `reduce_max`, which is exact in any order), since f32 sums in another order
//!   drift from the interpreter's with their length;
//! - `exp` is applied only to values at most 4, so it never overflows;
//! - `log` and the divisor of `div` only see values at least 1/16 and 1/4 away from
//!   zero, made so by `max(x, c)` with a positive constant `c` where needed, so no
//!   NaN or infinity arises and no rounding difference is amplified without bound.
//!
//! So on these feeds every f32 result is finite. With other feeds (hand-picked
//! values, or the generator's graphs fed by a caller) NaN and infinities follow IEEE
//! rules, and [`crate::max_relative_error`] counts NaN == NaN and inf == inf as equal.
//! Comparisons and float-to-int casts are discontinuous; values that are
//! mathematically equal but summed in another order are rare in these graphs, and
//! the seeds used by the project's tests are fixed.
//!
//! Two options leave the well-conditioned world on purpose, for soundness and
//! differential tests:
//!
//! - `awkward_constants`: new constants are often drawn from [`AWKWARD_F32`] and
//!   [`AWKWARD_I32`] (±0, subnormals, 2^24 ± 1, values near ±f32::MAX and beyond it,
//!   ±inf, NaN, i32::MIN and MAX), and [`random_awkward_feeds`] puts the same values in
//!   the feeds. They flow through every op, sums and matmuls included, and the
//!   rescaling and domain guards above no longer bound anything.
//! - `zero_extents`: new extents are sometimes 0 (never a `one_hot` depth), so empty
//!   tensors, empty reductions (sum +0, mean NaN, max -inf) and empty contractions
//!   appear.
//!
//! **The contract for such graphs** is exact: compiled code, and the interpreter in
//! `Precision::F32` on the graph after any pass, give the same bits as the interpreter
//! in `Precision::F32` on the original graph, except that any NaN equals any NaN
//! ([`crate::scalar::same`]). That holds because `Precision::F32` computes every op as
//! compiled code does (see [`crate::scalar`]), sums and matmuls included: in the same
//! order, from +0, with one f32 rounding per step. A sum near f32::MAX therefore
//! overflows exactly where compiled code overflows, and a sum of -0 terms is +0 in
//! both. Only `Precision::F64`, or a backend that reorders accumulations, needs a
//! tolerance, and then only on the default well-conditioned graphs.

use crate::graph::{Graph, NodeId};
use crate::interp::Feeds;
use crate::op::{
    matrix_dims, BinaryOp, CmpOp, ConvSpec, Distribution, Op, PoolKind, PoolSpec, ReduceOp, UnaryOp,
};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::types::{DType, Shape, TensorType};

/// Largest magnitude an f32 value of a random graph may reach on random feeds.
const MAGNITUDE_CAP: f64 = 64.0;
/// `exp` is applied only to values at most this large (e^4 < 64).
const EXP_ARGUMENT_MAX: f64 = 4.0;
/// `log` is applied only to values at least this large.
const LOG_ARGUMENT_MIN: f64 = 1.0 / 16.0;
/// Divisors are at least this far from zero.
const DIVISOR_MIN: f64 = 0.25;
/// `pow`'s exponent lies in `[-POW_EXPONENT_MAX, POW_EXPONENT_MAX]`.
const POW_EXPONENT_MAX: f64 = 2.0;
/// The most elements a sum, mean or matmul adds up: f32 sums of more terms differ
/// from the interpreter's f64 sums by more than differential tests allow.
const SUM_LENGTH_MAX: usize = 256;
/// f32 feeds are uniform in `[-FEED_LIMIT, FEED_LIMIT]`.
const FEED_LIMIT: f64 = 2.0;
/// The label range `0..LABEL_DEPTH` of an i32 feed that no `one_hot` reads.
const LABEL_DEPTH: usize = 4;

/// f32 values where f32 arithmetic differs from real or f64 arithmetic: signed zeros,
/// subnormals, integers around 2^24 (16777217 is not an f32 and reads as 16777216),
/// values near and beyond ±f32::MAX (1e39 reads as inf), infinities and NaN.
pub const AWKWARD_F32: [f64; 18] = [
    0.0,
    -0.0,
    1e-40,
    -1e-40,
    f32::MIN_POSITIVE as f64 / 2.0,
    f32::MIN_POSITIVE as f64,
    16_777_215.0,
    16_777_216.0,
    16_777_217.0,
    -16_777_217.0,
    f32::MAX as f64,
    -(f32::MAX as f64),
    3.0e38,
    1e39,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
    -1.5,
];

/// i32 values where i32 arithmetic wraps or casts round: the extremes, ±1, 0 and
/// 2^24 + 1 (not an f32).
pub const AWKWARD_I32: [f64; 7] = [
    0.0,
    1.0,
    -1.0,
    i32::MAX as f64,
    i32::MIN as f64,
    16_777_217.0,
    -16_777_217.0,
];

/// What [`random_graph`] may generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RandomGraphOptions {
    /// The most op nodes (nodes other than inputs, parameters and constants). A
    /// graph has at least one op unless this is 0, when an input is the output.
    pub max_nodes: usize,
    /// The largest rank of a value (at least 1 is used).
    pub max_rank: usize,
    /// New extents (of the first inputs, broadcast targets, matmul widths, one-hot
    /// depths) are in `1..=max_extent` (at least 1); reshapes regroup extents, so
    /// they and leaves made to match them may exceed it.
    pub max_extent: usize,
    /// Whether i32 values (an i32 input, casts to i32, `one_hot`) appear.
    pub allow_int: bool,
    /// Whether constants are often awkward values ([`AWKWARD_F32`], [`AWKWARD_I32`]);
    /// the graph is then not well conditioned (see the module documentation).
    pub awkward_constants: bool,
    /// Whether new extents are sometimes 0.
    pub zero_extents: bool,
}

impl Default for RandomGraphOptions {
    /// Twelve ops of rank at most 3 with extents `1..=7`, so odd sizes and extent-1
    /// axes are common; i32 values included; well conditioned (no awkward constants,
    /// no empty tensors).
    fn default() -> RandomGraphOptions {
        RandomGraphOptions {
            max_nodes: 12,
            max_rank: 3,
            max_extent: 7,
            allow_int: true,
            awkward_constants: false,
            zero_extents: false,
        }
    }
}

/// `graph` with an output "loss" summing its first f32 output over every axis (a
/// single element, as autodiff needs), so that a random graph can be made into a
/// training step; `None` if it has no f32 output or already has updates (the
/// optimizer adds them).
pub fn with_sum_loss(graph: &Graph) -> Option<Graph> {
    if !graph.updates().is_empty() {
        return None;
    }
    let (_, first) = graph
        .outputs()
        .iter()
        .find(|(_, id)| graph.ty(*id).dtype == DType::F32)?;
    let mut graph = graph.clone();
    let axes: Vec<usize> = (0..graph.ty(*first).rank()).collect();
    let loss = graph.reduce_sum(*first, &axes).ok()?;
    graph.set_output("loss", loss).ok()?;
    Some(graph)
}

/// A random tensor of type `ty`: f32 uniform in `[-2, 2]` (never exactly 0, and
/// exactly representable in f32), i32 labels mostly in `0..4` with one in eight out
/// of range (-1 or 4), bool 0 or 1.
pub fn random_tensor(rng: &mut Rng, ty: &TensorType) -> Tensor {
    random_tensor_with_depth(rng, ty, LABEL_DEPTH)
}

/// Random values for every input and parameter of `graph`, as [`random_tensor`]
/// makes them, except that an i32 value read by `one_hot` (directly or through
/// movement ops) gets labels for the largest depth it is read with.
pub fn random_feeds(graph: &Graph, rng: &mut Rng) -> Feeds {
    graph
        .inputs()
        .iter()
        .chain(graph.params())
        .map(|&id| {
            let name = graph
                .leaf_name(id)
                .expect("inputs and parameters are named")
                .to_string();
            let depth = one_hot_depth(graph, id).unwrap_or(LABEL_DEPTH);
            (name, random_tensor_with_depth(rng, graph.ty(id), depth))
        })
        .collect()
}

fn random_tensor_with_depth(rng: &mut Rng, ty: &TensorType, depth: usize) -> Tensor {
    let data = (0..ty.num_elements())
        .map(|_| match ty.dtype {
            DType::F32 => random_f32(rng),
            DType::I32 => random_label(rng, depth),
            DType::Bool => rng.below(2) as f64,
        })
        .collect();
    Tensor::new(ty.clone(), data).expect("random values fit their dtype")
}

/// Uniform in `[-2, 2]`, rounded to f32, redrawn when it is exactly 0 so that a
/// sign never depends on how a backend treats -0.
fn random_f32(rng: &mut Rng) -> f64 {
    loop {
        let value = rng.uniform(-FEED_LIMIT, FEED_LIMIT) as f32;
        if value != 0.0 {
            return f64::from(value);
        }
    }
}

/// Like [`random_feeds`], then about a quarter of the f32 elements replaced by values
/// of [`AWKWARD_F32`] (as f32: 16777217 becomes 16777216, 1e39 becomes inf).
pub fn random_awkward_feeds(graph: &Graph, rng: &mut Rng) -> Feeds {
    let mut feeds = random_feeds(graph, rng);
    for tensor in feeds.values_mut() {
        if tensor.dtype != DType::F32 {
            continue;
        }
        for value in &mut tensor.data {
            if rng.below(4) == 0 {
                *value = f64::from(AWKWARD_F32[rng.below(AWKWARD_F32.len())] as f32);
            }
        }
    }
    feeds
}

/// A label in `0..depth` seven times in eight, else -1 or `depth` (out of range).
fn random_label(rng: &mut Rng, depth: usize) -> f64 {
    if rng.below(8) == 0 {
        if rng.below(2) == 0 {
            -1.0
        } else {
            depth as f64
        }
    } else {
        rng.below(depth.max(1)) as f64
    }
}

/// The largest `one_hot` depth that reads `id`, looking through movement ops.
pub fn one_hot_depth(graph: &Graph, id: NodeId) -> Option<usize> {
    let mut depth = None;
    let mut stack = vec![id];
    while let Some(node) = stack.pop() {
        for user in graph.users(node) {
            match graph.op(user) {
                Op::OneHot { depth: d } => depth = depth.max(Some(*d)),
                op if op.is_movement() => stack.push(user),
                _ => {}
            }
        }
    }
    depth
}

/// A random graph: a few f32 inputs and parameters (and an i32 input when
/// `allow_int`), then up to `max_nodes` ops drawn from the whole op set on values of
/// a fitting type, 1 to 3 outputs and sometimes a parameter update. Every graph
/// passes [`crate::verify`]; see the module documentation for why its values stay
/// finite on [`random_feeds`].
pub fn random_graph(rng: &mut Rng, options: &RandomGraphOptions) -> Graph {
    let mut builder = Builder::new(rng, options);
    builder.build();
    builder.graph
}

/// A value of the graph being built and an interval holding all its elements on
/// random feeds.
#[derive(Clone, Debug)]
struct Value {
    id: NodeId,
    ty: TensorType,
    /// Whether an op computes the value (it is not an input, parameter or constant).
    computed: bool,
    lo: f64,
    hi: f64,
}

impl Value {
    fn magnitude(&self) -> f64 {
        self.lo.abs().max(self.hi.abs())
    }

    fn is_f32(&self) -> bool {
        self.ty.dtype == DType::F32
    }
}

/// The kinds of step the generator takes; each adds a few op nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Unary,
    Binary,
    CompareSelect,
    Cast,
    Broadcast,
    Reduce,
    /// `exp(x - broadcast(reduce_max(x)))`, the numerator of a stable softmax.
    Normalize,
    Reshape,
    Transpose,
    MatMul,
    OneHot,
    /// A slice, a pad or a concatenation.
    Relayout,
    /// A uniform or normal sample from an i32 scalar seed.
    Random,
    /// A convolution of a value of rank 3 or more, sometimes with one of its gradients.
    Conv,
    /// A gather by i32 indices (partly out of range on random feeds), sometimes
    /// followed by its adjoint, a scatter_add.
    Gather,
    /// A max or average pooling of a value of rank 3 or more, sometimes with its
    /// gradient.
    Pool,
    /// Positions along an axis, as i32.
    Iota,
}

impl Step {
    /// Each step with its relative frequency.
    const WEIGHTED: [(Step, usize); 17] = [
        (Step::Unary, 4),
        (Step::Binary, 5),
        (Step::CompareSelect, 2),
        (Step::Cast, 2),
        (Step::Broadcast, 2),
        (Step::Reduce, 3),
        (Step::Normalize, 1),
        (Step::Reshape, 2),
        (Step::Transpose, 2),
        (Step::MatMul, 3),
        (Step::OneHot, 1),
        (Step::Relayout, 2),
        (Step::Random, 1),
        (Step::Conv, 1),
        (Step::Pool, 1),
        (Step::Iota, 1),
        (Step::Gather, 1),
    ];

    /// The most op nodes the step adds, helpers (rescaling, reshapes) included.
    fn max_cost(self) -> usize {
        match self {
            Step::Reshape
            | Step::Transpose
            | Step::OneHot
            | Step::Relayout
            | Step::Random
            | Step::Iota => 1,
            Step::Unary | Step::CompareSelect | Step::Cast | Step::Broadcast | Step::Reduce => 2,
            Step::Binary | Step::MatMul => 3,
            Step::Conv => 4,
            Step::Pool => 3,
            // A reshape of a scalar, the gather, the scatter_add and its rescaling.
            Step::Gather => 4,
            Step::Normalize => 5,
        }
    }
}

struct Builder<'a> {
    graph: Graph,
    rng: &'a mut Rng,
    max_nodes: usize,
    max_rank: usize,
    max_extent: usize,
    allow_int: bool,
    awkward: bool,
    zero_extents: bool,
    values: Vec<Value>,
    /// Op nodes added so far.
    ops: usize,
    next_input: usize,
    next_param: usize,
    /// The `i32[]` input that seeds `random` ops, made by the first one. Kept out of
    /// `values`: the other steps expect operands of rank 1 or more.
    seed: Option<Value>,
}

impl<'a> Builder<'a> {
    fn new(rng: &'a mut Rng, options: &RandomGraphOptions) -> Builder<'a> {
        Builder {
            graph: Graph::new("random"),
            rng,
            max_nodes: options.max_nodes,
            max_rank: options.max_rank.max(1),
            max_extent: options.max_extent.max(1),
            allow_int: options.allow_int,
            awkward: options.awkward_constants,
            zero_extents: options.zero_extents,
            values: Vec::new(),
            ops: 0,
            next_input: 0,
            next_param: 0,
            seed: None,
        }
    }

    // ---- randomness ------------------------------------------------------------------

    /// True with probability `numerator / denominator`.
    fn chance(&mut self, numerator: usize, denominator: usize) -> bool {
        self.rng.below(denominator) < numerator
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.below(items.len())]
    }

    /// An extent in `1..=max_extent`, 1 more often than the others so that
    /// broadcasts and degenerate loops are common; with `zero_extents`, 0 one time in
    /// ten.
    fn extent(&mut self) -> usize {
        if self.zero_extents && self.chance(1, 10) {
            return 0;
        }
        if self.chance(1, 4) {
            1
        } else {
            1 + self.rng.below(self.max_extent)
        }
    }

    fn shape(&mut self, max_rank: usize) -> Shape {
        let rank = 1 + self.rng.below(max_rank.max(1));
        (0..rank).map(|_| self.extent()).collect()
    }

    /// One of the values that satisfy `fits`, the most recent ones more often so
    /// that chains grow deep; `None` if no value fits.
    fn choose(&mut self, fits: impl Fn(&Value) -> bool) -> Option<Value> {
        let candidates: Vec<usize> = (0..self.values.len())
            .filter(|&index| fits(&self.values[index]))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let index = if self.chance(1, 2) {
            let recent = candidates.len().min(3);
            candidates[candidates.len() - 1 - self.rng.below(recent)]
        } else {
            self.pick(&candidates)
        };
        Some(self.values[index].clone())
    }

    // ---- leaves ----------------------------------------------------------------------

    /// The interval of a fed value of type `ty` (see [`random_tensor`]).
    fn feed_interval(&self, ty: &TensorType) -> (f64, f64) {
        match ty.dtype {
            DType::F32 => (-FEED_LIMIT, FEED_LIMIT),
            DType::I32 => (-1.0, self.max_extent.max(LABEL_DEPTH) as f64),
            DType::Bool => (0.0, 1.0),
        }
    }

    fn remember(&mut self, id: NodeId, lo: f64, hi: f64) -> Value {
        let value = Value {
            id,
            ty: self.graph.ty(id).clone(),
            computed: !self.graph.op(id).is_leaf(),
            lo,
            hi,
        };
        self.values.push(value.clone());
        value
    }

    fn new_input(&mut self, ty: TensorType) -> Value {
        let name = format!("x{}", self.next_input);
        self.next_input += 1;
        let (lo, hi) = self.feed_interval(&ty);
        let id = self
            .graph
            .input(&name, ty)
            .expect("input names are numbered, so fresh");
        self.remember(id, lo, hi)
    }

    fn new_param(&mut self, ty: TensorType) -> Value {
        let name = format!("w{}", self.next_param);
        self.next_param += 1;
        let (lo, hi) = self.feed_interval(&ty);
        let id = self
            .graph
            .parameter(&name, ty)
            .expect("parameter names are numbered, so fresh");
        self.remember(id, lo, hi)
    }

    fn new_constant(&mut self, value: f64, ty: TensorType) -> Value {
        let id = self
            .graph
            .constant(value, ty)
            .expect("constants are whole numbers for i32 and 0 or 1 for bool");
        // An awkward value bounds nothing: NaN has no interval, and values beyond the
        // magnitude cap cannot be rescaled into it.
        let (lo, hi) = if value.is_finite() && value.abs() <= MAGNITUDE_CAP {
            (value, value)
        } else {
            (f64::NEG_INFINITY, f64::INFINITY)
        };
        self.remember(id, lo, hi)
    }

    /// With `awkward_constants`, a third of the time a new constant of `value`'s type
    /// instead of `value`, so that ops on constants (which the folders compute) are
    /// common; otherwise `value`.
    fn sometimes_constant(&mut self, value: Value) -> Value {
        if !self.awkward || value.ty.dtype == DType::Bool || !self.chance(1, 3) {
            return value;
        }
        let constant = match self.awkward_value(value.ty.dtype) {
            Some(constant) => constant,
            None => self.pick(&[0.0, -0.0, 1.0, -1.0, 2.0, 3.0]),
        };
        self.new_constant(constant, value.ty)
    }

    /// With `awkward_constants`, half of the time an awkward value of `dtype`.
    fn awkward_value(&mut self, dtype: DType) -> Option<f64> {
        if !self.awkward || !self.chance(1, 2) {
            return None;
        }
        match dtype {
            DType::F32 => Some(self.pick(&AWKWARD_F32)),
            DType::I32 => Some(self.pick(&AWKWARD_I32)),
            DType::Bool => None,
        }
    }

    /// A new leaf of type `ty`: an input, a parameter (f32 only) or a constant.
    fn new_leaf(&mut self, ty: TensorType) -> Value {
        match (ty.dtype, self.rng.below(4)) {
            (DType::F32, 0) => self.new_param(ty),
            (DType::F32, 1) => {
                let value = match self.awkward_value(DType::F32) {
                    Some(value) => value,
                    None => self.pick(&[0.0, 1.0, -1.0, 0.5, 2.0, -0.75, 3.0]),
                };
                self.new_constant(value, ty)
            }
            (DType::I32, 0 | 1) => {
                let value = match self.awkward_value(DType::I32) {
                    Some(value) => value,
                    None => self.pick(&[0.0, 1.0, -1.0, 2.0, 3.0]),
                };
                self.new_constant(value, ty)
            }
            (DType::Bool, 0 | 1) => {
                let value = self.pick(&[0.0, 1.0]);
                self.new_constant(value, ty)
            }
            _ => self.new_input(ty),
        }
    }

    /// A value of type `ty`: an existing one two times in three, else a new leaf.
    fn operand(&mut self, ty: &TensorType) -> Value {
        let existing = self.choose(|value| value.ty == *ty);
        match existing {
            Some(value) if self.chance(2, 3) => value,
            _ => self.new_leaf(ty.clone()),
        }
    }

    // ---- ops -------------------------------------------------------------------------

    /// Adds an op node; the generator only builds well-typed ops.
    fn push(&mut self, op: Op, operands: &[&Value]) -> Value {
        let ids: Vec<NodeId> = operands.iter().map(|value| value.id).collect();
        let id = self
            .graph
            .add(op, &ids)
            .expect("the generator picks operands that fit the op");
        let (lo, hi) = interval(self.graph.op(id), operands, self.graph.ty(id));
        self.ops += 1;
        self.remember(id, lo, hi)
    }

    /// Multiplies an f32 value that could exceed the magnitude cap by a power of two,
    /// which is exact, so no rounding is added. One op at most.
    fn rescale(&mut self, value: Value) -> Value {
        // An unbounded value (from an awkward constant) cannot be rescaled.
        if !value.is_f32() || value.magnitude() <= MAGNITUDE_CAP || !value.magnitude().is_finite() {
            return value;
        }
        let mut factor = 1.0;
        while value.magnitude() * factor > MAGNITUDE_CAP {
            factor /= 2.0;
        }
        let scale = self.new_constant(factor, value.ty.clone());
        // Only the rescaled value is used further (or named as an output).
        self.values.retain(|other| other.id != value.id);
        self.push(Op::Binary(BinaryOp::Mul), &[&value, &scale])
    }

    /// `value` itself if all its elements are at least `min`, else `max(value, c)`
    /// with a constant `c >= min`. One op at most.
    fn at_least(&mut self, value: Value, min: f64) -> Value {
        if value.lo >= min {
            return value;
        }
        let floor = self.pick(&[0.25_f64, 0.5, 1.0]).max(min);
        let floor = self.new_constant(floor, value.ty.clone());
        self.push(Op::Binary(BinaryOp::Max), &[&value, &floor])
    }

    fn any_f32(&mut self) -> Value {
        self.choose(Value::is_f32)
            .expect("the graph starts with an f32 input")
    }

    // ---- the graph ---------------------------------------------------------------------

    fn build(&mut self) {
        let n_inputs = 1 + self.rng.below(2);
        for _ in 0..n_inputs {
            let shape = self.shape(self.max_rank);
            self.new_input(TensorType::f32(shape));
        }
        for _ in 0..self.rng.below(3) {
            let shape = self.shape(self.max_rank);
            self.new_param(TensorType::f32(shape));
        }
        if self.allow_int {
            // Labels leave room for the axis that one_hot adds.
            let shape = self.shape(self.max_rank - 1);
            self.new_input(TensorType::i32(shape));
        }
        // One op is kept back for a parameter update.
        let reserved = usize::from(!self.graph.params().is_empty() && self.chance(1, 2));
        let budget = self.max_nodes.saturating_sub(reserved);
        while self.ops < budget {
            self.step(budget - self.ops);
        }
        if reserved == 1 && self.ops < self.max_nodes {
            self.add_update();
        }
        self.add_outputs();
    }

    fn step(&mut self, budget: usize) {
        let fitting: Vec<(Step, usize)> = Step::WEIGHTED
            .into_iter()
            .filter(|&(step, _)| step.max_cost() <= budget && self.can_take(step))
            .collect();
        let total: usize = fitting.iter().map(|&(_, weight)| weight).sum();
        let mut ticket = self.rng.below(total);
        let step = fitting
            .iter()
            .find(|&&(_, weight)| {
                let hit = ticket < weight;
                ticket = ticket.saturating_sub(weight);
                hit
            })
            .map(|&(step, _)| step)
            .expect("reshape and transpose cost one op and always fit");
        match step {
            Step::Unary => self.unary(),
            Step::Binary => self.binary(),
            Step::CompareSelect => self.compare_select(),
            Step::Cast => self.cast(),
            Step::Broadcast => self.broadcast(),
            Step::Reduce => self.reduce(),
            Step::Normalize => self.normalize(),
            Step::Reshape => self.reshape(),
            Step::Transpose => self.transpose(),
            Step::MatMul => self.matmul(),
            Step::OneHot => self.one_hot(),
            Step::Relayout => self.relayout(),
            Step::Random => self.random(),
            Step::Conv => self.conv(),
            Step::Pool => self.pool(),
            Step::Iota => self.iota(),
            Step::Gather => self.gather(),
        }
    }

    /// Whether the graph has the values a step needs.
    fn can_take(&self, step: Step) -> bool {
        match step {
            Step::OneHot => self
                .values
                .iter()
                .any(|value| value.ty.dtype == DType::I32 && value.ty.rank() < self.max_rank),
            Step::MatMul => self.max_rank >= 2,
            // The seed is an i32 value, as is an iota.
            Step::Random | Step::Iota => self.allow_int,
            Step::Conv | Step::Pool => self
                .values
                .iter()
                .any(|value| value.is_f32() && value.ty.rank() >= 3),
            Step::Gather => self.allow_int,
            _ => true,
        }
    }

    // ---- steps -----------------------------------------------------------------------

    /// An i32 value a quarter of the time when there is one, else an f32 value.
    fn numeric(&mut self) -> Value {
        if self.chance(1, 4) {
            if let Some(value) = self.choose(|value| value.ty.dtype == DType::I32) {
                return value;
            }
        }
        self.any_f32()
    }

    fn unary(&mut self) {
        let x = self.numeric();
        let x = self.sometimes_constant(x);
        if !x.is_f32() {
            let op = self.pick(&[UnaryOp::Neg, UnaryOp::Relu, UnaryOp::Abs, UnaryOp::Sign]);
            self.push(Op::Unary(op), &[&x]);
            return;
        }
        match self.pick(&UnaryOp::ALL) {
            op @ (UnaryOp::Exp | UnaryOp::Expm1) => {
                let x = self
                    .choose(|value| value.is_f32() && value.hi <= EXP_ARGUMENT_MAX)
                    .expect("f32 inputs lie in [-2, 2]");
                self.push(Op::Unary(op), &[&x]);
            }
            // Kept away from their poles and from the region where they are NaN.
            op @ (UnaryOp::Log | UnaryOp::Log1p | UnaryOp::Sqrt | UnaryOp::Rsqrt) => {
                let x = self.at_least(x, LOG_ARGUMENT_MIN);
                self.push(Op::Unary(op), &[&x]);
            }
            op => {
                self.push(Op::Unary(op), &[&x]);
            }
        }
    }

    fn binary(&mut self) {
        let x = self.numeric();
        let x = self.sometimes_constant(x);
        let op = if x.is_f32() {
            self.pick(&BinaryOp::ALL)
        } else {
            self.pick(&[
                BinaryOp::Add,
                BinaryOp::Sub,
                BinaryOp::Mul,
                BinaryOp::Max,
                BinaryOp::Min,
            ])
        };
        let y = self.operand(&x.ty);
        // Either operand order, so a constant or a parameter can come first.
        let (a, b) = if self.chance(1, 2) { (x, y) } else { (y, x) };
        let b = if op == BinaryOp::Div && b.lo < DIVISOR_MIN && b.hi > -DIVISOR_MIN {
            self.at_least(b, DIVISOR_MIN)
        } else {
            b
        };
        // A positive base and a small exponent keep the power finite and smooth; an
        // exponent that may be large is replaced by a constant (no op, so the step
        // stays within its cost).
        let (a, b) = if op == BinaryOp::Pow {
            let base = self.at_least(a, LOG_ARGUMENT_MIN);
            let exponent = if b.magnitude() <= POW_EXPONENT_MAX {
                b
            } else {
                let value = self.pick(&[-1.5, 0.5, 2.0]);
                self.new_constant(value, b.ty.clone())
            };
            (base, exponent)
        } else {
            (a, b)
        };
        let result = self.push(Op::Binary(op), &[&a, &b]);
        self.rescale(result);
    }

    fn compare_select(&mut self) {
        let x = self.numeric();
        let x = self.sometimes_constant(x);
        let y = self.operand(&x.ty);
        let cmp = self.pick(&CmpOp::ALL);
        let cond = self.push(Op::Compare(cmp), &[&x, &y]);
        // Mostly select between the compared values (max- and relu-like patterns),
        // sometimes between values of another dtype.
        let (on_true, on_false) = if self.chance(2, 3) {
            (x.clone(), y)
        } else {
            let dtype = self.dtype();
            let ty = x.ty.with_dtype(dtype);
            (self.operand(&ty), self.operand(&ty))
        };
        self.push(Op::Select, &[&cond, &on_true, &on_false]);
    }

    /// A dtype that the options allow.
    fn dtype(&mut self) -> DType {
        if self.allow_int {
            self.pick(&[DType::F32, DType::F32, DType::I32, DType::Bool])
        } else {
            self.pick(&[DType::F32, DType::F32, DType::Bool])
        }
    }

    fn cast(&mut self) {
        let x = self
            .choose(|_| true)
            .expect("the graph starts with an f32 input");
        let x = self.sometimes_constant(x);
        let to = if x.is_f32() {
            let to = self.dtype();
            // A cast to the same dtype is legal but rare in real graphs.
            if to == DType::F32 && self.chance(3, 4) {
                DType::Bool
            } else {
                to
            }
        } else {
            DType::F32
        };
        let result = self.push(Op::Cast { to }, &[&x]);
        self.rescale(result);
    }

    fn broadcast(&mut self) {
        let unit = self.choose(|value| value.ty.shape.contains(&1));
        let x = match unit {
            Some(value) => value,
            None => {
                let x = self.any_f32();
                let op = self.pick(&[ReduceOp::Max, ReduceOp::Mean]);
                let (op, axes) = self.reduction(op, &x.ty.shape);
                self.push(Op::Reduce { op, axes }, &[&x])
            }
        };
        let mut shape = x.ty.shape.clone();
        let units: Vec<usize> = (0..shape.len()).filter(|&axis| shape[axis] == 1).collect();
        for &axis in &units {
            shape[axis] = self.extent();
        }
        if self.max_extent > 1 {
            // At least one axis really stretches.
            let axis = self.pick(&units);
            shape[axis] = 2 + self.rng.below(self.max_extent - 1);
        }
        self.push(Op::Broadcast { shape }, &[&x]);
    }

    /// A non-empty, increasing set of axes of a value of rank `rank`: all of them a
    /// quarter of the time.
    fn axes(&mut self, rank: usize) -> Vec<usize> {
        if self.chance(1, 4) {
            return (0..rank).collect();
        }
        let mut axes: Vec<usize> = (0..rank).filter(|_| self.chance(1, 2)).collect();
        if axes.is_empty() {
            axes.push(self.rng.below(rank));
        }
        axes
    }

    fn reduce(&mut self) {
        let x = self.numeric();
        let op = match x.ty.dtype {
            DType::F32 => self.pick(&ReduceOp::ALL),
            _ => self.pick(&[ReduceOp::Sum, ReduceOp::Max]),
        };
        let (op, axes) = self.reduction(op, &x.ty.shape);
        let result = self.push(Op::Reduce { op, axes }, &[&x]);
        self.rescale(result);
    }

    /// Random axes for reduction `op` of a value of shape `shape`. A sum or mean adds
    /// up at most `SUM_LENGTH_MAX` elements: the largest axes are left out, and if a
    /// single axis is too long the reduction becomes a max, which is exact in any
    /// order.
    fn reduction(&mut self, op: ReduceOp, shape: &[usize]) -> (ReduceOp, Vec<usize>) {
        let mut axes = self.axes(shape.len());
        if op == ReduceOp::Max {
            return (op, axes);
        }
        let length = |axes: &[usize]| axes.iter().map(|&axis| shape[axis]).product::<usize>();
        while length(&axes) > SUM_LENGTH_MAX && axes.len() > 1 {
            let longest = (0..axes.len())
                .max_by_key(|&position| shape[axes[position]])
                .expect("axes is not empty");
            axes.remove(longest);
        }
        if length(&axes) > SUM_LENGTH_MAX {
            return (ReduceOp::Max, axes);
        }
        (op, axes)
    }

    fn normalize(&mut self) {
        let x = self.any_f32();
        let axes = self.axes(x.ty.rank());
        let max = self.push(
            Op::Reduce {
                op: ReduceOp::Max,
                axes,
            },
            &[&x],
        );
        let wide = self.push(
            Op::Broadcast {
                shape: x.ty.shape.clone(),
            },
            &[&max],
        );
        let shifted = self.push(Op::Binary(BinaryOp::Sub), &[&x, &wide]);
        // x - max(x) is at most 0 exactly (the subtraction of the larger value rounds
        // to a non-positive number), so exp of it lies in (0, 1].
        let shifted = Value { hi: 0.0, ..shifted };
        let shifted = self.rescale(shifted);
        self.push(Op::Unary(UnaryOp::Exp), &[&shifted]);
    }

    fn reshape(&mut self) {
        let x = self
            .choose(|_| true)
            .expect("the graph starts with an f32 input");
        // A few tries at a shape that differs from the current one; a prime extent
        // in rank 1 has no other grouping.
        let mut shape = self.regroup(x.ty.num_elements());
        for _ in 0..4 {
            if shape != x.ty.shape {
                break;
            }
            shape = self.regroup(x.ty.num_elements());
        }
        self.push(Op::Reshape { shape }, &[&x]);
    }

    /// A random shape of rank `1..=max_rank` with `n` elements: the prime factors of
    /// `n` dealt to random axes.
    fn regroup(&mut self, n: usize) -> Shape {
        let rank = 1 + self.rng.below(self.max_rank);
        if n == 0 {
            // Any extents with a 0 among them.
            let mut shape: Shape = (0..rank)
                .map(|_| 1 + self.rng.below(self.max_extent))
                .collect();
            let axis = self.rng.below(rank);
            shape[axis] = 0;
            return shape;
        }
        let mut shape = vec![1; rank];
        let mut rest = n;
        let mut factor = 2;
        while rest > 1 {
            while rest.is_multiple_of(factor) {
                let axis = self.rng.below(rank);
                shape[axis] *= factor;
                rest /= factor;
            }
            factor += 1;
        }
        shape
    }

    /// A slice (random bounds and steps), a pad (small borders and gaps) or the
    /// concatenation of a value with another of its type along a random axis.
    fn relayout(&mut self) {
        let x = self
            .choose(|value| value.ty.rank() >= 1 && value.ty.dtype != DType::Bool)
            .unwrap_or_else(|| self.any_f32());
        let rank = x.ty.rank();
        match self.rng.below(3) {
            0 => {
                let (mut starts, mut ends, mut steps) = (Vec::new(), Vec::new(), Vec::new());
                for &extent in &x.ty.shape {
                    // At least one element unless the axis is empty.
                    let (start, end) = if extent == 0 {
                        (0, 0)
                    } else {
                        let start = self.rng.below(extent);
                        (start, start + 1 + self.rng.below(extent - start))
                    };
                    starts.push(start);
                    ends.push(end);
                    steps.push(1 + self.rng.below(3));
                }
                self.push(
                    Op::Slice {
                        starts,
                        ends,
                        steps,
                    },
                    &[&x],
                );
            }
            1 => {
                let mut border = || (0..rank).map(|_| self.rng.below(3)).collect::<Vec<_>>();
                let (low, high) = (border(), border());
                let interior = (0..rank).map(|_| self.rng.below(2)).collect();
                let value = self.pick(&[0.0, 1.0, -2.0]);
                self.push(
                    Op::Pad {
                        low,
                        high,
                        interior,
                        value,
                    },
                    &[&x],
                );
            }
            _ => {
                let y = self.operand(&x.ty);
                let axis = self.rng.below(rank);
                self.push(Op::Concat { axis }, &[&x, &y]);
            }
        }
    }

    fn transpose(&mut self) {
        let x = self
            .choose(|value| value.ty.rank() >= 2)
            .unwrap_or_else(|| self.any_f32());
        let rank = x.ty.rank();
        let mut perm: Vec<usize> = (0..rank).collect();
        if rank >= 2 {
            while perm.iter().enumerate().all(|(axis, &from)| axis == from) {
                self.rng.shuffle(&mut perm);
            }
        }
        self.push(Op::Transpose { perm }, &[&x]);
    }

    fn matmul(&mut self) {
        // The contraction (k) is one of the last two axes of `a`; one of them must be
        // short enough to be summed.
        let short = |value: &Value| {
            let shape = &value.ty.shape;
            shape.len() < 2 || shape[shape.len() - 2..].iter().min() <= Some(&SUM_LENGTH_MAX)
        };
        let mut a = self
            .choose(|value| value.is_f32() && short(value))
            .unwrap_or_else(|| self.any_f32());
        if a.ty.rank() < 2 || !short(&a) {
            let n = a.ty.num_elements();
            let shape = if self.chance(1, 2) {
                vec![1, n]
            } else {
                vec![n, 1]
            };
            a = self.push(Op::Reshape { shape }, &[&a]);
        }
        let (rows, cols) = matrix_dims(&a.ty.shape, false);
        let mut flags = Vec::new();
        if cols <= SUM_LENGTH_MAX {
            flags.push(false);
        }
        if rows <= SUM_LENGTH_MAX {
            flags.push(true);
        }
        let transpose_a = self.pick(&flags);
        let transpose_b = self.chance(1, 2);
        let rank = a.ty.rank();
        let (m, k) = matrix_dims(&a.ty.shape, transpose_a);
        // Sometimes n == m, so that `a` itself fits as `b` (a Gram matrix).
        let n = if self.chance(1, 4) { m } else { self.extent() };
        let mut b_shape = a.ty.shape[..rank - 2].to_vec();
        b_shape.extend(if transpose_b { [n, k] } else { [k, n] });
        let b = self.operand(&TensorType::f32(b_shape));
        let result = self.push(
            Op::MatMul {
                transpose_a,
                transpose_b,
            },
            &[&a, &b],
        );
        self.rescale(result);
    }

    fn one_hot(&mut self) {
        let max_rank = self.max_rank;
        let labels = self
            .choose(|value| value.ty.dtype == DType::I32 && value.ty.rank() < max_rank)
            .expect("checked by can_take");
        // A depth of 0 is not a valid one_hot.
        let depth = self.extent().max(1);
        self.push(Op::OneHot { depth }, &[&labels]);
    }

    /// A convolution of an f32 value of rank 3 or more (`[N, C, spatial…]`) with a new
    /// weight parameter, random stride, padding, dilation and groups; then, half the
    /// time, one of its gradient ops with the (rescaled) output as the output gradient.
    fn conv(&mut self) {
        let x = self
            .choose(|value| value.is_f32() && value.ty.rank() >= 3)
            .expect("checked by can_take");
        let channels = x.ty.shape[1];
        let groups = if channels.is_multiple_of(2) && channels > 0 && self.chance(1, 3) {
            2
        } else {
            1
        };
        let mut spec = ConvSpec {
            groups,
            ..ConvSpec::default()
        };
        let mut taps = Vec::new();
        for &n in &x.ty.shape[2..] {
            let high = self.rng.below(2);
            // An empty axis needs padding for the kernel to fit.
            let low = if n + high == 0 { 1 } else { self.rng.below(2) };
            let dilation = 1 + self.rng.below(2);
            let fitting = (n + low + high - 1) / dilation + 1;
            taps.push(1 + self.rng.below(fitting.min(3)));
            spec.stride.push(1 + self.rng.below(2));
            spec.low.push(low);
            spec.high.push(high);
            spec.dilation.push(dilation);
        }
        let out_channels = groups * (1 + self.rng.below(2));
        let mut w_shape = vec![out_channels, channels / groups];
        w_shape.extend_from_slice(&taps);
        let w = self.new_param(TensorType::f32(w_shape));
        let y = self.push(Op::Conv(spec.clone()), &[&x, &w]);
        let y = self.rescale(y);
        let terms = x.ty.shape[0] * y.ty.shape[2..].iter().product::<usize>();
        match self.rng.below(4) {
            0 => {
                let input = x.ty.shape[2..].to_vec();
                let dx = self.push(Op::ConvInputGrad { spec, input }, &[&y, &w]);
                self.rescale(dx);
            }
            1 if terms <= SUM_LENGTH_MAX => {
                let dw = self.push(Op::ConvFilterGrad { spec, taps }, &[&x, &y]);
                self.rescale(dw);
            }
            _ => {}
        }
    }

    /// A pooling of an f32 value of rank 3 or more with a random window, stride and
    /// padding (at most half the window, as PyTorch allows, so no window is all
    /// padding); then, half the time, its gradient with the (rescaled) output as the
    /// output gradient.
    fn pool(&mut self) {
        let x = self
            .choose(|value| value.is_f32() && value.ty.rank() >= 3)
            .expect("checked by can_take");
        let kind = self.pick(&PoolKind::ALL);
        let mut spec = PoolSpec::default();
        for &n in &x.ty.shape[2..] {
            let window = 1 + self.rng.below(3);
            let half = window / 2;
            let low = self.rng.below(half + 1);
            // An empty or short axis is padded until the window fits.
            let high = self.rng.below(half + 1).max(window.saturating_sub(n + low));
            spec.window.push(window);
            spec.stride.push(1 + self.rng.below(2));
            spec.low.push(low);
            spec.high.push(high);
        }
        let y = self.push(
            Op::Pool {
                kind,
                spec: spec.clone(),
            },
            &[&x],
        );
        if self.chance(1, 2) {
            let y = self.rescale(y);
            let dx = self.push(Op::PoolGrad { kind, spec }, &[&x, &y]);
            self.rescale(dx);
        }
    }

    /// The positions along a random axis of a random shape.
    fn iota(&mut self) {
        let shape = self.shape(self.max_rank);
        let axis = self.rng.below(shape.len());
        self.push(Op::Iota { axis, shape }, &[]);
    }

    /// A sample seeded by the graph's seed input.
    fn random(&mut self) {
        let seed = match self.seed.clone() {
            Some(seed) => seed,
            None => {
                let seed = self.new_input(TensorType::i32(Vec::<usize>::new()));
                self.values.pop();
                self.seed = Some(seed.clone());
                seed
            }
        };
        let dist = if self.chance(1, 2) {
            Distribution::Uniform
        } else {
            Distribution::Normal
        };
        let stream = self.rng.below(3) as u32;
        let shape = self.shape(self.max_rank);
        self.push(
            Op::Random {
                dist,
                stream,
                shape,
            },
            &[&seed],
        );
    }
    /// `gather(x, indices, axis, batch_dims)` with `batch_dims` 0 or (when `axis` is
    /// past it) 1, then half of the time `scatter_add` of the result back into x's
    /// shape (repeated indices sum; the sum is rescaled).
    fn gather(&mut self) {
        let x = self.numeric();
        let x = if x.ty.rank() == 0 {
            self.push(Op::Reshape { shape: vec![1] }, &[&x])
        } else {
            x
        };
        let rank = x.ty.rank();
        let axis = self.rng.below(rank);
        let batch_dims = usize::from(axis >= 1 && self.chance(1, 3));
        // The result's rank is rank - 1 + (indices' rank - batch_dims).
        let max_index_rank = self.max_rank + 1 + batch_dims - rank;
        let batch = &x.ty.shape[..batch_dims];
        let existing = self.choose(|value| {
            value.ty.dtype == DType::I32
                && value.ty.rank() >= batch_dims
                && value.ty.rank() <= max_index_rank
                && value.ty.shape[..batch_dims] == *batch
        });
        let indices = match existing {
            Some(indices) => indices,
            None => {
                let mut shape = batch.to_vec();
                shape.push(self.extent());
                self.new_leaf(TensorType::i32(shape))
            }
        };
        let gathered = self.push(Op::Gather { axis, batch_dims }, &[&x, &indices]);
        if self.chance(1, 2) {
            let extent = x.ty.shape[axis];
            let op = Op::ScatterAdd {
                axis,
                batch_dims,
                extent,
            };
            let sum = self.push(op, &[&gathered, &indices]);
            self.rescale(sum);
        }
    }

    // ---- outputs and updates ------------------------------------------------------------

    /// Gives a random parameter a new value of its type: an existing op value, or the
    /// parameter combined with another value (one op).
    fn add_update(&mut self) {
        let params = self.graph.params().to_vec();
        let param = self.pick(&params);
        let param = self
            .values
            .iter()
            .find(|value| value.id == param)
            .expect("parameters are remembered")
            .clone();
        let existing = self.choose(|value| value.ty == param.ty && value.computed);
        let value = match existing {
            Some(value) if self.chance(1, 2) => value,
            _ => {
                let other = self.operand(&param.ty);
                let op = self.pick(&[BinaryOp::Add, BinaryOp::Sub, BinaryOp::Max]);
                self.push(Op::Binary(op), &[&param, &other])
            }
        };
        self.graph
            .set_update(param.id, value.id)
            .expect("the value has the parameter's type");
    }

    /// Names 1 to 3 distinct op values as outputs, the most recent first so that the
    /// last step is never dead. Without ops, the first input is the output.
    fn add_outputs(&mut self) {
        let mut computed: Vec<NodeId> = self
            .values
            .iter()
            .filter(|value| value.computed)
            .map(|value| value.id)
            .collect();
        let Some(last) = computed.pop() else {
            let first = self.graph.inputs()[0];
            self.graph
                .set_output("out0", first)
                .expect("the first output name is free");
            return;
        };
        let mut outputs = vec![last];
        let wanted = 1 + self.rng.below(3);
        while outputs.len() < wanted && !computed.is_empty() {
            let index = self.rng.below(computed.len());
            outputs.push(computed.swap_remove(index));
        }
        for (position, id) in outputs.into_iter().enumerate() {
            self.graph
                .set_output(&format!("out{position}"), id)
                .expect("output names are numbered, so fresh");
        }
    }
}

/// How many products each element of a convolution op sums.
fn conv_terms(op: &Op, operands: &[&Value]) -> usize {
    let b = &operands[1].ty.shape;
    match op {
        Op::Conv(_) => b[1..].iter().product(),
        Op::ConvInputGrad { spec, .. } => b[2..].iter().product::<usize>() * b[0] / spec.groups,
        _ => b[0] * b[2..].iter().product::<usize>(),
    }
}

/// An interval holding every element of `op` applied to values in the operands'
/// intervals (on random feeds, where no NaN arises).
fn interval(op: &Op, operands: &[&Value], result: &TensorType) -> (f64, f64) {
    let span = |values: [f64; 4]| {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    };
    let (lo, hi) = match op {
        Op::Input { .. } | Op::Parameter { .. } | Op::Constant { .. } => {
            unreachable!("leaves are given their interval when they are made")
        }
        Op::Unary(unary) => {
            let x = operands[0];
            match unary {
                UnaryOp::Neg => (-x.hi, -x.lo),
                UnaryOp::Exp => (x.lo.exp(), x.hi.exp()),
                UnaryOp::Log => (x.lo.ln(), x.hi.ln()),
                UnaryOp::Relu => (x.lo.max(0.0), x.hi.max(0.0)),
                UnaryOp::Abs if x.lo >= 0.0 => (x.lo, x.hi),
                UnaryOp::Abs if x.hi <= 0.0 => (-x.hi, -x.lo),
                UnaryOp::Abs => (0.0, x.hi.max(-x.lo)),
                // Decreasing.
                UnaryOp::Rsqrt => (unary.apply(x.hi), unary.apply(x.lo)),
                // Non-decreasing.
                UnaryOp::Sqrt
                | UnaryOp::Sign
                | UnaryOp::Sigmoid
                | UnaryOp::Tanh
                | UnaryOp::Softplus
                | UnaryOp::Expm1
                | UnaryOp::Log1p
                | UnaryOp::Erf => (unary.apply(x.lo), unary.apply(x.hi)),
            }
        }
        Op::Binary(binary) => {
            let (a, b) = (operands[0], operands[1]);
            match binary {
                BinaryOp::Add => (a.lo + b.lo, a.hi + b.hi),
                BinaryOp::Sub => (a.lo - b.hi, a.hi - b.lo),
                BinaryOp::Mul => span([a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]),
                // The divisor's interval excludes zero.
                BinaryOp::Div => span([a.lo / b.lo, a.lo / b.hi, a.hi / b.lo, a.hi / b.hi]),
                BinaryOp::Max => (a.lo.max(b.lo), a.hi.max(b.hi)),
                BinaryOp::Min => (a.lo.min(b.lo), a.hi.min(b.hi)),
                // A positive base: monotone in each operand, so a corner is extreme.
                BinaryOp::Pow => span([
                    a.lo.powf(b.lo),
                    a.lo.powf(b.hi),
                    a.hi.powf(b.lo),
                    a.hi.powf(b.hi),
                ]),
            }
        }
        Op::Compare(_) | Op::OneHot { .. } => (0.0, 1.0),
        Op::Iota { axis, shape } => (0.0, shape[*axis].saturating_sub(1) as f64),
        Op::Random { dist, .. } => match dist {
            Distribution::Uniform => (0.0, 1.0),
            // |z| ≤ 5.42 (the extreme of the 23-bit grid).
            Distribution::Normal => (-5.5, 5.5),
        },
        Op::Pool { kind, .. } => match kind {
            PoolKind::Max => (operands[0].lo, operands[0].hi),
            PoolKind::Avg => (operands[0].lo.min(0.0), operands[0].hi.max(0.0)),
        },
        // An element gets at most one contribution from each of the (at most window
        // size) windows that cover it.
        Op::PoolGrad { spec, .. } => {
            let (dy, count) = (operands[1], spec.count() as f64);
            (dy.lo.min(0.0) * count, dy.hi.max(0.0) * count)
        }
        Op::Conv(_) | Op::ConvInputGrad { .. } | Op::ConvFilterGrad { .. } => {
            let (a, b) = (operands[0], operands[1]);
            let terms = conv_terms(op, operands) as f64;
            let (lo, hi) = span([a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]);
            (lo.min(0.0) * terms, hi.max(0.0) * terms)
        }
        Op::Select => {
            let (a, b) = (operands[1], operands[2]);
            (a.lo.min(b.lo), a.hi.max(b.hi))
        }
        Op::Cast { to } => {
            let x = operands[0];
            match to {
                DType::Bool => (0.0, 1.0),
                // Truncation toward zero keeps the interval's integer part.
                DType::I32 => (x.lo.trunc(), x.hi.trunc()),
                DType::F32 => (x.lo, x.hi),
            }
        }
        Op::Broadcast { .. } | Op::Reshape { .. } | Op::Transpose { .. } | Op::Slice { .. } => {
            (operands[0].lo, operands[0].hi)
        }
        Op::Pad { value, .. } => (operands[0].lo.min(*value), operands[0].hi.max(*value)),
        Op::Concat { .. } => (
            operands[0].lo.min(operands[1].lo),
            operands[0].hi.max(operands[1].hi),
        ),
        // An index out of range reads 0.
        Op::Gather { .. } => (operands[0].lo.min(0.0), operands[0].hi.max(0.0)),
        // Each element sums at most one update per gathered index (or none: 0).
        Op::ScatterAdd { batch_dims, .. } => {
            let (updates, indices) = (operands[0], operands[1]);
            let count = indices.ty.shape[*batch_dims..].iter().product::<usize>() as f64;
            ((updates.lo * count).min(0.0), (updates.hi * count).max(0.0))
        }
        Op::Reduce { op, axes } => {
            let x = operands[0];
            match op {
                ReduceOp::Sum => {
                    let count = axes.iter().map(|&axis| x.ty.shape[axis]).product::<usize>() as f64;
                    (x.lo * count, x.hi * count)
                }
                ReduceOp::Max | ReduceOp::Mean => (x.lo, x.hi),
            }
        }
        Op::MatMul { transpose_a, .. } => {
            let (a, b) = (operands[0], operands[1]);
            let (_, k) = matrix_dims(&a.ty.shape, *transpose_a);
            let (lo, hi) = span([a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]);
            (lo * k as f64, hi * k as f64)
        }
    };
    // i32 arithmetic wraps around (and casts saturate): past the i32 range any
    // i32 value is possible.
    let (i32_min, i32_max) = (f64::from(i32::MIN), f64::from(i32::MAX));
    if result.dtype == DType::I32 && (lo < i32_min || hi > i32_max) {
        return (i32_min, i32_max);
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::{evaluate, Precision};
    use crate::text::print;
    use crate::verify::verify;
    use std::collections::BTreeSet;

    fn op_count(graph: &Graph) -> usize {
        graph
            .node_ids()
            .into_iter()
            .filter(|&id| !graph.op(id).is_leaf())
            .count()
    }

    #[test]
    fn every_graph_verifies_and_stays_finite_on_random_feeds() {
        let options = RandomGraphOptions::default();
        for seed in 0..200 {
            let graph = random_graph(&mut Rng::new(seed), &options);
            verify(&graph).unwrap_or_else(|err| panic!("seed {seed}: {err}\n{}", print(&graph)));
            let ops = op_count(&graph);
            assert!(
                (1..=options.max_nodes).contains(&ops),
                "seed {seed}: {ops} ops"
            );
            assert!((1..=3).contains(&graph.outputs().len()), "seed {seed}");
            let feeds = random_feeds(&graph, &mut Rng::new(seed));
            for precision in [Precision::F64, Precision::F32] {
                let evaluation = evaluate(&graph, &feeds, precision)
                    .unwrap_or_else(|err| panic!("seed {seed}: {err}"));
                for (id, value) in &evaluation.values {
                    assert!(
                        value.data.iter().all(|v| v.is_finite()),
                        "seed {seed}: {id} = {value}\n{}",
                        print(&graph)
                    );
                }
                // Named results stay near the magnitude cap (a difference of two
                // capped values can reach twice the cap).
                for (name, value) in evaluation.outputs.iter().chain(&evaluation.updates) {
                    assert!(
                        value.data.iter().all(|v| v.abs() <= 2.0 * MAGNITUDE_CAP),
                        "seed {seed}: {name} = {value}\n{}",
                        print(&graph)
                    );
                }
            }
        }
    }

    #[test]
    fn graphs_cover_the_op_set() {
        let mut seen = BTreeSet::new();
        let mut updates = 0;
        let mut unit_axes = 0;
        for seed in 0..200 {
            let graph = random_graph(&mut Rng::new(seed), &RandomGraphOptions::default());
            updates += graph.updates().len();
            for id in graph.node_ids() {
                let node = graph.node(id);
                seen.insert(node.op.mnemonic());
                if let Op::Cast { to } = node.op {
                    let from = graph.ty(graph.operands(id)[0]).dtype;
                    seen.insert(match (from, to) {
                        (DType::F32, DType::I32) => "cast f32->i32",
                        (DType::F32, DType::Bool) => "cast f32->bool",
                        (DType::I32, DType::F32) => "cast i32->f32",
                        (DType::Bool, DType::F32) => "cast bool->f32",
                        _ => "cast other",
                    });
                }
                if !node.op.is_leaf() && node.ty.dtype == DType::I32 {
                    seen.insert("i32 op");
                }
                unit_axes += usize::from(node.ty.shape.contains(&1));
            }
        }
        let extras = [
            "cast f32->i32",
            "cast f32->bool",
            "cast i32->f32",
            "cast bool->f32",
            "i32 op",
        ];
        let expected: Vec<&str> = crate::op::MNEMONICS.iter().copied().chain(extras).collect();
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|name| !seen.contains(name))
            .collect();
        assert!(missing.is_empty(), "never generated: {missing:?}");
        assert!(updates >= 20, "only {updates} updates in 200 graphs");
        assert!(
            unit_axes >= 200,
            "only {unit_axes} values with an extent-1 axis"
        );
    }

    #[test]
    fn same_seed_gives_the_same_graph_and_feeds() {
        let options = RandomGraphOptions::default();
        let a = random_graph(&mut Rng::new(42), &options);
        let b = random_graph(&mut Rng::new(42), &options);
        assert_eq!(print(&a), print(&b));
        assert_ne!(print(&a), print(&random_graph(&mut Rng::new(43), &options)));
        assert_eq!(
            random_feeds(&a, &mut Rng::new(1)),
            random_feeds(&b, &mut Rng::new(1))
        );
    }

    #[test]
    fn options_bound_size_rank_extent_and_dtypes() {
        for seed in 0..100 {
            let options = RandomGraphOptions {
                max_nodes: 6,
                max_rank: 2,
                max_extent: 3,
                allow_int: false,
                ..RandomGraphOptions::default()
            };
            let graph = random_graph(&mut Rng::new(seed), &options);
            verify(&graph).unwrap();
            assert!(op_count(&graph) <= 6);
            for id in graph.node_ids() {
                let ty = graph.ty(id);
                assert!(ty.rank() <= 2, "seed {seed}: {ty}");
                assert_ne!(ty.dtype, DType::I32, "seed {seed}");
            }
            let first = &graph.ty(graph.inputs()[0]).shape;
            assert!(
                first.iter().all(|&extent| (1..=3).contains(&extent)),
                "{first:?}"
            );
        }
        for max_nodes in [0, 1, 2] {
            for seed in 0..50 {
                let options = RandomGraphOptions {
                    max_nodes,
                    ..RandomGraphOptions::default()
                };
                let graph = random_graph(&mut Rng::new(seed), &options);
                verify(&graph).unwrap();
                assert!(op_count(&graph) <= max_nodes);
                assert!(!graph.outputs().is_empty());
            }
        }
    }

    #[test]
    fn awkward_and_empty_graphs_verify_and_use_what_they_promise() {
        let options = RandomGraphOptions {
            awkward_constants: true,
            zero_extents: true,
            ..RandomGraphOptions::default()
        };
        let (mut awkward, mut empty, mut nan_results) = (BTreeSet::new(), 0, 0);
        for seed in 0..300 {
            let graph = random_graph(&mut Rng::new(seed), &options);
            verify(&graph).unwrap_or_else(|err| panic!("seed {seed}: {err}\n{}", print(&graph)));
            for id in graph.node_ids() {
                if let Op::Constant { value } = graph.op(id) {
                    if AWKWARD_F32[..17]
                        .iter()
                        .any(|a| crate::scalar::same(*a, *value))
                        && !matches!(*value, 0.0 | 1.0 | -1.0)
                    {
                        awkward.insert(value.to_bits());
                    }
                }
                empty += usize::from(graph.ty(id).num_elements() == 0);
            }
            let feeds = random_awkward_feeds(&graph, &mut Rng::new(seed));
            let evaluation = evaluate(&graph, &feeds, Precision::F32).unwrap();
            nan_results += evaluation
                .outputs
                .values()
                .filter(|value| value.data.iter().any(|v| v.is_nan()))
                .count();
        }
        // Every awkward f32 value but the plain zero shows up as a constant.
        assert!(
            awkward.len() >= 15,
            "only {} awkward constants",
            awkward.len()
        );
        assert!(empty >= 100, "only {empty} empty values");
        assert!(nan_results >= 30, "only {nan_results} outputs with a NaN");
        // The default options stay well conditioned: no empty values.
        let graph = random_graph(&mut Rng::new(3), &RandomGraphOptions::default());
        assert!(graph
            .node_ids()
            .iter()
            .all(|&id| graph.ty(id).num_elements() > 0));
    }

    #[test]
    fn feeds_follow_the_documented_distributions() {
        let mut graph = Graph::new("feeds");
        let x = graph.input("x", TensorType::f32([40, 50])).unwrap();
        let labels = graph.input("labels", TensorType::i32([400])).unwrap();
        let flat = graph.reshape(labels, [20, 20]).unwrap();
        graph.parameter("mask", TensorType::bool([30])).unwrap();
        let wide = graph.one_hot(flat, 3).unwrap();
        let narrow = graph.one_hot(labels, 2).unwrap();
        graph.set_output("x", x).unwrap();
        graph.set_output("wide", wide).unwrap();
        graph.set_output("narrow", narrow).unwrap();
        let feeds = random_feeds(&graph, &mut Rng::new(5));
        assert_eq!(
            feeds.keys().collect::<Vec<_>>(),
            vec!["labels", "mask", "x"]
        );
        let x = &feeds["x"];
        assert_eq!(x.ty(), TensorType::f32([40, 50]));
        assert!(x
            .data
            .iter()
            .all(|&v| v != 0.0 && (-2.0..=2.0).contains(&v)));
        assert!(x.data.iter().all(|&v| f64::from(v as f32) == v));
        assert!(x.data.iter().any(|&v| v < -1.5) && x.data.iter().any(|&v| v > 1.5));
        // The largest depth reading the labels (3, through a reshape) sets their range.
        let labels = &feeds["labels"].data;
        let in_range = labels.iter().filter(|&&v| (0.0..3.0).contains(&v)).count();
        assert!(labels.iter().all(|&v| (-1.0..=3.0).contains(&v)));
        assert!((300..400).contains(&in_range), "{in_range} of 400 in range");
        assert!(labels.contains(&-1.0) && labels.contains(&3.0) && labels.contains(&2.0));
        let mask = &feeds["mask"].data;
        assert!(mask.contains(&0.0) && mask.contains(&1.0));
        assert!(mask.iter().all(|&v| v == 0.0 || v == 1.0));
        // Without a one_hot reader, random_tensor's default depth of 4 applies.
        let plain = random_tensor(&mut Rng::new(6), &TensorType::i32([200]));
        assert!(plain.data.iter().all(|&v| (-1.0..=4.0).contains(&v)));
        assert!(plain.data.contains(&3.0) && plain.data.contains(&4.0));
    }
}
