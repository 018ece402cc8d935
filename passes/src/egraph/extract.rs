//! DAG-aware extraction: picks one e-node per e-class so that the graph it spells,
//! every shared node counted once, is as cheap as the search finds, and never
//! costlier than the input graph.
//!
//! egg's `Extractor` sums the costs of children as trees, so a value used twice is
//! paid twice and it can prefer a DAG worse than the input. Here:
//!
//! 1. a greedy fixpoint gives each class the node whose *set* of reached classes
//!    is cheapest (each class in the set paid once);
//! 2. the input graph itself is a second candidate (in every class, the input's
//!    node that comes first in topological order, which is acyclic);
//! 3. the cheaper candidate under the exact DAG cost is improved by local search:
//!    one class at a time switches to another node when the whole extraction gets
//!    strictly cheaper (with a work budget: each trial walks the whole extraction).
//!
//! Candidates are compared by their exact DAG cost, cycles rejected, so the result
//! costs at most what the input costs. Classes are visited in id order and the budget
//! counts work, not time, so the result is deterministic.

use crate::egraph::language::{node_op, KilnEGraph, KilnLang};
use egg::{Id, Language};
use kiln_ir::op::matrix_dims;
use kiln_ir::{Graph, Op, TensorType};
use std::collections::HashMap;

/// The cost of one op making a value of type `ty` from operands of `operand_types`:
/// about the elements it reads and writes, and at least 1. Leaves cost 1 and a
/// reshape (a view of the same buffer) costs 1; a transpose or broadcast is a copy,
/// so a transpose folded into a matmul flag or a broadcast that disappears is cheaper.
pub fn op_cost(op: &Op, ty: &TensorType, operand_types: &[&TensorType]) -> f64 {
    let elements = ty.num_elements() as f64;
    let work = match op {
        Op::Input { .. } | Op::Parameter { .. } | Op::Constant { .. } | Op::Reshape { .. } => 0.0,
        Op::Reduce { .. } => operand_types[0].num_elements() as f64,
        Op::MatMul { transpose_a, .. } => {
            let (_, k) = matrix_dims(&operand_types[0].shape, *transpose_a);
            elements * k as f64
        }
        _ => elements,
    };
    1.0 + work
}

/// The cost of a graph under [`op_cost`], every node counted once.
pub fn graph_cost(graph: &Graph) -> f64 {
    graph
        .node_ids()
        .into_iter()
        .map(|id| {
            let operands = graph.operands(id);
            let types: Vec<&TensorType> = operands.iter().map(|&o| graph.ty(o)).collect();
            op_cost(graph.op(id), graph.ty(id), &types)
        })
        .sum()
}

/// The chosen e-node of every class the roots reach, and the DAG cost of the choice.
#[derive(Clone, Debug)]
pub struct Extraction {
    pub choice: HashMap<Id, KilnLang>,
    pub cost: f64,
}

/// One value node of a class: its own cost and its value operands (dense indices).
struct Candidate {
    node: KilnLang,
    cost: f64,
    children: Vec<usize>,
}

/// The value classes of an e-graph in id order, with dense indices.
struct Problem {
    classes: Vec<Id>,
    candidates: Vec<Vec<Candidate>>,
}

/// A choice of one candidate per class; `None` where none was chosen yet.
type Choice = Vec<Option<usize>>;

impl Problem {
    fn new(egraph: &KilnEGraph) -> (Problem, HashMap<Id, usize>) {
        let mut classes: Vec<Id> = egraph
            .classes()
            .filter(|class| class.data.ty.is_some())
            .map(|class| class.id)
            .collect();
        classes.sort();
        let index: HashMap<Id, usize> = classes.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        let candidates = classes
            .iter()
            .map(|&class| {
                let ty = egraph[class]
                    .data
                    .ty
                    .as_ref()
                    .expect("value classes are typed");
                egraph[class]
                    .nodes
                    .iter()
                    .map(|node| {
                        let node_op = node_op(egraph, node).expect("value classes hold ops");
                        let types: Vec<&TensorType> = node_op
                            .operands
                            .iter()
                            .map(|&o| egraph[o].data.ty.as_ref().expect("operands are values"))
                            .collect();
                        Candidate {
                            node: node.clone(),
                            cost: op_cost(&node_op.op, ty, &types),
                            children: node_op
                                .operands
                                .iter()
                                .map(|&o| index[&egraph.find(o)])
                                .collect(),
                        }
                    })
                    .collect()
            })
            .collect();
        (
            Problem {
                classes,
                candidates,
            },
            index,
        )
    }

