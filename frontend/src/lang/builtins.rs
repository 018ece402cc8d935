//! The functions a forward can call (ops, activations, reductions, losses) and the
//! arithmetic on values, with their arguments checked and located.

use super::ast::{Arg, BinOp};
use super::diagnostic::{ModelError, Span};
use super::elaborate::{at, Elaborator, Scope, Value};
use crate::activations as act;
use crate::builder::{Context, ModelBuilder};
use crate::conv::{self, Padding, Pool};
use crate::init::Init;
use crate::loss;
use crate::random;
use crate::tensors;
use kiln_ir::{BinaryOp, NodeId, UnaryOp};

/// Functions of one tensor with no other argument.
const UNARY: [(&str, UnaryOp); 14] = [
    ("exp", UnaryOp::Exp),
    ("log", UnaryOp::Log),
    ("sqrt", UnaryOp::Sqrt),
    ("rsqrt", UnaryOp::Rsqrt),
    ("abs", UnaryOp::Abs),
    ("sign", UnaryOp::Sign),
    ("erf", UnaryOp::Erf),
    ("expm1", UnaryOp::Expm1),
    ("log1p", UnaryOp::Log1p),
    ("relu", UnaryOp::Relu),
    ("sigmoid", UnaryOp::Sigmoid),
    ("tanh", UnaryOp::Tanh),
    ("softplus", UnaryOp::Softplus),
    ("neg", UnaryOp::Neg),
];

/// Every other function, for `is_function` and the "unknown function" message.
const OTHERS: [&str; 38] = [
    "eye",
    "max_pool2d",
    "avg_pool2d",
    "max_pool1d",
    "avg_pool1d",
    "flatten",
    "concat",
    "slice",
    "pad",
    "gelu",
    "gelu_tanh",
    "heaviside",
    "elu",
    "leaky_relu",
    "clamp",
    "maxout",
    "softmax",
    "log_softmax",
    "pow",
    "maximum",
    "minimum",
    "sum",
    "mean",
    "max",
    "reshape",
    "transpose",
    "permute",
    "cross_entropy",
    "mse_loss",
    "dropout",
    "rand_like",
    "randn_like",
    "binary_cross_entropy_with_logits",
    "soft_cross_entropy",
    "hinge_loss",
    "perceptron_loss",
    "gather",
    "scatter_add",
];

/// Whether `name` is a function of the language.
pub fn is_function(name: &str) -> bool {
    UNARY.iter().any(|(n, _)| *n == name) || OTHERS.contains(&name) || name == "one_hot"
}

/// `value` as a size (a non-negative whole number).
pub fn size(value: &Value, span: &Span, what: &str) -> Result<usize, ModelError> {
    match value {
        Value::Int(n) if *n >= 0 => usize::try_from(*n).map_err(|_| {
            ModelError::new(span.clone(), format!("{n} is too large")).expected(what.to_string())
        }),
        Value::Int(n) => Err(ModelError::new(span.clone(), format!("{n} is negative"))
            .expected(format!("{what}: a whole number ≥ 0"))),
        other => Err(
            ModelError::new(span.clone(), format!("this is {}", other.describe()))
                .expected(format!("{what}: a whole number")),
        ),
    }
}

/// Arguments bound to a function's parameters, read by position.
pub struct Bound {
    what: String,
    slots: Vec<Option<(Value, Span)>>,
    /// The call, for an argument that was not given.
    span: Span,
}

impl Bound {
    pub fn new(what: &str, slots: Vec<Option<(Value, Span)>>, span: Span) -> Bound {
        Bound {
            what: what.to_string(),
            slots,
            span,
        }
    }

    pub fn wrong(&self, slot: usize, name: &str, expected: &str) -> ModelError {
        match &self.slots[slot] {
            Some((value, span)) => ModelError::new(
                span.clone(),
                format!("`{name}` of `{}` is {}", self.what, value.describe()),
            ),
            None => ModelError::new(
                self.span.clone(),
                format!("`{}` needs its argument `{name}`", self.what),
            ),
        }
        .expected(expected.to_string())
    }

