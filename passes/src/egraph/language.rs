//! The e-graph language of kiln's op set and the analysis that types every class.
//!
//! Op attributes are leaf children (`Dims` for axes and permutations, `Type` for the
//! target of broadcast/reshape/cast and the type of leaves, `Float` for constant
//! values, `Num` for one_hot's depth, `Symbol` for names), so every e-node carries
//! what the op needs and the analysis can type it with the IR's own rule.

use egg::{define_language, Analysis, DidMerge, EGraph, Id, Symbol};
use kiln_ir::{BinaryOp, CmpOp, DType, Op, ReduceOp, TensorType, UnaryOp};
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A constant's value as a leaf: parses only literals with a '.', an exponent, `inf`
/// or `nan`, so that `1` in a pattern stays an integer child.
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
    fn from_str(text: &str) -> Result<Float, String> {
        let value = match text {
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            "nan" => f64::NAN,
            _ if text.contains(['.', 'e', 'E']) => {
                text.parse().map_err(|_| format!("{text} is not a float"))?
            }
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
            write!(f, "{value:?}")
        }
    }
}

/// A list of axes or a permutation, written `[1,0]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dims(pub Vec<usize>);

impl FromStr for Dims {
    type Err = String;
    fn from_str(text: &str) -> Result<Dims, String> {
        let inner = text
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .ok_or_else(|| format!("{text} is not a [..] list"))?;
        if inner.is_empty() {
            return Ok(Dims(Vec::new()));
        }
        inner
            .split(',')
            .map(|item| item.parse().map_err(|_| format!("{item} is not an axis")))
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
            .ok_or_else(|| format!("{text} is not a type"))?;
        let dtype =
            DType::from_name(&text[..open]).ok_or_else(|| format!("{text} is not a type"))?;
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
    /// kiln's op set as an egg language; attribute leaves come last in each node.
    pub enum KilnLang {
        "input" = Input([Id; 2]),
        "param" = Param([Id; 2]),
        "const" = Const([Id; 2]),
        "neg" = Neg(Id),
        "exp" = Exp(Id),
        "log" = Log(Id),
        "relu" = Relu(Id),
        "add" = Add([Id; 2]),
        "sub" = Sub([Id; 2]),
        "mul" = Mul([Id; 2]),
        "div" = Div([Id; 2]),
        "max" = Max([Id; 2]),
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
        "matmul.tn" = MatMulTN([Id; 2]),
        "matmul.nt" = MatMulNT([Id; 2]),
        "matmul.tt" = MatMulTT([Id; 2]),
        "one_hot" = OneHot([Id; 2]),
        Num(i64),
        Float(Float),
        Dims(Dims),
        Type(Type),
        Name(Symbol),
    }
}

/// What the analysis knows about a class: the type of its value (none for attribute
/// leaves) and, for attribute leaves, the leaf itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassData {
    pub ty: Option<TensorType>,
    /// A splat constant's value, if the class is one.
    pub constant: Option<f64>,
}

/// Types every class with the IR's typing rules.
#[derive(Clone, Copy, Debug, Default)]
pub struct KilnAnalysis;

pub type KilnEGraph = EGraph<KilnLang, KilnAnalysis>;

/// The attribute leaf of a class (attribute classes hold exactly one leaf node).
pub fn leaf(egraph: &KilnEGraph, id: Id) -> &KilnLang {
    &egraph[id].nodes[0]
}

fn dims(egraph: &KilnEGraph, id: Id) -> Vec<usize> {
    match leaf(egraph, id) {
        KilnLang::Dims(Dims(dims)) => dims.clone(),
        other => panic!("expected a dims leaf, found {other:?} (a kiln bug in the egraph pass)"),
    }
}

fn ty_leaf(egraph: &KilnEGraph, id: Id) -> TensorType {
    match leaf(egraph, id) {
        KilnLang::Type(Type(ty)) => ty.clone(),
        other => panic!("expected a type leaf, found {other:?} (a kiln bug in the egraph pass)"),
    }
}

fn name_leaf(egraph: &KilnEGraph, id: Id) -> String {
    match leaf(egraph, id) {
        KilnLang::Name(name) => name.as_str().to_string(),
        other => panic!("expected a name leaf, found {other:?} (a kiln bug in the egraph pass)"),
    }
}