    /// The exact DAG cost of `choice` from `roots`, every reached class paid once;
    /// `None` if a reached class has no choice or the choice has a cycle.
    fn dag_cost(&self, choice: &Choice, roots: &[usize]) -> Option<f64> {
        // 0: unseen, 1: on the DFS stack, 2: done.
        let mut state = vec![0u8; self.classes.len()];
        let mut total = 0.0;
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for &root in roots {
            if state[root] == 2 {
                continue;
            }
            state[root] = 1;
            stack.push((root, 0));
            while let Some(&mut (class, ref mut next)) = stack.last_mut() {
                let candidate = &self.candidates[class][choice[class]?];
                if let Some(&child) = candidate.children.get(*next) {
                    *next += 1;
                    match state[child] {
                        0 => {
                            state[child] = 1;
                            stack.push((child, 0));
                        }
                        1 => return None,
                        _ => {}
                    }
                } else {
                    state[class] = 2;
                    total += candidate.cost;
                    stack.pop();
                }
            }
        }
        Some(total)
    }

    /// Greedy DAG extraction: each class takes the node whose reached set (itself and
    /// everything its children reach, each class once) costs least, refined until
    /// nothing changes. A node whose children reach its own class is skipped.
    ///
    /// A set's cost starts from its costliest child's total and adds only the classes
    /// the other children bring, so shared ancestry is paid once and not rescanned.
    fn greedy(&self) -> Choice {
        let n = self.classes.len();
        let words = n.div_ceil(64);
        let mut choice: Choice = vec![None; n];
        let mut reach: Vec<Vec<u64>> = vec![Vec::new(); n];
        let mut total: Vec<f64> = vec![0.0; n];
        let mut own: Vec<f64> = vec![0.0; n];
        // Each round settles more classes or lowers costs; the bound stops a rare
        // oscillation between stale sets of equal cost.
        for _round in 0..64 {
            let mut changed = false;
            for class in 0..n {
                // (cost, candidate, reached set) of the cheapest candidate; the current
                // choice wins ties so that equal costs do not flip back and forth.
                let mut best: Option<(f64, usize, Vec<u64>)> = None;
                for (index, candidate) in self.candidates[class].iter().enumerate() {
                    if candidate.children.iter().any(|&c| choice[c].is_none()) {
                        continue;
                    }
                    let (mut cost, mut set) =
                        union_cost(&candidate.children, &reach, &total, &own, words);
                    if set[class / 64] & (1 << (class % 64)) != 0 {
                        continue;
                    }
                    set[class / 64] |= 1 << (class % 64);
                    cost += candidate.cost;
                    let better = match &best {
                        None => true,
                        Some((best_cost, _, _)) => {
                            cost < *best_cost || cost == *best_cost && choice[class] == Some(index)
                        }
                    };
                    if better {
                        best = Some((cost, index, set));
                    }
                }
                let Some((cost, index, set)) = best else {
                    continue;
                };
                if choice[class] != Some(index) || reach[class] != set {
                    choice[class] = Some(index);
                    own[class] = self.candidates[class][index].cost;
                    reach[class] = set;
                    changed = true;
                }
                total[class] = cost;
            }
            if !changed {
                break;
            }
        }
        choice
    }

