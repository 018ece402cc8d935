//! Property tests: the text form and the JSON form are inverses of the printer on
//! random well-typed graphs, a parsed graph computes what the original computes, and
//! corrupted JSON documents are errors that name the node at fault.
//!
//! Graphs come from two generators: `random_graph` (the crate's, well conditioned,
//! finite values) and `GraphGen` below, which aims at the printer and parser rather
//! than at numerics: odd names, rank-0 values, extreme and non-finite constants, every
//! op with every flag, values used twice, dead nodes, updates of every parameter.

use kiln_ir::op::{ConvSpec, PoolKind, PoolSpec};
use kiln_ir::random::{random_feeds, random_graph, RandomGraphOptions};
use kiln_ir::serial::{from_json, to_json};
use kiln_ir::text::{parse, print, print_order};
use kiln_ir::{
    evaluate, BinaryOp, CmpOp, DType, Distribution, Feeds, Graph, NodeId, Op, Precision, ReduceOp,
    Rng, Tensor, TensorType, UnaryOp,
};
use proptest::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;

// ---- a generator of well-typed graphs aimed at the text and JSON forms ----------

/// Constants that stress float printing: signed zero, subnormals, extremes,
/// non-finite values, values with long decimal expansions.
const F32_CONSTANTS: [f64; 16] = [
    0.0,
    -0.0,
    1.0,
    -2.5,
    0.1,
    1e-300,
    -5e-324,
    1e300,
    -f64::MAX,
    f32::MAX as f64,
    f32::MIN_POSITIVE as f64,
    3.0e-8,
    -123_456.789,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
];

const I32_CONSTANTS: [f64; 7] = [0.0, 1.0, -1.0, 2.0, 7.0, i32::MIN as f64, i32::MAX as f64];

/// Name stems that need quoting or escaping in the text form; a counter makes each
/// name unique.
const NAME_STEMS: [&str; 9] = [
    "x",
    "with space",
    "quote\"d",
    "back\\slash",
    "new\nline",
    "ünïcode",
    "%0",
    "output",
    "",
];

const GRAPH_NAMES: [&str; 5] = ["g", "my net", "", "quo\"te", "_under_score9"];

/// What the proptest strategy draws: the generator is then deterministic in these.
#[derive(Clone, Debug)]
struct GraphSpec {
    seed: u64,
    n_ops: usize,
    max_rank: usize,
    max_extent: usize,
}

fn graph_spec() -> impl Strategy<Value = GraphSpec> {
    (any::<u64>(), 0usize..28, 0usize..4, 1usize..5).prop_map(
        |(seed, n_ops, max_rank, max_extent)| GraphSpec {
            seed,
            n_ops,
            max_rank,
            max_extent,
        },
    )
}

struct GraphGen {
    rng: Rng,
    graph: Graph,
    /// Every value made so far, in creation order.
    values: Vec<NodeId>,
    max_rank: usize,
    max_extent: usize,
    names_made: usize,
}

impl GraphGen {
    fn below(&mut self, n: usize) -> usize {
        self.rng.below(n)
    }

    fn chance(&mut self, numerator: usize, denominator: usize) -> bool {
        self.below(denominator) < numerator
    }

    fn choose<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn ty(&self, id: NodeId) -> TensorType {
        self.graph.ty(id).clone()
    }

    fn shape(&mut self) -> Vec<usize> {
        let rank = self.below(self.max_rank + 1);
        (0..rank).map(|_| 1 + self.below(self.max_extent)).collect()
    }

    fn dtype(&mut self) -> DType {
        self.choose(&[DType::F32, DType::F32, DType::I32, DType::Bool])
    }

    fn fresh_name(&mut self) -> String {
        let stem = self.choose(&NAME_STEMS);
        self.names_made += 1;
        format!("{stem}{}", self.names_made)
    }

    fn push(&mut self, id: NodeId) -> NodeId {
        self.values.push(id);
        id
    }

    fn input(&mut self, ty: TensorType) -> NodeId {
        let name = self.fresh_name();
        let id = self.graph.input(&name, ty).expect("input names are fresh");
        self.push(id)
    }

