//! The syntax tree of a model file, every node with its span.

use super::diagnostic::Span;

/// A name where it is written.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A model file: blocks (layer types defined in the file) and models.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub blocks: Vec<BlockDef>,
    pub models: Vec<ModelDef>,
}

/// `block Name(config, …) { layers…  forward(x, …) { … } }`: a layer type whose
/// instances each get their own parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockDef {
    pub name: Ident,
    /// Numbers given at instantiation (`Residual(128)`), by position or name.
    pub params: Vec<Ident>,
    pub layers: Vec<LayerDecl>,
    pub forward: Forward,
}

/// `model Name(B = 32, …) { inputs, layers, forward { … }, train … }`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDef {
    pub name: Ident,
    /// Symbolic dimensions and their defaults (the caller may override them).
    pub dims: Vec<(Ident, Expr)>,
    pub inputs: Vec<InputDecl>,
    pub layers: Vec<LayerDecl>,
    pub forward: Forward,
    pub train: Option<TrainDecl>,
}

/// `input x: f32[B, 64]`.
#[derive(Clone, Debug, PartialEq)]
pub struct InputDecl {
    pub name: Ident,
    pub dtype: Ident,
    pub shape: Vec<Expr>,
}

/// `fc1 = Linear(64, 128)` or `blocks = Residual(128) * 3`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerDecl {
    pub name: Ident,
    pub kind: Ident,
    pub args: Vec<Arg>,
    /// `* N`: N instances, named `name.0` … `name.{N-1}`, applied in sequence.
    pub repeat: Option<Expr>,
    pub span: Span,
}

/// `forward(x) { … }` (a model's forward takes no parameters: its inputs are
/// declared).
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    pub params: Vec<Ident>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `name = expr`.
    Assign(Ident, Expr),
    /// `return expr` (blocks).
    Return(Expr),
    /// `output a, b` (models).
    Output(Vec<Ident>),
}

/// `train loss with sgd(lr = 0.1) batch B`.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainDecl {
    pub loss: Ident,
    pub optimizer: Ident,
    pub args: Vec<Arg>,
    /// The batch size; when absent, the first axis of the first input.
    pub batch: Option<Expr>,
    pub span: Span,
}

/// A call argument, positional or `name = value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Str(String),
    Name(String),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `f(args)`: an op, an activation, a loss, or a declared layer applied.
    Call(Box<Expr>, Vec<Arg>),
    /// `layers[i]`: one instance of a repeated layer.
    Index(Box<Expr>, Box<Expr>),
    /// `(a, b)` or `(a,)`: sizes per spatial axis, as PyTorch's `kernel_size=(3, 5)`.
    Tuple(Vec<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `@`, matrix product.
    MatMul,
}

impl BinOp {
    pub fn symbol(self) -> char {
        match self {
            BinOp::Add => '+',
            BinOp::Sub => '-',
            BinOp::Mul => '*',
            BinOp::Div => '/',
            BinOp::MatMul => '@',
        }
    }
}