    /// The value given for `slot` and where, if it was given.
    pub fn get(&self, slot: usize) -> Option<&(Value, Span)> {
        self.slots[slot].as_ref()
    }

    pub fn size(&self, slot: usize, name: &str) -> Result<usize, ModelError> {
        match &self.slots[slot] {
            Some((value, span)) => size(value, span, &format!("`{name}`")),
            None => Ok(0),
        }
    }

    pub fn tensor(&self, slot: usize, name: &str) -> Result<NodeId, ModelError> {
        match &self.slots[slot] {
            Some((Value::Tensor(id), _)) => Ok(*id),
            _ => Err(self.wrong(slot, name, "a tensor")),
        }
    }

    /// A number (whole or not) as it was given.
    pub fn number(&self, slot: usize, name: &str) -> Result<Value, ModelError> {
        match &self.slots[slot] {
            Some((value @ (Value::Int(_) | Value::Float(_)), _)) => Ok(value.clone()),
            _ => Err(self.wrong(slot, name, "a number")),
        }
    }

    /// A float, `default` when not given.
    pub fn float(&self, slot: usize, name: &str, default: f64) -> Result<f64, ModelError> {
        match &self.slots[slot] {
            None => Ok(default),
            Some((Value::Int(n), _)) => Ok(*n as f64),
            Some((Value::Float(x), _)) => Ok(*x),
            Some(_) => Err(self.wrong(slot, name, "a number")),
        }
    }

    /// A whole number (an axis may be negative), `default` when not given.
    pub fn int(
        &self,
        slot: usize,
        name: &str,
        default: Option<i64>,
    ) -> Result<Option<i64>, ModelError> {
        match &self.slots[slot] {
            None => Ok(default),
            Some((Value::Int(n), _)) => Ok(Some(*n)),
            Some(_) => Err(self.wrong(slot, name, "a whole number")),
        }
    }

    /// `true` or `false`, `default` when not given.
    /// A string argument, `default` when it is left out.
    pub fn string(&self, slot: usize, name: &str, default: &str) -> Result<String, ModelError> {
        match &self.slots[slot] {
            None => Ok(default.to_string()),
            Some((Value::Str(text), _)) => Ok(text.clone()),
            Some(_) => Err(self.wrong(slot, name, "a string")),
        }
    }

    pub fn flag(&self, slot: usize, name: &str, default: bool) -> Result<bool, ModelError> {
        match &self.slots[slot] {
            None => Ok(default),
            Some((Value::Bool(flag), _)) => Ok(*flag),
            Some(_) => Err(self.wrong(slot, name, "`true` or `false`")),
        }
    }

    /// A convolution's padding: `"valid"` (the default), `"same"`, or sizes as
    /// [`Bound::sizes`] reads them.
    pub fn padding(&self, slot: usize, one_d: bool) -> Result<Padding, ModelError> {
        match &self.slots[slot] {
            None => Ok(Padding::Valid),
            Some((Value::Str(text), _)) if text == "valid" => Ok(Padding::Valid),
            Some((Value::Str(text), _)) if text == "same" => Ok(Padding::Same),
            Some((Value::Int(_) | Value::Tuple(_), _)) => {
                self.sizes(slot, "padding", one_d, 0).map(Padding::Explicit)
            }
            Some(_) => Err(self.wrong(
                slot,
                "padding",
                "a whole number, a tuple of them, \"valid\" or \"same\"",
            )),
        }
    }