    fn param(&mut self, ty: TensorType) -> NodeId {
        let name = self.fresh_name();
        let id = self
            .graph
            .parameter(&name, ty)
            .expect("parameter names are fresh");
        self.push(id)
    }

    fn constant(&mut self, ty: TensorType) -> NodeId {
        let value = match ty.dtype {
            DType::F32 => self.choose(&F32_CONSTANTS),
            DType::I32 => self.choose(&I32_CONSTANTS),
            DType::Bool => self.below(2) as f64,
        };
        let id = self
            .graph
            .constant(value, ty)
            .expect("constants fit their dtype");
        self.push(id)
    }

    /// A new leaf of type `ty`: an input, a parameter or a constant.
    fn leaf(&mut self, ty: TensorType) -> NodeId {
        match self.below(3) {
            0 => self.input(ty),
            1 => self.param(ty),
            _ => self.constant(ty),
        }
    }

    /// A random existing value satisfying `accept`, if there is one.
    fn pick_where(&mut self, accept: impl Fn(&TensorType) -> bool) -> Option<NodeId> {
        let candidates: Vec<NodeId> = self
            .values
            .iter()
            .copied()
            .filter(|&id| accept(self.graph.ty(id)))
            .collect();
        (!candidates.is_empty()).then(|| self.choose(&candidates))
    }

    /// An existing value of type `ty` (often the most recent ones, so chains form), or
    /// a new leaf of that type.
    fn operand_of_type(&mut self, ty: &TensorType) -> NodeId {
        if self.chance(2, 3) {
            if let Some(id) = self.pick_where(|candidate| candidate == ty) {
                return id;
            }
        }
        self.leaf(ty.clone())
    }

    fn numeric(&mut self, accept_int: bool) -> NodeId {
        let found =
            self.pick_where(|ty| ty.dtype == DType::F32 || (accept_int && ty.dtype == DType::I32));
        match found {
            Some(id) => id,
            None => {
                let shape = self.shape();
                self.leaf(TensorType::f32(shape))
            }
        }
    }

    fn add(&mut self, op: Op, operands: &[NodeId]) -> NodeId {
        let id = self
            .graph
            .add(op.clone(), operands)
            .unwrap_or_else(|err| panic!("generator built an ill-typed {op:?}: {err}"));
        self.push(id)
    }

