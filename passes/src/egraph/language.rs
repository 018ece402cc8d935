//! The egg language of kiln's op set and the analysis that types every e-class.
//!
//! Every op is an e-node whose value operands come first and whose attributes follow
//! as leaf children: `Dims` for reduction axes and permutations (and the integer
//! attributes of `gather`, `[axis, batch_dims]`, and `scatter_add`, `[axis,
//! batch_dims, extent]`), `Type` for the
//! declared type of inputs, parameters and constants and for the target of
//! `broadcast`, `reshape`, `cast` and `random.*` (its shape), `Float` for a constant's value, `Num` for
//! `one_hot`'s depth and `Name` for input and parameter names. So an e-node holds all
//! its op needs, and the analysis types it with the IR's own typing rule.
//!
//! In patterns: `(transpose ?x [1,0])`, `(const 1.0 f32[2,3])`, `(one_hot ?x 10)`.
//! A float leaf needs a `.`, an exponent, `inf` or `nan`, so `1` stays an integer.
//!
//! The analysis also knows which classes are splat constants (a `const`, and what
//! movement ops, reductions, matmuls and elementwise ops make of splats, and what a
//! reduction over an empty axis gives) and folds them: such a class gets a `const`
//! node with the canonical value. Folding computes in the class's dtype with
//! `kiln_ir::scalar`, the rules compiled code follows (f32 rounding after every op
//! and of every constant, i32 wrapping, Rust `as` casts, sums in order from +0), so a
//! folded result is bit for bit what the unfolded graph computes. Splat values are
//! canonical: values of their dtype (`const 16777217.0 : f32` is the splat
//! 16777216.0) with one NaN, and two splats are the same only if their bits are, so
//! +0 and -0 never stand for each other.

use egg::{define_language, Analysis, DidMerge, EGraph, Id, Symbol};
use kiln_ir::op::{matrix_dims, ConvSpec, PoolKind, PoolSpec};
use kiln_ir::scalar;
use kiln_ir::{BinaryOp, CmpOp, DType, Distribution, Op, ReduceOp, TensorType, UnaryOp};
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A constant's value as a leaf, compared by its bits so that it can be hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Float(u64);

impl Float {
    pub fn new(value: f64) -> Float {
        Float(value.to_bits())
    }

    pub fn value(self) -> f64 {
        f64::from_bits(self.0)
    }
}

impl FromStr for Float {
    type Err = String;

    /// Only float literals parse: an integer like `1` must stay a `Num` leaf (an axis).
    fn from_str(text: &str) -> Result<Float, String> {
        let value = match text {
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            "nan" => f64::NAN,
            _ if text.contains(['.', 'e', 'E']) => text
                .parse()
                .map_err(|_| format!("{text} is not a float literal"))?,
            _ => return Err(format!("{text} is not a float literal")),
        };
        Ok(Float::new(value))
    }
}

impl fmt::Display for Float {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.value();
        if value.is_nan() {
            f.write_str("nan")
        } else if value.is_infinite() {
            f.write_str(if value > 0.0 { "inf" } else { "-inf" })
        } else {
            // `{:?}` always prints a `.` or an exponent, so the text parses back as a float.
            write!(f, "{value:?}")
        }
    }
}

/// Axes or a permutation, written `[1,0]` (no spaces, so it is one token).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dims(pub Vec<usize>);

impl FromStr for Dims {
    type Err = String;

    fn from_str(text: &str) -> Result<Dims, String> {
        let inner = text
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .ok_or_else(|| format!("{text} is not a list like [1,0]"))?;
        if inner.is_empty() {
            return Ok(Dims(Vec::new()));
        }
        inner
            .split(',')
            .map(|item| {
                item.parse()
                    .map_err(|_| format!("{item} in {text} is not an axis"))
            })
            .collect::<Result<_, _>>()
            .map(Dims)
    }
}

impl fmt::Display for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(usize::to_string).collect();
        write!(f, "[{}]", items.join(","))
    }
}

/// A tensor type as a leaf, written as in the text IR: `f32[2,3]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Type(pub TensorType);

impl PartialOrd for Type {
    fn partial_cmp(&self, other: &Type) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Type {
    fn cmp(&self, other: &Type) -> Ordering {
        (self.0.dtype, &self.0.shape).cmp(&(other.0.dtype, &other.0.shape))
    }
}

impl FromStr for Type {
    type Err = String;

