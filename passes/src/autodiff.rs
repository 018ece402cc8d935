//! The autodiff pass: reverse-mode differentiation of one scalar loss, as a graph pass.
//!
//! What it does: appends the backward graph to a copy of the input and adds, for every
//! parameter that is not frozen ([`Graph::is_frozen`]) in declaration order, an output
//! `grad.<name>` holding d loss / d param,
//! then the same for every input named in [`AutodiffOptions::inputs`] (in that order;
//! an adversarial example needs d loss / d image). A parameter or input the loss does
//! not depend on gets a zero constant of its type. Existing outputs and updates are
//! kept.
//!
//! What it assumes: the loss is a named output of type f32 with exactly one element
//! (any rank, e.g. `f32[]` or `f32[1,1]`). Only f32 values carry gradients: casts to or
//! from i32/bool, compares, one-hot and integer arithmetic stop the flow.
//!
//! What it guarantees: a pure function (the input graph is not touched; forward node
//! ids stay valid in the result); the result is well typed (it is built through the
//! checked builder) and deterministic (nodes are visited in reverse `topo_order`). Only nodes
//! on a path from a parameter to the loss are differentiated, and a rule builds only
//! the operand gradients that are needed, so no dead backward nodes are emitted.
//! Matmul gradients are written with explicit `transpose` nodes and flag-free
//! `matmul`s; the e-graph pass folds the transposes into matmul flags later.
//!
//! Conventions at non-differentiable points: `relu` has derivative 0 at 0; `max`
//! gives a tie to its first operand; `reduce_max` gives the cotangent to every
//! element equal to the maximum, so ties all receive the full cotangent (tinygrad and
//! JAX split it evenly instead; exact ties are rare in trained floats, and this keeps
//! the rule one `select`).
//!
//! ```text
//! before:  %0 = param "w" : f32[4]
//!          %1 = exp %0 : f32[4]
//!          %2 = reduce_sum %1 axes=[0] : f32[1]       output "loss" = %2
//! after:   ... the three lines above, then
//!          %3 = const 1.0 : f32[1]                    the seed
//!          %4 = broadcast %3 : f32[4]                 d loss / d %1
//!          %5 = mul %4, %1 : f32[4]                   output "grad.w" = %5 (g * exp(w))
//! ```

use kiln_ir::op::{ConvSpec, PoolKind};
use kiln_ir::{BinaryOp, CmpOp, DType, Graph, IrError, NodeId, Op, ReduceOp, UnaryOp};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// What to differentiate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutodiffOptions {
    /// The name of a graph output: f32 with exactly one element.
    pub loss: String,
    /// f32 inputs to differentiate with respect to as well, by name.
    pub inputs: Vec<String>,
}

impl AutodiffOptions {
    /// Gradients of `loss` with respect to the parameters only.
    pub fn loss(loss: impl Into<String>) -> AutodiffOptions {
        AutodiffOptions {
            loss: loss.into(),
            inputs: Vec::new(),
        }
    }
}

/// Why the backward graph could not be built.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AutodiffError {
    /// The named loss is not an output of the graph (user's mistake).
    #[error("loss {0:?} is not an output of the graph")]
    LossNotAnOutput(String),
    /// The loss is not f32, so it has no gradient (user's mistake).
    #[error("loss {name:?} must be f32, found {ty}")]
    LossNotF32 { name: String, ty: String },
    /// The loss has more or fewer than one element (user's mistake).
    #[error("loss {name:?} must have exactly one element, found {ty}")]
    LossNotScalar { name: String, ty: String },
    /// A name in [`AutodiffOptions::inputs`] that is no input of the graph (user's
    /// mistake).
    #[error("{0:?} is not an input of the graph, so it has no gradient")]
    UnknownInput(String),
    /// An input asked for whose dtype carries no gradient (user's mistake).
    #[error("input {name:?} must be f32 to have a gradient, found {ty}")]
    InputNotF32 { name: String, ty: String },
    /// Building a backward node failed. A gradient output whose name is already taken
    /// is the user's mistake; any other IR error here is a kiln bug in a derivative rule.
    #[error("building the backward graph: {0}")]
    Ir(#[from] IrError),
}

