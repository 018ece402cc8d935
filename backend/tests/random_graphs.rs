//! Differential fuzzing: random well-typed graphs (every op, random shapes with unit
//! and odd extents, shared subexpressions, reshaped and transposed views, parameter
//! updates) compiled and compared with the interpreter, 100 fixed seeds.

mod common;

use common::check_graph;
use kiln_ir::{BinaryOp, CmpOp, DType, Graph, NodeId, Op, ReduceOp, Rng, TensorType, UnaryOp};

const EXTENTS: [usize; 7] = [1, 1, 2, 3, 4, 5, 7];

struct Builder {
    g: Graph,
    rng: Rng,
    f32_nodes: Vec<NodeId>,
    i32_nodes: Vec<NodeId>,
    bool_nodes: Vec<NodeId>,
    next_name: usize,
}

impl Builder {
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.below(items.len())]
    }

    fn name(&mut self, prefix: &str) -> String {
        self.next_name += 1;
        format!("{prefix}{}", self.next_name)
    }

    fn shape(&mut self) -> Vec<usize> {
        let rank = 1 + self.rng.below(3);
        (0..rank).map(|_| self.pick(&EXTENTS)).collect()
    }

    fn remember(&mut self, id: NodeId) -> NodeId {
        match self.g.ty(id).dtype {
            DType::F32 => self.f32_nodes.push(id),
            DType::I32 => self.i32_nodes.push(id),
            DType::Bool => self.bool_nodes.push(id),
        }
        id
    }

    fn leaf(&mut self, ty: TensorType) -> NodeId {
        let id = match self.rng.below(4) {
            0 => {
                let name = self.name("p");
                self.g.parameter(&name, ty).unwrap()
            }
            1 if ty.dtype == DType::F32 => {
                let value = self.pick(&[0.0, 1.0, -0.5, 2.0]);
                self.g.constant(value, ty).unwrap()
            }
            _ => {
                let name = self.name("x");
                self.g.input(&name, ty).unwrap()
            }
        };
        self.remember(id)
    }

    /// A node of type `ty`: an existing one if there is one, else a new leaf.
    fn of_type(&mut self, ty: &TensorType) -> NodeId {
        let pool = match ty.dtype {
            DType::F32 => &self.f32_nodes,
            DType::I32 => &self.i32_nodes,
            DType::Bool => &self.bool_nodes,
        };
        let same: Vec<NodeId> = pool
            .iter()
            .copied()
            .filter(|&id| self.g.ty(id) == ty)
            .collect();
        if !same.is_empty() && self.rng.below(3) != 0 {
            self.pick(&same)
        } else {
            self.leaf(ty.clone())
        }
    }

    fn any_f32(&mut self) -> NodeId {
        let pool = self.f32_nodes.clone();
        self.pick(&pool)
    }

    fn step(&mut self) {
        let x = self.any_f32();
        let ty = self.g.ty(x).clone();
        let id = match self.rng.below(12) {
            0 => {
                let op = self.pick(&UnaryOp::ALL);
                self.g.unary(op, x).unwrap()
            }
            1 | 2 => {
                let op = self.pick(&BinaryOp::ALL);
                let y = self.of_type(&ty);
                self.g.binary(op, x, y).unwrap()
            }
            3 => {
                let op = self.pick(&CmpOp::ALL);
                let y = self.of_type(&ty);
                let cond = self.g.compare(op, x, y).unwrap();
                self.remember(cond);
                let other = self.of_type(&ty);
                self.g.select(cond, x, other).unwrap()
            }
            4 => {
                let to = self.pick(&DType::ALL);
                let cast = self.g.cast(x, to).unwrap();
                self.remember(cast);
                if to == DType::I32 {
                    let op = self.pick(&[BinaryOp::Add, BinaryOp::Max, BinaryOp::Sub]);
                    let y = self.of_type(&ty.with_dtype(DType::I32));
                    let combined = self.g.binary(op, cast, y).unwrap();
                    self.remember(combined);
                    self.g.cast(combined, DType::F32).unwrap()
                } else {
                    self.g.cast(cast, DType::F32).unwrap()
                }
            }
            5 => {
                let op = self.pick(&ReduceOp::ALL);
                let axes: Vec<usize> = (0..ty.rank()).filter(|_| self.rng.below(2) == 0).collect();
                let reduced = self.g.reduce(op, x, &axes).unwrap();
                self.remember(reduced);
                // Broadcast back, so the value mixes with its source's type.
                self.g.broadcast(reduced, ty.shape.clone()).unwrap()
            }
            6 => {
                let mut perm: Vec<usize> = (0..ty.rank()).collect();
                self.rng.shuffle(&mut perm);
                self.g.transpose(x, &perm).unwrap()
            }
            7 => {
                let mut shape = ty.shape.clone();
                shape.reverse();
                if self.rng.below(2) == 0 {
                    shape = vec![ty.num_elements()];
                }
                self.g.reshape(x, shape).unwrap()
            }
            8 | 9 => {
                let rank = ty.rank();
                let (transpose_a, transpose_b) = (self.rng.below(2) == 0, self.rng.below(2) == 0);
                let a = if rank >= 2 {
                    x
                } else {
                    let mut shape = vec![1];
                    shape.extend(&ty.shape);
                    self.g.reshape(x, shape).unwrap()
                };
                let a_shape = self.g.ty(a).shape.clone();
                let r = a_shape.len();
                let k = if transpose_a {
                    a_shape[r - 2]
                } else {
                    a_shape[r - 1]
                };
                let n = self.pick(&EXTENTS);
                let mut b_shape = a_shape[..r - 2].to_vec();
                b_shape.extend(if transpose_b { [n, k] } else { [k, n] });
                let b = self.of_type(&TensorType::f32(b_shape));
                self.g.matmul_t(a, b, transpose_a, transpose_b).unwrap()
            }
            10 => {
                let labels = if self.i32_nodes.is_empty() || self.rng.below(2) == 0 {
                    let shape = self.shape();
                    self.leaf(TensorType::i32(shape))
                } else {
                    let pool = self.i32_nodes.clone();
                    self.pick(&pool)
                };
                let depth = 1 + self.rng.below(6);
                self.g.one_hot(labels, depth).unwrap()
            }
            _ => {
                let mut shape = ty.shape.clone();
                let axis = self.rng.below(shape.len());
                shape[axis] = 1;
                let small = self.of_type(&TensorType::f32(shape));
                let wide = self.g.broadcast(small, ty.shape.clone()).unwrap();
                self.remember(wide);
                self.g.add(Op::Binary(BinaryOp::Mul), &[wide, x]).unwrap()
            }
        };
        self.remember(id);
    }
}

