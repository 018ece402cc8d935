//! The optimizers a `train` statement names, with PyTorch's argument names and
//! defaults, and the modifiers every one of them takes; read into an
//! [`OptimizerSpec`] that lists every hyperparameter, given or defaulted. The values'
//! ranges are checked where they are used, by the optimizer pass (the facade locates
//! those errors with `OptimizerSpec::span_of`).

use super::ast::TrainDecl;
use super::diagnostic::{ModelError, Span};
use super::elaborate::{Elaborator, Scope, Value};
use std::fmt;

/// A hyperparameter's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Hyper {
    Number(f64),
    Flag(bool),
    /// `(0.9, 0.999)`: Adam's betas.
    Pair(f64, f64),
}

impl fmt::Display for Hyper {
    /// As a file writes it; numbers in Rust's shortest form that reads back exactly
    /// (`0.001`, `1e-8`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hyper::Number(x) => write!(f, "{x:?}"),
            Hyper::Flag(flag) => write!(f, "{flag}"),
            Hyper::Pair(a, b) => write!(f, "({a:?}, {b:?})"),
        }
    }
}

/// An optimizer and all its hyperparameters.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerSpec {
    /// `sgd`, `adam`, `adamw`, `adagrad`, `rmsprop` or `signsgd`.
    pub name: String,
    /// Every argument, given or defaulted, in the optimizer's order; a modifier that
    /// was not given (`max_grad_norm`, `max_param_norm`, `polyak`) is absent.
    pub args: Vec<(String, Hyper)>,
    /// The optimizer's name in the file.
    pub span: Span,
    /// Where each argument that was given is written, by name.
    pub arg_spans: Vec<(String, Span)>,
}

impl OptimizerSpec {
    pub fn get(&self, name: &str) -> Option<Hyper> {
        self.args
            .iter()
            .find(|(arg, _)| arg == name)
            .map(|&(_, value)| value)
    }

    /// Where an error about argument `name` points: its value when it was given,
    /// else the optimizer's name.
    pub fn span_of(&self, name: &str) -> Span {
        self.arg_spans
            .iter()
            .find(|(arg, _)| arg == name)
            .map_or_else(|| self.span.clone(), |(_, span)| span.clone())
    }
}

impl fmt::Display for OptimizerSpec {
    /// `adam(lr = 0.001, betas = (0.9, 0.999), eps = 1e-8, weight_decay = 0.0, amsgrad = false)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|(name, value)| format!("{name} = {value}"))
            .collect();
        write!(f, "{}({})", self.name, args.join(", "))
    }
}

/// What an argument holds.
#[derive(Clone, Copy)]
enum Kind {
    Number,
    Flag,
    Pair,
    /// `polyak = true` (a uniform average) or `polyak = 0.99` (an EMA's decay).
    FlagOrNumber,
}

#[derive(Clone, Copy)]
enum Default {
    Required,
    Value(Hyper),
    /// A modifier that is off unless given.
    Off,
}

#[derive(Clone, Copy)]
struct Param {
    name: &'static str,
    kind: Kind,
    default: Default,
}

const fn number(name: &'static str, default: f64) -> Param {
    Param {
        name,
        kind: Kind::Number,
        default: Default::Value(Hyper::Number(default)),
    }
}

const fn flag(name: &'static str, default: bool) -> Param {
    Param {
        name,
        kind: Kind::Flag,
        default: Default::Value(Hyper::Flag(default)),
    }
}

const LR: Param = Param {
    name: "lr",
    kind: Kind::Number,
    default: Default::Required,
};

const BETAS: Param = Param {
    name: "betas",
    kind: Kind::Pair,
    default: Default::Value(Hyper::Pair(0.9, 0.999)),
};

/// Each optimizer's own arguments, in `torch.optim`'s order and with its defaults.
const OPTIMIZERS: [(&str, &[Param]); 6] = [
    (
        "sgd",
        &[
            LR,
            number("momentum", 0.0),
            number("dampening", 0.0),
            number("weight_decay", 0.0),
            flag("nesterov", false),
        ],
    ),
    (
        "adam",
        &[
            number("lr", 1e-3),
            BETAS,
            number("eps", 1e-8),
            number("weight_decay", 0.0),
            flag("amsgrad", false),
        ],
    ),
    (
        "adamw",
        &[
            number("lr", 1e-3),
            BETAS,
            number("eps", 1e-8),
            number("weight_decay", 1e-2),
            flag("amsgrad", false),
        ],
    ),
    (
        "adagrad",
        &[
            number("lr", 1e-2),
            number("lr_decay", 0.0),
            number("weight_decay", 0.0),
            number("initial_accumulator_value", 0.0),
            number("eps", 1e-10),
        ],
    ),
    (
        "rmsprop",
        &[
            number("lr", 1e-2),
            number("alpha", 0.99),
            number("eps", 1e-8),
            number("weight_decay", 0.0),
            number("momentum", 0.0),
            flag("centered", false),
        ],
    ),
    ("signsgd", &[LR, number("weight_decay", 0.0)]),
];

