//! `ModelBuilder`: declares inputs, initialised parameters and outputs, and offers
//! numpy-style helpers (broadcasting) on top of the exact-shape IR.

use crate::init::Init;
use kiln_ir::types::check_size;
use kiln_ir::{BinaryOp, DType, Graph, IrError, NodeId, OutOfMemory, Rng, TensorType};
use std::collections::BTreeMap;
use thiserror::Error;

/// A mistake in a model declaration (the user's), or a model too large for memory.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum FrontendError {
    /// The IR rejected a node; `context` says which layer or helper built it.
    #[error("{context}: {source}")]
    Ir {
        context: String,
        #[source]
        source: IrError,
    },
    /// Shapes that numpy-style broadcasting cannot reconcile.
    #[error("{context}: cannot broadcast {from} to {to}")]
    Broadcast {
        context: String,
        from: TensorType,
        to: TensorType,
    },
    /// A layer got an operand of the wrong rank or dtype.
    #[error("{context}: expected {expected}, found {found}")]
    Operand {
        context: String,
        expected: String,
        found: TensorType,
    },
    /// A layer got an argument outside its domain (bounds out of order, a NaN).
    #[error("{context}: {message}")]
    Argument { context: String, message: String },
    /// A parameter's initial values could not be held in memory (the environment's
    /// limit, not a kiln bug); `context` names the parameter.
    #[error("{context}: {source}")]
    OutOfMemory {
        context: String,
        #[source]
        source: OutOfMemory,
    },
    /// `Model::new` got no values for one of the graph's parameters.
    #[error("parameter {0:?} has no values")]
    MissingParam(String),
    /// `Model::new` or `Model::set_param` got values for a name that is not a
    /// parameter of the graph.
    #[error("the graph has no parameter {0:?}")]
    UnknownParam(String),
    /// Parameter values whose count is not the parameter's element count (or whose
    /// parameter is not f32, the only dtype trained).
    #[error("parameter {name:?} of type {ty} cannot take {found} f32 values")]
    ParamLength {
        name: String,
        ty: TensorType,
        found: usize,
    },
    /// A NaN or infinite initial value (a bad value handed in, or an initialiser
    /// whose scale overflows f32); training would spread it to every weight.
    #[error("parameter {name:?}: value {index} is {value}, not a finite number")]
    NonFiniteParam {
        name: String,
        index: usize,
        value: f32,
    },
}

pub(crate) trait Context<T> {
    fn context(self, context: impl Into<String>) -> Result<T, FrontendError>;
}

impl<T> Context<T> for Result<T, IrError> {
    fn context(self, context: impl Into<String>) -> Result<T, FrontendError> {
        self.map_err(|source| FrontendError::Ir {
            context: context.into(),
            source,
        })
    }
}

/// A declared network: its graph and the initial value of every parameter. The values
/// always match the graph's parameters one to one, by name and element count, and are
/// finite: `Model::new` and `set_param` check it, so compiling and loading a model
/// never meets a missing or misshapen weight.
#[derive(Clone, Debug)]
pub struct Model {
    graph: Graph,
    params: BTreeMap<String, Vec<f32>>,
}