    /// One random op node (sometimes with the leaves or helper nodes it needs).
    fn step(&mut self) {
        match self.below(15) {
            0 => {
                let x = self.numeric(true);
                let ops: Vec<UnaryOp> = UnaryOp::ALL
                    .into_iter()
                    .filter(|op| self.graph.ty(x).dtype == DType::F32 || op.accepts_int())
                    .collect();
                let op = self.choose(&ops);
                self.add(Op::Unary(op), &[x]);
            }
            1 => {
                let a = self.numeric(true);
                let ty = self.ty(a);
                let b = self.operand_of_type(&ty);
                let ops: Vec<BinaryOp> = BinaryOp::ALL
                    .into_iter()
                    .filter(|op| ty.dtype == DType::F32 || op.accepts_int())
                    .collect();
                let op = self.choose(&ops);
                self.add(Op::Binary(op), &[a, b]);
            }
            2 => {
                let a = self.numeric(true);
                let ty = self.ty(a);
                let b = self.operand_of_type(&ty);
                let op = self.choose(&CmpOp::ALL);
                self.add(Op::Compare(op), &[a, b]);
            }
            3 => {
                let cond = match self.pick_where(|ty| ty.dtype == DType::Bool) {
                    Some(cond) => cond,
                    None => {
                        let a = self.numeric(true);
                        let ty = self.ty(a);
                        let b = self.operand_of_type(&ty);
                        self.add(Op::Compare(CmpOp::Lt), &[a, b])
                    }
                };
                let shape = self.ty(cond).shape;
                let on_true = match self.pick_where(|ty| ty.shape == shape) {
                    Some(id) => id,
                    None => {
                        let dtype = self.dtype();
                        self.leaf(TensorType::new(dtype, shape))
                    }
                };
                let ty = self.ty(on_true);
                let on_false = self.operand_of_type(&ty);
                self.add(Op::Select, &[cond, on_true, on_false]);
            }
            4 => {
                let x = self
                    .pick_where(|_| true)
                    .expect("the graph starts with inputs");
                let to = self.dtype();
                self.add(Op::Cast { to }, &[x]);
            }
            5 => {
                let mut x = self
                    .pick_where(|_| true)
                    .expect("the graph starts with inputs");
                let ty = self.ty(x);
                if !ty.shape.contains(&1) && ty.rank() > 0 {
                    // Make unit axes to stretch: reduce_max accepts every dtype.
                    let mut axes = self.axes(ty.rank());
                    if axes.is_empty() {
                        axes.push(self.below(ty.rank()));
                    }
                    x = self.add(
                        Op::Reduce {
                            op: ReduceOp::Max,
                            axes,
                        },
                        &[x],
                    );
                }
                let shape: Vec<usize> = self
                    .ty(x)
                    .shape
                    .iter()
                    .map(|&extent| {
                        if extent == 1 {
                            1 + self.rng.below(self.max_extent)
                        } else {
                            extent
                        }
                    })
                    .collect();
                self.add(Op::Broadcast { shape }, &[x]);
            }
            6 => {
                let op = self.choose(&ReduceOp::ALL);
                let x = match op {
                    ReduceOp::Mean => self.numeric(false),
                    ReduceOp::Sum => self.numeric(true),
                    ReduceOp::Max => self.pick_where(|_| true).expect("inputs exist"),
                };
                let axes = self.axes(self.graph.ty(x).rank());
                self.add(Op::Reduce { op, axes }, &[x]);
            }
            7 => {
                let x = self
                    .pick_where(|_| true)
                    .expect("the graph starts with inputs");
                let ty = self.ty(x);
                let n = ty.num_elements();
                let mut reversed = ty.shape.clone();
                reversed.reverse();
                let mut with_unit = ty.shape.clone();
                with_unit.insert(self.below(ty.rank() + 1), 1);
                let mut shapes = vec![vec![n], vec![1, n], vec![n, 1], reversed, with_unit];
                if n == 1 {
                    shapes.push(Vec::new());
                }
                let shape = shapes.swap_remove(self.below(shapes.len()));
                self.add(Op::Reshape { shape }, &[x]);
            }
            8 => {
                let x = self
                    .pick_where(|_| true)
                    .expect("the graph starts with inputs");
                let mut perm: Vec<usize> = (0..self.graph.ty(x).rank()).collect();
                self.rng.shuffle(&mut perm);
                self.add(Op::Transpose { perm }, &[x]);
            }
            9 if self.chance(1, 3) => self.conv(),
            9 if self.chance(1, 2) => self.pool(),
            9 => self.matmul(),
            10 if self.chance(1, 4) => {
                let shape = self.shape();
                if !shape.is_empty() {
                    let axis = self.below(shape.len());
                    self.add(Op::Iota { axis, shape }, &[]);
                }
            }
            10 if self.chance(1, 3) => {
                let seed = self.operand_of_type(&TensorType::i32(Vec::<usize>::new()));
                let dist = self.choose(&Distribution::ALL);
                let stream = self.below(5) as u32;
                let shape = self.shape();
                self.add(
                    Op::Random {
                        dist,
                        stream,
                        shape,
                    },
                    &[seed],
                );
            }
            10 => {
                let labels = match self.pick_where(|ty| ty.dtype == DType::I32) {
                    Some(labels) => labels,
                    None => {
                        let x = self.numeric(false);
                        self.add(Op::Cast { to: DType::I32 }, &[x])
                    }
                };
                let depth = 1 + self.below(self.max_extent);
                self.add(Op::OneHot { depth }, &[labels]);
            }
            11 => {
                let dtype = self.dtype();
                let shape = self.shape();
                self.constant(TensorType::new(dtype, shape));
            }
            12 => {
                let x = self
                    .pick_where(|ty| ty.rank() >= 1)
                    .unwrap_or_else(|| self.numeric(true));
                let ty = self.ty(x);
                let rank = ty.rank();
                if rank == 0 {
                    return;
                }
                match self.below(3) {
                    0 => {
                        let starts: Vec<usize> =
                            ty.shape.iter().map(|&n| self.below(n + 1)).collect();
                        let ends: Vec<usize> = starts
                            .iter()
                            .zip(&ty.shape)
                            .map(|(&start, &n)| start + self.below(n - start + 1))
                            .collect();
                        let steps = (0..rank).map(|_| 1 + self.below(3)).collect();
                        self.add(
                            Op::Slice {
                                starts,
                                ends,
                                steps,
                            },
                            &[x],
                        );
                    }
                    1 => {
                        let low = (0..rank).map(|_| self.below(3)).collect();
                        let high = (0..rank).map(|_| self.below(3)).collect();
                        let interior = (0..rank).map(|_| self.below(2)).collect();
                        let value = self.choose(&[0.0, -1.5, f64::INFINITY]);
                        self.add(
                            Op::Pad {
                                low,
                                high,
                                interior,
                                value,
                            },
                            &[x],
                        );
                    }
                    _ => {
                        let y = self.operand_of_type(&ty);
                        let axis = self.below(rank);
                        self.add(Op::Concat { axis }, &[x, y]);
                    }
                }
            }
            13 => {
                let x = self
                    .pick_where(|ty| ty.rank() >= 1)
                    .unwrap_or_else(|| self.numeric(true));
                let ty = self.ty(x);
                if ty.rank() == 0 {
                    return;
                }
                let axis = self.below(ty.rank());
                let batch_dims = self.below(axis + 1);
                let mut index_shape = ty.shape[..batch_dims].to_vec();
                index_shape.push(1 + self.below(self.max_extent));
                let indices = self.operand_of_type(&TensorType::i32(index_shape));
                let gathered = self.add(Op::Gather { axis, batch_dims }, &[x, indices]);
                if self.ty(gathered).dtype != DType::Bool && self.chance(1, 2) {
                    let extent = ty.shape[axis];
                    let op = Op::ScatterAdd {
                        axis,
                        batch_dims,
                        extent,
                    };
                    self.add(op, &[gathered, indices]);
                }
            }
            _ => {
                let dtype = self.dtype();
                let shape = self.shape();
                if self.chance(1, 2) {
                    self.input(TensorType::new(dtype, shape));
                } else {
                    self.param(TensorType::new(dtype, shape));
                }
            }
        }
    }

