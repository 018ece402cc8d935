//! Recurrent layers with PyTorch's parameters and equations: `nn.RNN` (tanh or ReLU),
//! `nn.LSTM` and `nn.GRU`, stacked (`num_layers`) and bidirectional, unrolled over
//! the time steps of a static-length sequence from zero states.
//!
//! Each layer and direction owns `weight_ih_l{k}: [gates·h, input]`,
//! `weight_hh_l{k}: [gates·h, h]`, `bias_ih_l{k}`, `bias_hh_l{k}: [gates·h]` (the
//! reverse direction's names end in `_reverse`), all drawn from `U(±1/√h)`; `gates`
//! is 1, 4 (input, forget, cell, output) or 3 (reset, update, new) as in PyTorch.
//! Input `[T, B, input]` (time first), output every step's hidden state,
//! `[T, B, directions·h]`, the directions side by side (forward first) and each
//! layer reading the one below.

use crate::builder::{Context, FrontendError, ModelBuilder};
use crate::init::Init;
use crate::sequence::{last_axis, times_transposed};
use kiln_ir::{BinaryOp, DType, NodeId, TensorType};

/// Which cell a recurrent layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// `h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`.
    RnnTanh,
    /// As [`Cell::RnnTanh`] with ReLU.
    RnnRelu,
    Lstm,
    Gru,
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::RnnTanh | Cell::RnnRelu => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Cell::RnnTanh | Cell::RnnRelu => "rnn",
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
        }
    }
}

/// The shape of a recurrent layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecurrentOptions {
    pub cell: Cell,
    pub input: usize,
    pub hidden: usize,
    pub layers: usize,
    pub bidirectional: bool,
}

impl RecurrentOptions {
    /// One layer, one direction.
    pub fn new(cell: Cell, input: usize, hidden: usize) -> RecurrentOptions {
        RecurrentOptions {
            cell,
            input,
            hidden,
            layers: 1,
            bidirectional: false,
        }
    }

    fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }
}

/// One layer's weights in one direction.
#[derive(Clone, Debug)]
struct Weights {
    ih: NodeId,
    hh: NodeId,
    bias_ih: NodeId,
    bias_hh: NodeId,
}

/// A recurrent layer (see the module docs).
#[derive(Clone, Debug)]
pub struct Recurrent {
    options: RecurrentOptions,
    /// Per layer, per direction (forward first).
    weights: Vec<Vec<Weights>>,
}

impl Recurrent {
    pub fn new(
        builder: &mut ModelBuilder,
        name: &str,
        options: RecurrentOptions,
    ) -> Result<Recurrent, FrontendError> {
        let context = options.cell.name();
        if options.layers == 0 || options.hidden == 0 {
            return Err(FrontendError::Argument {
                context: context.to_string(),
                message: format!(
                    "num_layers {} and hidden_size {} must be at least 1",
                    options.layers, options.hidden
                ),
            });
        }
        let init = Init::torch_linear(options.hidden);
        let rows = options.cell.gates() * options.hidden;
        let mut weights = Vec::with_capacity(options.layers);
        for layer in 0..options.layers {
            let input = if layer == 0 {
                options.input
            } else {
                options.directions() * options.hidden
            };
            let mut directions = Vec::new();
            for direction in 0..options.directions() {
                let suffix = if direction == 0 { "" } else { "_reverse" };
                let mut param = |kind: &str, shape: &[usize]| {
                    builder.parameter(&format!("{name}.{kind}_l{layer}{suffix}"), shape, init)
                };
                directions.push(Weights {
                    ih: param("weight_ih", &[rows, input])?,
                    hh: param("weight_hh", &[rows, options.hidden])?,
                    bias_ih: param("bias_ih", &[rows])?,
                    bias_hh: param("bias_hh", &[rows])?,
                });
            }
            weights.push(directions);
        }
        Ok(Recurrent { options, weights })
    }

    /// PyTorch's `nn.LSTM(input, hidden)`.
    pub fn lstm(
        builder: &mut ModelBuilder,
        name: &str,
        input: usize,
        hidden: usize,
    ) -> Result<Recurrent, FrontendError> {
        Recurrent::new(
            builder,
            name,
            RecurrentOptions::new(Cell::Lstm, input, hidden),
        )
    }

    pub fn forward(&self, builder: &mut ModelBuilder, x: NodeId) -> Result<NodeId, FrontendError> {
        let context = self.options.cell.name();
        builder.check_own(self.weights[0][0].ih, "recurrent layer")?;
        let ty = builder.ty(x)?.clone();
        let input = self.options.input;
        if ty.dtype != DType::F32 || ty.rank() != 3 || ty.shape[2] != input || ty.shape[0] == 0 {
            return Err(FrontendError::Operand {
                context: context.to_string(),
                expected: format!("f32[time ≥ 1, batch, {input}]"),
                found: ty,
            });
        }
        let (steps, batch) = (ty.shape[0], ty.shape[1]);
        let mut below = x;
        for layer in &self.weights {
            // Each step's input, [B, features], read once per direction.
            let features = builder.ty(below)?.shape[2];
            let mut inputs = Vec::with_capacity(steps);
            for t in 0..steps {
                let graph = builder.graph();
                let x_t = graph
                    .slice(below, &[t, 0, 0], &[t + 1, batch, features], &[1, 1, 1])
                    .context(context)?;
                inputs.push(graph.reshape(x_t, vec![batch, features]).context(context)?);
            }
            let mut per_direction = Vec::with_capacity(layer.len());
            for (direction, weights) in layer.iter().enumerate() {
                per_direction.push(self.run(builder, weights, &inputs, direction == 1)?);
            }
            // [T, B, directions·h]: each step's directions side by side, then the steps.
            let mut steps_out = Vec::with_capacity(steps);
            for t in 0..steps {
                let parts: Vec<NodeId> = per_direction.iter().map(|states| states[t]).collect();
                let joined = crate::conv::concat_all(builder, &parts, 1, context)?;
                let width = builder.ty(joined)?.shape[1];
                steps_out.push(
                    builder
                        .graph()
                        .reshape(joined, vec![1, batch, width])
                        .context(context)?,
                );
            }
            below = crate::conv::concat_all(builder, &steps_out, 0, context)?;
        }
        Ok(below)
    }