    /// Sizes per spatial axis `[height, width]`: one number for both (PyTorch's
    /// `kernel_size=3`) or a tuple `(h, w)`; for a 1-D layer (`one_d`) one number or
    /// `(w,)`, read as `[1, w]`. `default` for both when the argument is left out.
    pub fn sizes(
        &self,
        slot: usize,
        name: &str,
        one_d: bool,
        default: usize,
    ) -> Result<[usize; 2], ModelError> {
        let what = format!("`{name}`");
        let widen = |w: usize| if one_d { [1, w] } else { [w, w] };
        match &self.slots[slot] {
            None => Ok(widen(default)),
            Some((value @ Value::Int(_), span)) => size(value, span, &what).map(widen),
            Some((Value::Tuple(items), span)) => {
                let count = if one_d { 1 } else { 2 };
                if items.len() != count {
                    return Err(ModelError::new(
                        span.clone(),
                        format!("`{name}` has {} entries", items.len()),
                    )
                    .expected(format!("one per spatial axis: {count}")));
                }
                let sizes = items
                    .iter()
                    .map(|item| size(item, span, &what))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if one_d {
                    [1, sizes[0]]
                } else {
                    [sizes[0], sizes[1]]
                })
            }
            Some(_) => Err(self.wrong(slot, name, "a whole number or a tuple of them")),
        }
    }

    /// An initialiser by name (`"torch"`, the default, is PyTorch's for a layer
    /// with `fan_in` inputs).
    pub fn init(&self, slot: usize, fan_in: usize) -> Result<Init, ModelError> {
        let name = match &self.slots[slot] {
            None => "torch",
            Some((Value::Str(name), _)) => name.as_str(),
            Some(_) => return Err(self.wrong(slot, "init", INITS)),
        };
        Ok(match name {
            "torch" => Init::torch_linear(fan_in),
            "zeros" => Init::Zeros,
            "he_uniform" => Init::HeUniform,
            "he_normal" => Init::HeNormal,
            "glorot_uniform" => Init::GlorotUniform,
            other => {
                let span = self.slots[slot]
                    .as_ref()
                    .map_or(self.span.clone(), |(_, span)| span.clone());
                return Err(
                    ModelError::new(span, format!("unknown initialiser \"{other}\""))
                        .expected(INITS),
                );
            }
        })
    }
}

const INITS: &str = "\"torch\", \"zeros\", \"he_uniform\", \"he_normal\" or \"glorot_uniform\"";

/// `-value`.
pub fn negate(builder: &mut ModelBuilder, value: Value, span: &Span) -> Result<Value, ModelError> {
    match value {
        Value::Int(n) => n
            .checked_neg()
            .map(Value::Int)
            .ok_or_else(|| ModelError::new(span.clone(), "the negation overflows")),
        Value::Float(x) => Ok(Value::Float(-x)),
        Value::Tensor(id) => Ok(Value::Tensor(
            builder.graph().neg(id).context("neg").map_err(at(span))?,
        )),
        other => Err(ModelError::new(
            span.clone(),
            format!("{} cannot be negated", other.describe()),
        )
        .expected("a number or a tensor")),
    }
}

/// `a op b` on numbers (dimension arithmetic) or tensors (with NumPy broadcasting;
/// a number is a scalar of the tensor's dtype).
pub fn binary(
    builder: &mut ModelBuilder,
    op: BinOp,
    (a, a_span): (Value, &Span),
    (b, b_span): (Value, &Span),
    span: &Span,
) -> Result<Value, ModelError> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => int_arithmetic(op, x, y, b_span, span),
        (x @ (Value::Int(_) | Value::Float(_)), y @ (Value::Int(_) | Value::Float(_))) => {
            let (x, y) = (as_float(&x), as_float(&y));
            Ok(Value::Float(match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
                BinOp::MatMul => {
                    return Err(
                        ModelError::new(span.clone(), "`@` of two numbers").expected("two tensors")
                    )
                }
            }))
        }
        (Value::Tensor(x), Value::Tensor(y)) => tensor_binary(builder, op, x, y, span),
        (Value::Tensor(x), number @ (Value::Int(_) | Value::Float(_))) => {
            let y = builder
                .scalar_like(as_float(&number), x)
                .map_err(at(b_span))?;
            tensor_binary(builder, op, x, y, span)
        }
        (number @ (Value::Int(_) | Value::Float(_)), Value::Tensor(y)) => {
            let x = builder
                .scalar_like(as_float(&number), y)
                .map_err(at(a_span))?;
            tensor_binary(builder, op, x, y, span)
        }
        (x, y) => Err(ModelError::new(
            span.clone(),
            format!("`{}` of {} and {}", op.symbol(), x.describe(), y.describe()),
        )
        .expected("numbers or tensors")),
    }
}