/// The cotangent `g` to the first operand where `first_wins`, else to the second:
/// the rule of `max` and `min`.
fn to_the_winner(
    graph: &mut Graph,
    first_wins: NodeId,
    g: NodeId,
    needs: &[bool],
) -> Result<Vec<Option<NodeId>>, IrError> {
    let zero = graph.constant_like(0.0, g)?;
    let da = if needs[0] {
        Some(graph.select(first_wins, g, zero)?)
    } else {
        None
    };
    let db = if needs[1] {
        Some(graph.select(first_wins, zero, g)?)
    } else {
        None
    };
    Ok(vec![da, db])
}

/// How many elements of an axis `count` elements `step` apart span: from the first
/// to the last inclusive.
pub(crate) fn spanned(count: usize, step: usize) -> usize {
    if count == 0 {
        0
    } else {
        (count - 1) * step + 1
    }
}

/// The name of the output holding the gradient of parameter `param`.
pub fn grad_name(param: &str) -> String {
    format!("grad.{param}")
}

/// Returns a copy of `graph` with the backward graph appended and one `grad.<param>`
/// output per parameter.
pub fn run(graph: &Graph, options: &AutodiffOptions) -> Result<Graph, AutodiffError> {
    let loss = graph
        .output_by_name(&options.loss)
        .ok_or_else(|| AutodiffError::LossNotAnOutput(options.loss.clone()))?;
    let loss_ty = graph.ty(loss);
    if loss_ty.dtype != DType::F32 {
        return Err(AutodiffError::LossNotF32 {
            name: options.loss.clone(),
            ty: loss_ty.to_string(),
        });
    }
    if loss_ty.num_elements() != 1 {
        return Err(AutodiffError::LossNotScalar {
            name: options.loss.clone(),
            ty: loss_ty.to_string(),
        });
    }

    let mut inputs = Vec::with_capacity(options.inputs.len());
    for name in &options.inputs {
        let input = graph
            .input_by_name(name)
            .ok_or_else(|| AutodiffError::UnknownInput(name.clone()))?;
        let ty = graph.ty(input);
        if ty.dtype != DType::F32 {
            return Err(AutodiffError::InputNotF32 {
                name: name.clone(),
                ty: ty.to_string(),
            });
        }
        inputs.push(input);
    }

    let order = graph.topo_order();
    // Frozen parameters are constants to training: no gradient flows to them.
    let params = graph.trainable_params();
    let sources: BTreeSet<NodeId> = params.iter().chain(&inputs).copied().collect();
    let on_path = nodes_on_source_paths(graph, &order, &sources, loss);
    let mut result = graph.clone();
    let mut cotangents: BTreeMap<NodeId, NodeId> = BTreeMap::new();
    if on_path.contains(&loss) {
        let seed = result.constant_like(1.0, loss)?;
        cotangents.insert(loss, seed);
    }
    // Reverse topological order: every user of a node is finished before the node,
    // so its cotangent is complete when its rule runs.
    for &node in order.iter().rev() {
        if !on_path.contains(&node) || graph.op(node).is_leaf() {
            continue;
        }
        let Some(&cotangent) = cotangents.get(&node) else {
            continue;
        };
        let operands = graph.operands(node);
        let needs: Vec<bool> = operands
            .iter()
            .map(|operand| on_path.contains(operand))
            .collect();
        if !needs.contains(&true) {
            continue;
        }
        let grads = vjp(
            &mut result,
            graph.op(node),
            &operands,
            node,
            cotangent,
            &needs,
        )?;
        for ((operand, grad), needed) in operands.into_iter().zip(grads).zip(needs) {
            if let (Some(grad), true) = (grad, needed) {
                accumulate(&mut result, &mut cotangents, operand, grad)?;
            }
        }
    }

    for &source in params.iter().chain(&inputs) {
        let name = graph
            .leaf_name(source)
            .expect("parameters and inputs are named");
        let grad = match cotangents.get(&source) {
            Some(&grad) => grad,
            None => result.constant_like(0.0, source)?,
        };
        result.set_output(&grad_name(name), grad)?;
    }
    Ok(result)
}

