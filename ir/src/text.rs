//! The text form of the IR: a stable printer and its inverse, the parser.
//!
//! ```text
//! graph mlp {
//!   %0 = input "x" : f32[32,64]
//!   %1 = param "w" : f32[64,10]
//!   %2 = matmul %0, %1 : f32[32,10]
//!   %3 = reduce_sum %2 axes=[1] : f32[32,1]
//!   output "y" = %3
//! }
//! ```
//!
//! Values are renumbered densely: inputs, then parameters (each in declaration order,
//! so a round trip keeps the signature), then every other node in the graph's
//! deterministic topological order. `broadcast`, `reshape` and `cast` take their
//! target from the result type. `//` starts a comment. `parse(print(g))` prints as `g`.

use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::lex::{self, error_at, Syntax, Token};
use crate::op::{
    BinaryOp, CmpOp, ConvSpec, Distribution, Op, PoolKind, PoolSpec, ReduceOp, UnaryOp,
};
use crate::types::{DType, TensorType};
use std::collections::HashMap;
use std::fmt::{self, Write};
use thiserror::Error;

/// A syntax or typing error in IR text (the user's mistake), at a 1-based line and
/// column counted in characters.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{line}:{column}: {message}")]
pub struct ParseError {
    /// The line of the offending token, from 1.
    pub line: usize,
    /// The column of the offending token, from 1.
    pub column: usize,
    /// What was wrong and what was expected instead.
    pub message: String,
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print(self))
    }
}