fn as_float(value: &Value) -> f64 {
    match value {
        Value::Int(n) => *n as f64,
        Value::Float(x) => *x,
        _ => f64::NAN,
    }
}

/// Whole-number arithmetic, for dimensions: `/` must divide exactly.
fn int_arithmetic(
    op: BinOp,
    x: i64,
    y: i64,
    y_span: &Span,
    span: &Span,
) -> Result<Value, ModelError> {
    let result = match op {
        BinOp::Add => x.checked_add(y),
        BinOp::Sub => x.checked_sub(y),
        BinOp::Mul => x.checked_mul(y),
        BinOp::Div if y == 0 => {
            return Err(ModelError::new(y_span.clone(), "division by zero")
                .expected("a divisor other than 0"))
        }
        BinOp::Div if x % y != 0 => {
            return Err(
                ModelError::new(span.clone(), format!("{x} / {y} does not divide"))
                    .expected(format!("a multiple of {y}")),
            )
        }
        BinOp::Div => x.checked_div(y),
        BinOp::MatMul => {
            return Err(ModelError::new(span.clone(), "`@` of two numbers").expected("two tensors"))
        }
    };
    result
        .map(Value::Int)
        .ok_or_else(|| ModelError::new(span.clone(), "this arithmetic overflows"))
}

fn tensor_binary(
    builder: &mut ModelBuilder,
    op: BinOp,
    a: NodeId,
    b: NodeId,
    span: &Span,
) -> Result<Value, ModelError> {
    let id = match op {
        BinOp::Add => builder.binary(BinaryOp::Add, a, b),
        BinOp::Sub => builder.binary(BinaryOp::Sub, a, b),
        BinOp::Mul => builder.binary(BinaryOp::Mul, a, b),
        BinOp::Div => builder.binary(BinaryOp::Div, a, b),
        BinOp::MatMul => builder.graph().matmul(a, b).context("matmul"),
    }
    .map_err(at(span))?;
    Ok(Value::Tensor(id))
}