    fn from_str(text: &str) -> Result<Type, String> {
        let open = text
            .find('[')
            .ok_or_else(|| format!("{text} is not a type like f32[2,3]"))?;
        let dtype = DType::from_name(&text[..open])
            .ok_or_else(|| format!("{text} is not a type like f32[2,3]"))?;
        let Dims(shape) = text[open..].parse()?;
        Ok(Type(TensorType::new(dtype, shape)))
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

define_language! {
    /// kiln's op set as an egg language: value operands first, attribute leaves last.
    /// Leaf variants parse in the order listed; `Name` accepts any token, so it is last.
    pub enum KilnLang {
        "input" = Input([Id; 2]),
        "param" = Param([Id; 2]),
        "const" = Const([Id; 2]),
        "neg" = Neg(Id),
        "exp" = Exp(Id),
        "log" = Log(Id),
        "relu" = Relu(Id),
        "sqrt" = Sqrt(Id),
        "rsqrt" = Rsqrt(Id),
        "abs" = Abs(Id),
        "sign" = Sign(Id),
        "sigmoid" = Sigmoid(Id),
        "tanh" = Tanh(Id),
        "softplus" = Softplus(Id),
        "expm1" = Expm1(Id),
        "log1p" = Log1p(Id),
        "erf" = Erf(Id),
        "add" = Add([Id; 2]),
        "sub" = Sub([Id; 2]),
        "mul" = Mul([Id; 2]),
        "div" = Div([Id; 2]),
        "max" = Max([Id; 2]),
        "min" = Min([Id; 2]),
        "pow" = Pow([Id; 2]),
        "cmp.eq" = CmpEq([Id; 2]),
        "cmp.ne" = CmpNe([Id; 2]),
        "cmp.lt" = CmpLt([Id; 2]),
        "cmp.le" = CmpLe([Id; 2]),
        "cmp.gt" = CmpGt([Id; 2]),
        "cmp.ge" = CmpGe([Id; 2]),
        "select" = Select([Id; 3]),
        "cast" = Cast([Id; 2]),
        "broadcast" = Broadcast([Id; 2]),
        "reshape" = Reshape([Id; 2]),
        "reduce_sum" = ReduceSum([Id; 2]),
        "reduce_max" = ReduceMax([Id; 2]),
        "reduce_mean" = ReduceMean([Id; 2]),
        "transpose" = Transpose([Id; 2]),
        "matmul" = MatMul([Id; 2]),
        "matmul.tn" = MatMulTn([Id; 2]),
        "matmul.nt" = MatMulNt([Id; 2]),
        "matmul.tt" = MatMulTt([Id; 2]),
        "one_hot" = OneHot([Id; 2]),
        "slice" = Slice([Id; 4]),
        "pad" = Pad([Id; 5]),
        "concat" = Concat([Id; 3]),
        "random.uniform" = RandomUniform([Id; 3]),
        "random.normal" = RandomNormal([Id; 3]),
        "iota" = Iota([Id; 2]),
        "max_pool" = MaxPool([Id; 5]),
        "avg_pool" = AvgPool([Id; 5]),
        "max_pool_grad" = MaxPoolGrad([Id; 6]),
        "avg_pool_grad" = AvgPoolGrad([Id; 6]),
        "conv" = Conv([Id; 7]),
        "conv_input_grad" = ConvInputGrad([Id; 8]),
        "conv_filter_grad" = ConvFilterGrad([Id; 8]),
        // (params, indices, [axis, batch_dims]) and (updates, indices, [axis,
        // batch_dims, extent]).
        "gather" = Gather([Id; 3]),
        "scatter_add" = ScatterAdd([Id; 3]),
        Num(i64),
        Float(Float),
        Dims(Dims),
        Type(Type),
        Name(Symbol),
    }
}

pub type KilnEGraph = EGraph<KilnLang, KilnAnalysis>;

/// What the analysis knows about an e-class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassData {
    /// The type of the class's value; `None` for attribute leaves (axes, types, names).
    pub ty: Option<TensorType>,
    /// The value of every element, when the class is known to be a splat constant:
    /// canonical (see [`canonical_splat`]), so compared by bits.
    pub splat: Option<f64>,
}

/// Types every class with the IR's typing rules, tracks splat constants, and folds
/// elementwise and movement ops on splat constants into `const` nodes.
#[derive(Clone, Copy, Debug, Default)]
pub struct KilnAnalysis;

/// An e-node read back as a kiln op.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeOp {
    pub op: Op,
    /// The value operands, in operand order (attribute leaves are folded into `op`).
    pub operands: Vec<Id>,
    /// The type an input, parameter or constant declares; `None` for other ops.
    pub declared: Option<TensorType>,
}

/// The only node of an attribute-leaf class: rules never merge leaves, so a leaf
/// class holds exactly the leaf it was made for.
pub fn leaf(egraph: &KilnEGraph, id: Id) -> &KilnLang {
    &egraph[id].nodes[0]
}

fn leaf_bug(expected: &str, found: &KilnLang) -> ! {
    panic!("expected a {expected} leaf, found {found} (a kiln bug in the egraph pass)")
}

/// The dims of an attribute leaf class, if it is one.
pub fn dims_leaf(egraph: &KilnEGraph, id: Id) -> Option<&[usize]> {
    match leaf(egraph, id) {
        KilnLang::Dims(Dims(dims)) => Some(dims),
        _ => None,
    }
}

/// The type of an attribute leaf class, if it is one.
pub fn type_leaf(egraph: &KilnEGraph, id: Id) -> Option<&TensorType> {
    match leaf(egraph, id) {
        KilnLang::Type(Type(ty)) => Some(ty),
        _ => None,
    }
}

fn dims(egraph: &KilnEGraph, id: Id) -> Vec<usize> {
    match leaf(egraph, id) {
        KilnLang::Dims(Dims(dims)) => dims.clone(),
        other => leaf_bug("dims", other),
    }
}

/// A convolution's attributes from its five leaves (stride, low, high, dilation,
/// groups).
fn conv_spec(egraph: &KilnEGraph, leaves: &[Id]) -> ConvSpec {
    let groups = match leaf(egraph, leaves[4]) {
        KilnLang::Num(groups) => usize::try_from(*groups).expect("groups come from usize"),
        other => leaf_bug("integer", other),
    };
    ConvSpec {
        stride: dims(egraph, leaves[0]),
        low: dims(egraph, leaves[1]),
        high: dims(egraph, leaves[2]),
        dilation: dims(egraph, leaves[3]),
        groups,
    }
}

/// The five attribute leaves of a convolution, added to `egraph`.
fn conv_leaves(egraph: &mut KilnEGraph, spec: &ConvSpec) -> [Id; 5] {
    let groups = i64::try_from(spec.groups).expect("groups fit in i64");
    [
        egraph.add(KilnLang::Dims(Dims(spec.stride.clone()))),
        egraph.add(KilnLang::Dims(Dims(spec.low.clone()))),
        egraph.add(KilnLang::Dims(Dims(spec.high.clone()))),
        egraph.add(KilnLang::Dims(Dims(spec.dilation.clone()))),
        egraph.add(KilnLang::Num(groups)),
    ]
}

/// A pooling's attributes from its four leaves (window, stride, low, high).
fn pool_spec(egraph: &KilnEGraph, leaves: &[Id]) -> PoolSpec {
    PoolSpec {
        window: dims(egraph, leaves[0]),
        stride: dims(egraph, leaves[1]),
        low: dims(egraph, leaves[2]),
        high: dims(egraph, leaves[3]),
    }
}

/// The four attribute leaves of a pooling, added to `egraph`.
fn pool_leaves(egraph: &mut KilnEGraph, spec: &PoolSpec) -> [Id; 4] {
    [&spec.window, &spec.stride, &spec.low, &spec.high]
        .map(|dims| egraph.add(KilnLang::Dims(Dims(dims.clone()))))
}

fn declared_type(egraph: &KilnEGraph, id: Id) -> TensorType {
    match leaf(egraph, id) {
        KilnLang::Type(Type(ty)) => ty.clone(),
        other => leaf_bug("type", other),
    }
}

fn name(egraph: &KilnEGraph, id: Id) -> String {
    match leaf(egraph, id) {
        KilnLang::Name(name) => name.as_str().to_string(),
        other => leaf_bug("name", other),
    }
}

/// Reads an e-node as a kiln op; `None` for attribute leaves.
pub fn node_op(egraph: &KilnEGraph, node: &KilnLang) -> Option<NodeOp> {
    use KilnLang as L;
    let value = |op: Op, operands: &[Id]| NodeOp {
        op,
        operands: operands.to_vec(),
        declared: None,
    };
    let matmul = |transpose_a: bool, transpose_b: bool| Op::MatMul {
        transpose_a,
        transpose_b,
    };
    let reduce = |op: ReduceOp, axes: Id| Op::Reduce {
        op,
        axes: dims(egraph, axes),
    };
    let node_op = match node {
        L::Input([name_id, ty]) => NodeOp {
            op: Op::Input {
                name: name(egraph, *name_id),
            },
            operands: Vec::new(),
            declared: Some(declared_type(egraph, *ty)),
        },
        L::Param([name_id, ty]) => NodeOp {
            op: Op::Parameter {
                name: name(egraph, *name_id),
            },
            operands: Vec::new(),
            declared: Some(declared_type(egraph, *ty)),
        },
        L::Const([value_id, ty]) => {
            let value = match leaf(egraph, *value_id) {
                L::Float(value) => value.value(),
                other => leaf_bug("float", other),
            };
            NodeOp {
                op: Op::Constant { value },
                operands: Vec::new(),
                declared: Some(declared_type(egraph, *ty)),
            }
        }
        L::Neg(x) => value(Op::Unary(UnaryOp::Neg), &[*x]),
        L::Exp(x) => value(Op::Unary(UnaryOp::Exp), &[*x]),
        L::Log(x) => value(Op::Unary(UnaryOp::Log), &[*x]),
        L::Relu(x) => value(Op::Unary(UnaryOp::Relu), &[*x]),
        L::Sqrt(x) => value(Op::Unary(UnaryOp::Sqrt), &[*x]),
        L::Rsqrt(x) => value(Op::Unary(UnaryOp::Rsqrt), &[*x]),
        L::Abs(x) => value(Op::Unary(UnaryOp::Abs), &[*x]),
        L::Sign(x) => value(Op::Unary(UnaryOp::Sign), &[*x]),
        L::Sigmoid(x) => value(Op::Unary(UnaryOp::Sigmoid), &[*x]),
        L::Tanh(x) => value(Op::Unary(UnaryOp::Tanh), &[*x]),
        L::Softplus(x) => value(Op::Unary(UnaryOp::Softplus), &[*x]),
        L::Expm1(x) => value(Op::Unary(UnaryOp::Expm1), &[*x]),
        L::Log1p(x) => value(Op::Unary(UnaryOp::Log1p), &[*x]),
        L::Erf(x) => value(Op::Unary(UnaryOp::Erf), &[*x]),
        L::Add(ab) => value(Op::Binary(BinaryOp::Add), ab),
        L::Sub(ab) => value(Op::Binary(BinaryOp::Sub), ab),
        L::Mul(ab) => value(Op::Binary(BinaryOp::Mul), ab),
        L::Div(ab) => value(Op::Binary(BinaryOp::Div), ab),
        L::Max(ab) => value(Op::Binary(BinaryOp::Max), ab),
        L::Min(ab) => value(Op::Binary(BinaryOp::Min), ab),
        L::Pow(ab) => value(Op::Binary(BinaryOp::Pow), ab),
        L::CmpEq(ab) => value(Op::Compare(CmpOp::Eq), ab),
        L::CmpNe(ab) => value(Op::Compare(CmpOp::Ne), ab),
        L::CmpLt(ab) => value(Op::Compare(CmpOp::Lt), ab),
        L::CmpLe(ab) => value(Op::Compare(CmpOp::Le), ab),
        L::CmpGt(ab) => value(Op::Compare(CmpOp::Gt), ab),
        L::CmpGe(ab) => value(Op::Compare(CmpOp::Ge), ab),
        L::Select(abc) => value(Op::Select, abc),
        L::Cast([x, ty]) => value(
            Op::Cast {
                to: declared_type(egraph, *ty).dtype,
            },
            &[*x],
        ),
        L::Broadcast([x, ty]) => value(
            Op::Broadcast {
                shape: declared_type(egraph, *ty).shape,
            },
            &[*x],
        ),
        L::Reshape([x, ty]) => value(
            Op::Reshape {
                shape: declared_type(egraph, *ty).shape,
            },
            &[*x],
        ),
        L::ReduceSum([x, axes]) => value(reduce(ReduceOp::Sum, *axes), &[*x]),
        L::ReduceMax([x, axes]) => value(reduce(ReduceOp::Max, *axes), &[*x]),
        L::ReduceMean([x, axes]) => value(reduce(ReduceOp::Mean, *axes), &[*x]),
        L::Transpose([x, perm]) => value(
            Op::Transpose {
                perm: dims(egraph, *perm),
            },
            &[*x],
        ),
        L::MatMul(ab) => value(matmul(false, false), ab),
        L::MatMulTn(ab) => value(matmul(true, false), ab),
        L::MatMulNt(ab) => value(matmul(false, true), ab),
        L::MatMulTt(ab) => value(matmul(true, true), ab),
        L::Slice([x, starts, ends, steps]) => value(
            Op::Slice {
                starts: dims(egraph, *starts),
                ends: dims(egraph, *ends),
                steps: dims(egraph, *steps),
            },
            &[*x],
        ),
        L::Pad([x, low, high, interior, fill]) => value(
            Op::Pad {
                low: dims(egraph, *low),
                high: dims(egraph, *high),
                interior: dims(egraph, *interior),
                value: match leaf(egraph, *fill) {
                    L::Float(value) => value.value(),
                    other => leaf_bug("float", other),
                },
            },
            &[*x],
        ),
        L::Concat([a, b, axis]) => {
            let axis = match leaf(egraph, *axis) {
                L::Num(axis) => usize::try_from(*axis).expect("concat axes come from usize"),
                other => leaf_bug("integer", other),
            };
            value(Op::Concat { axis }, &[*a, *b])
        }
        L::OneHot([x, depth]) => {
            let depth = match leaf(egraph, *depth) {
                L::Num(depth) => usize::try_from(*depth).expect("one_hot depths come from usize"),
                other => leaf_bug("integer", other),
            };
            value(Op::OneHot { depth }, &[*x])
        }
        L::RandomUniform([seed, stream, ty]) | L::RandomNormal([seed, stream, ty]) => {
            let stream = match leaf(egraph, *stream) {
                L::Num(stream) => u32::try_from(*stream).expect("random streams come from u32"),
                other => leaf_bug("integer", other),
            };
            let dist = if matches!(node, L::RandomUniform(_)) {
                Distribution::Uniform
            } else {
                Distribution::Normal
            };
            let shape = declared_type(egraph, *ty).shape;
            value(
                Op::Random {
                    dist,
                    stream,
                    shape,
                },
                &[*seed],
            )
        }
        L::Iota([axis, ty]) => {
            let axis = match leaf(egraph, *axis) {
                L::Num(axis) => usize::try_from(*axis).expect("iota axes come from usize"),
                other => leaf_bug("integer", other),
            };
            let shape = declared_type(egraph, *ty).shape;
            value(Op::Iota { axis, shape }, &[])
        }
        L::MaxPool([x, attributes @ ..]) => value(
            Op::Pool {
                kind: PoolKind::Max,
                spec: pool_spec(egraph, attributes),
            },
            &[*x],
        ),
        L::AvgPool([x, attributes @ ..]) => value(
            Op::Pool {
                kind: PoolKind::Avg,
                spec: pool_spec(egraph, attributes),
            },
            &[*x],
        ),
        L::MaxPoolGrad([x, dy, attributes @ ..]) => value(
            Op::PoolGrad {
                kind: PoolKind::Max,
                spec: pool_spec(egraph, attributes),
            },
            &[*x, *dy],
        ),
        L::AvgPoolGrad([x, dy, attributes @ ..]) => value(
            Op::PoolGrad {
                kind: PoolKind::Avg,
                spec: pool_spec(egraph, attributes),
            },
            &[*x, *dy],
        ),
        L::Conv([x, w, attributes @ ..]) => {
            value(Op::Conv(conv_spec(egraph, attributes)), &[*x, *w])
        }
        L::ConvInputGrad([dy, w, attributes @ .., ty]) => value(
            Op::ConvInputGrad {
                spec: conv_spec(egraph, attributes),
                input: declared_type(egraph, *ty).shape[2..].to_vec(),
            },
            &[*dy, *w],
        ),
        L::ConvFilterGrad([x, dy, attributes @ .., ty]) => value(
            Op::ConvFilterGrad {
                spec: conv_spec(egraph, attributes),
                taps: declared_type(egraph, *ty).shape[2..].to_vec(),
            },
            &[*x, *dy],
        ),
        L::Gather([params, indices, attributes]) => match dims(egraph, *attributes)[..] {
            [axis, batch_dims] => value(Op::Gather { axis, batch_dims }, &[*params, *indices]),
            _ => leaf_bug("[axis, batch_dims]", leaf(egraph, *attributes)),
        },
        L::ScatterAdd([updates, indices, attributes]) => match dims(egraph, *attributes)[..] {
            [axis, batch_dims, extent] => value(
                Op::ScatterAdd {
                    axis,
                    batch_dims,
                    extent,
                },
                &[*updates, *indices],
            ),
            _ => leaf_bug("[axis, batch_dims, extent]", leaf(egraph, *attributes)),
        },
        L::Num(_) | L::Float(_) | L::Dims(_) | L::Type(_) | L::Name(_) => return None,
    };
    Some(node_op)
}

/// Adds the e-node of `op` applied to the value classes `operands`; see [`op_node`].
pub fn add_op(egraph: &mut KilnEGraph, op: &Op, operands: &[Id], ty: &TensorType) -> Id {
    let node = op_node(egraph, op, operands, ty);
    egraph.add(node)
}

/// The e-node of `op` applied to the value classes `operands`, after adding the
/// leaves its attributes need; `ty` is the node's type (the declared type of a leaf
/// op, the target of broadcast, reshape and cast).
pub fn op_node(egraph: &mut KilnEGraph, op: &Op, operands: &[Id], ty: &TensorType) -> KilnLang {
    use KilnLang as L;
    // Only the ops that carry their type (leaves, broadcast, reshape, cast, random,
    // iota, the convolution gradients) use this.
    let type_leaf = |egraph: &mut KilnEGraph| egraph.add(L::Type(Type(ty.clone())));
    let one = || operands[0];
    let two = || [operands[0], operands[1]];
    match op {
        Op::Input { name } => {
            L::Input([egraph.add(L::Name(Symbol::from(name))), type_leaf(egraph)])
        }
        Op::Parameter { name } => {
            L::Param([egraph.add(L::Name(Symbol::from(name))), type_leaf(egraph)])
        }
        Op::Constant { value } => {
            L::Const([egraph.add(L::Float(Float::new(*value))), type_leaf(egraph)])
        }
        Op::Unary(unary) => match unary {
            UnaryOp::Neg => L::Neg(one()),
            UnaryOp::Exp => L::Exp(one()),
            UnaryOp::Log => L::Log(one()),
            UnaryOp::Relu => L::Relu(one()),
            UnaryOp::Sqrt => L::Sqrt(one()),
            UnaryOp::Rsqrt => L::Rsqrt(one()),
            UnaryOp::Abs => L::Abs(one()),
            UnaryOp::Sign => L::Sign(one()),
            UnaryOp::Sigmoid => L::Sigmoid(one()),
            UnaryOp::Tanh => L::Tanh(one()),
            UnaryOp::Softplus => L::Softplus(one()),
            UnaryOp::Expm1 => L::Expm1(one()),
            UnaryOp::Log1p => L::Log1p(one()),
            UnaryOp::Erf => L::Erf(one()),
        },
        Op::Binary(binary) => match binary {
            BinaryOp::Add => L::Add(two()),
            BinaryOp::Sub => L::Sub(two()),
            BinaryOp::Mul => L::Mul(two()),
            BinaryOp::Div => L::Div(two()),
            BinaryOp::Max => L::Max(two()),
            BinaryOp::Min => L::Min(two()),
            BinaryOp::Pow => L::Pow(two()),
        },
        Op::Compare(cmp) => match cmp {
            CmpOp::Eq => L::CmpEq(two()),
            CmpOp::Ne => L::CmpNe(two()),
            CmpOp::Lt => L::CmpLt(two()),
            CmpOp::Le => L::CmpLe(two()),
            CmpOp::Gt => L::CmpGt(two()),
            CmpOp::Ge => L::CmpGe(two()),
        },
        Op::Select => L::Select([operands[0], operands[1], operands[2]]),
        Op::Cast { .. } => L::Cast([one(), type_leaf(egraph)]),
        Op::Broadcast { .. } => L::Broadcast([one(), type_leaf(egraph)]),
        Op::Reshape { .. } => L::Reshape([one(), type_leaf(egraph)]),
        Op::Reduce { op: reduce, axes } => {
            let axes = egraph.add(L::Dims(Dims(axes.clone())));
            match reduce {
                ReduceOp::Sum => L::ReduceSum([one(), axes]),
                ReduceOp::Max => L::ReduceMax([one(), axes]),
                ReduceOp::Mean => L::ReduceMean([one(), axes]),
            }
        }
        Op::Transpose { perm } => L::Transpose([one(), egraph.add(L::Dims(Dims(perm.clone())))]),
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => match (transpose_a, transpose_b) {
            (false, false) => L::MatMul(two()),
            (true, false) => L::MatMulTn(two()),
            (false, true) => L::MatMulNt(two()),
            (true, true) => L::MatMulTt(two()),
        },
        Op::OneHot { depth } => {
            let depth = i64::try_from(*depth).expect("a one_hot depth fits in i64");
            L::OneHot([one(), egraph.add(L::Num(depth))])
        }
        Op::Slice {
            starts,
            ends,
            steps,
        } => L::Slice([
            one(),
            egraph.add(L::Dims(Dims(starts.clone()))),
            egraph.add(L::Dims(Dims(ends.clone()))),
            egraph.add(L::Dims(Dims(steps.clone()))),
        ]),
        Op::Pad {
            low,
            high,
            interior,
            value,
        } => L::Pad([
            one(),
            egraph.add(L::Dims(Dims(low.clone()))),
            egraph.add(L::Dims(Dims(high.clone()))),
            egraph.add(L::Dims(Dims(interior.clone()))),
            egraph.add(L::Float(Float::new(*value))),
        ]),
        Op::Concat { axis } => {
            let axis = i64::try_from(*axis).expect("a concat axis fits in i64");
            L::Concat([operands[0], operands[1], egraph.add(L::Num(axis))])
        }
        Op::Iota { axis, .. } => {
            let axis = i64::try_from(*axis).expect("an iota axis fits in i64");
            L::Iota([egraph.add(L::Num(axis)), type_leaf(egraph)])
        }
        Op::Pool { kind, spec } => {
            let [a, b, c, d] = pool_leaves(egraph, spec);
            match kind {
                PoolKind::Max => L::MaxPool([one(), a, b, c, d]),
                PoolKind::Avg => L::AvgPool([one(), a, b, c, d]),
            }
        }
        Op::PoolGrad { kind, spec } => {
            let [a, b, c, d] = pool_leaves(egraph, spec);
            let [x, dy] = two();
            match kind {
                PoolKind::Max => L::MaxPoolGrad([x, dy, a, b, c, d]),
                PoolKind::Avg => L::AvgPoolGrad([x, dy, a, b, c, d]),
            }
        }
        Op::Conv(spec) => {
            let [a, b, c, d, e] = conv_leaves(egraph, spec);
            L::Conv([operands[0], operands[1], a, b, c, d, e])
        }
        Op::ConvInputGrad { spec, .. } => {
            let [a, b, c, d, e] = conv_leaves(egraph, spec);
            let ty = type_leaf(egraph);
            L::ConvInputGrad([operands[0], operands[1], a, b, c, d, e, ty])
        }
        Op::ConvFilterGrad { spec, .. } => {
            let [a, b, c, d, e] = conv_leaves(egraph, spec);
            let ty = type_leaf(egraph);
            L::ConvFilterGrad([operands[0], operands[1], a, b, c, d, e, ty])
        }
        Op::Random { dist, stream, .. } => {
            let children = [
                one(),
                egraph.add(L::Num(i64::from(*stream))),
                type_leaf(egraph),
            ];
            match dist {
                Distribution::Uniform => L::RandomUniform(children),
                Distribution::Normal => L::RandomNormal(children),
            }
        }
        Op::Gather { axis, batch_dims } => {
            let attributes = egraph.add(L::Dims(Dims(vec![*axis, *batch_dims])));
            L::Gather([operands[0], operands[1], attributes])
        }
        Op::ScatterAdd {
            axis,
            batch_dims,
            extent,
        } => {
            let attributes = egraph.add(L::Dims(Dims(vec![*axis, *batch_dims, *extent])));
            L::ScatterAdd([operands[0], operands[1], attributes])
        }
    }
}

/// `value` as the canonical splat of `dtype`: a value of the dtype (f32 rounding,
/// i32 conversion) with every NaN the same NaN, so that equal splats have equal bits.
pub fn canonical_splat(value: f64, dtype: DType) -> f64 {
    let value = scalar::to_dtype(value, dtype);
    if value.is_nan() {
        f64::NAN
    } else {
        value
    }
}

/// Reductions and matmuls of splats are folded by running the accumulation itself,
/// up to this many steps (the fold must stay cheap next to saturation).
const FOLD_STEPS_MAX: usize = 1 << 12;

/// The splat value of `op` applied to operands with the given types and splat values
/// (computed in the dtype as compiled code computes it), or `None` where the result is
/// not a known splat. A reduction over an empty axis, or a matmul whose contraction
/// is empty, is a splat whatever its operand.
fn fold_splat(
    op: &Op,
    ty: &TensorType,
    types: &[&TensorType],
    operands: &[Option<f64>],
) -> Option<f64> {
    if let Op::Constant { value } = op {
        return Some(canonical_splat(*value, ty.dtype));
    }
    let folded = match op {
        Op::Reduce { op: reduce, axes } => {
            let dtype = types[0].dtype;
            let count: usize = axes.iter().map(|&axis| types[0].shape[axis]).product();
            let init = scalar::reduce_init(*reduce, dtype);
            let x = if count == 0 {
                init
            } else if count > FOLD_STEPS_MAX {
                return None;
            } else {
                operands[0]?
            };
            let sum = (0..count).fold(init, |acc, _| scalar::reduce_step(*reduce, dtype, acc, x));
            match reduce {
                ReduceOp::Mean => scalar::mean_finish(sum, count),
                ReduceOp::Sum | ReduceOp::Max => sum,
            }
        }
        Op::MatMul { transpose_a, .. } => {
            let (_, k) = matrix_dims(&types[0].shape, *transpose_a);
            if k > FOLD_STEPS_MAX {
                return None;
            }
            let (a, b) = if k == 0 {
                (0.0, 0.0)
            } else {
                (operands[0]? as f32, operands[1]? as f32)
            };
            f64::from((0..k).fold(0.0_f32, |acc, _| scalar::fma_f32(a, b, acc)))
        }
        _ => {
            let values: Vec<f64> = operands.iter().copied().collect::<Option<_>>()?;
            match op {
                Op::Broadcast { .. } | Op::Reshape { .. } | Op::Transpose { .. } => values[0],
                // Leaves other than constants have no operand, and no splat.
                _ => scalar::elementwise(op, types.first()?.dtype, &values)?,
            }
        }
    };
    Some(canonical_splat(folded, ty.dtype))
}

impl Analysis<KilnLang> for KilnAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut KilnEGraph, enode: &KilnLang) -> ClassData {
        let Some(NodeOp {
            op,
            operands,
            declared,
        }) = node_op(egraph, enode)
        else {
            return ClassData {
                ty: None,
                splat: None,
            };
        };
        let types: Vec<&TensorType> = operands
            .iter()
            .map(|&id| {
                egraph[id].data.ty.as_ref().unwrap_or_else(|| {
                    panic!("operand of {enode} is an attribute leaf (a kiln bug in a rule)")
                })
            })
            .collect();
        let ty = match declared {
            Some(ty) => ty,
            None => op.infer_type(&types).unwrap_or_else(|err| {
                panic!("a rewrite built an ill-typed {enode}: {err} (a kiln bug in a rule)")
            }),
        };
        let splats: Vec<Option<f64>> = operands.iter().map(|&id| egraph[id].data.splat).collect();
        let splat = fold_splat(&op, &ty, &types, &splats);
        ClassData {
            ty: Some(ty),
            splat,
        }
    }

    fn merge(&mut self, into: &mut ClassData, from: ClassData) -> DidMerge {
        if into.ty != from.ty {
            let show = |ty: &Option<TensorType>| match ty {
                Some(ty) => ty.to_string(),
                None => "an attribute leaf".to_string(),
            };
            panic!(
                "the egraph pass merged a class of type {} with a class of type {} (a kiln bug in a rewrite rule)",
                show(&into.ty),
                show(&from.ty)
            );
        }
        // Sound rules only merge classes with the same value, so two splats in one
        // class have the same bits (splats are canonical): +0 and -0 are different
        // values. A class without elements has no value to disagree about.
        match (into.splat, from.splat) {
            (None, Some(value)) => {
                into.splat = Some(value);
                DidMerge(true, false)
            }
            (Some(_), None) => DidMerge(false, true),
            (Some(a), Some(b)) => {
                let empty = into.ty.as_ref().is_some_and(|ty| ty.num_elements() == 0);
                if !scalar::same(a, b) && !empty {
                    panic!(
                        "the egraph pass merged splats {a:?} and {b:?} of type {} (a kiln bug in a rewrite rule)",
                        into.ty.as_ref().map_or_else(String::new, |ty| ty.to_string())
                    );
                }
                DidMerge(false, false)
            }
            (None, None) => DidMerge(false, false),
        }
    }

    /// Constant folding: a value class known to be a splat gets a `const` node with
    /// the canonical value, which the extraction prefers to the ops that compute it
    /// (and which joins classes of equal constants written differently).
    fn modify(egraph: &mut KilnEGraph, id: Id) {
        let data = &egraph[id].data;
        let (Some(ty), Some(value)) = (data.ty.clone(), data.splat) else {
            return;
        };
        let canonical = Float::new(value);
        let has_canonical = egraph[id].nodes.iter().any(|node| match node {
            KilnLang::Const([value_id, _]) => {
                matches!(leaf(egraph, *value_id), KilnLang::Float(v) if *v == canonical)
            }
            _ => false,
        });
        if has_canonical {
            return;
        }
        let constant = add_op(egraph, &Op::Constant { value }, &[], &ty);
        egraph.union(id, constant);
    }
}