/// The order in which `print` numbers nodes: inputs, parameters, then the rest in
/// topological order.
pub fn print_order(graph: &Graph) -> Vec<NodeId> {
    let mut order: Vec<NodeId> = graph.inputs().to_vec();
    order.extend(graph.params());
    order.extend(
        graph
            .topo_order()
            .into_iter()
            .filter(|id| !matches!(graph.op(*id), Op::Input { .. } | Op::Parameter { .. })),
    );
    order
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `text` as a quoted string of the text IR, with `\"`, `\\` and `\n` escapes.
pub fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// A float literal that parses back to the same value.
pub fn float_literal(value: f64) -> String {
    if value.is_nan() {
        "nan".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{value:?}")
    }
}

/// An axis list as the text IR writes it: `[1,0]`.
pub fn list(values: &[usize]) -> String {
    let items: Vec<String> = values.iter().map(usize::to_string).collect();
    format!("[{}]", items.join(","))
}

/// `print_order` and each node's number in it (`%n` in the text form).
pub fn numbering(graph: &Graph) -> (Vec<NodeId>, HashMap<NodeId, usize>) {
    let order = print_order(graph);
    let number = order
        .iter()
        .enumerate()
        .map(|(index, &id)| (id, index))
        .collect();
    (order, number)
}

/// Prints the graph in the text form.
pub fn print(graph: &Graph) -> String {
    let (order, number) = numbering(graph);
    let mut out = String::new();
    let name = if is_identifier(&graph.name) {
        graph.name.clone()
    } else {
        quote(&graph.name)
    };
    let _ = writeln!(out, "graph {name} {{");
    for &id in &order {
        let node = graph.node(id);
        let _ = write!(out, "  %{} = {}", number[&id], node.op.mnemonic());
        match &node.op {
            Op::Input { name } | Op::Parameter { name } => {
                let _ = write!(out, " {}", quote(name));
            }
            Op::Constant { value } => {
                let _ = write!(out, " {}", float_literal(*value));
            }
            _ => {}
        }
        let operands: Vec<String> = graph
            .operands(id)
            .iter()
            .map(|operand| format!("%{}", number[operand]))
            .collect();
        if !operands.is_empty() {
            let _ = write!(out, " {}", operands.join(", "));
        }
        match &node.op {
            Op::Reduce { axes, .. } => {
                let _ = write!(out, " axes={}", list(axes));
            }
            Op::Transpose { perm } => {
                let _ = write!(out, " perm={}", list(perm));
            }
            Op::OneHot { depth } => {
                let _ = write!(out, " depth={depth}");
            }
            Op::Slice {
                starts,
                ends,
                steps,
            } => {
                let _ = write!(
                    out,
                    " starts={} ends={} steps={}",
                    list(starts),
                    list(ends),
                    list(steps)
                );
            }
            Op::Pad {
                low,
                high,
                interior,
                value,
            } => {
                let _ = write!(
                    out,
                    " low={} high={} interior={} value={}",
                    list(low),
                    list(high),
                    list(interior),
                    float_literal(*value)
                );
            }
            Op::Concat { axis } => {
                let _ = write!(out, " axis={axis}");
            }
            Op::Random { stream, .. } => {
                let _ = write!(out, " stream={stream}");
            }
            Op::Conv(spec) | Op::ConvInputGrad { spec, .. } | Op::ConvFilterGrad { spec, .. } => {
                let _ = write!(out, "{}", conv_attributes(spec));
            }
            Op::Pool { spec, .. } | Op::PoolGrad { spec, .. } => {
                let _ = write!(out, "{}", pool_attributes(spec));
            }
            Op::Iota { axis, .. } => {
                let _ = write!(out, " axis={axis}");
            }
            Op::Gather { axis, batch_dims } => {
                let _ = write!(out, " axis={axis} batch_dims={batch_dims}");
            }
            Op::ScatterAdd {
                axis,
                batch_dims,
                extent,
            } => {
                let _ = write!(out, " axis={axis} batch_dims={batch_dims} extent={extent}");
            }
            _ => {}
        }
        let _ = writeln!(out, " : {}", node.ty);
    }
    for (name, id) in graph.outputs() {
        let _ = writeln!(out, "  output {} = %{}", quote(name), number[id]);
    }
    for (param, value) in graph.updates() {
        let target = graph.leaf_name(*param).expect("updates target parameters");
        let _ = writeln!(out, "  update {} = %{}", quote(target), number[value]);
    }
    for &param in graph.params() {
        if graph.is_frozen(param) {
            let name = graph.leaf_name(param).expect("parameters are named");
            let _ = writeln!(out, "  frozen {}", quote(name));
        }
    }
    out.push_str("}\n");
    out
}

// ---- parsing -----------------------------------------------------------------------

/// The graph text's tokens: `%name` values, and no operators, so a sign starts a number
/// (`-3`, `-inf`) and a '.' always joins a word (`cmp.gt`) or number.
pub(crate) const SYNTAX: Syntax = Syntax {
    punct: "={}[],:",
    value_names: true,
    ranges: false,
};

/// The graph text's grammar, whose own parsing steps are `impl Parser` below.
struct GraphText;

type Parser = lex::Parser<GraphText>;

impl Parser {
    fn value_name(&mut self, what: &str) -> Result<(String, usize, usize), ParseError> {
        let here = self.peek();
        match &here.token {
            Token::Value(name) => {
                let found = (name.clone(), here.line, here.column);
                self.next();
                Ok(found)
            }
            _ => Err(self.expected(what)),
        }
    }

    fn float(&mut self) -> Result<f64, ParseError> {
        let text = match &self.peek().token {
            Token::Number(number) => number.clone(),
            Token::Word(word) if word == "inf" || word == "nan" => word.clone(),
            _ => return Err(self.expected("a number")),
        };
        let value = match text.as_str() {
            "inf" | "+inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            "nan" => f64::NAN,
            _ => text
                .parse()
                .map_err(|_| self.error(format!("expected a number, found {text}")))?,
        };
        self.next();
        Ok(value)
    }

    fn int_list(&mut self, what: &str) -> Result<Vec<usize>, ParseError> {
        self.punct('[', &format!("to open {what}"))?;
        let mut values = Vec::new();
        if !self.eat_punct(']') {
            loop {
                values.push(self.integer("a non-negative integer")?);
                if self.eat_punct(']') {
                    break;
                }
                self.punct(',', &format!("or ']' in {what}"))?;
            }
        }
        Ok(values)
    }

    fn attribute(&mut self, key: &str) -> Result<(), ParseError> {
        match &self.peek().token {
            Token::Word(word) if word == key => {
                self.next();
                self.punct('=', &format!("after {key}"))
            }
            _ => Err(self.expected(&format!("attribute {key}=..."))),
        }
    }

    /// `key=[1,2]`.
    fn list_attribute(&mut self, key: &str, what: &str) -> Result<Vec<usize>, ParseError> {
        self.attribute(key)?;
        self.int_list(what)
    }

    /// `key=3`.
    fn integer_attribute<T: TryFrom<u64>>(
        &mut self,
        key: &str,
        what: &str,
    ) -> Result<T, ParseError> {
        self.attribute(key)?;
        self.integer(what)
    }

    fn tensor_type(&mut self) -> Result<TensorType, ParseError> {
        let here = (self.peek().line, self.peek().column);
        let name = self.word("a type such as f32[2,3]")?;
        let dtype = DType::from_name(&name).ok_or_else(|| {
            error_at(
                here.0,
                here.1,
                format!("unknown dtype '{name}': expected f32, i32 or bool"),
            )
        })?;
        let shape = self.int_list("a shape")?;
        // The size limit is the graph's to enforce: it names the op (at the op's
        // position), the same way for every entry point.
        Ok(TensorType::new(dtype, shape))
    }
}

/// ` stride=[1,1] low=[0,0] high=[0,0] dilation=[1,1] groups=1`, as the text IR and
/// the DOT labels write a convolution's attributes.
pub fn conv_attributes(spec: &ConvSpec) -> String {
    format!(
        " stride={} low={} high={} dilation={} groups={}",
        list(&spec.stride),
        list(&spec.low),
        list(&spec.high),
        list(&spec.dilation),
        spec.groups
    )
}

/// ` window=[2,2] stride=[2,2] low=[0,0] high=[0,0]`, a pooling's attributes.
pub fn pool_attributes(spec: &PoolSpec) -> String {
    format!(
        " window={} stride={} low={} high={}",
        list(&spec.window),
        list(&spec.stride),
        list(&spec.low),
        list(&spec.high)
    )
}

fn op_from_mnemonic(mnemonic: &str) -> Option<Op> {
    let op = match mnemonic {
        "input" => Op::Input {
            name: String::new(),
        },
        "param" => Op::Parameter {
            name: String::new(),
        },
        "const" => Op::Constant { value: 0.0 },
        "select" => Op::Select,
        "cast" => Op::Cast { to: DType::F32 },
        "broadcast" => Op::Broadcast { shape: Vec::new() },
        "reshape" => Op::Reshape { shape: Vec::new() },
        "transpose" => Op::Transpose { perm: Vec::new() },
        "one_hot" => Op::OneHot { depth: 0 },
        "slice" => Op::Slice {
            starts: Vec::new(),
            ends: Vec::new(),
            steps: Vec::new(),
        },
        "pad" => Op::Pad {
            low: Vec::new(),
            high: Vec::new(),
            interior: Vec::new(),
            value: 0.0,
        },
        "concat" => Op::Concat { axis: 0 },
        "max_pool" | "avg_pool" | "max_pool_grad" | "avg_pool_grad" => {
            let kind = if mnemonic.starts_with("max") {
                PoolKind::Max
            } else {
                PoolKind::Avg
            };
            let spec = PoolSpec::default();
            if mnemonic.ends_with("_grad") {
                Op::PoolGrad { kind, spec }
            } else {
                Op::Pool { kind, spec }
            }
        }
        "iota" => Op::Iota {
            axis: 0,
            shape: Vec::new(),
        },
        "conv" => Op::Conv(ConvSpec::default()),
        "conv_input_grad" => Op::ConvInputGrad {
            spec: ConvSpec::default(),
            input: Vec::new(),
        },
        "conv_filter_grad" => Op::ConvFilterGrad {
            spec: ConvSpec::default(),
            taps: Vec::new(),
        },
        "random.uniform" | "random.normal" => Op::Random {
            dist: if mnemonic == "random.uniform" {
                Distribution::Uniform
            } else {
                Distribution::Normal
            },
            stream: 0,
            shape: Vec::new(),
        },
        "gather" => Op::Gather {
            axis: 0,
            batch_dims: 0,
        },
        "scatter_add" => Op::ScatterAdd {
            axis: 0,
            batch_dims: 0,
            extent: 0,
        },
        "matmul" | "matmul.tn" | "matmul.nt" | "matmul.tt" => Op::MatMul {
            transpose_a: mnemonic == "matmul.tn" || mnemonic == "matmul.tt",
            transpose_b: mnemonic == "matmul.nt" || mnemonic == "matmul.tt",
        },
        _ => {
            if let Some(op) = UnaryOp::ALL.into_iter().find(|op| op.name() == mnemonic) {
                Op::Unary(op)
            } else if let Some(op) = BinaryOp::ALL.into_iter().find(|op| op.name() == mnemonic) {
                Op::Binary(op)
            } else if let Some(op) = ReduceOp::ALL.into_iter().find(|op| op.name() == mnemonic) {
                Op::Reduce {
                    op,
                    axes: Vec::new(),
                }
            } else {
                let cmp = mnemonic.strip_prefix("cmp.")?;
                Op::Compare(CmpOp::ALL.into_iter().find(|op| op.name() == cmp)?)
            }
        }
    };
    Some(op)
}

/// Parses IR text. Every node is type-checked as it is added; errors carry the
/// line:column of the offending token.
pub fn parse(src: &str) -> Result<Graph, ParseError> {
    let mut parser = Parser::new(src, &SYNTAX)?;
    let at = parser.here();
    match parser.word("'graph'")?.as_str() {
        "graph" => {}
        other => {
            return Err(error_at(
                at.0,
                at.1,
                format!("expected 'graph', found '{other}'"),
            ));
        }
    }
    let name = match &parser.peek().token {
        Token::Word(_) => parser.word("a graph name")?,
        Token::Str(_) => parser.string("a graph name")?,
        _ => return Err(parser.expected("a graph name")),
    };
    parser.punct('{', "to open the graph body")?;
    let mut graph = Graph::new(name);
    let mut values: HashMap<String, NodeId> = HashMap::new();
    let lookup = |values: &HashMap<String, NodeId>,
                  (name, line, column): (String, usize, usize)| {
        values
            .get(&name)
            .copied()
            .ok_or_else(|| error_at(line, column, format!("value %{name} is not defined")))
    };
    loop {
        let start = (parser.peek().line, parser.peek().column);
        let ir_error = |err: IrError| error_at(start.0, start.1, err.to_string());
        match parser.peek().token.clone() {
            Token::Punct('}') => {
                parser.next();
                break;
            }
            Token::Word(word) if word == "output" || word == "update" => {
                parser.next();
                let target = parser.string(&format!("a quoted {word} name"))?;
                parser.punct('=', &format!("after the {word} name"))?;
                let value = lookup(&values, parser.value_name("a value such as %3")?)?;
                if word == "output" {
                    graph.set_output(&target, value).map_err(ir_error)?;
                } else {
                    let param = graph.param_by_name(&target).ok_or_else(|| {
                        error_at(
                            start.0,
                            start.1,
                            format!("update of {target:?}: no parameter has that name"),
                        )
                    })?;
                    graph.set_update(param, value).map_err(ir_error)?;
                }
            }
            Token::Word(word) if word == "frozen" => {
                parser.next();
                let target = parser.string("a quoted parameter name")?;
                let param = graph.param_by_name(&target).ok_or_else(|| {
                    error_at(
                        start.0,
                        start.1,
                        format!("frozen {target:?}: no parameter has that name"),
                    )
                })?;
                graph.freeze(param).map_err(ir_error)?;
            }
            Token::Value(_) => {
                let (name, line, column) = parser.value_name("a value definition")?;
                if values.contains_key(&name) {
                    return Err(error_at(
                        line,
                        column,
                        format!("value %{name} is defined twice"),
                    ));
                }
                parser.punct('=', "after the value name")?;
                let op_at = (parser.peek().line, parser.peek().column);
                let mnemonic = parser.word("an op")?;
                let mut op = op_from_mnemonic(&mnemonic).ok_or_else(|| {
                    error_at(op_at.0, op_at.1, format!("unknown op '{mnemonic}'"))
                })?;
                match &mut op {
                    Op::Input { name } | Op::Parameter { name } => {
                        *name = parser.string(&format!("a quoted {mnemonic} name"))?;
                    }
                    Op::Constant { value } => *value = parser.float()?,
                    _ => {}
                }
                let arity = op.arity();
                let mut operands = Vec::with_capacity(arity);
                for position in 0..arity {
                    if position > 0 {
                        parser.punct(
                            ',',
                            &format!("after operand ({mnemonic} takes {arity} operands)"),
                        )?;
                    }
                    operands.push(lookup(
                        &values,
                        parser.value_name("an operand such as %0")?,
                    )?);
                }
                if arity > 0 && parser.peek().token == Token::Punct(',') {
                    return Err(
                        parser.error(format!("{mnemonic} takes {arity} operands, found more"))
                    );
                }
                match &mut op {
                    Op::Reduce { axes, .. } => {
                        *axes = parser.list_attribute("axes", "the axes")?;
                    }
                    Op::Transpose { perm } => {
                        *perm = parser.list_attribute("perm", "the permutation")?;
                    }
                    Op::OneHot { depth } => {
                        *depth = parser.integer_attribute("depth", "the depth")?;
                    }
                    Op::Slice {
                        starts,
                        ends,
                        steps,
                    } => {
                        *starts = parser.list_attribute("starts", "the starts")?;
                        *ends = parser.list_attribute("ends", "the ends")?;
                        *steps = parser.list_attribute("steps", "the steps")?;
                    }
                    Op::Pad {
                        low,
                        high,
                        interior,
                        value,
                    } => {
                        *low = parser.list_attribute("low", "the low padding")?;
                        *high = parser.list_attribute("high", "the high padding")?;
                        *interior = parser.list_attribute("interior", "the interior padding")?;
                        parser.attribute("value")?;
                        *value = parser.float()?;
                    }
                    Op::Concat { axis } | Op::Iota { axis, .. } => {
                        *axis = parser.integer_attribute("axis", "the axis")?;
                    }
                    Op::Random { stream, .. } => {
                        *stream = parser.integer_attribute("stream", "the stream")?;
                    }
                    Op::Conv(spec)
                    | Op::ConvInputGrad { spec, .. }
                    | Op::ConvFilterGrad { spec, .. } => {
                        spec.stride = parser.list_attribute("stride", "the strides")?;
                        spec.low = parser.list_attribute("low", "the low padding")?;
                        spec.high = parser.list_attribute("high", "the high padding")?;
                        spec.dilation = parser.list_attribute("dilation", "the dilations")?;
                        spec.groups = parser.integer_attribute("groups", "the groups")?;
                    }
                    Op::Pool { spec, .. } | Op::PoolGrad { spec, .. } => {
                        spec.window = parser.list_attribute("window", "the window")?;
                        spec.stride = parser.list_attribute("stride", "the strides")?;
                        spec.low = parser.list_attribute("low", "the low padding")?;
                        spec.high = parser.list_attribute("high", "the high padding")?;
                    }
                    Op::Gather { axis, batch_dims } => {
                        *axis = parser.integer_attribute("axis", "the axis")?;
                        *batch_dims = parser.integer_attribute("batch_dims", "the batch axes")?;
                    }
                    Op::ScatterAdd {
                        axis,
                        batch_dims,
                        extent,
                    } => {
                        *axis = parser.integer_attribute("axis", "the axis")?;
                        *batch_dims = parser.integer_attribute("batch_dims", "the batch axes")?;
                        *extent = parser.integer_attribute("extent", "the extent")?;
                    }
                    _ => {}
                }
                parser.punct(':', "before the result type")?;
                let ty = parser.tensor_type()?;
                match &mut op {
                    Op::Broadcast { shape }
                    | Op::Reshape { shape }
                    | Op::Random { shape, .. }
                    | Op::Iota { shape, .. } => *shape = ty.shape.clone(),
                    Op::ConvInputGrad { input: spatial, .. }
                    | Op::ConvFilterGrad { taps: spatial, .. } => {
                        *spatial = ty.shape.get(2..).unwrap_or_default().to_vec()
                    }
                    Op::Cast { to } => *to = ty.dtype,
                    _ => {}
                }
                let id = graph
                    .add_typed(op, &operands, ty)
                    .map_err(|err| error_at(op_at.0, op_at.1, err.to_string()))?;
                values.insert(name, id);
            }
            Token::End => return Err(parser.expected("'}' to close the graph")),
            _ => return Err(parser.expected("a value definition, output, update, frozen or '}'")),
        }
    }
    if parser.peek().token != Token::End {
        return Err(parser.expected("end of input after the graph"));
    }
    Ok(graph)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MLP: &str = "graph mlp {
  %0 = input \"x\" : f32[4,3]
  %1 = input \"labels\" : i32[4]
  %2 = param \"w\" : f32[3,2]
  %3 = matmul %0, %2 : f32[4,2]
  %4 = reduce_max %3 axes=[1] : f32[4,1]
  %5 = broadcast %4 : f32[4,2]
  %6 = sub %3, %5 : f32[4,2]
  %7 = one_hot %1 depth=2 : f32[4,2]
  %8 = const 0.5 : f32[4,2]
  %9 = mul %7, %8 : f32[4,2]
  %10 = cmp.gt %6, %9 : bool[4,2]
  %11 = select %10, %6, %9 : f32[4,2]
  %12 = transpose %11 perm=[1,0] : f32[2,4]
  %13 = matmul.tn %12, %12 : f32[4,4]
  %14 = reshape %13 : f32[16]
  %15 = cast %14 : i32[16]
  %16 = const -inf : f32[3,2]
  %17 = max %2, %16 : f32[3,2]
  output \"y\" = %15
  output \"y2\" = %13
  update \"w\" = %17
}
";

    #[test]
    fn printing_a_parsed_graph_gives_the_text_back() {
        let graph = parse(MLP).unwrap();
        assert_eq!(print(&graph), MLP);
    }

    const BUFFERS: &str = "graph b {
  %0 = input \"x\" : f32[2]
  %1 = param \"w\" : f32[2]
  %2 = param \"running\" : f32[2]
  %3 = param \"table\" : f32[2]
  %4 = mul %0, %1 : f32[2]
  %5 = add %4, %3 : f32[2]
  %6 = add %2, %0 : f32[2]
  output \"y\" = %5
  update \"running\" = %6
  frozen \"running\"
  frozen \"table\"
}
";

    #[test]
    fn frozen_parameters_print_and_parse_back() {
        let graph = parse(BUFFERS).unwrap();
        let frozen: Vec<bool> = graph.params().iter().map(|&p| graph.is_frozen(p)).collect();
        assert_eq!(frozen, [false, true, true]);
        assert_eq!(
            graph.trainable_params(),
            [graph.param_by_name("w").unwrap()]
        );
        assert_eq!(print(&graph), BUFFERS);
        let json = crate::serial::to_json(&graph);
        assert!(
            json.contains("\"frozen\": [\n    \"running\",\n    \"table\"\n  ]"),
            "{json}"
        );
        assert_eq!(print(&crate::serial::from_json(&json).unwrap()), BUFFERS);
    }

    #[test]
    fn freezing_needs_a_parameter() {
        let err = parse("graph g {\n  %0 = input \"x\" : f32[2]\n  frozen \"x\"\n}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "3:3: frozen \"x\": no parameter has that name"
        );
        let mut graph = Graph::new("g");
        let x = graph.input("x", TensorType::f32([2])).unwrap();
        assert_eq!(
            graph.freeze(x).unwrap_err().to_string(),
            format!("{x} (input) is not a parameter")
        );
    }

    #[test]
    fn comments_and_free_names_are_accepted() {
        let src = "// a comment\ngraph \"my net\" { // trailing\n  %x = input \"x\" : f32[2]\n  %y = neg %x : f32[2]\n  output \"y\" = %y\n}\n";
        let graph = parse(src).unwrap();
        assert_eq!(
            print(&graph),
            "graph \"my net\" {\n  %0 = input \"x\" : f32[2]\n  %1 = neg %0 : f32[2]\n  output \"y\" = %1\n}\n"
        );
    }

    #[test]
    fn constants_round_trip_exactly() {
        for value in [0.1, -1e-7, 1e30, 3.0, f64::from(f32::MAX), -0.0] {
            let mut graph = Graph::new("c");
            let id = graph.constant(value, TensorType::f32([1])).unwrap();
            graph.set_output("c", id).unwrap();
            let back = parse(&print(&graph)).unwrap();
            let Op::Constant { value: parsed } = back.op(back.output_by_name("c").unwrap()) else {
                panic!("a constant")
            };
            assert_eq!(parsed.to_bits(), value.to_bits(), "{value}");
        }
    }

    #[test]
    fn errors_name_the_position_and_what_was_expected() {
        let cases = [
            ("graph g {\n  %0 = input \"x\" : f32[2]\n  %1 = frob %0 : f32[2]\n}", "3:8: unknown op 'frob'"),
            ("graph g {\n  %0 = input \"x\" : f32[2]\n  %1 = neg %7 : f32[2]\n}", "3:12: value %7 is not defined"),
            ("graph g {\n  %0 = input \"x\" : f32[2]\n  %0 = neg %0 : f32[2]\n}", "3:3: value %0 is defined twice"),
            (
                "graph g {\n  %0 = input \"x\" : f32[2]\n  %1 = input \"y\" : f32[3]\n  %2 = add %0, %1 : f32[2]\n}",
                "4:8: add: operand types f32[2] and f32[3] differ",
            ),
            ("graph g {\n  %0 = input \"x\" : f33[2]\n}", "2:20: unknown dtype 'f33': expected f32, i32 or bool"),
            ("graph g {\n  %0 = input \"x\" : f32[2]\n", "3:1: expected '}' to close the graph, found end of input"),
            ("graph g {\n  %0 = input \"x\" f32[2]\n}", "2:18: expected ':' before the result type, found 'f32'"),
            (
                "graph g {\n  %0 = input \"x\" : f32[2]\n  %1 = neg %0 : f32[3]\n}",
                "3:8: neg: declared type f32[3] but the operands give f32[2]",
            ),
        ];
        for (src, expected) in cases {
            assert_eq!(parse(src).unwrap_err().to_string(), expected, "{src}");
        }
    }
}