fn random_graph(seed: u64) -> Graph {
    let mut builder = Builder {
        g: Graph::new(format!("random_{seed}")),
        rng: Rng::new(seed),
        f32_nodes: Vec::new(),
        i32_nodes: Vec::new(),
        bool_nodes: Vec::new(),
        next_name: 0,
    };
    let shape = builder.shape();
    let name = builder.name("x");
    let first = builder.g.input(&name, TensorType::f32(shape)).unwrap();
    builder.remember(first);
    let steps = 4 + builder.rng.below(10);
    for _ in 0..steps {
        builder.step();
    }
    let mut g = builder.g;
    let nodes = builder.f32_nodes;
    for (position, &id) in nodes.iter().rev().take(3).enumerate() {
        g.set_output(&format!("out{position}"), id).unwrap();
    }
    // Every parameter with a same-typed computed value gets it as its update.
    for param in g.params().to_vec() {
        let ty = g.ty(param).clone();
        let value = nodes
            .iter()
            .rev()
            .copied()
            .find(|&id| id != param && *g.ty(id) == ty && !g.op(id).is_leaf());
        if let Some(value) = value {
            g.set_update(param, value).unwrap();
        }
    }
    g
}

#[test]
fn random_graphs_match_the_interpreter() {
    let mut kernels = 0;
    for seed in 0..100 {
        let g = random_graph(seed);
        kernels += g.node_count();
        check_graph(&g, 1000 + seed);
    }
    // The generator must produce non-trivial graphs for this test to mean anything.
    assert!(kernels > 1000, "only {kernels} nodes over 100 graphs");
}