    /// A random increasing subset of `0..rank` (possibly empty).
    fn axes(&mut self, rank: usize) -> Vec<usize> {
        (0..rank).filter(|_| self.chance(1, 2)).collect()
    }

    /// A matmul with random flags; the second operand is an existing value that fits,
    /// the first operand itself when it fits, or a new leaf.
    fn matmul(&mut self) {
        let a = match self.pick_where(|ty| ty.dtype == DType::F32 && ty.rank() >= 2) {
            Some(a) => a,
            None => {
                let x = self.numeric(false);
                let n = self.graph.ty(x).num_elements();
                let shape = if self.chance(1, 2) {
                    vec![1, n]
                } else {
                    vec![n, 1]
                };
                self.add(Op::Reshape { shape }, &[x])
            }
        };
        let (transpose_a, transpose_b) = (self.chance(1, 2), self.chance(1, 2));
        let a_ty = self.ty(a);
        let rank = a_ty.rank();
        let batch = a_ty.shape[..rank - 2].to_vec();
        let k = if transpose_a {
            a_ty.shape[rank - 2]
        } else {
            a_ty.shape[rank - 1]
        };
        let fits = |ty: &TensorType| {
            ty.dtype == DType::F32
                && ty.rank() == rank
                && ty.shape[..rank - 2] == batch[..]
                && ty.shape[if transpose_b { rank - 1 } else { rank - 2 }] == k
        };
        let found = if self.chance(2, 3) {
            self.pick_where(fits)
        } else {
            None
        };
        let b = match found {
            Some(b) => b,
            None => {
                let n = 1 + self.below(self.max_extent);
                let mut shape = batch.clone();
                shape.extend(if transpose_b { [n, k] } else { [k, n] });
                self.leaf(TensorType::f32(shape))
            }
        };
        self.add(
            Op::MatMul {
                transpose_a,
                transpose_b,
            },
            &[a, b],
        );
    }

