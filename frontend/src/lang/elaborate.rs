//! From the syntax tree to a graph: binds the dimensions, declares every layer's
//! parameters in declaration order (so one seed always gives the same weights),
//! evaluates the forward statements through the builder, which checks shapes as it
//! goes, and points every error at the expression that caused it.

use super::ast::*;
use super::builtins;
use super::diagnostic::{ModelError, Span};
use super::optimizers::{self, OptimizerSpec};
use crate::builder::{FrontendError, Model, ModelBuilder};
use crate::conv::{Conv2d, ConvOptions};
use crate::init::Init;
use crate::layers::Linear;
use crate::norm::BatchNorm;
use crate::positional::PositionalEncoding;
use crate::recurrent::{Cell, Recurrent, RecurrentOptions};
use crate::sequence::{Embedding, LayerNorm, MultiheadAttention};
use kiln_ir::{DType, NodeId, TensorType};
use std::collections::BTreeMap;
use std::rc::Rc;

/// A model file made into a graph.
#[derive(Clone, Debug)]
pub struct ModelFile {
    /// The model's name in the file.
    pub name: String,
    /// The graph and its initial parameters.
    pub model: Model,
    /// Every dimension with the value it was bound to.
    pub dims: BTreeMap<String, usize>,
    /// The outputs, in the order the file names them.
    pub outputs: Vec<String>,
    /// What `train` says, if the model has it.
    pub train: Option<TrainSpec>,
}

/// The model's `train` statement.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSpec {
    /// The output that is minimised.
    pub loss: String,
    pub optimizer: OptimizerSpec,
    /// Examples per step.
    pub batch: usize,
}

/// What the caller decides about a model file.
#[derive(Clone, Debug, Default)]
pub struct ElaborateOptions {
    /// Which model of the file; `None` when it has exactly one.
    pub model: Option<String>,
    /// Dimension values that replace the file's defaults.
    pub dims: BTreeMap<String, usize>,
    /// The seed of the parameters' initial values.
    pub seed: u64,
    /// Build for evaluation rather than training (dropout is the identity); see
    /// `ModelBuilder::set_evaluation`.
    pub evaluation: bool,
}

/// A value while the forward statements are evaluated.
#[derive(Clone, Debug)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tensor(NodeId),
    Layer(Rc<LayerGroup>),
    /// `(a, b)`: a size per spatial axis.
    Tuple(Vec<Value>),
}

impl Value {
    pub fn describe(&self) -> &'static str {
        match self {
            Value::Bool(_) => "a truth value",
            Value::Int(_) => "a whole number",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Tensor(_) => "a tensor",
            Value::Layer(_) => "a layer",
            Value::Tuple(_) => "a tuple",
        }
    }
}

/// The instances a layer declaration made: one, or `N` for `Kind(…) * N`.
#[derive(Debug)]
pub struct LayerGroup {
    pub name: String,
    pub instances: Vec<Layer>,
    pub repeated: bool,
}

#[derive(Clone, Debug)]
pub enum Layer {
    Linear(Linear),
    Conv(Conv2d),
    LayerNorm(LayerNorm),
    BatchNorm(BatchNorm),
    PositionalEncoding(PositionalEncoding),
    Attention(MultiheadAttention),
    Recurrent(Recurrent),
    Embedding(Embedding),
    Block {
        /// Index into the file's blocks.
        def: usize,
        /// Its numeric parameters and its layers.
        scope: Scope,
    },
}

pub type Scope = BTreeMap<String, Value>;

/// The layer types every file has.
const BUILT_IN_LAYERS: &str =
    "`Linear`, `Conv2d`, `Conv1d`, `LayerNorm`, `BatchNorm1d`, `BatchNorm2d`, `MultiheadAttention`, `RNN`, `LSTM`, `GRU`, `Embedding`, `PositionalEncoding`, `Parameter`";