/// The modifiers every optimizer takes after its own arguments.
const MODIFIERS: [Param; 3] = [
    Param {
        name: "max_grad_norm",
        kind: Kind::Number,
        default: Default::Off,
    },
    Param {
        name: "max_param_norm",
        kind: Kind::Number,
        default: Default::Off,
    },
    Param {
        name: "polyak",
        kind: Kind::FlagOrNumber,
        default: Default::Off,
    },
];

/// The optimizer of `train`, with its arguments bound by name or position.
pub(super) fn read(
    elaborator: &mut Elaborator,
    train: &TrainDecl,
    scope: &Scope,
) -> Result<OptimizerSpec, ModelError> {
    let name = &train.optimizer;
    let Some((_, own)) = OPTIMIZERS.iter().find(|(known, _)| *known == name.name) else {
        let known: Vec<String> = OPTIMIZERS
            .iter()
            .map(|(known, _)| format!("`{known}`"))
            .collect();
        return Err(ModelError::new(
            name.span.clone(),
            format!("unknown optimizer `{}`", name.name),
        )
        .expected(format!("one of {}", known.join(", "))));
    };
    let params: Vec<Param> = own.iter().chain(&MODIFIERS).copied().collect();
    let names: Vec<&str> = params.iter().map(|param| param.name).collect();
    let required = params
        .iter()
        .take_while(|param| matches!(param.default, Default::Required))
        .count();
    let bound = elaborator.bind(&name.name, &names, required, &train.args, scope, &name.span)?;
    let mut args = Vec::new();
    let mut arg_spans = Vec::new();
    for (slot, param) in params.iter().enumerate() {
        let value = match (bound.get(slot), param.default) {
            (Some((value, span)), _) => {
                arg_spans.push((param.name.to_string(), span.clone()));
                hyper(value, span, &name.name, param)?
            }
            (None, Default::Value(value)) => Some(value),
            // `bind` rejects a missing required argument.
            (None, Default::Required | Default::Off) => None,
        };
        if let Some(value) = value {
            args.push((param.name.to_string(), value));
        }
    }
    Ok(OptimizerSpec {
        name: name.name.clone(),
        args,
        span: name.span.clone(),
        arg_spans,
    })
}

/// `value` as `param` takes it; `None` for `polyak = false`.
fn hyper(
    value: &Value,
    span: &Span,
    optimizer: &str,
    param: &Param,
) -> Result<Option<Hyper>, ModelError> {
    let as_number = |value: &Value| match value {
        Value::Int(n) => Some(*n as f64),
        Value::Float(x) => Some(*x),
        _ => None,
    };
    let read = match (param.kind, value) {
        (Kind::Flag | Kind::FlagOrNumber, Value::Bool(flag)) => Some(Hyper::Flag(*flag)),
        (Kind::Number | Kind::FlagOrNumber, value) => as_number(value).map(Hyper::Number),
        (Kind::Pair, Value::Tuple(items)) => match items[..] {
            [ref a, ref b] => as_number(a)
                .zip(as_number(b))
                .map(|(a, b)| Hyper::Pair(a, b)),
            _ => None,
        },
        _ => None,
    };
    match read {
        Some(Hyper::Flag(false)) if matches!(param.kind, Kind::FlagOrNumber) => Ok(None),
        Some(value) => Ok(Some(value)),
        None => {
            let expected = match param.kind {
                Kind::Number => "a number",
                Kind::Flag => "`true` or `false`",
                Kind::Pair => "two numbers, like `(0.9, 0.999)`",
                Kind::FlagOrNumber => {
                    "`true` for a running average, or a number in [0, 1) for an EMA's decay"
                }
            };
            Err(ModelError::new(
                span.clone(),
                format!("`{}` of `{optimizer}` is {}", param.name, describe(value)),
            )
            .expected(expected))
        }
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Tuple(items) => format!("a tuple of {} values", items.len()),
        other => other.describe().to_string(),
    }
}