    /// Switches one reached class at a time to another node while that lowers the
    /// exact DAG cost; returns the improved choice and its cost. Each trial costs a
    /// walk over the extraction, so the work is bounded (in classes visited, which
    /// keeps the result independent of the machine's speed).
    fn improve(&self, mut choice: Choice, mut cost: f64, roots: &[usize]) -> (Choice, f64) {
        const SWEEPS: usize = 4;
        const WORK_BUDGET: usize = 500_000;
        let mut work = 0;
        for _sweep in 0..SWEEPS {
            let mut improved = false;
            let live = self.reached(&choice, roots);
            for class in 0..self.classes.len() {
                if !live[class] || self.candidates[class].len() < 2 {
                    continue;
                }
                for index in 0..self.candidates[class].len() {
                    if choice[class] == Some(index) {
                        continue;
                    }
                    if work > WORK_BUDGET {
                        return (choice, cost);
                    }
                    work += live.len();
                    let before = choice[class];
                    choice[class] = Some(index);
                    match self.dag_cost(&choice, roots) {
                        Some(new_cost) if new_cost < cost => {
                            cost = new_cost;
                            improved = true;
                        }
                        _ => choice[class] = before,
                    }
                }
            }
            if !improved {
                break;
            }
        }
        (choice, cost)
    }

    /// The classes an acyclic `choice` reaches from `roots`.
    fn reached(&self, choice: &Choice, roots: &[usize]) -> Vec<bool> {
        let mut live = vec![false; self.classes.len()];
        let mut stack = roots.to_vec();
        while let Some(class) = stack.pop() {
            if std::mem::replace(&mut live[class], true) {
                continue;
            }
            if let Some(index) = choice[class] {
                stack.extend(&self.candidates[class][index].children);
            }
        }
        live
    }
}

/// The union of the children's reached sets and its cost: the costliest child's
/// total plus the own cost of every class another child adds (the empty set for a
/// leaf).
fn union_cost(
    children: &[usize],
    reach: &[Vec<u64>],
    total: &[f64],
    own: &[f64],
    words: usize,
) -> (f64, Vec<u64>) {
    let Some(&first) = children
        .iter()
        .max_by(|&&a, &&b| total[a].total_cmp(&total[b]).then(b.cmp(&a)))
    else {
        return (0.0, vec![0u64; words]);
    };
    let mut set = reach[first].clone();
    let mut cost = total[first];
    for &child in children {
        if child == first {
            continue;
        }
        for (word_index, (word, &child_word)) in set.iter_mut().zip(&reach[child]).enumerate() {
            let mut new_bits = child_word & !*word;
            *word |= child_word;
            while new_bits != 0 {
                let bit = new_bits.trailing_zeros() as usize;
                cost += own[word_index * 64 + bit];
                new_bits &= new_bits - 1;
            }
        }
    }
    (cost, set)
}

/// Extracts the cheapest graph found for `roots`. `seed` gives, for each class of the
/// input graph, the input's node (the first in topological order where several
/// merged), so the input itself is a candidate.
pub fn extract(egraph: &KilnEGraph, roots: &[Id], seed: &[(Id, KilnLang)]) -> Extraction {
    let (problem, index) = Problem::new(egraph);
    let roots: Vec<usize> = roots.iter().map(|&r| index[&egraph.find(r)]).collect();

    let mut from_input: Choice = vec![None; problem.classes.len()];
    for (class, node) in seed {
        let class = index[&egraph.find(*class)];
        if from_input[class].is_some() {
            continue;
        }
        let canonical = node.clone().map_children(|child| egraph.find(child));
        let position = problem.candidates[class]
            .iter()
            .position(|candidate| candidate.node == canonical)
            .expect("every input node is in its class");
        from_input[class] = Some(position);
    }
    let input_cost = problem
        .dag_cost(&from_input, &roots)
        .expect("the input graph is an acyclic extraction of its own classes");

    let greedy = problem.greedy();
    let (start, start_cost) = match problem.dag_cost(&greedy, &roots) {
        Some(cost) if cost < input_cost => (greedy, cost),
        _ => (from_input, input_cost),
    };
    let (choice, cost) = problem.improve(start, start_cost, &roots);

    let mut chosen = HashMap::new();
    let mut stack = roots.clone();
    while let Some(class) = stack.pop() {
        let id = problem.classes[class];
        if chosen.contains_key(&id) {
            continue;
        }
        let candidate =
            &problem.candidates[class][choice[class].expect("reached classes have a choice")];
        chosen.insert(id, candidate.node.clone());
        stack.extend(&candidate.children);
    }
    Extraction {
        choice: chosen,
        cost,
    }
}