/// A call of the function `name`.
pub fn call(
    elaborator: &mut Elaborator<'_>,
    name: &str,
    args: &[Arg],
    scope: &Scope,
    name_span: &Span,
    span: &Span,
) -> Result<Value, ModelError> {
    if let Some(&(_, op)) = UNARY.iter().find(|(n, _)| *n == name) {
        let bound = elaborator.bind(name, &["x"], 1, args, scope, name_span)?;
        let x = bound.tensor(0, "x")?;
        let id = elaborator.builder().graph().unary(op, x).context(name);
        return Ok(Value::Tensor(id.map_err(at(span))?));
    }
    let mut bind = |names: &[&str], required: usize| {
        elaborator.bind(name, names, required, args, scope, name_span)
    };
    let tensor =
        |id: Result<NodeId, crate::builder::FrontendError>| id.map(Value::Tensor).map_err(at(span));
    match name {
        "gelu" | "gelu_tanh" | "heaviside" => {
            let bound = bind(&["x"], 1)?;
            let x = bound.tensor(0, "x")?;
            let builder = elaborator.builder();
            tensor(match name {
                "gelu" => act::gelu(builder, x),
                "gelu_tanh" => act::gelu_tanh(builder, x),
                _ => act::heaviside(builder, x),
            })
        }
        "elu" => {
            let bound = bind(&["x", "alpha"], 1)?;
            let (x, alpha) = (bound.tensor(0, "x")?, bound.float(1, "alpha", 1.0)?);
            tensor(act::elu(elaborator.builder(), x, alpha))
        }
        "leaky_relu" => {
            let bound = bind(&["x", "negative_slope"], 1)?;
            let x = bound.tensor(0, "x")?;
            let slope = bound.float(1, "negative_slope", 0.01)?;
            tensor(act::leaky_relu(elaborator.builder(), x, slope))
        }
        "clamp" => {
            let bound = bind(&["x", "min", "max"], 3)?;
            let x = bound.tensor(0, "x")?;
            let (low, high) = (bound.float(1, "min", 0.0)?, bound.float(2, "max", 0.0)?);
            tensor(act::clamp(elaborator.builder(), x, low, high))
        }
        "maxout" => {
            let bound = bind(&["x", "pieces"], 2)?;
            let (x, pieces) = (bound.tensor(0, "x")?, bound.size(1, "pieces")?);
            tensor(act::maxout(elaborator.builder(), x, pieces))
        }
        "softmax" | "log_softmax" => {
            let bound = bind(&["x", "axis"], 1)?;
            let x = bound.tensor(0, "x")?;
            let axis = bound.int(1, "axis", Some(-1))?.unwrap_or(-1) as isize;
            let builder = elaborator.builder();
            tensor(if name == "softmax" {
                act::softmax(builder, x, axis)
            } else {
                act::log_softmax(builder, x, axis)
            })
        }
        "pow" | "maximum" | "minimum" => {
            let bound = bind(&["x", "y"], 2)?;
            let x = bound.tensor(0, "x")?;
            let builder = elaborator.builder();
            let y = match bound.number(1, "y") {
                Ok(number) => builder
                    .scalar_like(as_float(&number), x)
                    .map_err(at(span))?,
                Err(_) => bound.tensor(1, "y")?,
            };
            let op = match name {
                "pow" => BinaryOp::Pow,
                "maximum" => BinaryOp::Max,
                _ => BinaryOp::Min,
            };
            tensor(builder.binary(op, x, y))
        }
        "sum" | "mean" | "max" => {
            let bound = bind(&["x", "axis", "keepdim"], 1)?;
            let x = bound.tensor(0, "x")?;
            let axis = bound.int(1, "axis", None)?;
            let keepdim = bound.flag(2, "keepdim", false)?;
            reduce(elaborator.builder(), name, x, axis, keepdim, span)
        }
        "transpose" => {
            let bound = bind(&["x", "dim0", "dim1"], 3)?;
            let x = bound.tensor(0, "x")?;
            let dims = [bound.int(1, "dim0", None)?, bound.int(2, "dim1", None)?];
            let builder = elaborator.builder();
            let rank = builder.ty(x).map_err(at(span))?.rank();
            let [a, b] = dims.map(|d| resolve_axis(d.unwrap_or(0), rank));
            let (Some(a), Some(b)) = (a, b) else {
                return Err(ModelError::new(
                    span.clone(),
                    format!("an axis out of range for rank {rank}"),
                )
                .expected(format!("axes in -{rank}..{rank}")));
            };
            let mut perm: Vec<usize> = (0..rank).collect();
            perm.swap(a, b);
            tensor(builder.graph().transpose(x, &perm).context("transpose"))
        }
        "reshape" | "permute" => variadic(elaborator, name, args, scope, span),
        "max_pool2d" | "avg_pool2d" | "max_pool1d" | "avg_pool1d" => {
            let bound = bind(&["x", "kernel_size", "stride", "padding"], 2)?;
            let x = bound.tensor(0, "x")?;
            let one_d = name.ends_with("1d");
            let kernel = bound.sizes(1, "kernel_size", one_d, 0)?;
            // PyTorch's default stride is the window.
            let stride = match &bound.slots[2] {
                None => kernel,
                Some(_) => bound.sizes(2, "stride", one_d, 1)?,
            };
            let padding = bound.sizes(3, "padding", one_d, 0)?;
            let pool = if name.starts_with("max") {
                Pool::Max
            } else {
                Pool::Avg
            };
            let builder = elaborator.builder();
            tensor(if one_d {
                conv::pool1d(builder, x, pool, kernel[1], stride[1], padding[1])
            } else {
                conv::pool2d(builder, x, pool, kernel, stride, padding)
            })
        }
        "flatten" => {
            let bound = bind(&["x"], 1)?;
            let x = bound.tensor(0, "x")?;
            tensor(conv::flatten(elaborator.builder(), x))
        }
        "concat" => {
            let bound = bind(&["a", "b", "axis"], 2)?;
            let (a, b) = (bound.tensor(0, "a")?, bound.tensor(1, "b")?);
            let axis = bound.int(2, "axis", Some(0))?.unwrap_or(0);
            let builder = elaborator.builder();
            let rank = builder.ty(a).map_err(at(span))?.rank();
            let axis = resolve_axis(axis, rank).ok_or_else(|| axis_error(axis, rank, span))?;
            tensor(builder.graph().concat(a, b, axis).context("concat"))
        }
        "slice" | "pad" => {
            let names: &[&str] = if name == "slice" {
                &["x", "axis", "start", "end", "step"]
            } else {
                &["x", "axis", "low", "high", "value"]
            };
            let bound = bind(names, 4)?;
            let x = bound.tensor(0, "x")?;
            let axis = bound.int(1, "axis", None)?.unwrap_or(0);
            let (first, second) = (bound.size(2, names[2])?, bound.size(3, names[3])?);
            let builder = elaborator.builder();
            let shape = builder.ty(x).map_err(at(span))?.shape.clone();
            let axis = resolve_axis(axis, shape.len())
                .ok_or_else(|| axis_error(axis, shape.len(), span))?;
            let graph = builder.graph();
            tensor(if name == "slice" {
                let mut starts = vec![0; shape.len()];
                let mut ends = shape.clone();
                let mut steps = vec![1; shape.len()];
                starts[axis] = first;
                ends[axis] = second;
                let step = bound.int(4, "step", Some(1))?.unwrap_or(1);
                steps[axis] = usize::try_from(step)
                    .ok()
                    .filter(|&step| step >= 1)
                    .ok_or_else(|| {
                        ModelError::new(span.clone(), format!("a slice with step {step}"))
                            .expected("a step of at least 1")
                    })?;
                graph.slice(x, &starts, &ends, &steps).context("slice")
            } else {
                let mut low = vec![0; shape.len()];
                let mut high = vec![0; shape.len()];
                low[axis] = first;
                high[axis] = second;
                let value = bound.float(4, "value", 0.0)?;
                graph
                    .pad(x, &low, &high, &vec![0; shape.len()], value)
                    .context("pad")
            })
        }
        "cross_entropy" => {
            let bound = bind(&["logits", "labels"], 2)?;
            let (logits, labels) = (bound.tensor(0, "logits")?, bound.tensor(1, "labels")?);
            tensor(loss::softmax_cross_entropy(
                elaborator.builder(),
                logits,
                labels,
            ))
        }
        "binary_cross_entropy_with_logits" | "hinge_loss" | "perceptron_loss" => {
            let bound = bind(&["input", "target"], 2)?;
            let (input, target) = (bound.tensor(0, "input")?, bound.tensor(1, "target")?);
            let builder = elaborator.builder();
            tensor(match name {
                "hinge_loss" => loss::hinge_loss(builder, input, target),
                "perceptron_loss" => loss::perceptron_loss(builder, input, target),
                _ => loss::binary_cross_entropy_with_logits(builder, input, target),
            })
        }
        "soft_cross_entropy" => {
            let bound = bind(&["logits", "target", "temperature"], 2)?;
            let (logits, target) = (bound.tensor(0, "logits")?, bound.tensor(1, "target")?);
            let temperature = bound.float(2, "temperature", 1.0)?;
            tensor(loss::soft_cross_entropy(
                elaborator.builder(),
                logits,
                target,
                temperature,
            ))
        }
        "mse_loss" => {
            let bound = bind(&["prediction", "target"], 2)?;
            let (prediction, target) = (bound.tensor(0, "prediction")?, bound.tensor(1, "target")?);
            tensor(loss::mean_squared_error(
                elaborator.builder(),
                prediction,
                target,
            ))
        }
        "dropout" => {
            let bound = bind(&["x", "seed", "p"], 2)?;
            let (x, seed) = (bound.tensor(0, "x")?, bound.tensor(1, "seed")?);
            let p = bound.float(2, "p", 0.5)?;
            tensor(random::dropout(elaborator.builder(), x, p, seed))
        }
        "rand_like" | "randn_like" => {
            let bound = bind(&["x", "seed"], 2)?;
            let (x, seed) = (bound.tensor(0, "x")?, bound.tensor(1, "seed")?);
            let builder = elaborator.builder();
            tensor(if name == "rand_like" {
                random::rand_like(builder, x, seed)
            } else {
                random::randn_like(builder, x, seed)
            })
        }
        "eye" => {
            let bound = bind(&["n"], 1)?;
            let n = bound.size(0, "n")?;
            tensor(tensors::eye(elaborator.builder(), n))
        }
        "one_hot" => {
            let bound = bind(&["labels", "classes"], 2)?;
            let (labels, classes) = (bound.tensor(0, "labels")?, bound.size(1, "classes")?);
            tensor(
                elaborator
                    .builder()
                    .graph()
                    .one_hot(labels, classes)
                    .context("one_hot"),
            )
        }
        // TensorFlow's gather and its adjoint; an index out of range reads 0 or is
        // dropped. A negative axis counts from the end of the gathered tensor.
        "gather" => {
            let bound = bind(&["x", "indices", "axis", "batch_dims"], 2)?;
            let (x, indices) = (bound.tensor(0, "x")?, bound.tensor(1, "indices")?);
            let axis = bound.int(2, "axis", Some(0))?.unwrap_or(0);
            let batch_dims = bound.size(3, "batch_dims")?;
            let builder = elaborator.builder();
            let rank = builder.ty(x).map_err(at(span))?.rank();
            let axis = resolve_axis(axis, rank).ok_or_else(|| axis_error(axis, rank, span))?;
            let gathered = builder.graph().gather(x, indices, axis, batch_dims);
            tensor(gathered.context("gather"))
        }
        "scatter_add" => {
            let bound = bind(&["updates", "indices", "extent", "axis", "batch_dims"], 3)?;
            let (updates, indices) = (bound.tensor(0, "updates")?, bound.tensor(1, "indices")?);
            let extent = bound.size(2, "extent")?;
            let axis = bound.int(3, "axis", Some(0))?.unwrap_or(0);
            let batch_dims = bound.size(4, "batch_dims")?;
            let builder = elaborator.builder();
            let index_rank = builder.ty(indices).map_err(at(span))?.rank();
            let updates_rank = builder.ty(updates).map_err(at(span))?.rank();
            // The rank of the result, the tensor a gather would read the updates from.
            let rank = (updates_rank + batch_dims + 1).saturating_sub(index_rank);
            let axis = resolve_axis(axis, rank).ok_or_else(|| axis_error(axis, rank, span))?;
            let graph = builder.graph();
            let scattered = graph.scatter_add(updates, indices, axis, batch_dims, extent);
            tensor(scattered.context("scatter_add"))
        }
        _ => Err(
            ModelError::new(name_span.clone(), format!("unknown function `{name}`")).expected(
                "a layer declared in this model or block, or a function of docs/model-format.md",
            ),
        ),
    }
}