/// Elaborates the chosen model of `file`.
pub fn elaborate(file: &File, options: &ElaborateOptions) -> Result<ModelFile, ModelError> {
    let def = choose_model(file, options.model.as_deref())?;
    let mut builder = ModelBuilder::new(&def.name.name, options.seed);
    builder.set_evaluation(options.evaluation);
    let mut elaborator = Elaborator {
        file,
        builder,
        blocks_open: Vec::new(),
    };
    let mut scope = Scope::new();
    let dims = elaborator.dims(def, &options.dims, &mut scope)?;
    for input in &def.inputs {
        elaborator.input(input, &mut scope)?;
    }
    for layer in &def.layers {
        elaborator.declare(layer, "", &mut scope)?;
    }
    let mut outputs = Vec::new();
    for stmt in &def.forward.body {
        match stmt {
            Stmt::Assign(name, expr) => {
                let value = elaborator.eval(expr, &scope)?;
                scope.insert(name.name.clone(), value);
            }
            Stmt::Return(expr) => {
                return Err(
                    ModelError::new(expr.span.clone(), "`return` in a model's forward")
                        .expected("`output name, …`: a model names its outputs"),
                );
            }
            Stmt::Output(names) => {
                for name in names {
                    elaborator.output(name, &scope, &mut outputs)?;
                }
            }
        }
    }
    let train = match &def.train {
        Some(train) => Some(elaborator.train(def, train, &scope, &mut outputs)?),
        None => None,
    };
    if outputs.is_empty() {
        return Err(
            ModelError::new(def.forward.span.clone(), "the forward outputs nothing")
                .expected("`output name` for at least one value"),
        );
    }
    let model = elaborator
        .builder
        .finish()
        .map_err(|err| ModelError::new(def.name.span.clone(), err.to_string()))?;
    Ok(ModelFile {
        name: def.name.name.clone(),
        model,
        dims,
        outputs,
        train,
    })
}

fn choose_model<'f>(file: &'f File, name: Option<&str>) -> Result<&'f ModelDef, ModelError> {
    let names = || {
        file.models
            .iter()
            .map(|model| format!("`{}`", model.name.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(name) => file
            .models
            .iter()
            .find(|model| model.name.name == name)
            .ok_or_else(|| {
                ModelError::new(0..0, format!("the file has no model `{name}`"))
                    .expected(format!("one of {}", names()))
            }),
        None => match file.models.as_slice() {
            [only] => Ok(only),
            [] => Err(ModelError::new(0..0, "the file declares no model")
                .expected("`model Name(…) { … }`")),
            [_, second, ..] => Err(ModelError::new(
                second.name.span.clone(),
                "the file declares several models; say which one",
            )
            .expected(format!("one of {}", names()))),
        },
    }
}

pub(super) struct Elaborator<'f> {
    file: &'f File,
    builder: ModelBuilder,
    /// The blocks being instantiated, innermost last: a block that contains itself
    /// would never finish.
    blocks_open: Vec<usize>,
}

/// A builder error at `span`.
pub fn at(span: &Span) -> impl Fn(FrontendError) -> ModelError + '_ {
    move |err| ModelError::new(span.clone(), err.to_string())
}