    /// One direction of one layer over `inputs` (`[B, features]` per step): every
    /// step's hidden state, in time order.
    fn run(
        &self,
        builder: &mut ModelBuilder,
        weights: &Weights,
        inputs: &[NodeId],
        reverse: bool,
    ) -> Result<Vec<NodeId>, FrontendError> {
        let context = self.options.cell.name();
        let batch = builder.ty(inputs[0])?.shape[0];
        let zeros = builder
            .graph()
            .constant(0.0, TensorType::f32([batch, self.options.hidden]))
            .context(context)?;
        let (mut state, mut cell) = (zeros, zeros);
        let mut states = vec![zeros; inputs.len()];
        let order: Vec<usize> = if reverse {
            (0..inputs.len()).rev().collect()
        } else {
            (0..inputs.len()).collect()
        };
        for t in order {
            let from_input = affine(builder, inputs[t], weights.ih, weights.bias_ih, context)?;
            let from_state = affine(builder, state, weights.hh, weights.bias_hh, context)?;
            (state, cell) = self.step(builder, from_input, from_state, (state, cell))?;
            states[t] = state;
        }
        Ok(states)
    }

    /// One step of the cell from the two affine maps `W_ih x + b_ih` and
    /// `W_hh h + b_hh`: the new hidden state and (for an LSTM) cell state.
    fn step(
        &self,
        builder: &mut ModelBuilder,
        from_input: NodeId,
        from_state: NodeId,
        (state, cell): (NodeId, NodeId),
    ) -> Result<(NodeId, NodeId), FrontendError> {
        let context = self.options.cell.name();
        let h = self.options.hidden;
        let gate = |builder: &mut ModelBuilder, of: NodeId, index: usize| {
            last_axis(builder, of, index * h, (index + 1) * h, context)
        };
        match self.options.cell {
            Cell::RnnTanh | Cell::RnnRelu => {
                let graph = builder.graph();
                let sum = graph.add_(from_input, from_state).context(context)?;
                let next = if self.options.cell == Cell::RnnTanh {
                    graph.tanh(sum)
                } else {
                    graph.relu(sum)
                }
                .context(context)?;
                Ok((next, cell))
            }
            Cell::Lstm => {
                let gates = builder
                    .graph()
                    .add_(from_input, from_state)
                    .context(context)?;
                let (i, f, g, o) = (
                    gate(builder, gates, 0)?,
                    gate(builder, gates, 1)?,
                    gate(builder, gates, 2)?,
                    gate(builder, gates, 3)?,
                );
                let graph = builder.graph();
                let i = graph.sigmoid(i).context(context)?;
                let f = graph.sigmoid(f).context(context)?;
                let g = graph.tanh(g).context(context)?;
                let o = graph.sigmoid(o).context(context)?;
                let kept = graph.mul(f, cell).context(context)?;
                let written = graph.mul(i, g).context(context)?;
                let cell = graph.add_(kept, written).context(context)?;
                let squashed = graph.tanh(cell).context(context)?;
                Ok((graph.mul(o, squashed).context(context)?, cell))
            }
            Cell::Gru => {
                // r and z from both maps; n = tanh(x part + r ⊙ h part), PyTorch's form.
                let (x_r, x_z, x_n) = (
                    gate(builder, from_input, 0)?,
                    gate(builder, from_input, 1)?,
                    gate(builder, from_input, 2)?,
                );
                let (h_r, h_z, h_n) = (
                    gate(builder, from_state, 0)?,
                    gate(builder, from_state, 1)?,
                    gate(builder, from_state, 2)?,
                );
                let graph = builder.graph();
                let r = graph.add_(x_r, h_r).context(context)?;
                let r = graph.sigmoid(r).context(context)?;
                let z = graph.add_(x_z, h_z).context(context)?;
                let z = graph.sigmoid(z).context(context)?;
                let reset = graph.mul(r, h_n).context(context)?;
                let n = graph.add_(x_n, reset).context(context)?;
                let n = graph.tanh(n).context(context)?;
                // h' = (1 − z)·n + z·h = n + z·(h − n).
                let toward_state = graph.sub(state, n).context(context)?;
                let moved = graph.mul(z, toward_state).context(context)?;
                Ok((graph.add_(n, moved).context(context)?, cell))
            }
        }
    }
}

/// `x·wᵀ + b` for `x: [B, in]`, `w: [out, in]`, `b: [out]`.
fn affine(
    builder: &mut ModelBuilder,
    x: NodeId,
    w: NodeId,
    b: NodeId,
    context: &str,
) -> Result<NodeId, FrontendError> {
    let product = times_transposed(builder, x, w, context)?;
    builder.binary(BinaryOp::Add, product, b)
}