/// The kiln op of an e-node, its value operands, and (for leaves) its declared type.
/// `None` for attribute leaves.
pub fn to_op(egraph: &KilnEGraph, node: &KilnLang) -> Option<(Op, Vec<Id>, Option<TensorType>)> {
    use KilnLang as L;
    let matmul = |a: bool, b: bool| Op::MatMul {
        transpose_a: a,
        transpose_b: b,
    };
    let reduce = |op: ReduceOp, axes: Id| Op::Reduce {
        op,
        axes: dims(egraph, axes),
    };
    let (op, operands, ty) = match node {
        L::Input([name, ty]) => (
            Op::Input {
                name: name_leaf(egraph, *name),
            },
            vec![],
            Some(ty_leaf(egraph, *ty)),
        ),
        L::Param([name, ty]) => (
            Op::Parameter {
                name: name_leaf(egraph, *name),
            },
            vec![],
            Some(ty_leaf(egraph, *ty)),
        ),
        L::Const([value, ty]) => {
            let KilnLang::Float(value) = leaf(egraph, *value) else {
                panic!("const without a float leaf (a kiln bug in the egraph pass)")
            };
            (
                Op::Constant {
                    value: value.value(),
                },
                vec![],
                Some(ty_leaf(egraph, *ty)),
            )
        }
        L::Neg(x) => (Op::Unary(UnaryOp::Neg), vec![*x], None),
        L::Exp(x) => (Op::Unary(UnaryOp::Exp), vec![*x], None),
        L::Log(x) => (Op::Unary(UnaryOp::Log), vec![*x], None),
        L::Relu(x) => (Op::Unary(UnaryOp::Relu), vec![*x], None),
        L::Add(ab) => (Op::Binary(BinaryOp::Add), ab.to_vec(), None),
        L::Sub(ab) => (Op::Binary(BinaryOp::Sub), ab.to_vec(), None),
        L::Mul(ab) => (Op::Binary(BinaryOp::Mul), ab.to_vec(), None),
        L::Div(ab) => (Op::Binary(BinaryOp::Div), ab.to_vec(), None),
        L::Max(ab) => (Op::Binary(BinaryOp::Max), ab.to_vec(), None),
        L::CmpEq(ab) => (Op::Compare(CmpOp::Eq), ab.to_vec(), None),
        L::CmpNe(ab) => (Op::Compare(CmpOp::Ne), ab.to_vec(), None),
        L::CmpLt(ab) => (Op::Compare(CmpOp::Lt), ab.to_vec(), None),
        L::CmpLe(ab) => (Op::Compare(CmpOp::Le), ab.to_vec(), None),
        L::CmpGt(ab) => (Op::Compare(CmpOp::Gt), ab.to_vec(), None),
        L::CmpGe(ab) => (Op::Compare(CmpOp::Ge), ab.to_vec(), None),
        L::Select(abc) => (Op::Select, abc.to_vec(), None),
        L::Cast([x, ty]) => (
            Op::Cast {
                to: ty_leaf(egraph, *ty).dtype,
            },
            vec![*x],
            None,
        ),
        L::Broadcast([x, ty]) => (
            Op::Broadcast {
                shape: ty_leaf(egraph, *ty).shape,
            },
            vec![*x],
            None,
        ),
        L::Reshape([x, ty]) => (
            Op::Reshape {
                shape: ty_leaf(egraph, *ty).shape,
            },
            vec![*x],
            None,
        ),
        L::ReduceSum([x, axes]) => (reduce(ReduceOp::Sum, *axes), vec![*x], None),
        L::ReduceMax([x, axes]) => (reduce(ReduceOp::Max, *axes), vec![*x], None),
        L::ReduceMean([x, axes]) => (reduce(ReduceOp::Mean, *axes), vec![*x], None),
        L::Transpose([x, perm]) => (
            Op::Transpose {
                perm: dims(egraph, *perm),
            },
            vec![*x],
            None,
        ),
        L::MatMul(ab) => (matmul(false, false), ab.to_vec(), None),
        L::MatMulTN(ab) => (matmul(true, false), ab.to_vec(), None),
        L::MatMulNT(ab) => (matmul(false, true), ab.to_vec(), None),
        L::MatMulTT(ab) => (matmul(true, true), ab.to_vec(), None),
        L::OneHot([x, depth]) => {
            let KilnLang::Num(depth) = leaf(egraph, *depth) else {
                panic!("one_hot without a depth leaf (a kiln bug in the egraph pass)")
            };
            let depth = usize::try_from(*depth).expect("depths come from usize");
            (Op::OneHot { depth }, vec![*x], None)
        }
        L::Num(_) | L::Float(_) | L::Dims(_) | L::Type(_) | L::Name(_) => return None,
    };
    Some((op, operands, ty))
}

impl Analysis<KilnLang> for KilnAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut KilnEGraph, enode: &KilnLang) -> ClassData {
        let Some((op, operands, declared)) = to_op(egraph, enode) else {
            return ClassData {
                ty: None,
                constant: None,
            };
        };
        let constant = match &op {
            Op::Constant { value } => Some(*value),
            _ => None,
        };
        let ty = match declared {
            Some(ty) => ty,
            None => {
                let types: Vec<&TensorType> = operands
                    .iter()
                    .map(|&id| {
                        egraph[id]
                            .data
                            .ty
                            .as_ref()
                            .expect("operands are values, not attribute leaves")
                    })
                    .collect();
                op.infer_type(&types).unwrap_or_else(|err| {
                    panic!("a rewrite built an ill-typed {enode:?}: {err} (a kiln bug in a rule)")
                })
            }
        };
        ClassData {
            ty: Some(ty),
            constant,
        }
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        assert_eq!(
            a.ty, b.ty,
            "a rewrite merged classes of different types (a kiln bug in a rule)"
        );
        match (a.constant, b.constant) {
            (None, Some(value)) => {
                a.constant = Some(value);
                DidMerge(true, false)
            }
            (Some(_), None) => DidMerge(false, true),
            _ => DidMerge(false, false),
        }
    }
}