impl Elaborator<'_> {
    fn dims(
        &mut self,
        def: &ModelDef,
        overrides: &BTreeMap<String, usize>,
        scope: &mut Scope,
    ) -> Result<BTreeMap<String, usize>, ModelError> {
        for name in overrides.keys() {
            if !def.dims.iter().any(|(dim, _)| &dim.name == name) {
                let known: Vec<&str> = def.dims.iter().map(|(dim, _)| dim.name.as_str()).collect();
                let expected = if known.is_empty() {
                    "no override: the model declares no dimensions".to_string()
                } else {
                    format!("one of {}", known.join(", "))
                };
                return Err(ModelError::new(
                    def.name.span.clone(),
                    format!("model `{}` has no dimension `{name}`", def.name.name),
                )
                .expected(expected));
            }
        }
        let mut dims = BTreeMap::new();
        for (dim, default) in &def.dims {
            let value = match overrides.get(&dim.name) {
                Some(&value) => value,
                None => {
                    let value = self.eval(default, scope)?;
                    builtins::size(&value, &default.span, "a dimension")?
                }
            };
            if value == 0 {
                return Err(ModelError::new(
                    dim.span.clone(),
                    format!("dimension `{}` is 0", dim.name),
                )
                .expected("a dimension of at least 1"));
            }
            scope.insert(dim.name.clone(), Value::Int(value as i64));
            dims.insert(dim.name.clone(), value);
        }
        Ok(dims)
    }

    fn input(&mut self, input: &InputDecl, scope: &mut Scope) -> Result<(), ModelError> {
        let dtype = match input.dtype.name.as_str() {
            "f32" => DType::F32,
            "i32" => DType::I32,
            other => {
                return Err(ModelError::new(
                    input.dtype.span.clone(),
                    format!("unknown dtype `{other}`"),
                )
                .expected("`f32` or `i32`"))
            }
        };
        let mut shape = Vec::with_capacity(input.shape.len());
        for extent in &input.shape {
            let value = self.eval(extent, scope)?;
            shape.push(builtins::size(&value, &extent.span, "an extent")?);
        }
        self.define(&input.name, scope)?;
        let id = self
            .builder
            .input(&input.name.name, TensorType::new(dtype, shape))
            .map_err(at(&input.name.span))?;
        scope.insert(input.name.name.clone(), Value::Tensor(id));
        Ok(())
    }

    /// Refuses a second declaration of a name in one scope.
    fn define(&self, name: &Ident, scope: &Scope) -> Result<(), ModelError> {
        if scope.contains_key(&name.name) {
            return Err(ModelError::new(
                name.span.clone(),
                format!("`{}` is declared twice", name.name),
            )
            .expected("a new name"));
        }
        Ok(())
    }

    /// Declares the layer(s) of `decl` under `prefix` (`""` or `blocks.0.`).
    fn declare(
        &mut self,
        decl: &LayerDecl,
        prefix: &str,
        scope: &mut Scope,
    ) -> Result<(), ModelError> {
        self.define(&decl.name, scope)?;
        if decl.kind.name == "Parameter" {
            let id = self.parameter(decl, &format!("{prefix}{}", decl.name.name), scope)?;
            scope.insert(decl.name.name.clone(), Value::Tensor(id));
            return Ok(());
        }
        let count = match &decl.repeat {
            Some(expr) => {
                let value = self.eval(expr, scope)?;
                let count = builtins::size(&value, &expr.span, "a repeat count")?;
                if count == 0 {
                    return Err(
                        ModelError::new(expr.span.clone(), "zero instances of a layer")
                            .expected("a repeat count of at least 1"),
                    );
                }
                count
            }
            None => 1,
        };
        let mut instances = Vec::with_capacity(count);
        for index in 0..count {
            let path = match decl.repeat {
                Some(_) => format!("{prefix}{}.{index}", decl.name.name),
                None => format!("{prefix}{}", decl.name.name),
            };
            instances.push(self.instantiate(decl, &path, scope)?);
        }
        let group = LayerGroup {
            name: decl.name.name.clone(),
            instances,
            repeated: decl.repeat.is_some(),
        };
        scope.insert(decl.name.name.clone(), Value::Layer(Rc::new(group)));
        Ok(())
    }

    /// `name = Parameter(shape, init = "normal", std = 1.0)`: a bare trainable tensor
    /// (PyTorch's `nn.Parameter`), named `path` and read in the forward as a tensor.
    /// `shape` is a whole number or a tuple of them; `init` is `"normal"` (`N(0, std²)`,
    /// the default, as `torch.randn(shape) * std`) or one of `Linear`'s initialisers.
    fn parameter(
        &mut self,
        decl: &LayerDecl,
        path: &str,
        scope: &Scope,
    ) -> Result<NodeId, ModelError> {
        if let Some(repeat) = &decl.repeat {
            return Err(
                ModelError::new(repeat.span.clone(), "a repeated `Parameter`")
                    .expected("one `Parameter` per name (a tuple shape for more elements)"),
            );
        }
        let names = ["shape", "init", "std"];
        let args = self.bind("Parameter", &names, 1, &decl.args, scope, &decl.kind.span)?;
        let shape = match args.get(0) {
            Some((value @ Value::Int(_), span)) => vec![builtins::size(value, span, "`shape`")?],
            Some((Value::Tuple(items), span)) => items
                .iter()
                .map(|item| builtins::size(item, span, "an extent of `shape`"))
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(args.wrong(0, names[0], "a whole number or a tuple of them")),
        };
        let init = match args.get(1) {
            None => Init::Normal { std: 1.0 },
            Some((Value::Str(name), _)) if name == "normal" => Init::Normal { std: 1.0 },
            Some(_) => args.init(1, crate::init::fans(&shape).0)?,
        };
        let init = match (init, args.get(2)) {
            (Init::Normal { .. }, _) => {
                let std = args.float(2, names[2], 1.0)?;
                if !(std.is_finite() && std >= 0.0) {
                    return Err(args.wrong(2, names[2], "a finite standard deviation ≥ 0"));
                }
                Init::Normal { std: std as f32 }
            }
            (_, Some((_, span))) => {
                return Err(
                    ModelError::new(span.clone(), "`std` with another initialiser")
                        .expected("`std` only with init = \"normal\""),
                )
            }
            (init, None) => init,
        };
        self.builder
            .parameter(path, &shape, init)
            .map_err(at(&decl.span))
    }

    /// One instance of `decl`'s layer type, its parameters named under `path`.
    fn instantiate(
        &mut self,
        decl: &LayerDecl,
        path: &str,
        scope: &Scope,
    ) -> Result<Layer, ModelError> {
        let kind = &decl.kind;
        if kind.name == "Linear" {
            let args = self.bind(
                "Linear",
                &[
                    "in_features",
                    "out_features",
                    "bias",
                    "init",
                    "bias_init",
                    "weight_norm",
                ],
                2,
                &decl.args,
                scope,
                &kind.span,
            )?;
            let in_features = args.size(0, "in_features")?;
            let out_features = args.size(1, "out_features")?;
            let has_bias = args.flag(2, "bias", true)?;
            let init = args.init(3, in_features)?;
            let bias_init = args.init(4, in_features)?;
            let declare = if args.flag(5, "weight_norm", false)? {
                Linear::weight_normed
            } else {
                Linear::with_bias
            };
            let linear = declare(
                &mut self.builder,
                path,
                in_features,
                out_features,
                init,
                has_bias.then_some(bias_init),
            )
            .map_err(at(&decl.span))?;
            return Ok(Layer::Linear(linear));
        }
        if kind.name == "Conv2d" || kind.name == "Conv1d" {
            return self.conv(decl, path, scope).map(Layer::Conv);
        }
        match kind.name.as_str() {
            "LayerNorm" => {
                let names = ["normalized_shape", "eps"];
                let args = self.bind(&kind.name, &names, 1, &decl.args, scope, &kind.span)?;
                let (features, eps) = (args.size(0, names[0])?, args.float(1, names[1], 1e-5)?);
                let layer = LayerNorm::new(&mut self.builder, path, features, eps);
                return layer.map(Layer::LayerNorm).map_err(at(&decl.span));
            }
            "BatchNorm1d" | "BatchNorm2d" => {
                let names = ["num_features", "eps", "momentum"];
                let args = self.bind(&kind.name, &names, 1, &decl.args, scope, &kind.span)?;
                let features = args.size(0, names[0])?;
                let (eps, momentum) = (
                    args.float(1, names[1], 1e-5)?,
                    args.float(2, names[2], 0.1)?,
                );
                let rank = (kind.name == "BatchNorm2d").then_some(4);
                let layer = BatchNorm::new(&mut self.builder, path, features, rank, eps, momentum);
                return layer.map(Layer::BatchNorm).map_err(at(&decl.span));
            }
            "MultiheadAttention" => {
                let names = ["embed_dim", "num_heads", "causal"];
                let args = self.bind(&kind.name, &names, 2, &decl.args, scope, &kind.span)?;
                let (dim, heads) = (args.size(0, names[0])?, args.size(1, names[1])?);
                let causal = args.flag(2, names[2], false)?;
                let layer = MultiheadAttention::new(&mut self.builder, path, dim, heads)
                    .map(|layer| if causal { layer.causal() } else { layer });
                return layer.map(Layer::Attention).map_err(at(&decl.span));
            }
            "PositionalEncoding" => {
                let names = ["d_model", "max_len"];
                let args = self.bind(&kind.name, &names, 2, &decl.args, scope, &kind.span)?;
                let (dim, max_len) = (args.size(0, names[0])?, args.size(1, names[1])?);
                let layer = PositionalEncoding::new(&mut self.builder, path, dim, max_len);
                return layer.map(Layer::PositionalEncoding).map_err(at(&decl.span));
            }
            "Embedding" => {
                let names = ["num_embeddings", "embedding_dim"];
                let args = self.bind(&kind.name, &names, 2, &decl.args, scope, &kind.span)?;
                let (num, dim) = (args.size(0, names[0])?, args.size(1, names[1])?);
                let layer = Embedding::new(&mut self.builder, path, num, dim);
                return layer.map(Layer::Embedding).map_err(at(&decl.span));
            }
            "RNN" | "LSTM" | "GRU" => {
                let names = [
                    "input_size",
                    "hidden_size",
                    "num_layers",
                    "bidirectional",
                    "nonlinearity",
                ];
                let args = self.bind(&kind.name, &names, 2, &decl.args, scope, &kind.span)?;
                let cell = match kind.name.as_str() {
                    "LSTM" => Cell::Lstm,
                    "GRU" => Cell::Gru,
                    _ => match args.string(4, names[4], "tanh")?.as_str() {
                        "tanh" => Cell::RnnTanh,
                        "relu" => Cell::RnnRelu,
                        _ => return Err(args.wrong(4, names[4], "\"tanh\" or \"relu\"")),
                    },
                };
                let options = RecurrentOptions {
                    cell,
                    input: args.size(0, names[0])?,
                    hidden: args.size(1, names[1])?,
                    layers: match args.int(2, names[2], None)? {
                        None => 1,
                        Some(_) => args.size(2, names[2])?,
                    },
                    bidirectional: args.flag(3, names[3], false)?,
                };
                let layer = Recurrent::new(&mut self.builder, path, options);
                return layer.map(Layer::Recurrent).map_err(at(&decl.span));
            }
            _ => {}
        }
        let Some(def) = self
            .file
            .blocks
            .iter()
            .position(|block| block.name.name == kind.name)
        else {
            let blocks: Vec<String> = self
                .file
                .blocks
                .iter()
                .map(|block| format!("`{}`", block.name.name))
                .collect();
            let expected = if blocks.is_empty() {
                format!("{BUILT_IN_LAYERS}, or a block defined in this file")
            } else {
                format!(
                    "{BUILT_IN_LAYERS} or a block of this file ({})",
                    blocks.join(", ")
                )
            };
            return Err(ModelError::new(
                kind.span.clone(),
                format!("unknown layer `{}`", kind.name),
            )
            .expected(expected));
        };
        if self.blocks_open.contains(&def) {
            return Err(ModelError::new(
                kind.span.clone(),
                format!("block `{}` contains itself", kind.name),
            )
            .expected("blocks that nest without a cycle"));
        }
        let block = &self.file.blocks[def];
        let names: Vec<&str> = block
            .params
            .iter()
            .map(|param| param.name.as_str())
            .collect();
        let args = self.bind(
            &kind.name,
            &names,
            names.len(),
            &decl.args,
            scope,
            &kind.span,
        )?;
        let mut inner = Scope::new();
        for (index, param) in block.params.iter().enumerate() {
            let value = args.number(index, &param.name)?;
            inner.insert(param.name.clone(), value);
        }
        self.blocks_open.push(def);
        for layer in &block.layers {
            self.declare(layer, &format!("{path}."), &mut inner)?;
        }
        self.blocks_open.pop();
        Ok(Layer::Block { def, scope: inner })
    }

    /// A `Conv2d(…)` or `Conv1d(…)` layer (PyTorch's arguments; a size is one number
    /// for every spatial axis or a tuple with one per axis).
    fn conv(&mut self, decl: &LayerDecl, path: &str, scope: &Scope) -> Result<Conv2d, ModelError> {
        let kind = &decl.kind;
        let one_d = kind.name == "Conv1d";
        let names = [
            "in_channels",
            "out_channels",
            "kernel_size",
            "stride",
            "padding",
            "dilation",
            "groups",
            "bias",
        ];
        let args = self.bind(&kind.name, &names, 3, &decl.args, scope, &kind.span)?;
        let options = ConvOptions {
            stride: args.sizes(3, names[3], one_d, 1)?,
            padding: args.padding(4, one_d)?,
            dilation: args.sizes(5, names[5], one_d, 1)?,
            groups: match args.int(6, names[6], None)? {
                None => 1,
                Some(_) => args.size(6, names[6])?,
            },
        };
        Conv2d::new(
            &mut self.builder,
            path,
            args.size(0, "in_channels")?,
            args.size(1, "out_channels")?,
            args.sizes(2, "kernel_size", one_d, 0)?,
            options,
            args.flag(7, "bias", true)?,
            one_d,
        )
        .map_err(at(&decl.span))
    }

    /// Applies a layer group: every instance in turn for a repeated one.
    pub fn apply(
        &mut self,
        group: &LayerGroup,
        args: &[Arg],
        scope: &Scope,
        span: &Span,
    ) -> Result<Value, ModelError> {
        if group.repeated && group.instances.len() > 1 {
            let [arg] = args else {
                return Err(ModelError::new(
                    span.clone(),
                    format!(
                        "`{}` applies its {} instances in turn, to one tensor",
                        group.name,
                        group.instances.len()
                    ),
                )
                .expected(format!(
                    "one argument, or `{}[i](…)` for one instance",
                    group.name
                )));
            };
            let mut value = self.eval(&arg.value, scope)?;
            for layer in &group.instances {
                value = self.apply_one(layer, &[value], &arg.value.span, span)?;
            }
            return Ok(value);
        }
        let mut values = Vec::with_capacity(args.len());
        for arg in args {
            if let Some(name) = &arg.name {
                return Err(
                    ModelError::new(name.span.clone(), "a named argument to a layer")
                        .expected("the layer's inputs, by position"),
                );
            }
            values.push(self.eval(&arg.value, scope)?);
        }
        let first = args
            .first()
            .map_or(span.clone(), |arg| arg.value.span.clone());
        self.apply_one(&group.instances[0], &values, &first, span)
    }

    fn apply_one(
        &mut self,
        layer: &Layer,
        args: &[Value],
        arg_span: &Span,
        span: &Span,
    ) -> Result<Value, ModelError> {
        match layer {
            // Attention takes an optional key padding mask after its input.
            Layer::Attention(attention) if args.len() == 2 => {
                let [Value::Tensor(x), Value::Tensor(mask)] = args else {
                    return Err(ModelError::new(span.clone(), "attention takes tensors")
                        .expected("`attn(x)` or `attn(x, key_padding_mask)`"));
                };
                let y = attention.forward_masked(&mut self.builder, *x, Some(*mask));
                Ok(Value::Tensor(y.map_err(at(span))?))
            }
            Layer::Linear(_)
            | Layer::Conv(_)
            | Layer::LayerNorm(_)
            | Layer::BatchNorm(_)
            | Layer::PositionalEncoding(_)
            | Layer::Attention(_)
            | Layer::Recurrent(_)
            | Layer::Embedding(_) => {
                let [Value::Tensor(x)] = args else {
                    return Err(ModelError::new(span.clone(), "this layer takes one tensor")
                        .expected("one tensor argument"));
                };
                let builder = &mut self.builder;
                let y = match layer {
                    Layer::Linear(linear) => linear.forward(builder, *x),
                    Layer::Conv(conv) => conv.forward(builder, *x),
                    Layer::LayerNorm(norm) => norm.forward(builder, *x),
                    Layer::BatchNorm(norm) => norm.forward(builder, *x),
                    Layer::PositionalEncoding(layer) => layer.forward(builder, *x),
                    Layer::Attention(attention) => attention.forward(builder, *x),
                    Layer::Recurrent(layer) => layer.forward(builder, *x),
                    Layer::Embedding(embedding) => embedding.forward(builder, *x),
                    _ => unreachable!("matched above"),
                };
                Ok(Value::Tensor(y.map_err(at(span))?))
            }
            Layer::Block { def, scope } => {
                let block = &self.file.blocks[*def];
                let params = &block.forward.params;
                if args.len() != params.len() {
                    return Err(ModelError::new(
                        span.clone(),
                        format!(
                            "block `{}` takes {} tensor(s), given {}",
                            block.name.name,
                            params.len(),
                            args.len()
                        ),
                    )
                    .expected(format!("forward({})", names(params))));
                }
                let mut inner = scope.clone();
                for (param, value) in params.iter().zip(args) {
                    if !matches!(value, Value::Tensor(_)) {
                        return Err(ModelError::new(
                            arg_span.clone(),
                            format!(
                                "`{}` of block `{}` is given {}",
                                param.name,
                                block.name.name,
                                value.describe()
                            ),
                        )
                        .expected("a tensor"));
                    }
                    inner.insert(param.name.clone(), value.clone());
                }
                for stmt in &block.forward.body {
                    match stmt {
                        Stmt::Assign(name, expr) => {
                            let value = self.eval(expr, &inner)?;
                            inner.insert(name.name.clone(), value);
                        }
                        Stmt::Return(expr) => return self.eval(expr, &inner),
                        Stmt::Output(names) => {
                            return Err(ModelError::new(
                                names[0].span.clone(),
                                "`output` in a block",
                            )
                            .expected("`return value`: only a model has outputs"));
                        }
                    }
                }
                Err(ModelError::new(
                    block.forward.span.clone(),
                    format!("block `{}` returns nothing", block.name.name),
                )
                .expected("`return value` at the end of its forward"))
            }
        }
    }

    fn output(
        &mut self,
        name: &Ident,
        scope: &Scope,
        outputs: &mut Vec<String>,
    ) -> Result<(), ModelError> {
        let value = scope.get(&name.name).ok_or_else(|| unknown(name))?;
        let Value::Tensor(id) = value else {
            return Err(ModelError::new(
                name.span.clone(),
                format!("`{}` is {}, not a tensor", name.name, value.describe()),
            )
            .expected("a tensor to output"));
        };
        if outputs.contains(&name.name) {
            return Err(ModelError::new(
                name.span.clone(),
                format!("`{}` is output twice", name.name),
            )
            .expected("each output once"));
        }
        self.builder
            .output(&name.name, *id)
            .map_err(at(&name.span))?;
        outputs.push(name.name.clone());
        Ok(())
    }

    fn train(
        &mut self,
        def: &ModelDef,
        train: &TrainDecl,
        scope: &Scope,
        outputs: &mut Vec<String>,
    ) -> Result<TrainSpec, ModelError> {
        let loss = &train.loss;
        let loss_ty = match scope.get(&loss.name) {
            Some(Value::Tensor(id)) => self.builder.ty(*id).map_err(at(&loss.span))?.clone(),
            Some(other) => {
                return Err(ModelError::new(
                    loss.span.clone(),
                    format!("`{}` is {}, not a tensor", loss.name, other.describe()),
                )
                .expected("the loss: an f32 tensor with one element"))
            }
            None => return Err(unknown(loss)),
        };
        if loss_ty.dtype != DType::F32 || loss_ty.num_elements() != 1 {
            return Err(ModelError::new(
                loss.span.clone(),
                format!("the loss `{}` is {loss_ty}", loss.name),
            )
            .expected("an f32 tensor with one element, like `cross_entropy(logits, labels)`"));
        }
        if !outputs.contains(&loss.name) {
            self.output(loss, scope, outputs)?;
        }
        let optimizer = optimizers::read(self, train, scope)?;
        let batch = match &train.batch {
            Some(expr) => {
                let value = self.eval(expr, scope)?;
                builtins::size(&value, &expr.span, "a batch size")?
            }
            None => {
                let first = def.inputs.first().ok_or_else(|| {
                    ModelError::new(train.span.clone(), "no batch size: the model has no input")
                        .expected("`batch N` after the optimizer")
                })?;
                let Some(Value::Tensor(id)) = scope.get(&first.name.name) else {
                    return Err(unknown(&first.name));
                };
                let ty = self.builder.ty(*id).map_err(at(&first.name.span))?;
                *ty.shape.first().ok_or_else(|| {
                    ModelError::new(
                        train.span.clone(),
                        format!(
                            "no batch size: the first input `{}` is a scalar",
                            first.name.name
                        ),
                    )
                    .expected("`batch N` after the optimizer")
                })?
            }
        };
        Ok(TrainSpec {
            loss: loss.name.clone(),
            optimizer,
            batch,
        })
    }

    /// Evaluates an expression.
    pub fn eval(&mut self, expr: &Expr, scope: &Scope) -> Result<Value, ModelError> {
        let span = &expr.span;
        match &expr.kind {
            ExprKind::Int(value) => Ok(Value::Int(*value)),
            ExprKind::Float(value) => Ok(Value::Float(*value)),
            ExprKind::Str(text) => Ok(Value::Str(text.clone())),
            ExprKind::Name(name)
                if !scope.contains_key(name) && (name == "true" || name == "false") =>
            {
                Ok(Value::Bool(name == "true"))
            }
            ExprKind::Name(name) => scope.get(name).cloned().ok_or_else(|| {
                let ident = Ident {
                    name: name.clone(),
                    span: span.clone(),
                };
                if builtins::is_function(name) {
                    ModelError::new(span.clone(), format!("`{name}` is a function"))
                        .expected(format!("a call, like `{name}(x)`"))
                } else {
                    unknown(&ident)
                }
            }),
            ExprKind::Tuple(items) => items
                .iter()
                .map(|item| self.eval(item, scope))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Tuple),
            ExprKind::Neg(operand) => {
                let value = self.eval(operand, scope)?;
                builtins::negate(&mut self.builder, value, span)
            }
            ExprKind::Binary(op, left, right) => {
                let a = self.eval(left, scope)?;
                let b = self.eval(right, scope)?;
                builtins::binary(
                    &mut self.builder,
                    *op,
                    (a, &left.span),
                    (b, &right.span),
                    span,
                )
            }
            ExprKind::Index(base, index) => {
                let group = match self.eval(base, scope)? {
                    Value::Layer(group) if group.repeated => group,
                    other => {
                        return Err(ModelError::new(
                            base.span.clone(),
                            format!(
                                "only a repeated layer can be indexed, this is {}",
                                other.describe()
                            ),
                        )
                        .expected("a layer declared as `Kind(…) * N`"))
                    }
                };
                let value = self.eval(index, scope)?;
                let position = builtins::size(&value, &index.span, "an instance index")?;
                if position >= group.instances.len() {
                    return Err(ModelError::new(
                        index.span.clone(),
                        format!(
                            "`{}` has {} instances, index {position} is past them",
                            group.name,
                            group.instances.len()
                        ),
                    )
                    .expected(format!("an index below {}", group.instances.len())));
                }
                // A view of one instance: the same parameter handles, applied alone.
                Ok(Value::Layer(Rc::new(LayerGroup {
                    name: format!("{}[{position}]", group.name),
                    instances: vec![group.instances[position].clone()],
                    repeated: false,
                })))
            }
            ExprKind::Call(callee, args) => match &callee.kind {
                ExprKind::Name(name) if !scope.contains_key(name) => {
                    builtins::call(self, name, args, scope, &callee.span, span)
                }
                _ => match self.eval(callee, scope)? {
                    Value::Layer(group) => self.apply(&group, args, scope, span),
                    other => Err(ModelError::new(
                        callee.span.clone(),
                        format!("{} cannot be called", other.describe()),
                    )
                    .expected("a function or a layer")),
                },
            },
        }
    }

    /// Binds `args` to the parameters `names` (the first `required` without
    /// defaults), by position then by name.
    pub fn bind(
        &mut self,
        what: &str,
        names: &[&str],
        required: usize,
        args: &[Arg],
        scope: &Scope,
        span: &Span,
    ) -> Result<builtins::Bound, ModelError> {
        let mut slots: Vec<Option<(Value, Span)>> = vec![None; names.len()];
        let mut named_seen = false;
        for (position, arg) in args.iter().enumerate() {
            let slot = match &arg.name {
                Some(name) => {
                    named_seen = true;
                    names.iter().position(|n| *n == name.name).ok_or_else(|| {
                        ModelError::new(
                            name.span.clone(),
                            format!("`{what}` has no argument `{}`", name.name),
                        )
                        .expected(format!("one of {}", names.join(", ")))
                    })?
                }
                None if named_seen => {
                    return Err(ModelError::new(
                        arg.value.span.clone(),
                        "a positional argument after a named one",
                    )
                    .expected("positional arguments first"))
                }
                None if position >= names.len() => {
                    return Err(ModelError::new(
                        arg.value.span.clone(),
                        format!("`{what}` takes at most {} arguments", names.len()),
                    )
                    .expected(format!("({})", names.join(", "))))
                }
                None => position,
            };
            if slots[slot].is_some() {
                return Err(ModelError::new(
                    arg.value.span.clone(),
                    format!("argument `{}` of `{what}` is given twice", names[slot]),
                )
                .expected("each argument once"));
            }
            let value = self.eval(&arg.value, scope)?;
            slots[slot] = Some((value, arg.value.span.clone()));
        }
        if let Some(missing) = (0..required).find(|&slot| slots[slot].is_none()) {
            return Err(ModelError::new(
                span.clone(),
                format!("`{what}` needs its argument `{}`", names[missing]),
            )
            .expected(format!("({})", names[..required].join(", "))));
        }
        Ok(builtins::Bound::new(what, slots, span.clone()))
    }

    pub fn builder(&mut self) -> &mut ModelBuilder {
        &mut self.builder
    }
}

fn names(params: &[Ident]) -> String {
    params
        .iter()
        .map(|param| param.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn unknown(name: &Ident) -> ModelError {
    ModelError::new(name.span.clone(), format!("unknown name `{}`", name.name))
        .expected("an input, a dimension, a layer or a value assigned before")
}