impl Model {
    /// A model of `graph` starting from `params`: one entry per parameter of the graph,
    /// named as it, with its element count of finite values in row-major order.
    pub fn new(graph: Graph, params: BTreeMap<String, Vec<f32>>) -> Result<Model, FrontendError> {
        for &param in graph.params() {
            let name = graph.leaf_name(param).expect("parameters are named");
            if !params.contains_key(name) {
                return Err(FrontendError::MissingParam(name.to_string()));
            }
        }
        for (name, values) in &params {
            check_param_values(&graph, name, values)?;
        }
        Ok(Model { graph, params })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Initial values by parameter name, in the parameter's row-major order.
    pub fn params(&self) -> &BTreeMap<String, Vec<f32>> {
        &self.params
    }

    /// The values of parameter `name`, if the graph has one.
    pub fn param(&self, name: &str) -> Option<&[f32]> {
        self.params.get(name).map(Vec::as_slice)
    }

    /// Replaces the values of parameter `name` (trained weights, say), checked like
    /// `new`'s.
    pub fn set_param(&mut self, name: &str, values: Vec<f32>) -> Result<(), FrontendError> {
        check_param_values(&self.graph, name, &values)?;
        self.params.insert(name.to_string(), values);
        Ok(())
    }

    /// Freezes the parameter `name`: training leaves it alone (no gradient, no
    /// optimizer update), as `requires_grad = False` in PyTorch. To train one part of a
    /// model at a time (a GAN's generator, then its discriminator), compile a step of
    /// each with the other part frozen.
    pub fn freeze(&mut self, name: &str) -> Result<(), FrontendError> {
        let param = self
            .graph
            .param_by_name(name)
            .ok_or_else(|| FrontendError::UnknownParam(name.to_string()))?;
        self.graph
            .freeze(param)
            .context(format!("parameter {name:?}"))
    }

    /// The graph and the values, to edit the graph and build a new `Model` from them.
    pub fn into_parts(self) -> (Graph, BTreeMap<String, Vec<f32>>) {
        (self.graph, self.params)
    }
}

/// Checks `values` for parameter `name` of `graph`: it exists, is f32, has that many
/// elements, and every value is finite.
fn check_param_values(graph: &Graph, name: &str, values: &[f32]) -> Result<(), FrontendError> {
    let param = graph
        .param_by_name(name)
        .ok_or_else(|| FrontendError::UnknownParam(name.to_string()))?;
    let ty = graph.ty(param);
    if ty.dtype != DType::F32 || ty.num_elements() != values.len() {
        return Err(FrontendError::ParamLength {
            name: name.to_string(),
            ty: ty.clone(),
            found: values.len(),
        });
    }
    check_finite(name, values)
}

fn check_finite(name: &str, values: &[f32]) -> Result<(), FrontendError> {
    match values.iter().position(|value| !value.is_finite()) {
        Some(index) => Err(FrontendError::NonFiniteParam {
            name: name.to_string(),
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}

/// Builds a `Model`. Parameters are initialised from one seeded stream in declaration
/// order, so the same declarations with the same seed give the same weights whatever
/// the batch size.
pub struct ModelBuilder {
    graph: Graph,
    params: BTreeMap<String, Vec<f32>>,
    rng: Rng,
    /// The stream the next `random` op draws from (see [`ModelBuilder::next_stream`]).
    stream: u32,
    /// Whether layers are built for evaluation rather than training (see
    /// [`ModelBuilder::set_evaluation`]).
    evaluation: bool,
}

impl ModelBuilder {
    pub fn new(name: &str, seed: u64) -> ModelBuilder {
        ModelBuilder {
            graph: Graph::new(name),
            params: BTreeMap::new(),
            rng: Rng::new(seed),
            stream: 0,
            evaluation: false,
        }
    }

    /// Builds the layers declared from now on for evaluation (PyTorch's
    /// `module.eval()`): dropout is the identity. Training mode is the default.
    pub fn set_evaluation(&mut self, evaluation: bool) {
        self.evaluation = evaluation;
    }

    /// Whether layers are built for evaluation (see [`ModelBuilder::set_evaluation`]).
    pub fn evaluation(&self) -> bool {
        self.evaluation
    }

    /// A stream number no other `random` op of this model has drawn from, so that
    /// samples sharing a seed are independent; numbered in order of construction, so
    /// the same declarations give the same samples.
    pub fn next_stream(&mut self) -> u32 {
        self.stream = self.stream.wrapping_add(1);
        self.stream - 1
    }

    /// The graph under construction, for ops the builder has no helper for.
    pub fn graph(&mut self) -> &mut Graph {
        &mut self.graph
    }

    /// The type of a value of this model; a value from another builder is an error.
    pub fn ty(&self, value: NodeId) -> Result<&TensorType, FrontendError> {
        self.graph.try_ty(value).context("value")
    }

    /// An error naming `context` unless `value` is a node of this model.
    pub(crate) fn check_own(&self, value: NodeId, context: &str) -> Result<(), FrontendError> {
        self.graph.try_ty(value).map(|_| ()).context(context)
    }

    pub fn input(&mut self, name: &str, ty: TensorType) -> Result<NodeId, FrontendError> {
        self.graph
            .input(name, ty)
            .context(format!("input {name:?}"))
    }

    /// A trainable f32 parameter of the given shape, drawn from `init`. A shape
    /// beyond the size limit, or values that do not fit in memory, are errors.
    pub fn parameter(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
    ) -> Result<NodeId, FrontendError> {
        let context = format!("parameter {name:?}");
        // The limit first: it refuses what no machine could hold without trying.
        check_size("param", shape).context(context.clone())?;
        let values =
            init.sample(shape, &mut self.rng)
                .map_err(|source| FrontendError::OutOfMemory {
                    context: context.clone(),
                    source,
                })?;
        self.parameter_with_values(name, shape, values)
    }

    /// Declares a parameter with the given initial values (row-major, one per
    /// element of `shape`, finite): for values computed from other parameters'.
    pub fn parameter_with_values(
        &mut self,
        name: &str,
        shape: &[usize],
        values: Vec<f32>,
    ) -> Result<NodeId, FrontendError> {
        let context = format!("parameter {name:?}");
        check_size("param", shape).context(context.clone())?;
        if values.len() != kiln_ir::types::num_elements(shape) {
            return Err(FrontendError::Argument {
                context,
                message: format!("{} values for the shape {shape:?}", values.len()),
            });
        }
        let id = self
            .graph
            .parameter(name, TensorType::f32(shape))
            .context(context)?;
        check_finite(name, &values)?;
        self.params.insert(name.to_string(), values);
        Ok(id)
    }

    /// A buffer: a parameter with the given values that training never changes
    /// (PyTorch's `register_buffer`): frozen, so it gets no gradient and no optimizer
    /// update; the model may still give it an update of its own with `set_update`
    /// (batch norm's running statistics). A positional-encoding table, say.
    pub fn buffer(
        &mut self,
        name: &str,
        shape: &[usize],
        values: Vec<f32>,
    ) -> Result<NodeId, FrontendError> {
        let id = self.parameter_with_values(name, shape, values)?;
        self.graph.freeze(id).context(format!("buffer {name:?}"))?;
        Ok(id)
    }

    /// Gives buffer `param` the value `value` after every run: the model's own
    /// update of its state, as batch norm's running statistics in training.
    pub fn set_update(&mut self, param: NodeId, value: NodeId) -> Result<(), FrontendError> {
        let name = self.graph.leaf_name(param).unwrap_or("?").to_string();
        if !self.graph.is_frozen(param) {
            return Err(FrontendError::Argument {
                context: format!("update of {name:?}"),
                message: "only a buffer (a frozen parameter) takes the model's own update: \
                          a trained parameter is updated by the optimizer"
                    .to_string(),
            });
        }
        self.graph
            .set_update(param, value)
            .context(format!("update of {name:?}"))
    }

    /// The initial values of the parameter `name`, if this builder declared it.
    pub fn param_values(&self, name: &str) -> Option<&[f32]> {
        self.params.get(name).map(Vec::as_slice)
    }

    pub fn output(&mut self, name: &str, value: NodeId) -> Result<(), FrontendError> {
        self.graph
            .set_output(name, value)
            .context(format!("output {name:?}"))
    }

    /// The model declared so far. Checked like `Model::new`, so a parameter whose
    /// declaration failed (and was ignored) is an error here, not a missing weight later.
    pub fn finish(self) -> Result<Model, FrontendError> {
        Model::new(self.graph, self.params)
    }

    /// A scalar f32 constant broadcast to the shape of `like`.
    pub fn scalar_like(&mut self, value: f64, like: NodeId) -> Result<NodeId, FrontendError> {
        self.graph.constant_like(value, like).context("constant")
    }

    /// Numpy-style broadcast of `x` to `shape`: missing leading axes are added, then
    /// axes of extent 1 stretch (to any extent, 0 included).
    pub fn broadcast_to(&mut self, x: NodeId, shape: &[usize]) -> Result<NodeId, FrontendError> {
        let from = self.ty(x)?.clone();
        let to = from.with_shape(shape);
        let fits = from.rank() <= shape.len()
            && from
                .shape
                .iter()
                .rev()
                .zip(shape.iter().rev())
                .all(|(&a, &b)| a == b || a == 1);
        if !fits {
            return Err(FrontendError::Broadcast {
                context: "broadcast".to_string(),
                from,
                to,
            });
        }
        if from.shape == shape {
            return Ok(x);
        }
        let mut padded = vec![1; shape.len() - from.rank()];
        padded.extend(&from.shape);
        let x = if padded == from.shape {
            x
        } else {
            self.graph.reshape(x, padded).context("broadcast")?
        };
        self.graph.broadcast(x, shape).context("broadcast")
    }

    /// A binary op with numpy-style broadcasting of both operands to a common shape:
    /// per axis, equal extents stay and an extent of 1 takes the other's (so 1 against
    /// 0 gives 0, as in NumPy); other pairs (0 against 3) are an error.
    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId, FrontendError> {
        let (sa, sb) = (self.ty(a)?.clone(), self.ty(b)?.clone());
        let rank = sa.rank().max(sb.rank());
        let extent = |ty: &TensorType, axis: usize| {
            let pad = rank - ty.rank();
            if axis < pad {
                1
            } else {
                ty.shape[axis - pad]
            }
        };
        let mut shape = Vec::with_capacity(rank);
        for axis in 0..rank {
            let (ea, eb) = (extent(&sa, axis), extent(&sb, axis));
            if ea != eb && ea != 1 && eb != 1 {
                return Err(FrontendError::Broadcast {
                    context: op.name().to_string(),
                    from: sb,
                    to: sa,
                });
            }
            shape.push(if ea == 1 { eb } else { ea });
        }
        let a = self.broadcast_to(a, &shape)?;
        let b = self.broadcast_to(b, &shape)?;
        self.graph.binary(op, a, b).context(op.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_broadcasts_like_numpy() {
        let mut b = ModelBuilder::new("t", 0);
        let x = b.input("x", TensorType::f32([4, 3])).unwrap();
        let bias = b.parameter("b", &[3], Init::Zeros).unwrap();
        let y = b.binary(BinaryOp::Add, x, bias).unwrap();
        assert_eq!(b.ty(y).unwrap(), &TensorType::f32([4, 3]));
        let col = b.input("c", TensorType::f32([4, 1])).unwrap();
        let z = b.binary(BinaryOp::Mul, col, bias).unwrap();
        assert_eq!(b.ty(z).unwrap(), &TensorType::f32([4, 3]));
    }

    #[test]
    fn incompatible_broadcast_names_both_types() {
        let mut b = ModelBuilder::new("t", 0);
        let x = b.input("x", TensorType::f32([4, 3])).unwrap();
        let y = b.input("y", TensorType::f32([2])).unwrap();
        let err = b.binary(BinaryOp::Add, x, y).unwrap_err().to_string();
        assert_eq!(err, "add: cannot broadcast f32[2] to f32[4,3]");
    }

    #[test]
    fn zero_extents_broadcast_like_numpy() {
        let mut b = ModelBuilder::new("t", 0);
        let empty = b.input("e", TensorType::f32([0, 3])).unwrap();
        let row = b.parameter("r", &[1, 3], Init::Zeros).unwrap();
        let y = b.binary(BinaryOp::Add, empty, row).unwrap();
        assert_eq!(b.ty(y).unwrap(), &TensorType::f32([0, 3]));
        // Operand order does not matter: 1 against 0 is 0 either way.
        let y = b.binary(BinaryOp::Mul, row, empty).unwrap();
        assert_eq!(b.ty(y).unwrap(), &TensorType::f32([0, 3]));
        let bias = b.parameter("bias", &[3], Init::Zeros).unwrap();
        let y = b.binary(BinaryOp::Add, empty, bias).unwrap();
        assert_eq!(b.ty(y).unwrap(), &TensorType::f32([0, 3]));
        let y = b.broadcast_to(row, &[0, 3]).unwrap();
        assert_eq!(b.ty(y).unwrap(), &TensorType::f32([0, 3]));
        // 0 against 2 is no broadcast in NumPy either.
        let two = b.input("two", TensorType::f32([2, 3])).unwrap();
        let err = b.binary(BinaryOp::Add, empty, two).unwrap_err();
        assert_eq!(
            err.to_string(),
            "add: cannot broadcast f32[2,3] to f32[0,3]"
        );
        assert!(b.broadcast_to(empty, &[2, 3]).is_err());
    }

    #[test]
    fn parameters_beyond_the_size_limit_are_errors_not_aborts() {
        // 100 000 x 100 000 f32 is 40 GB: today's abort, refused by the size limit.
        let mut b = ModelBuilder::new("t", 0);
        let err = b
            .parameter("w", &[100_000, 100_000], Init::GlorotUniform)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameter \"w\": param: shape [100000, 100000] has more than 2147483647 elements, the most a tensor may have"
        );
        // Nothing was declared: the name is still free and the model has no values.
        b.parameter("w", &[2], Init::Zeros).unwrap();
        assert_eq!(b.finish().unwrap().params()["w"], vec![0.0; 2]);
    }

    #[test]
    fn model_values_must_match_the_graph_parameters() {
        let mut graph = Graph::new("m");
        graph.parameter("w", TensorType::f32([2, 3])).unwrap();
        graph.parameter("b", TensorType::f32([3])).unwrap();
        let values = |entries: &[(&str, Vec<f32>)]| -> BTreeMap<String, Vec<f32>> {
            entries
                .iter()
                .map(|(name, values)| (name.to_string(), values.clone()))
                .collect()
        };
        let err = Model::new(graph.clone(), values(&[("w", vec![0.0; 6])])).unwrap_err();
        assert_eq!(err.to_string(), "parameter \"b\" has no values");
        let extra = values(&[("w", vec![0.0; 6]), ("b", vec![0.0; 3]), ("v", vec![])]);
        let err = Model::new(graph.clone(), extra).unwrap_err();
        assert_eq!(err.to_string(), "the graph has no parameter \"v\"");
        let short = values(&[("w", vec![0.0; 5]), ("b", vec![0.0; 3])]);
        let err = Model::new(graph.clone(), short).unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameter \"w\" of type f32[2,3] cannot take 5 f32 values"
        );
        let nan = values(&[("w", vec![0.0; 6]), ("b", vec![0.0, f32::NAN, 0.0])]);
        let err = Model::new(graph.clone(), nan).unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameter \"b\": value 1 is NaN, not a finite number"
        );

        let good = values(&[("w", vec![0.5; 6]), ("b", vec![0.0; 3])]);
        let mut model = Model::new(graph, good).unwrap();
        assert_eq!(model.param("w"), Some(&[0.5; 6][..]));
        assert!(model.set_param("b", vec![1.0; 2]).is_err());
        assert!(model.set_param("x", vec![1.0; 3]).is_err());
        model.set_param("b", vec![1.0; 3]).unwrap();
        assert_eq!(model.params()["b"], [1.0; 3]);
    }

    #[test]
    fn an_initialiser_that_gives_non_finite_values_is_an_error() {
        let mut b = ModelBuilder::new("t", 0);
        let err = b
            .parameter("w", &[2], Init::Constant(f32::INFINITY))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameter \"w\": value 0 is inf, not a finite number"
        );
        // Ignoring the error does not leave a weightless parameter in the model.
        let err = b.finish().unwrap_err();
        assert_eq!(err.to_string(), "parameter \"w\" has no values");
    }

    #[test]
    fn parameters_are_initialised_in_declaration_order() {
        let declare = || {
            let mut b = ModelBuilder::new("t", 42);
            b.parameter("w", &[2, 2], Init::GlorotUniform).unwrap();
            b.parameter("v", &[3], Init::HeNormal).unwrap();
            b.finish().unwrap()
        };
        let (first, second) = (declare(), declare());
        assert_eq!(first.params(), second.params());
        assert_eq!(first.params()["w"].len(), 4);
        assert_eq!(first.params()["v"].len(), 3);
    }
}