    /// A 1-D convolution of a new `[N, C, L]` leaf, and one of its gradient ops.
    fn conv(&mut self) {
        // l ≥ 3 fits two taps two apart.
        let (n, c, l) = (1 + self.below(2), 2, 3 + self.below(self.max_extent));
        let groups = 1 + self.below(2);
        let taps = 1 + self.below(2);
        let spec = ConvSpec {
            stride: vec![1 + self.below(2)],
            low: vec![self.below(2)],
            high: vec![self.below(2)],
            dilation: vec![1 + self.below(2)],
            groups,
        };
        let x = self.leaf(TensorType::f32([n, c, l]));
        let w = self.leaf(TensorType::f32([2 * groups, c / groups, taps]));
        let y = self.add(Op::Conv(spec.clone()), &[x, w]);
        if self.chance(1, 2) {
            self.add(
                Op::ConvInputGrad {
                    spec,
                    input: vec![l],
                },
                &[y, w],
            );
        } else {
            self.add(
                Op::ConvFilterGrad {
                    spec,
                    taps: vec![taps],
                },
                &[x, y],
            );
        }
    }

    /// A 1-D max or average pooling of a new `[N, C, L]` leaf, and sometimes its
    /// gradient.
    fn pool(&mut self) {
        let window = 1 + self.below(3);
        let spec = PoolSpec {
            window: vec![window],
            stride: vec![1 + self.below(2)],
            low: vec![self.below(window / 2 + 1)],
            high: vec![self.below(window / 2 + 1)],
        };
        let kind = self.choose(&PoolKind::ALL);
        let shape = [1 + self.below(2), 2, window + self.below(3)];
        let x = self.leaf(TensorType::f32(shape));
        let y = self.add(
            Op::Pool {
                kind,
                spec: spec.clone(),
            },
            &[x],
        );
        if self.chance(1, 2) {
            self.add(Op::PoolGrad { kind, spec }, &[x, y]);
        }
    }

    fn build(spec: &GraphSpec) -> Graph {
        let mut rng = Rng::new(spec.seed);
        let name = GRAPH_NAMES[rng.below(GRAPH_NAMES.len())];
        let mut gen = GraphGen {
            rng,
            graph: Graph::new(name),
            values: Vec::new(),
            max_rank: spec.max_rank,
            max_extent: spec.max_extent,
            names_made: 0,
        };
        for _ in 0..1 + gen.below(2) {
            let shape = gen.shape();
            gen.input(TensorType::f32(shape));
        }
        let shape = gen.shape();
        gen.input(TensorType::i32(shape));
        for _ in 0..gen.below(3) {
            let shape = gen.shape();
            gen.param(TensorType::f32(shape));
        }
        for _ in 0..spec.n_ops {
            gen.step();
        }
        for _ in 0..1 + gen.below(3) {
            let value = gen.choose(&gen.values.clone());
            let name = gen.fresh_name();
            gen.graph
                .set_output(&name, value)
                .expect("output names are fresh");
        }
        let params = gen.graph.params().to_vec();
        for param in params {
            if gen.chance(1, 3) {
                continue;
            }
            let ty = gen.ty(param);
            let value = gen.operand_of_type(&ty);
            gen.graph
                .set_update(param, value)
                .expect("update values have the parameter's type");
        }
        gen.graph
    }
}

fn random_graph_options() -> impl Strategy<Value = (u64, RandomGraphOptions)> {
    (
        any::<u64>(),
        0usize..30,
        1usize..4,
        1usize..8,
        any::<bool>(),
    )
        .prop_map(|(seed, max_nodes, max_rank, max_extent, allow_int)| {
            (
                seed,
                RandomGraphOptions {
                    max_nodes,
                    max_rank,
                    max_extent,
                    allow_int,
                    ..RandomGraphOptions::default()
                },
            )
        })
}

// ---- what the properties compare ------------------------------------------------

/// The parts of a graph a round trip must keep, compared on their own so that a
/// failure says which part differs (the printed text compares the rest).
#[derive(Debug, PartialEq)]
struct Structure {
    name: String,
    node_count: usize,
    inputs: Vec<(String, TensorType)>,
    params: Vec<(String, TensorType)>,
    outputs: Vec<(String, TensorType)>,
    updates: Vec<String>,
}

