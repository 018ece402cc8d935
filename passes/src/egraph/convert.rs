//! Conversion between a `Graph` and the e-graph.
//!
//! Into the e-graph every graph node becomes one e-node, so a value used twice is
//! one class (sharing is kept). Back out, the extraction's choice is rebuilt through
//! the checked builder: the input graph's inputs and parameters first (same names,
//! types and declaration order, used or not), then whatever the outputs and updates
//! need, each class once; outputs and updates keep their names and order.

use crate::egraph::extract::Extraction;
use crate::egraph::language::{node_op, op_node, KilnEGraph, KilnLang, NodeOp};
use egg::Id;
use kiln_ir::{Graph, IrError, NodeId, Op};
use std::collections::HashMap;

/// The e-graph of a graph: the class of every node, and the e-node each node became
/// (in the graph's topological order), which seeds the extraction with the input.
pub struct Converted {
    pub class_of: HashMap<NodeId, Id>,
    pub seed: Vec<(Id, KilnLang)>,
}

/// Adds every node of `graph` (in topological order) to `egraph`.
pub fn to_egraph(graph: &Graph, egraph: &mut KilnEGraph) -> Converted {
    let order = graph.topo_order();
    let mut class_of: HashMap<NodeId, Id> = HashMap::with_capacity(order.len());
    let mut seed = Vec::with_capacity(order.len());
    for id in order {
        let node = graph.node(id);
        let operands: Vec<Id> = graph
            .operands(id)
            .iter()
            .map(|operand| class_of[operand])
            .collect();
        let enode = op_node(egraph, &node.op, &operands, &node.ty);
        let class = egraph.add(enode.clone());
        class_of.insert(id, class);
        seed.push((class, enode));
    }
    Converted { class_of, seed }
}

/// Rebuilds a graph from `extraction`, with the signature (frozen parameters too),
/// outputs and updates of
/// `original`. An error here is a kiln bug: every chosen node is well typed.
pub fn from_egraph(
    original: &Graph,
    egraph: &KilnEGraph,
    class_of: &HashMap<NodeId, Id>,
    extraction: &Extraction,
) -> Result<Graph, IrError> {
    let mut graph = Graph::new(original.name.clone());
    for &id in original.inputs() {
        let name = original.leaf_name(id).expect("inputs are named");
        graph.input(name, original.ty(id).clone())?;
    }
    for &id in original.params() {
        let name = original.leaf_name(id).expect("parameters are named");
        let param = graph.parameter(name, original.ty(id).clone())?;
        if original.is_frozen(id) {
            graph.freeze(param)?;
        }
    }
    let mut builder = Builder {
        egraph,
        extraction,
        built: HashMap::new(),
    };
    let mut outputs = Vec::with_capacity(original.outputs().len());
    for (name, id) in original.outputs() {
        outputs.push((name.clone(), builder.build(&mut graph, class_of[id])?));
    }
    let mut updates = Vec::with_capacity(original.updates().len());
    for (param, value) in original.updates() {
        let name = original
            .leaf_name(*param)
            .expect("updates target parameters");
        updates.push((name, builder.build(&mut graph, class_of[value])?));
    }
    for (name, id) in outputs {
        graph.set_output(&name, id)?;
    }
    for (name, value) in updates {
        let param = graph
            .param_by_name(name)
            .expect("parameters were declared first");
        graph.set_update(param, value)?;
    }
    Ok(graph)
}

struct Builder<'a> {
    egraph: &'a KilnEGraph,
    extraction: &'a Extraction,
    built: HashMap<Id, NodeId>,
}

impl Builder<'_> {
    /// Builds `root` and whatever it needs, operands first; iterative, so deep
    /// graphs do not exhaust the stack.
    fn build(&mut self, graph: &mut Graph, root: Id) -> Result<NodeId, IrError> {
        let root = self.egraph.find(root);
        // (class, whether its operands were pushed already)
        let mut stack = vec![(root, false)];
        while let Some((class, expanded)) = stack.pop() {
            if self.built.contains_key(&class) {
                continue;
            }
            let node = self.chosen(class);
            if !expanded {
                stack.push((class, true));
                // Pushed in reverse so that operands are built in operand order.
                for &operand in node.operands.iter().rev() {
                    let operand = self.egraph.find(operand);
                    if !self.built.contains_key(&operand) {
                        stack.push((operand, false));
                    }
                }
                continue;
            }
            let id = match node.op {
                Op::Input { name } => graph
                    .input_by_name(&name)
                    .expect("inputs were declared first"),
                Op::Parameter { name } => graph
                    .param_by_name(&name)
                    .expect("parameters were declared first"),
                Op::Constant { value } => {
                    graph.constant(value, node.declared.expect("constants declare their type"))?
                }
                op => {
                    let operands: Vec<NodeId> = node
                        .operands
                        .iter()
                        .map(|&operand| self.built[&self.egraph.find(operand)])
                        .collect();
                    graph.add(op, &operands)?
                }
            };
            debug_assert_eq!(
                Some(graph.ty(id)),
                self.egraph[class].data.ty.as_ref(),
                "a rebuilt node has its class's type"
            );
            self.built.insert(class, id);
        }
        Ok(self.built[&root])
    }

    fn chosen(&self, class: Id) -> NodeOp {
        let node = self
            .extraction
            .choice
            .get(&class)
            .expect("the extraction chose a node for every reached class");
        node_op(self.egraph, node).expect("value classes choose value nodes")
    }
}