fn axis_error(axis: i64, rank: usize, span: &Span) -> ModelError {
    ModelError::new(
        span.clone(),
        format!("axis {axis} is out of range for rank {rank}"),
    )
    .expected(format!("an axis in -{rank}..{rank}"))
}

/// `axis` counted from the end when negative, if it is below `rank`.
fn resolve_axis(axis: i64, rank: usize) -> Option<usize> {
    let rank = rank as i64;
    let resolved = if axis < 0 { axis + rank } else { axis };
    (0..rank).contains(&resolved).then_some(resolved as usize)
}

/// `sum`, `mean` or `max` over one axis or all, dropping the reduced axes unless
/// `keepdim` (as PyTorch does).
fn reduce(
    builder: &mut ModelBuilder,
    name: &str,
    x: NodeId,
    axis: Option<i64>,
    keepdim: bool,
    span: &Span,
) -> Result<Value, ModelError> {
    let shape = builder.ty(x).map_err(at(span))?.shape.clone();
    let axes: Vec<usize> = match axis {
        None => (0..shape.len()).collect(),
        Some(axis) => vec![resolve_axis(axis, shape.len()).ok_or_else(|| {
            ModelError::new(
                span.clone(),
                format!("axis {axis} is out of range for rank {}", shape.len()),
            )
            .expected(format!("an axis in -{0}..{0}", shape.len()))
        })?],
    };
    let graph = builder.graph();
    let reduced = match name {
        "sum" => graph.reduce_sum(x, &axes),
        "mean" => graph.reduce_mean(x, &axes),
        _ => graph.reduce_max(x, &axes),
    }
    .context(name)
    .map_err(at(span))?;
    if keepdim {
        return Ok(Value::Tensor(reduced));
    }
    let kept: Vec<usize> = (0..shape.len())
        .filter(|axis| !axes.contains(axis))
        .map(|axis| shape[axis])
        .collect();
    let id = graph
        .reshape(reduced, kept)
        .context(name)
        .map_err(at(span))?;
    Ok(Value::Tensor(id))
}