fn structure(graph: &Graph) -> Structure {
    let leaves = |ids: &[NodeId]| {
        ids.iter()
            .map(|&id| {
                let name = graph
                    .leaf_name(id)
                    .expect("inputs and parameters are named");
                (name.to_string(), graph.ty(id).clone())
            })
            .collect()
    };
    Structure {
        name: graph.name.clone(),
        node_count: graph.node_count(),
        inputs: leaves(graph.inputs()),
        params: leaves(graph.params()),
        outputs: graph
            .outputs()
            .iter()
            .map(|(name, id)| (name.clone(), graph.ty(*id).clone()))
            .collect(),
        updates: graph
            .updates()
            .iter()
            .map(|(param, _)| graph.leaf_name(*param).expect("named").to_string())
            .collect(),
    }
}

/// Whether two tensors are equal element for element, NaN equal to NaN and the sign of
/// zero significant.
fn same_tensor(a: &Tensor, b: &Tensor) -> bool {
    a.ty() == b.ty()
        && a.data()
            .iter()
            .zip(b.data())
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

fn same_results(
    expected: &BTreeMap<String, Tensor>,
    actual: &BTreeMap<String, Tensor>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>()
    );
    for (name, tensor) in expected {
        prop_assert!(
            same_tensor(tensor, &actual[name]),
            "{:?}: expected {}, got {}",
            name,
            tensor,
            actual[name]
        );
    }
    Ok(())
}

/// Feeds from `random_feeds`, with some f32 elements replaced by non-finite and
/// extreme values so that NaN and infinities flow through every op.
fn feeds_with_specials(graph: &Graph, seed: u64) -> Feeds {
    let mut rng = Rng::new(seed);
    let mut feeds = random_feeds(graph, &mut rng);
    for tensor in feeds.values_mut() {
        if tensor.dtype() != DType::F32 {
            continue;
        }
        tensor
            .edit(|data| {
                for value in data {
                    if rng.below(8) == 0 {
                        *value = F32_CONSTANTS[rng.below(F32_CONSTANTS.len())];
                    }
                }
            })
            .unwrap();
    }
    feeds
}

fn check_text_round_trip(graph: &Graph) -> Result<Graph, TestCaseError> {
    let text = print(graph);
    let back = parse(&text).map_err(|err| TestCaseError::fail(format!("{err}\n{text}")))?;
    prop_assert_eq!(&print(&back), &text);
    prop_assert_eq!(structure(&back), structure(graph));
    Ok(back)
}

fn check_json_round_trip(graph: &Graph) -> Result<Graph, TestCaseError> {
    let json = to_json(graph);
    let back = from_json(&json).map_err(|err| TestCaseError::fail(format!("{err}\n{json}")))?;
    prop_assert_eq!(print(&back), print(graph));
    prop_assert_eq!(structure(&back), structure(graph));
    prop_assert_eq!(&to_json(&back), &json);
    Ok(back)
}

/// Evaluates both graphs on the same feeds and compares outputs, updates and, through
/// the print numbering the two share, every node's value (most nodes of a random graph
/// feed no output).
fn check_same_values(graph: &Graph, copy: &Graph, feeds: &Feeds) -> Result<(), TestCaseError> {
    let (order, copy_order) = (print_order(graph), print_order(copy));
    prop_assert_eq!(order.len(), copy_order.len());
    for precision in [Precision::F64, Precision::F32] {
        let expected = evaluate(graph, feeds, precision).expect("feeds match the graph");
        let actual = evaluate(copy, feeds, precision).expect("feeds match the copy");
        same_results(&expected.outputs, &actual.outputs)?;
        same_results(&expected.updates, &actual.updates)?;
        for (number, (id, copy_id)) in order.iter().zip(&copy_order).enumerate() {
            let (want, got) = (&expected.values[id], &actual.values[copy_id]);
            prop_assert!(
                same_tensor(want, got),
                "%{}: expected {}, got {}",
                number,
                want,
                got
            );
        }
    }
    Ok(())
}

// ---- corrupting JSON documents ----------------------------------------------------

/// The ways `corrupt` breaks a document.
#[derive(Clone, Copy, Debug)]
enum Corruption {
    OperandOutOfRange,
    ForwardReference,
    WrongType,
    UnknownUpdateTarget,
}