/// The f32 nodes that depend on a source (a parameter or an input asked for) and that
/// the loss depends on through f32 nodes only: exactly the nodes whose cotangent
/// reaches a source's gradient.
fn nodes_on_source_paths(
    graph: &Graph,
    order: &[NodeId],
    sources: &BTreeSet<NodeId>,
    loss: NodeId,
) -> BTreeSet<NodeId> {
    let mut depends_on_source: BTreeSet<NodeId> = BTreeSet::new();
    for &node in order {
        if graph.ty(node).dtype != DType::F32 {
            continue;
        }
        let depends = match graph.op(node) {
            _ if sources.contains(&node) => true,
            op if op.is_leaf() => false,
            _ => graph
                .operands(node)
                .iter()
                .any(|operand| depends_on_source.contains(operand)),
        };
        if depends {
            depends_on_source.insert(node);
        }
    }
    let mut on_path: BTreeSet<NodeId> = BTreeSet::new();
    if depends_on_source.contains(&loss) {
        on_path.insert(loss);
    }
    for &node in order.iter().rev() {
        if !on_path.contains(&node) || graph.op(node).is_leaf() {
            continue;
        }
        for operand in graph.operands(node) {
            if depends_on_source.contains(&operand) {
                on_path.insert(operand);
            }
        }
    }
    on_path
}

/// Adds `grad` to the cotangent collected so far for `node` (a node with several
/// users, or used twice by one node, receives one contribution per use).
fn accumulate(
    graph: &mut Graph,
    cotangents: &mut BTreeMap<NodeId, NodeId>,
    node: NodeId,
    grad: NodeId,
) -> Result<(), IrError> {
    let total = match cotangents.get(&node) {
        Some(&previous) => graph.add_(previous, grad)?,
        None => grad,
    };
    cotangents.insert(node, total);
    Ok(())
}

