//! DAG-aware extraction: picks one e-node per e-class so that the graph it spells,
//! every shared node counted once, is as cheap as the search finds, and never
//! costlier than the input graph.
//!
//! egg's `Extractor` sums the costs of children as trees, so a value used twice is
//! paid twice and it can prefer a DAG worse than the input. Here:
//!
//! 1. a greedy settles classes cheapest first (Knuth's generalisation of
//!    Dijkstra), each with the node whose *set* of reached classes is cheapest
//!    (each class in the set paid once; estimated past a size cap, so that memory
//!    and time stay linear in the e-graph);
//! 2. the input graph itself is a second candidate (in every class, the input's
//!    node that comes first in topological order, which is acyclic);
//! 3. the cheaper candidate under the exact DAG cost is improved by local search:
//!    one class at a time switches to another node when the whole extraction gets
//!    strictly cheaper (with a work budget: each trial walks the whole extraction).
//!
//! Candidates are compared by their exact DAG cost, cycles rejected, so the result
//! costs at most what the input costs. Ties are broken by class and node index and
//! the budget counts work, not time, so the result is deterministic. Memory is
//! linear in the e-graph: no step keeps a set of classes per class beyond a small
//! cap.

use crate::egraph::language::{node_op, KilnEGraph, KilnLang};
use egg::{Id, Language};
use kiln_ir::op::matrix_dims;
use kiln_ir::{Graph, Op, TensorType};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

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

    /// Greedy DAG extraction in the order of Knuth's generalisation of Dijkstra's
    /// algorithm: a class is settled with its cheapest node once all that node's
    /// operand classes are settled, cheapest first. Settling order is a topological
    /// order of the choice, so the result is acyclic by construction, and each e-node
    /// is costed at most twice, so the work is linear in the e-graph.
    ///
    /// A node's cost is that of its reached set (itself and what its children reach,
    /// each class once). Sets are kept exactly while they are small
    /// ([`REACH_CAP`] classes); a bitset per class would be quadratic in memory on a
    /// long chain. Past the cap a node's cost is estimated as its costliest child's
    /// total plus what each other child adds on top of its own costliest child (its
    /// *gain*): that assumes the other children's deep ancestry is shared with the
    /// costliest one, as it is in residual and autodiff graphs, and still charges
    /// the ops that differ between two nodes of a class (a transpose that a matmul
    /// flag would fold). Exactness is restored afterwards: candidates are compared
    /// by [`Problem::dag_cost`].
    fn greedy(&self) -> Choice {
        let n = self.classes.len();
        let mut state = Greedy {
            choice: vec![None; n],
            total: vec![0.0; n],
            gain: vec![0.0; n],
            own: vec![0.0; n],
            reach: vec![None; n],
        };
        // The nodes that read each class (class, candidate), and how many distinct
        // operand classes of each node are still unsettled.
        let mut users: Vec<Vec<(u32, u32)>> = vec![Vec::new(); n];
        let mut waiting: Vec<Vec<u32>> = Vec::with_capacity(n);
        let mut heap = BinaryHeap::new();
        for (class, candidates) in self.candidates.iter().enumerate() {
            let mut counts = Vec::with_capacity(candidates.len());
            for (index, candidate) in candidates.iter().enumerate() {
                let children = distinct(&candidate.children);
                for &child in &children {
                    users[child].push((class as u32, index as u32));
                }
                counts.push(children.len() as u32);
                if children.is_empty() {
                    let (cost, _, _) = self.evaluate(class, index, &state);
                    heap.push(Ready::new(cost, class, index));
                }
            }
            waiting.push(counts);
        }
        while let Some(Ready {
            cost, class, index, ..
        }) = heap.pop()
        {
            if state.choice[class].is_some() {
                continue;
            }
            let (_, gain, reach) = self.evaluate(class, index, &state);
            state.choice[class] = Some(index);
            state.total[class] = cost.0;
            state.gain[class] = gain;
            state.own[class] = self.candidates[class][index].cost;
            state.reach[class] = reach;
            for &(user, user_index) in &users[class] {
                let (user, user_index) = (user as usize, user_index as usize);
                if state.choice[user].is_some() {
                    continue;
                }
                let count = &mut waiting[user][user_index];
                *count -= 1;
                if *count == 0 {
                    let (cost, _, _) = self.evaluate(user, user_index, &state);
                    heap.push(Ready::new(cost, user, user_index));
                }
            }
        }
        state.choice
    }

    /// The cost of settling `class` with candidate `index` (whose operand classes are
    /// settled), its gain over its costliest child, and its reached set if small.
    fn evaluate(&self, class: usize, index: usize, state: &Greedy) -> (f64, f64, Option<Vec<u32>>) {
        let candidate = &self.candidates[class][index];
        let children = distinct(&candidate.children);
        let Some(&costliest) = children
            .iter()
            .max_by(|&&a, &&b| state.total[a].total_cmp(&state.total[b]).then(b.cmp(&a)))
        else {
            return (candidate.cost, candidate.cost, Some(vec![class as u32]));
        };
        let exact = children.iter().all(|&child| state.reach[child].is_some());
        if !exact {
            let added: f64 = children
                .iter()
                .filter(|&&child| child != costliest)
                .map(|&child| state.gain[child])
                .sum();
            let gain = candidate.cost + added;
            return (state.total[costliest] + gain, gain, None);
        }
        let mut union: Vec<u32> = children
            .iter()
            .flat_map(|&child| state.reach[child].as_deref().unwrap_or_default())
            .copied()
            .collect();
        union.sort_unstable();
        union.dedup();
        let cost = candidate.cost
            + union
                .iter()
                .map(|&reached| state.own[reached as usize])
                .sum::<f64>();
        let gain = cost - state.total[costliest];
        let reach = (union.len() < REACH_CAP).then(|| {
            // The class is unsettled, so no child reaches it.
            let at = union.partition_point(|&reached| reached < class as u32);
            union.insert(at, class as u32);
            union
        });
        (cost, gain, reach)
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

/// The most classes whose reached set the greedy keeps exactly: enough for the
/// neighbourhood where choices differ, small enough that memory stays linear.
const REACH_CAP: usize = 128;

/// What the greedy knows of each settled class.
struct Greedy {
    choice: Choice,
    /// The cost of the class's reached set (exact or estimated).
    total: Vec<f64>,
    /// What the class adds on top of its costliest child's total.
    gain: Vec<f64>,
    /// The cost of the chosen node alone.
    own: Vec<f64>,
    /// The reached classes, sorted, while there are fewer than `REACH_CAP`.
    reach: Vec<Option<Vec<u32>>>,
}

/// A candidate whose operands are all settled, ordered cheapest first (ties by class
/// and candidate index, so the result is deterministic) in a max-heap.
#[derive(Debug)]
struct Ready {
    cost: TotalF64,
    class: usize,
    index: usize,
}

impl Ready {
    fn new(cost: f64, class: usize, index: usize) -> Ready {
        Ready {
            cost: TotalF64(cost),
            class,
            index,
        }
    }
}

impl PartialEq for Ready {
    fn eq(&self, other: &Ready) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ready {}

impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Ready) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ready {
    fn cmp(&self, other: &Ready) -> Ordering {
        // Reversed: `BinaryHeap` pops the greatest.
        other
            .cost
            .0
            .total_cmp(&self.cost.0)
            .then(other.class.cmp(&self.class))
            .then(other.index.cmp(&self.index))
    }
}

/// An f64 cost, compared by `total_cmp`.
#[derive(Clone, Copy, Debug)]
struct TotalF64(f64);

/// The distinct entries of `children` (an op may read one class twice).
fn distinct(children: &[usize]) -> Vec<usize> {
    let mut distinct = children.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    distinct
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