/// Breaks one node (chosen by `pick`) of the document, or its update list. Returns the
/// broken text and the prefix its error must start with, or `None` when the graph has
/// no node the corruption applies to.
fn corrupt(json: &str, how: Corruption, pick: usize) -> Option<(String, String)> {
    let mut document: Value = serde_json::from_str(json).expect("to_json writes JSON");
    let nodes = document["nodes"].as_array_mut().expect("a node list");
    let n_nodes = nodes.len();
    let with_operands: Vec<usize> = (0..n_nodes)
        .filter(|&index| {
            nodes[index]["operands"]
                .as_array()
                .is_some_and(|operands| !operands.is_empty())
        })
        .collect();
    let expected = match how {
        Corruption::UnknownUpdateTarget => {
            let updates = document["updates"].as_array_mut().expect("an update list");
            updates.push(serde_json::json!({ "param": "no such parameter", "value": 0 }));
            "update of \"no such parameter\": no parameter has that name".to_string()
        }
        _ => {
            if with_operands.is_empty() {
                return None;
            }
            let index = with_operands[pick % with_operands.len()];
            let node = &mut nodes[index];
            match how {
                Corruption::OperandOutOfRange => {
                    node["operands"][0] = Value::from(n_nodes + pick % 3);
                    format!(
                        "node {index}: operand 0 is node {}, but the document has {n_nodes} nodes",
                        n_nodes + pick % 3
                    )
                }
                Corruption::ForwardReference => {
                    let target = index + 1 + pick % (n_nodes - index);
                    if target >= n_nodes {
                        // Pointing at itself is a forward reference too.
                        node["operands"][0] = Value::from(index);
                        format!("node {index}: operand 0 is the node itself")
                    } else {
                        node["operands"][0] = Value::from(target);
                        format!("node {index}: operand 0 is node {target}, which comes later")
                    }
                }
                Corruption::WrongType => {
                    // An extra axis: no op's rule gives the type the operands had.
                    node["ty"]["shape"]
                        .as_array_mut()
                        .expect("a shape")
                        .push(Value::from(2));
                    format!("node {index}: ")
                }
                Corruption::UnknownUpdateTarget => unreachable!("handled above"),
            }
        }
    };
    Some((document.to_string(), expected))
}

fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        Just(Corruption::OperandOutOfRange),
        Just(Corruption::ForwardReference),
        Just(Corruption::WrongType),
        Just(Corruption::UnknownUpdateTarget),
    ]
}

// ---- the properties ------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_graphs_round_trip_through_text(spec in graph_spec()) {
        let graph = GraphGen::build(&spec);
        check_text_round_trip(&graph)?;
    }

    #[test]
    fn generated_graphs_round_trip_through_json(spec in graph_spec()) {
        let graph = GraphGen::build(&spec);
        check_json_round_trip(&graph)?;
    }

    #[test]
    fn parsed_graphs_compute_the_same_values(spec in graph_spec(), feed_seed in any::<u64>()) {
        let graph = GraphGen::build(&spec);
        let feeds = feeds_with_specials(&graph, feed_seed);
        let from_text = check_text_round_trip(&graph)?;
        check_same_values(&graph, &from_text, &feeds)?;
        let from_document = check_json_round_trip(&graph)?;
        check_same_values(&graph, &from_document, &feeds)?;
    }

    #[test]
    fn library_random_graphs_round_trip_and_compute_the_same_values(
        (seed, options) in random_graph_options(),
    ) {
        let graph = random_graph(&mut Rng::new(seed), &options);
        let feeds = random_feeds(&graph, &mut Rng::new(seed ^ 0x5eed));
        let from_text = check_text_round_trip(&graph)?;
        check_same_values(&graph, &from_text, &feeds)?;
        let from_document = check_json_round_trip(&graph)?;
        check_same_values(&graph, &from_document, &feeds)?;
    }

    #[test]
    fn corrupted_documents_are_errors_naming_the_fault(
        spec in graph_spec(),
        how in corruption(),
        pick in any::<usize>(),
    ) {
        let graph = GraphGen::build(&spec);
        if let Some((broken, expected)) = corrupt(&to_json(&graph), how, pick) {
            let message = match from_json(&broken) {
                Ok(_) => return Err(TestCaseError::fail(format!("accepted {broken}"))),
                Err(err) => err.to_string(),
            };
            prop_assert!(
                message.starts_with(&expected),
                "{:?}: {} does not start with {}",
                how,
                message,
                expected
            );
        }
    }
}