/// The derivative rules: one arm per op (tinygrad's `pm_gradient`). Given an `op`
/// with its `operands`, the node `output` holding its value (the backward graph is
/// built in a copy of the forward graph, so forward ids stay valid) and the cotangent
/// `g` of that value, returns the cotangent contribution for each operand, in operand
/// order; `None` where the operand gets no gradient (not f32, not differentiable
/// with respect to it, or not needed: `needs[i]` is false, so no dead node is built).
pub(crate) fn vjp(
    graph: &mut Graph,
    op: &Op,
    operands: &[NodeId],
    output: NodeId,
    g: NodeId,
    needs: &[bool],
) -> Result<Vec<Option<NodeId>>, IrError> {
    let grads = match op {
        Op::Input { .. } | Op::Parameter { .. } | Op::Constant { .. } | Op::Iota { .. } => {
            Vec::new()
        }
        Op::Unary(unary) => {
            let x = operands[0];
            let dx = match unary {
                UnaryOp::Neg => graph.neg(g)?,
                // d exp(x) = exp(x) dx, and exp(x) is the output itself.
                UnaryOp::Exp => graph.mul(g, output)?,
                UnaryOp::Log => graph.div(g, x)?,
                UnaryOp::Relu => {
                    let zero = graph.constant_like(0.0, x)?;
                    let positive = graph.compare(CmpOp::Gt, x, zero)?;
                    graph.select(positive, g, zero)?
                }
                // d sqrt(x) = dx / (2 sqrt(x)): infinite at 0, as in PyTorch.
                UnaryOp::Sqrt => {
                    let twice = graph.add_(output, output)?;
                    graph.div(g, twice)?
                }
                // d x^(-1/2) = -1/2 x^(-3/2) dx = -1/2 y^3 dx.
                UnaryOp::Rsqrt => {
                    let square = graph.mul(output, output)?;
                    let cube = graph.mul(square, output)?;
                    let half = graph.constant_like(-0.5, x)?;
                    let slope = graph.mul(cube, half)?;
                    graph.mul(g, slope)?
                }
                // sign(0) = 0: the subgradient PyTorch picks.
                UnaryOp::Abs => {
                    let sign = graph.sign(x)?;
                    graph.mul(g, sign)?
                }
                // Piecewise constant.
                UnaryOp::Sign => return Ok(vec![None]),
                // d σ(x) = σ(x) (1 - σ(x)) dx.
                UnaryOp::Sigmoid => {
                    let one = graph.constant_like(1.0, x)?;
                    let rest = graph.sub(one, output)?;
                    let slope = graph.mul(output, rest)?;
                    graph.mul(g, slope)?
                }
                // d tanh(x) = (1 - tanh(x)^2) dx.
                UnaryOp::Tanh => {
                    let one = graph.constant_like(1.0, x)?;
                    let square = graph.mul(output, output)?;
                    let slope = graph.sub(one, square)?;
                    graph.mul(g, slope)?
                }
                // d ln(1 + e^x) = σ(x) dx.
                UnaryOp::Softplus => {
                    let slope = graph.sigmoid(x)?;
                    graph.mul(g, slope)?
                }
                // d (e^x - 1) = e^x dx = (y + 1) dx.
                UnaryOp::Expm1 => {
                    let one = graph.constant_like(1.0, x)?;
                    let slope = graph.add_(output, one)?;
                    graph.mul(g, slope)?
                }
                // d ln(1 + x) = dx / (1 + x).
                UnaryOp::Log1p => {
                    let one = graph.constant_like(1.0, x)?;
                    let base = graph.add_(x, one)?;
                    graph.div(g, base)?
                }
                // d erf(x) = 2/√π e^(-x²) dx.
                UnaryOp::Erf => {
                    let square = graph.mul(x, x)?;
                    let minus = graph.neg(square)?;
                    let gauss = graph.exp(minus)?;
                    let scale = graph.constant_like(std::f64::consts::FRAC_2_SQRT_PI, x)?;
                    let slope = graph.mul(gauss, scale)?;
                    graph.mul(g, slope)?
                }
            };
            vec![Some(dx)]
        }
        Op::Binary(binary) => {
            let (a, b) = (operands[0], operands[1]);
            match binary {
                BinaryOp::Add => vec![Some(g), Some(g)],
                BinaryOp::Sub => {
                    let db = if needs[1] { Some(graph.neg(g)?) } else { None };
                    vec![Some(g), db]
                }
                BinaryOp::Mul => {
                    let da = if needs[0] {
                        Some(graph.mul(g, b)?)
                    } else {
                        None
                    };
                    // `mul x, x` gets the same contribution twice; build it once.
                    let db = match (needs[1], da) {
                        (true, Some(da)) if a == b => Some(da),
                        (true, _) => Some(graph.mul(g, a)?),
                        (false, _) => None,
                    };
                    vec![da, db]
                }
                BinaryOp::Div => {
                    // y = a / b: dy/da = 1/b, dy/db = -a/b^2 = -(1/b) * y, so the
                    // b-gradient reuses g/b and the output y.
                    let g_over_b = graph.div(g, b)?;
                    let db = if needs[1] {
                        let scaled = graph.mul(g_over_b, output)?;
                        Some(graph.neg(scaled)?)
                    } else {
                        None
                    };
                    vec![Some(g_over_b), db]
                }
                // Ties go to the first operand, so exactly one operand receives g.
                BinaryOp::Max => {
                    let first_wins = graph.compare(CmpOp::Ge, a, b)?;
                    to_the_winner(graph, first_wins, g, needs)?
                }
                BinaryOp::Min => {
                    let first_wins = graph.compare(CmpOp::Le, a, b)?;
                    to_the_winner(graph, first_wins, g, needs)?
                }
                BinaryOp::Pow => {
                    // PyTorch's rules: d/da = b a^(b-1), zero where b = 0 (so that
                    // a^0 has no NaN slope at a = 0); d/db = a^b ln a, zero where
                    // a = 0 and b >= 0 (the limit from the right).
                    let zero = graph.constant_like(0.0, g)?;
                    let da = if needs[0] {
                        let one = graph.constant_like(1.0, b)?;
                        let lowered = graph.sub(b, one)?;
                        let power = graph.pow(a, lowered)?;
                        let slope = graph.mul(b, power)?;
                        let scaled = graph.mul(g, slope)?;
                        let constant = graph.compare(CmpOp::Eq, b, zero)?;
                        Some(graph.select(constant, zero, scaled)?)
                    } else {
                        None
                    };
                    let db = if needs[1] {
                        let ln = graph.log(a)?;
                        let slope = graph.mul(output, ln)?;
                        let scaled = graph.mul(g, slope)?;
                        let at_zero = graph.compare(CmpOp::Eq, a, zero)?;
                        let upward = graph.compare(CmpOp::Ge, b, zero)?;
                        let from_right = graph.select(upward, zero, scaled)?;
                        Some(graph.select(at_zero, from_right, scaled)?)
                    } else {
                        None
                    };
                    vec![da, db]
                }
            }
        }
        // Compares and one-hot produce bool/f32 values that are piecewise constant in
        // their operands: no gradient.
        Op::Compare(_) => vec![None, None],
        Op::OneHot { .. } => vec![None],
        // A sample depends on its integer seed only.
        Op::Random { .. } => vec![None],
        // A slice's cotangent goes back to the elements it read, zeros elsewhere: a
        // pad with the step's gaps as interior padding.
        Op::Slice { starts, steps, .. } => {
            let x_shape = graph.ty(operands[0]).shape.clone();
            let g_shape = graph.ty(g).shape.clone();
            let interior: Vec<usize> = steps.iter().map(|step| step - 1).collect();
            let high: Vec<usize> = (0..x_shape.len())
                .map(|axis| x_shape[axis] - starts[axis] - spanned(g_shape[axis], steps[axis]))
                .collect();
            vec![Some(graph.pad(g, starts, &high, &interior, 0.0)?)]
        }
        // A pad's cotangent is the part of it at the operand's elements.
        Op::Pad { low, interior, .. } => {
            let x_shape = graph.ty(operands[0]).shape.clone();
            let steps: Vec<usize> = interior.iter().map(|gap| gap + 1).collect();
            let ends: Vec<usize> = (0..x_shape.len())
                .map(|axis| low[axis] + spanned(x_shape[axis], steps[axis]))
                .collect();
            vec![Some(graph.slice(g, low, &ends, &steps)?)]
        }
        Op::Concat { axis } => {
            let shape = graph.ty(g).shape.clone();
            let split = graph.ty(operands[0]).shape[*axis];
            let unit_steps = vec![1; shape.len()];
            let part = |graph: &mut Graph, from: usize, to: usize| {
                let mut starts = vec![0; shape.len()];
                let mut ends = shape.clone();
                starts[*axis] = from;
                ends[*axis] = to;
                graph.slice(g, &starts, &ends, &unit_steps)
            };
            let da = if needs[0] {
                Some(part(graph, 0, split)?)
            } else {
                None
            };
            let db = if needs[1] {
                Some(part(graph, split, shape[*axis])?)
            } else {
                None
            };
            vec![da, db]
        }
        // A gather copies elements, so its cotangent adds back into the elements it
        // read (out-of-range reads took nothing and get nothing); integer indices get
        // no gradient.
        Op::Gather { axis, batch_dims } => {
            let extent = graph.ty(operands[0]).shape[*axis];
            let dparams = if needs[0] {
                Some(graph.scatter_add(g, operands[1], *axis, *batch_dims, extent)?)
            } else {
                None
            };
            vec![dparams, None]
        }
        // Each update went to one element (or was dropped): it reads that element's
        // cotangent back, which a gather by the same indices does (0 when dropped).
        Op::ScatterAdd {
            axis, batch_dims, ..
        } => {
            let dupdates = if needs[0] {
                Some(graph.gather(g, operands[1], *axis, *batch_dims)?)
            } else {
                None
            };
            vec![dupdates, None]
        }
        Op::Select => {
            let cond = operands[0];
            let zero = graph.constant_like(0.0, g)?;
            let on_true = if needs[1] {
                Some(graph.select(cond, g, zero)?)
            } else {
                None
            };
            let on_false = if needs[2] {
                Some(graph.select(cond, zero, g)?)
            } else {
                None
            };
            vec![None, on_true, on_false]
        }
        Op::Cast { to } => {
            let from = graph.ty(operands[0]).dtype;
            if from == DType::F32 && *to == DType::F32 {
                vec![Some(g)]
            } else {
                vec![None]
            }
        }
        Op::Broadcast { shape } => {
            let x_shape = graph.ty(operands[0]).shape.clone();
            let stretched: Vec<usize> = (0..shape.len())
                .filter(|&axis| x_shape[axis] != shape[axis])
                .collect();
            // Reductions keep the reduced axes with extent 1, so the sum has exactly
            // the operand's shape.
            let dx = if stretched.is_empty() {
                g
            } else {
                graph.reduce_sum(g, &stretched)?
            };
            vec![Some(dx)]
        }
        Op::Reduce { op: reduce, axes } => {
            let x = operands[0];
            let x_shape = graph.ty(x).shape.clone();
            let spread = graph.broadcast(g, x_shape.clone())?;
            let dx = match reduce {
                ReduceOp::Sum => spread,
                ReduceOp::Mean => {
                    let count: usize = axes.iter().map(|&axis| x_shape[axis]).product();
                    let scale = graph.constant_like(1.0 / count as f64, x)?;
                    graph.mul(spread, scale)?
                }
                ReduceOp::Max => {
                    // Every element equal to the maximum receives the cotangent.
                    let max = graph.broadcast(output, x_shape)?;
                    let is_max = graph.compare(CmpOp::Eq, x, max)?;
                    let zero = graph.constant_like(0.0, x)?;
                    graph.select(is_max, spread, zero)?
                }
            };
            vec![Some(dx)]
        }
        Op::Reshape { .. } => {
            let x_shape = graph.ty(operands[0]).shape.clone();
            vec![Some(graph.reshape(g, x_shape)?)]
        }
        Op::Transpose { perm } => {
            let mut inverse = vec![0; perm.len()];
            for (axis, &from) in perm.iter().enumerate() {
                inverse[from] = axis;
            }
            vec![Some(transpose_unless_identity(graph, g, &inverse)?)]
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => matmul_grads(
            graph,
            (operands[0], operands[1]),
            g,
            (*transpose_a, *transpose_b),
            needs,
        )?,
        Op::Pool { kind, spec } => {
            let op = Op::PoolGrad {
                kind: *kind,
                spec: spec.clone(),
            };
            vec![needed(needs[0], || graph.add(op, &[operands[0], g]))?]
        }
        // Linear in the output gradient (the choice of maxima is piecewise constant
        // in x): the average's adjoint is an average pooling, the maximum's picks the
        // cotangent at each window's chosen tap.
        Op::PoolGrad { kind, spec } => {
            let x = operands[0];
            let d_dy = needed(needs[1], || match kind {
                PoolKind::Avg => graph.add(
                    Op::Pool {
                        kind: *kind,
                        spec: spec.clone(),
                    },
                    &[g],
                ),
                PoolKind::Max => crate::expand::max_pool_pick(graph, spec, x, g),
            })?;
            vec![None, d_dy]
        }
        // The three convolution ops are bilinear and each other's adjoints: with
        // `conv(x, w) = y`, `⟨conv(x, w), dy⟩ = ⟨x, input_grad(dy, w)⟩ =
        // ⟨w, filter_grad(x, dy)⟩`.
        Op::Conv(spec) => {
            let (x, w) = (operands[0], operands[1]);
            let input = graph.ty(x).shape[2..].to_vec();
            let taps = graph.ty(w).shape[2..].to_vec();
            vec![
                needed(needs[0], || conv_input_grad(graph, spec, g, w, input))?,
                needed(needs[1], || conv_filter_grad(graph, spec, x, g, taps))?,
            ]
        }
        Op::ConvInputGrad { spec, .. } => {
            let (dy, w) = (operands[0], operands[1]);
            let taps = graph.ty(w).shape[2..].to_vec();
            vec![
                needed(needs[0], || graph.add(Op::Conv(spec.clone()), &[g, w]))?,
                needed(needs[1], || conv_filter_grad(graph, spec, g, dy, taps))?,
            ]
        }
        Op::ConvFilterGrad { spec, .. } => {
            let (x, dy) = (operands[0], operands[1]);
            let input = graph.ty(x).shape[2..].to_vec();
            vec![
                needed(needs[0], || conv_input_grad(graph, spec, dy, g, input))?,
                needed(needs[1], || graph.add(Op::Conv(spec.clone()), &[x, g]))?,
            ]
        }
    };
    Ok(grads)
}

/// `build()` where the gradient is needed, else `None`.
fn needed(
    need: bool,
    build: impl FnOnce() -> Result<NodeId, IrError>,
) -> Result<Option<NodeId>, IrError> {
    need.then(build).transpose()
}

fn conv_input_grad(
    graph: &mut Graph,
    spec: &ConvSpec,
    dy: NodeId,
    w: NodeId,
    input: Vec<usize>,
) -> Result<NodeId, IrError> {
    let spec = spec.clone();
    graph.add(Op::ConvInputGrad { spec, input }, &[dy, w])
}

fn conv_filter_grad(
    graph: &mut Graph,
    spec: &ConvSpec,
    x: NodeId,
    dy: NodeId,
    taps: Vec<usize>,
) -> Result<NodeId, IrError> {
    let spec = spec.clone();
    graph.add(Op::ConvFilterGrad { spec, taps }, &[x, dy])
}

/// The gradients of `C = op_a(A) · op_b(B)`, where `op` transposes the last two axes
/// when its flag is set. With `A' = op_a(A)` and `B' = op_b(B)`, `dA' = G · B'^T` and
/// `dB' = A'^T · G`; a flagged operand takes the transpose of its gradient
/// (`(X · Y)^T = Y^T · X^T`), which gives, with `T(x)` an explicit transpose:
///
/// | flags | dA          | dB          |
/// | ----- | ----------- | ----------- |
/// | nn    | G · T(B)    | T(A) · G    |
/// | nt    | G · B       | T(G) · A    |
/// | tn    | B · T(G)    | A · G       |
/// | tt    | T(B) · T(G) | T(G) · T(A) |
///
/// Only plain matmuls are emitted: the e-graph pass folds the transposes into flags.
fn matmul_grads(
    graph: &mut Graph,
    (a, b): (NodeId, NodeId),
    g: NodeId,
    (transpose_a, transpose_b): (bool, bool),
    needs: &[bool],
) -> Result<Vec<Option<NodeId>>, IrError> {
    // The tt case needs T(G) for both operands; build it once.
    let mut g_t = None;
    let mut transposed_g = |graph: &mut Graph| -> Result<NodeId, IrError> {
        match g_t {
            Some(id) => Ok(id),
            None => {
                let id = swap_last_axes(graph, g)?;
                g_t = Some(id);
                Ok(id)
            }
        }
    };
    let da = if needs[0] {
        Some(match (transpose_a, transpose_b) {
            (false, false) => {
                let b_t = swap_last_axes(graph, b)?;
                graph.matmul(g, b_t)?
            }
            (false, true) => graph.matmul(g, b)?,
            (true, false) => {
                let g_t = transposed_g(graph)?;
                graph.matmul(b, g_t)?
            }
            (true, true) => {
                let b_t = swap_last_axes(graph, b)?;
                let g_t = transposed_g(graph)?;
                graph.matmul(b_t, g_t)?
            }
        })
    } else {
        None
    };
    let db = if needs[1] {
        Some(match (transpose_a, transpose_b) {
            (false, false) => {
                let a_t = swap_last_axes(graph, a)?;
                graph.matmul(a_t, g)?
            }
            (true, false) => graph.matmul(a, g)?,
            (false, true) => {
                let g_t = transposed_g(graph)?;
                graph.matmul(g_t, a)?
            }
            (true, true) => {
                let g_t = transposed_g(graph)?;
                let a_t = swap_last_axes(graph, a)?;
                graph.matmul(g_t, a_t)?
            }
        })
    } else {
        None
    };
    Ok(vec![da, db])
}

/// An explicit `transpose` of the last two axes (identity on batch axes).
fn swap_last_axes(graph: &mut Graph, x: NodeId) -> Result<NodeId, IrError> {
    let rank = graph.ty(x).rank();
    let mut perm: Vec<usize> = (0..rank).collect();
    perm.swap(rank - 2, rank - 1);
    graph.transpose(x, &perm)
}

/// `transpose(x, perm)`, or `x` itself when `perm` is the identity.
fn transpose_unless_identity(
    graph: &mut Graph,
    x: NodeId,
    perm: &[usize],
) -> Result<NodeId, IrError> {
    if perm.iter().enumerate().all(|(axis, &from)| axis == from) {
        Ok(x)
    } else {
        graph.transpose(x, perm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::text;

    fn differentiate(src: &str) -> String {
        let graph = text::parse(src).expect("test graph parses");
        let options = AutodiffOptions::loss("loss");
        text::print(&run(&graph, &options).expect("autodiff succeeds"))
    }

    #[test]
    fn the_header_example_is_what_the_pass_builds() {
        // The exp rule reuses the forward value: d exp(w) = g * exp(w).
        let src = r#"graph g {
  %0 = param "w" : f32[4]
  %1 = exp %0 : f32[4]
  %2 = reduce_sum %1 axes=[0] : f32[1]
  output "loss" = %2
}"#;
        insta::assert_snapshot!(differentiate(src), @r#"
        graph g {
          %0 = param "w" : f32[4]
          %1 = exp %0 : f32[4]
          %2 = reduce_sum %1 axes=[0] : f32[1]
          %3 = const 1.0 : f32[1]
          %4 = broadcast %3 : f32[4]
          %5 = mul %4, %1 : f32[4]
          output "loss" = %2
          output "grad.w" = %5
        }
        "#);
    }

    #[test]
    fn seed_is_broadcast_and_multiplied_by_the_other_factor() {
        let src = r#"graph g {
  %0 = input "x" : f32[4]
  %1 = param "w" : f32[4]
  %2 = mul %1, %0 : f32[4]
  %3 = reduce_sum %2 axes=[0] : f32[1]
  output "loss" = %3
}"#;
        insta::assert_snapshot!(differentiate(src), @r#"
        graph g {
          %0 = input "x" : f32[4]
          %1 = param "w" : f32[4]
          %2 = mul %1, %0 : f32[4]
          %3 = reduce_sum %2 axes=[0] : f32[1]
          %4 = const 1.0 : f32[1]
          %5 = broadcast %4 : f32[4]
          %6 = mul %5, %0 : f32[4]
          output "loss" = %3
          output "grad.w" = %6
        }
        "#);
    }

    #[test]
    fn flagged_matmul_gradient_uses_an_explicit_transpose() {
        // C = A^T B, so dA = B G^T: a plain matmul of B with transpose(G).
        let src = r#"graph g {
  %0 = input "b" : f32[3,4]
  %1 = param "a" : f32[3,2]
  %2 = matmul.tn %1, %0 : f32[2,4]
  %3 = reduce_sum %2 axes=[0,1] : f32[1,1]
  output "loss" = %3
}"#;
        insta::assert_snapshot!(differentiate(src), @r#"
        graph g {
          %0 = input "b" : f32[3,4]
          %1 = param "a" : f32[3,2]
          %2 = matmul.tn %1, %0 : f32[2,4]
          %3 = reduce_sum %2 axes=[0,1] : f32[1,1]
          %4 = const 1.0 : f32[1,1]
          %5 = broadcast %4 : f32[2,4]
          %6 = transpose %5 perm=[1,0] : f32[4,2]
          %7 = matmul %0, %6 : f32[3,2]
          output "loss" = %3
          output "grad.a" = %7
        }
        "#);
    }

    #[test]
    fn squaring_builds_one_product_and_adds_it_twice() {
        let src = r#"graph g {
  %0 = param "a" : f32[3]
  %1 = mul %0, %0 : f32[3]
  %2 = reduce_sum %1 axes=[0] : f32[1]
  output "loss" = %2
}"#;
        insta::assert_snapshot!(differentiate(src), @r#"
        graph g {
          %0 = param "a" : f32[3]
          %1 = mul %0, %0 : f32[3]
          %2 = reduce_sum %1 axes=[0] : f32[1]
          %3 = const 1.0 : f32[1]
          %4 = broadcast %3 : f32[3]
          %5 = mul %4, %0 : f32[3]
          %6 = add %5, %5 : f32[3]
          output "loss" = %2
          output "grad.a" = %6
        }
        "#);
    }
}