/// `reshape(x, d0, d1, …)` (one `-1` is inferred) and `permute(x, a0, a1, …)`.
fn variadic(
    elaborator: &mut Elaborator<'_>,
    name: &str,
    args: &[Arg],
    scope: &Scope,
    span: &Span,
) -> Result<Value, ModelError> {
    let mut values = Vec::with_capacity(args.len());
    for arg in args {
        if let Some(named) = &arg.name {
            return Err(ModelError::new(
                named.span.clone(),
                format!("a named argument to `{name}`"),
            )
            .expected("the tensor, then the sizes or axes, by position"));
        }
        values.push((elaborator.eval(&arg.value, scope)?, arg.value.span.clone()));
    }
    let Some((Value::Tensor(x), _)) = values.first() else {
        return Err(
            ModelError::new(span.clone(), format!("`{name}` needs a tensor first"))
                .expected(format!("{name}(x, …)")),
        );
    };
    let x = *x;
    let mut numbers = Vec::with_capacity(values.len() - 1);
    for (value, value_span) in &values[1..] {
        match value {
            Value::Int(n) => numbers.push(*n),
            other => {
                return Err(ModelError::new(
                    value_span.clone(),
                    format!("this is {}", other.describe()),
                )
                .expected("a whole number"))
            }
        }
    }
    let builder = elaborator.builder();
    let ty = builder.ty(x).map_err(at(span))?.clone();
    if name == "permute" {
        let perm: Option<Vec<usize>> = numbers
            .iter()
            .map(|&axis| resolve_axis(axis, ty.rank()))
            .collect();
        let perm = perm.ok_or_else(|| {
            ModelError::new(
                span.clone(),
                format!("an axis out of range for rank {}", ty.rank()),
            )
            .expected(format!("axes in -{0}..{0}", ty.rank()))
        })?;
        let id = builder
            .graph()
            .transpose(x, &perm)
            .context("permute")
            .map_err(at(span))?;
        return Ok(Value::Tensor(id));
    }
    let known: i64 = numbers.iter().filter(|&&n| n != -1).product();
    let inferred = numbers.iter().filter(|&&n| n == -1).count();
    if inferred > 1 || numbers.iter().any(|&n| n < -1) {
        return Err(
            ModelError::new(span.clone(), "a size below -1, or -1 twice")
                .expected("sizes ≥ 0, at most one -1 (inferred)"),
        );
    }
    let count = ty.num_elements() as i64;
    let shape: Option<Vec<usize>> = numbers
        .iter()
        .map(|&n| {
            let n = if n == -1 {
                (known != 0 && count % known == 0).then(|| count / known)?
            } else {
                n
            };
            usize::try_from(n).ok()
        })
        .collect();
    let shape = shape.ok_or_else(|| {
        ModelError::new(
            span.clone(),
            format!("{ty} cannot be reshaped so that -1 is whole"),
        )
        .expected(format!("sizes whose product divides {count}"))
    })?;
    let id = builder
        .graph()
        .reshape(x, shape)
        .context("reshape")
        .map_err(at(span))?;
    Ok(Value::Tensor(id))
}