// ---- fixed cases ---------------------------------------------------------------------

#[test]
fn generator_uses_the_whole_op_set() {
    let mut mnemonics = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let graph = GraphGen::build(&GraphSpec {
            seed,
            n_ops: 24,
            max_rank: 3,
            max_extent: 4,
        });
        for id in graph.node_ids() {
            mnemonics.insert(graph.op(id).mnemonic());
        }
    }
    let all = kiln_ir::op::MNEMONICS;
    let missing: Vec<&str> = all
        .into_iter()
        .filter(|mnemonic| !mnemonics.contains(mnemonic))
        .collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}

#[test]
fn non_finite_constants_round_trip_through_text_and_json() {
    let src = "graph g {
  %0 = const nan : f32[2]
  %1 = const inf : f32[2]
  %2 = const -inf : f32[2]
  %3 = const -0.0 : f32[2]
  %4 = const 5e-324 : f32[2]
  %5 = add %0, %1 : f32[2]
  %6 = max %2, %3 : f32[2]
  output \"nan\" = %0
  output \"inf\" = %1
  output \"-inf\" = %2
  output \"-0\" = %3
  output \"tiny\" = %4
  output \"sum\" = %5
  output \"max\" = %6
}
";
    let graph = parse(src).unwrap();
    assert_eq!(print(&graph), src);
    let back = from_json(&to_json(&graph)).unwrap();
    assert_eq!(print(&back), src);
    let outputs = evaluate(&back, &Feeds::new(), Precision::F64)
        .unwrap()
        .outputs;
    assert!(outputs["nan"].data().iter().all(|v| v.is_nan()));
    assert_eq!(outputs["inf"].data(), vec![f64::INFINITY; 2]);
    assert_eq!(outputs["-inf"].data(), vec![f64::NEG_INFINITY; 2]);
    assert!(outputs["-0"]
        .data()
        .iter()
        .all(|v| v.to_bits() == (-0.0f64).to_bits()));
    assert_eq!(outputs["tiny"].data(), vec![5e-324; 2]);
    assert!(outputs["sum"].data().iter().all(|v| v.is_nan()));
    assert!(outputs["max"]
        .data()
        .iter()
        .all(|v| v.to_bits() == (-0.0f64).to_bits()));
}

#[test]
fn odd_names_survive_both_forms() {
    let mut graph = Graph::new("a \"quoted\"\nname");
    let x = graph.input("x\\y \"z\"", TensorType::f32([1])).unwrap();
    let w = graph.parameter("", TensorType::f32([1])).unwrap();
    let sum = graph.add_(x, w).unwrap();
    graph.set_output("ünï\ncode", sum).unwrap();
    graph.set_update(w, sum).unwrap();
    let from_text = parse(&print(&graph)).unwrap();
    let from_document = from_json(&to_json(&graph)).unwrap();
    for back in [&from_text, &from_document] {
        assert_eq!(structure(back), structure(&graph));
        assert_eq!(back.name, "a \"quoted\"\nname");
        assert_eq!(back.outputs()[0].0, "ünï\ncode");
    }
}

#[test]
fn malformed_documents_are_errors() {
    let graph = GraphGen::build(&GraphSpec {
        seed: 7,
        n_ops: 12,
        max_rank: 2,
        max_extent: 3,
    });
    let json = to_json(&graph);
    for how in [
        Corruption::OperandOutOfRange,
        Corruption::ForwardReference,
        Corruption::WrongType,
        Corruption::UnknownUpdateTarget,
    ] {
        let (broken, expected) = corrupt(&json, how, 1).expect("the graph has ops");
        let message = from_json(&broken).unwrap_err().to_string();
        assert!(message.starts_with(&expected), "{how:?}: {message}");
    }
    // Truncated documents are JSON errors wherever they are cut, never panics.
    for cut in (0..json.trim_end().len()).step_by(7) {
        if json.is_char_boundary(cut) {
            assert!(from_json(&json[..cut]).is_err(), "cut at {cut}");
        }
    }
}
