//! The kernel IR's text form read back: [`parse`] is the inverse of
//! [`Program`]'s `Display`, so `parse(&program.to_string()) == Ok(program)` for every
//! program (a property test lowers and schedules random graphs to check it).
//!
//! ```text
//! program "add" {
//!   b0: f32[6] input "x"
//!   b1: f32[6] temp
//!   output "y" = b1: f32[6]
//!
//!   kernel k0 add {
//!     for i0 in 0..6 vec4 {
//!       b1[i0] = add(b0[i0], 1.0)
//!     }
//!   }
//! }
//! ```
//!
//! The parser is hand-written recursive descent like the graph text's
//! ([`crate::text`]), and reports errors the same way: a [`ParseError`] at a 1-based
//! line and column that says what was expected and what was found. It checks only
//! the syntax and the numbering (buffers `b0, b1, ...`, kernels `k0, ...` and locals
//! `r0, ...` are declared densely in order); types, scoping and bounds are
//! [`Program::check`]'s job, so a program that parses may still be rejected there.
//! `//` starts a comment that runs to the end of the line.

use crate::kernel::{
    Buffer, BufferId, Contraction, ContractionAxis, Epilogue, Expr, Index, Indirect, Kernel,
    KernelOp, LocalId, LoopKind, Matmul, MatmulOp, MicroKernel, Output, Program, Routine, Scalar,
    Slice, Split, Stmt, Storage, TapAxis, Update, VType, VarId,
};
use crate::lex::{self, error_at, Syntax, Token};
use crate::op::{BinaryOp, CmpOp, Distribution, UnaryOp};
use crate::text::ParseError;
use crate::types::{DType, TensorType};

/// Parses a program in the kernel IR's text form.
pub fn parse(src: &str) -> Result<Program, ParseError> {
    let mut parser = Parser::new(src, &SYNTAX)?;
    let program = parser.program()?;
    if parser.peek().token != Token::End {
        return Err(parser.expected("end of input after the program"));
    }
    Ok(program)
}

// ---- tokens ------------------------------------------------------------------------

/// The kernel text's tokens: no `%` value names (ids are words such as `b3`), `..`
/// for loop ranges, and the operators of index expressions (the file tests'
/// directives use them too).
pub(crate) const SYNTAX: Syntax = Syntax {
    punct: "{}[](),:;=*+-",
    value_names: false,
    ranges: true,
};

/// The number after `prefix` in an id such as `b3` or `i12`, if `word` is one.
fn id_number(word: &str, prefix: char) -> Option<u64> {
    let digits = word.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

// ---- parser ------------------------------------------------------------------------

/// The kernel text's grammar, whose own parsing steps are `impl Parser` below.
struct KernelText;

type Parser = lex::Parser<KernelText>;

impl Parser {
    /// An id such as `b3`: `prefix` and a number that fits `T`.
    fn id<T: TryFrom<u64>>(&mut self, prefix: char, what: &str) -> Result<T, ParseError> {
        let number = self
            .peek_word()
            .and_then(|word| id_number(word, prefix))
            .and_then(|number| T::try_from(number).ok())
            .ok_or_else(|| self.expected(what))?;
        self.next();
        Ok(number)
    }

    fn buffer_id(&mut self) -> Result<BufferId, ParseError> {
        self.id('b', "a buffer such as b0").map(BufferId)
    }

    fn var_id(&mut self) -> Result<VarId, ParseError> {
        self.id('i', "a loop variable such as i0").map(VarId)
    }

    /// `key=`, the start of an attribute.
    fn attribute(&mut self, key: &str) -> Result<(), ParseError> {
        self.keyword(key, "(an attribute)")?;
        self.punct('=', &format!("after {key}"))
    }

    fn dtype(&mut self) -> Result<DType, ParseError> {
        let here = (self.peek().line, self.peek().column);
        let name = self.word("a dtype (f32, i32 or bool)")?;
        DType::from_name(&name).ok_or_else(|| {
            error_at(
                here.0,
                here.1,
                format!("unknown dtype '{name}': expected f32, i32 or bool"),
            )
        })
    }

    fn tensor_type(&mut self) -> Result<TensorType, ParseError> {
        let dtype = self.dtype()?;
        self.punct('[', "to open the shape")?;
        let mut shape = Vec::new();
        if !self.eat_punct(']') {
            loop {
                shape.push(self.integer("an extent")?);
                if self.eat_punct(']') {
                    break;
                }
                self.punct(',', "or ']' in the shape")?;
            }
        }
        Ok(TensorType::new(dtype, shape))
    }

    /// `f32`, `f32x4`, `boolx8`.
    fn vtype(&mut self) -> Result<VType, ParseError> {
        let here = (self.peek().line, self.peek().column);
        let word = self.word("a value type such as f32 or f32x4")?;
        let bad = || {
            error_at(
                here.0,
                here.1,
                format!("expected a value type such as f32 or f32x4, found '{word}'"),
            )
        };
        for dtype in DType::ALL {
            if let Some(rest) = word.strip_prefix(dtype.name()) {
                if rest.is_empty() {
                    return Ok(VType::scalar(dtype));
                }
                let lanes = id_number(rest, 'x')
                    .and_then(|lanes| u32::try_from(lanes).ok())
                    .ok_or_else(bad)?;
                return Ok(VType::vector(dtype, lanes));
            }
        }
        Err(bad())
    }

    // ---- program ---------------------------------------------------------------------

    fn program(&mut self) -> Result<Program, ParseError> {
        self.keyword("program", "to start the program")?;
        let name = self.string("the program's name as a string")?;
        self.punct('{', "to open the program")?;
        let mut program = Program::new(name);
        loop {
            match self.peek_word() {
                Some("output") => {
                    self.next();
                    let name = self.string("the output's name as a string")?;
                    self.punct('=', "after the output's name")?;
                    let buffer = self.buffer_id()?;
                    self.punct(':', "before the output's type")?;
                    let ty = self.tensor_type()?;
                    program.outputs.push(Output { name, buffer, ty });
                }
                Some("update") => {
                    self.next();
                    let param = self.string("the parameter's name as a string")?;
                    self.punct('=', "after the parameter's name")?;
                    let value = self.buffer_id()?;
                    program.updates.push(Update { param, value });
                }
                Some("kernel") => {
                    let kernel = self.kernel(program.kernels.len())?;
                    program.kernels.push(kernel);
                }
                Some(word) if id_number(word, 'b').is_some() => {
                    let buffer = self.buffer(program.buffers.len())?;
                    program.buffers.push(buffer);
                }
                _ => {
                    if self.eat_punct('}') {
                        return Ok(program);
                    }
                    return Err(self.expected(&format!(
                        "buffer b{}, 'output', 'update', 'kernel' or '}}' to close the program",
                        program.buffers.len()
                    )));
                }
            }
        }
    }

    /// `b3: f32[2,3] input "x"`; buffers are declared in order.
    fn buffer(&mut self, expected: usize) -> Result<Buffer, ParseError> {
        let here = (self.peek().line, self.peek().column);
        let id = self.buffer_id()?;
        if id.0 != expected {
            return Err(error_at(
                here.0,
                here.1,
                format!("expected buffer b{expected} (buffers are declared in order), found {id}"),
            ));
        }
        self.punct(':', "after the buffer")?;
        let ty = self.tensor_type()?;
        let storage = match self.peek_word() {
            Some("input") => {
                self.next();
                Storage::Input(self.string("the input's name as a string")?)
            }
            Some("param") => {
                self.next();
                Storage::Param(self.string("the parameter's name as a string")?)
            }
            Some("temp") => {
                self.next();
                Storage::Temp
            }
            _ => return Err(self.expected("'input', 'param' or 'temp'")),
        };
        Ok(Buffer { ty, storage })
    }

    fn kernel(&mut self, expected: usize) -> Result<Kernel, ParseError> {
        self.keyword("kernel", "")?;
        let here = (self.peek().line, self.peek().column);
        let number: usize = self.id('k', "a kernel number such as k0")?;
        if number != expected {
            return Err(error_at(
                here.0,
                here.1,
                format!(
                    "expected kernel k{expected} (kernels are numbered in order), found k{number}"
                ),
            ));
        }
        let name = match &self.peek().token {
            Token::Str(_) => self.string("the kernel's name")?,
            _ => self.word("the kernel's name")?,
        };
        self.punct('{', "to open the kernel")?;
        let mut kernel = Kernel {
            name,
            locals: Vec::new(),
            body: Vec::new(),
            op: None,
        };
        while self.eat_keyword("local") {
            let here = (self.peek().line, self.peek().column);
            let local: u32 = self.id('r', "a local such as r0")?;
            if local as usize != kernel.locals.len() {
                return Err(error_at(
                    here.0,
                    here.1,
                    format!(
                        "expected local r{} (locals are declared in order), found r{local}",
                        kernel.locals.len()
                    ),
                ));
            }
            self.punct(':', "after the local")?;
            kernel.locals.push(self.vtype()?);
        }
        if self.eat_keyword("op") {
            kernel.op = Some(self.kernel_op()?);
        }
        kernel.body = self.block("the kernel")?;
        Ok(kernel)
    }

    /// `matmul.nn a=b0 b=b1 c=b4 batches=1 m=3 n=5 k=4`, or a contraction (see
    /// `Contraction`'s printer).
    fn kernel_op(&mut self) -> Result<KernelOp, ParseError> {
        let here = (self.peek().line, self.peek().column);
        let word = self.word("a kernel op such as matmul.nn")?;
        if word == "contraction" {
            return self.contraction().map(KernelOp::Contraction);
        }
        let (trans_a, trans_b) = word
            .strip_prefix("matmul.")
            .and_then(transposes)
            .ok_or_else(|| {
                error_at(
                    here.0,
                    here.1,
                    format!("expected a kernel op such as matmul.nn, found '{word}'"),
                )
            })?;
        let (a, b, c, batches) = self.op_operands()?;
        self.attribute("m")?;
        let m = self.integer("m")?;
        self.attribute("n")?;
        let n = self.integer("n")?;
        self.attribute("k")?;
        let k = self.integer("k")?;
        let bias = if self.peek_word() == Some("bias") {
            self.attribute("bias")?;
            Some(self.buffer_id()?)
        } else {
            None
        };
        let relu = self.peek_word() == Some("relu");
        if relu {
            self.word("relu")?;
        }
        let update = if self.peek_word() == Some("update") {
            self.attribute("update")?;
            let param = self.buffer_id()?;
            self.attribute("scale")?;
            Some((param, self.f32_constant("the update's scale")?.to_bits()))
        } else {
            None
        };
        Ok(KernelOp::Matmul(MatmulOp {
            a,
            b,
            c,
            batches,
            m,
            n,
            k,
            trans_a,
            trans_b,
            bias,
            relu,
            update,
        }))
    }

    /// `a=b0 b=b1 c=b4 batches=N`, the start of every kernel op.
    fn op_operands(&mut self) -> Result<(BufferId, BufferId, BufferId, usize), ParseError> {
        self.attribute("a")?;
        let a = self.buffer_id()?;
        self.attribute("b")?;
        let b = self.buffer_id()?;
        self.attribute("c")?;
        let c = self.buffer_id()?;
        self.attribute("batches")?;
        let batches = self.integer("the number of batches")?;
        Ok((a, b, c, batches))
    }

    /// `a=b0 b=b1 c=b2 batches=2:8:4:6 m=[3:12:4] n=[4:9:1] k=[3:1:1 2:5:3]`.
    fn contraction(&mut self) -> Result<Contraction, ParseError> {
        let (a, b, c, batches) = self.op_operands()?;
        let mut batch_strides = [0; 3];
        for stride in &mut batch_strides {
            self.punct(':', "before a batch stride")?;
            *stride = self.integer("a batch stride")?;
        }
        let m = self.contraction_axes("m")?;
        let n = self.contraction_axes("n")?;
        let k = self.contraction_axes("k")?;
        let mut taps = Vec::new();
        if self.peek_word() == Some("taps") {
            self.attribute("taps")?;
            self.punct('[', "before the tap axes")?;
            while !self.eat_punct(']') {
                let mut fields = [0; 7];
                for (position, field) in fields.iter_mut().enumerate() {
                    if position > 0 {
                        self.punct(':', "between a tap axis's fields")?;
                    }
                    *field = self.integer(
                        "a tap axis field (taps:dilation:stride:low:out:out_stride:tap_stride)",
                    )?;
                }
                let [taps_n, dilation, stride, low, out, out_stride, tap_stride] = fields;
                taps.push(TapAxis {
                    taps: taps_n,
                    dilation,
                    stride,
                    low,
                    out,
                    out_stride,
                    tap_stride,
                });
            }
        }
        Ok(Contraction {
            a,
            b,
            c,
            batches,
            batch_strides,
            m,
            n,
            k,
            taps,
        })
    }

    /// `name=[3:12:4 5:2:1]`: extents and their two strides.
    fn contraction_axes(&mut self, name: &str) -> Result<Vec<ContractionAxis>, ParseError> {
        self.attribute(name)?;
        self.punct('[', &format!("before the {name} axes"))?;
        let mut axes = Vec::new();
        while !self.eat_punct(']') {
            let extent = self.integer("an axis extent")?;
            let mut strides = [0; 2];
            for stride in &mut strides {
                self.punct(':', "before an axis stride")?;
                *stride = self.integer("an axis stride")?;
            }
            axes.push(ContractionAxis { extent, strides });
        }
        Ok(axes)
    }

    /// Statements up to and including the closing '}' (the '{' was read).
    fn block(&mut self, what: &str) -> Result<Vec<Stmt>, ParseError> {
        let mut body = Vec::new();
        loop {
            if self.eat_punct('}') {
                return Ok(body);
            }
            body.push(self.stmt(what)?);
        }
    }

    fn stmt(&mut self, within: &str) -> Result<Stmt, ParseError> {
        match self.peek_word() {
            Some("for") => self.for_loop(),
            Some("call") => {
                self.next();
                self.call()
            }
            Some("scatter_add") => {
                self.next();
                self.punct('(', "after scatter_add")?;
                let target = self.indirect()?;
                self.punct(')', "after the scattered element")?;
                self.punct('+', "before '+=' and the added value")?;
                self.punct('=', "in '+=' before the added value")?;
                let value = self.expr()?;
                Ok(Stmt::ScatterAdd { target, value })
            }
            Some(word) if id_number(word, 'b').is_some() => {
                let buffer = self.buffer_id()?;
                self.punct('[', "to open the index")?;
                let index = self.index()?;
                self.punct(']', "after the index")?;
                self.punct('=', "after the stored element")?;
                let value = self.expr()?;
                Ok(Stmt::Store {
                    buffer,
                    index,
                    value,
                })
            }
            Some(word) if id_number(word, 'r').is_some() => {
                let local = LocalId(self.id('r', "a local")?);
                self.punct('=', "after the local")?;
                let value = self.expr()?;
                Ok(Stmt::Assign { local, value })
            }
            _ => Err(self.expected(&format!(
                "a statement ('for', 'call', 'scatter_add', a store or an assignment) or '}}' to close {within}"
            ))),
        }
    }

    /// `for i0 in 0..12 step 4 vec4 { ... }` (the step is shown when it is not 1).
    fn for_loop(&mut self) -> Result<Stmt, ParseError> {
        self.keyword("for", "")?;
        let var = self.var_id()?;
        self.keyword("in", "after the loop variable")?;
        let start = self.integer("the loop's start")?;
        if self.peek().token != Token::DotDot {
            return Err(self.expected("'..' in the loop range"));
        }
        self.next();
        let end = self.integer("the loop's end")?;
        let step = if self.eat_keyword("step") {
            self.integer("the loop's step")?
        } else {
            1
        };
        let here = (self.peek().line, self.peek().column);
        let kind = match self.peek_word() {
            Some("parallel") => LoopKind::Parallel,
            Some(word) => {
                let count = |prefix: &str| {
                    word.strip_prefix(prefix)
                        .filter(|digits| {
                            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                        })
                        .and_then(|digits| digits.parse::<u32>().ok())
                };
                match (count("vec"), count("unroll")) {
                    (Some(width), _) => LoopKind::Vector(width),
                    (_, Some(times)) => LoopKind::Unroll(times),
                    _ => {
                        return Err(error_at(
                            here.0,
                            here.1,
                            format!(
                                "expected a loop kind (vecN, unrollN, parallel) or '{{', found '{word}'"
                            ),
                        ))
                    }
                }
            }
            None => LoopKind::Serial,
        };
        if kind != LoopKind::Serial {
            self.next();
        }
        self.punct('{', "to open the loop body")?;
        let body = self.block("the loop")?;
        Ok(Stmt::Loop {
            var,
            start,
            end,
            step,
            kind,
            body,
        })
    }

    /// `matmul.nn.f32x4 m=3 n=5 k=4 mc=5 kc=4 nc=8 rows=5*i0 (b0[0; 12], ...)`, after
    /// `call`.
    fn call(&mut self) -> Result<Stmt, ParseError> {
        let here = (self.peek().line, self.peek().column);
        let word = self.word("a routine such as matmul.nn.f32x4")?;
        let parsed = word.strip_prefix("matmul.").and_then(|rest| {
            let (flags, kernel) = rest.split_once('.')?;
            let kernel = MicroKernel::ALL
                .into_iter()
                .find(|candidate| candidate.name() == kernel)?;
            Some((transposes(flags)?, kernel))
        });
        let ((trans_a, trans_b), kernel) = parsed.ok_or_else(|| {
            error_at(
                here.0,
                here.1,
                format!(
                    "expected a routine matmul.<nn|nt|tn|tt>.<avx512|avx2|f32x4>, found '{word}'"
                ),
            )
        })?;
        let mut sizes = [0usize; 6];
        for (key, size) in ["m", "n", "k", "mc", "kc", "nc"].iter().zip(&mut sizes) {
            self.attribute(key)?;
            *size = self.integer(key)?;
        }
        let [m, n, k, mc, kc, nc] = sizes;
        let split = match self.peek_word() {
            Some(axis @ ("rows" | "cols")) => {
                let axis = axis.to_string();
                self.attribute(&axis)?;
                let size = self.integer(&format!("the {axis} of a block"))?;
                self.punct(
                    '*',
                    &format!("between the {axis} of a block and its loop variable"),
                )?;
                let var = self.var_id()?;
                if axis == "rows" {
                    Split::Rows { var, rows: size }
                } else {
                    Split::Cols { var, cols: size }
                }
            }
            _ => Split::All,
        };
        let epilogue = if self.peek_word() == Some("epilogue") {
            self.attribute("epilogue")?;
            let here = (self.peek().line, self.peek().column);
            let name = self.word("an epilogue")?;
            if name == "update" {
                self.punct('(', "to open the update's scale")?;
                let scale = self.f32_constant("the update's scale")?;
                self.punct(')', "after the update's scale")?;
                Epilogue::update(scale)
            } else {
                Epilogue::from_name(&name).ok_or_else(|| {
                    error_at(
                        here.0,
                        here.1,
                        format!(
                            "unknown epilogue '{name}': expected bias, relu, bias.relu or \
                             update(<scale>)"
                        ),
                    )
                })?
            }
        } else {
            Epilogue::default()
        };
        self.punct('(', "to open the arguments")?;
        let mut args = Vec::new();
        if !self.eat_punct(')') {
            loop {
                let buffer = self.buffer_id()?;
                self.punct('[', "to open the slice")?;
                let offset = self.index()?;
                self.punct(';', "between the slice's offset and length")?;
                let len = self.integer("the slice's length")?;
                self.punct(']', "after the slice's length")?;
                args.push(Slice {
                    buffer,
                    offset,
                    len,
                });
                if self.eat_punct(')') {
                    break;
                }
                self.punct(',', "or ')' after an argument")?;
            }
        }
        let routine = Routine::Matmul(Matmul {
            m,
            n,
            k,
            trans_a,
            trans_b,
            split,
            kernel,
            mc,
            kc,
            nc,
            epilogue,
        });
        Ok(Stmt::Call { routine, args })
    }

    /// An affine index: `3*i0 - i1 + 4`, `-2`, `i2`. Terms keep their order; each
    /// variable appears once with a nonzero stride, as [`Index`] requires.
    fn index(&mut self) -> Result<Index, ParseError> {
        let mut index = Index::default();
        let mut offset: Option<i128> = None;
        let mut first = true;
        loop {
            let negative = if first {
                self.eat_punct('-')
            } else if self.eat_punct('+') {
                false
            } else if self.eat_punct('-') {
                true
            } else {
                break;
            };
            first = false;
            let here = (self.peek().line, self.peek().column);
            let sign = if negative { -1 } else { 1 };
            let (magnitude, var) = match &self.peek().token {
                Token::Number(_) => {
                    let magnitude: u64 = self.integer("an integer")?;
                    if self.eat_punct('*') {
                        (i128::from(magnitude), Some(self.var_id()?))
                    } else {
                        (i128::from(magnitude), None)
                    }
                }
                Token::Word(word) if id_number(word, 'i').is_some() => (1, Some(self.var_id()?)),
                _ => return Err(self.expected("a loop variable or an integer in the index")),
            };
            let value = i64::try_from(sign * magnitude).map_err(|_| {
                error_at(here.0, here.1, "index stride or offset is beyond 64 bits")
            })?;
            match var {
                None if offset.is_some() => {
                    return Err(error_at(
                        here.0,
                        here.1,
                        "the index has two constant offsets",
                    ))
                }
                None => offset = Some(i128::from(value)),
                Some(var) if value == 0 => {
                    return Err(error_at(
                        here.0,
                        here.1,
                        format!("{var} has stride 0; leave it out of the index"),
                    ))
                }
                Some(var) if index.terms.iter().any(|(seen, _)| *seen == var) => {
                    return Err(error_at(
                        here.0,
                        here.1,
                        format!("{var} appears twice in the index"),
                    ))
                }
                Some(var) => index.terms.push((var, value)),
            }
        }
        if first {
            return Err(self.expected("an index"));
        }
        index.offset = offset.map_or(0, |offset| offset as i64);
        Ok(index)
    }

    /// An [`Indirect`] element: `b0[i1], b1[i0], stride=4, extent=10` (the element
    /// `b0[i1 + 4 * b1[i0]]` when `0 <= b1[i0] < 10`).
    fn indirect(&mut self) -> Result<Indirect, ParseError> {
        let buffer = self.buffer_id()?;
        self.punct('[', "to open the index")?;
        let index = self.index()?;
        self.punct(']', "after the index")?;
        self.punct(',', "before the computed position")?;
        let at = Box::new(self.expr()?);
        self.punct(',', "before stride=")?;
        self.attribute("stride")?;
        let here = (self.peek().line, self.peek().column);
        let negative = self.eat_punct('-');
        let magnitude: u64 = self.integer("the stride")?;
        let stride = i64::try_from(magnitude)
            .ok()
            .map(|stride| if negative { -stride } else { stride })
            .ok_or_else(|| error_at(here.0, here.1, "the stride is beyond 64 bits"))?;
        self.punct(',', "before extent=")?;
        self.attribute("extent")?;
        let extent = self.integer("the extent")?;
        Ok(Indirect {
            buffer,
            index,
            at,
            stride,
            extent,
        })
    }

    // ---- expressions -------------------------------------------------------------------

    /// An f32 constant such as `0.01` or `-1e-3`.
    fn f32_constant(&mut self, what: &str) -> Result<f32, ParseError> {
        match self.expr()? {
            Expr::Const(Scalar::F32(value)) => Ok(value),
            _ => Err(self.error(format!("expected {what}, an f32 constant"))),
        }
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let here = (self.peek().line, self.peek().column);
        match self.peek().token.clone() {
            Token::Punct('-') => {
                self.next();
                match self.peek().token.clone() {
                    Token::Number(number) => {
                        self.next();
                        literal(&format!("-{number}"))
                            .ok_or_else(|| bad_literal(here, &format!("-{number}")))
                    }
                    Token::Word(word) if word == "inf" => {
                        self.next();
                        Ok(Expr::Const(Scalar::F32(f32::NEG_INFINITY)))
                    }
                    _ => Err(self.expected("a number after '-'")),
                }
            }
            Token::Number(number) => {
                self.next();
                literal(&number).ok_or_else(|| bad_literal(here, &number))
            }
            Token::Word(word) => {
                self.next();
                self.word_expr(&word, here)
            }
            _ => Err(self.expected("an expression")),
        }
    }

    /// An expression that starts with `word` (already read, at `here`).
    fn word_expr(&mut self, word: &str, here: (usize, usize)) -> Result<Expr, ParseError> {
        let scalar = |value| Ok(Expr::Const(value));
        match word {
            "true" => return scalar(Scalar::Bool(true)),
            "false" => return scalar(Scalar::Bool(false)),
            "inf" => return scalar(Scalar::F32(f32::INFINITY)),
            "NaN" | "nan" => return scalar(Scalar::F32(f32::NAN)),
            _ => {}
        }
        if let Some(buffer) = id_number(word, 'b').and_then(|id| usize::try_from(id).ok()) {
            self.punct('[', "to open the index")?;
            let index = self.index()?;
            self.punct(']', "after the index")?;
            // `b0[i0]x4`: a vector load of four elements.
            let lanes = match self.peek_word().and_then(|word| id_number(word, 'x')) {
                Some(lanes) => {
                    let lanes = u32::try_from(lanes)
                        .map_err(|_| self.error(format!("{lanes} lanes is too many")))?;
                    self.next();
                    lanes
                }
                None => 1,
            };
            return Ok(Expr::Load {
                buffer: BufferId(buffer),
                index,
                lanes,
            });
        }
        if let Some(local) = id_number(word, 'r').and_then(|id| u32::try_from(id).ok()) {
            return Ok(Expr::Local(LocalId(local)));
        }
        let unknown = || {
            error_at(
                here.0,
                here.1,
                format!("expected an expression, found '{word}'"),
            )
        };
        if word == "index" {
            self.punct('(', "after index")?;
            let var = self.var_id()?;
            self.punct(')', "after the loop variable")?;
            return Ok(Expr::LoopIndex(var));
        }
        if let Some(lanes) = word.strip_prefix("splat.") {
            let lanes = id_number(lanes, 'x')
                .and_then(|lanes| u32::try_from(lanes).ok())
                .ok_or_else(unknown)?;
            let [x] = self.operands(word)?;
            return Ok(Expr::splat(lanes, x));
        }
        if let Some(to) = word.strip_prefix("cast.") {
            let to = DType::from_name(to).ok_or_else(unknown)?;
            let [x] = self.operands(word)?;
            return Ok(Expr::cast(to, x));
        }
        if let Some(name) = word.strip_prefix("cmp.") {
            let op = CmpOp::ALL
                .into_iter()
                .find(|op| op.name() == name)
                .ok_or_else(unknown)?;
            let [a, b] = self.operands(word)?;
            return Ok(Expr::compare(op, a, b));
        }
        if word == "select" {
            let [c, a, b] = self.operands(word)?;
            return Ok(Expr::select(c, a, b));
        }
        if word == "fma" {
            let [a, b, c] = self.operands(word)?;
            return Ok(Expr::fma(a, b, c));
        }
        if let Some(name) = word.strip_prefix("random.") {
            let dist = Distribution::ALL
                .into_iter()
                .find(|dist| dist.name() == name)
                .ok_or_else(unknown)?;
            let [key0, key1, counter] = self.operands(word)?;
            return Ok(Expr::random(dist, key0, key1, counter));
        }
        if word == "gather" {
            self.punct('(', "after gather")?;
            let indirect = self.indirect()?;
            self.punct(')', "after the gathered element")?;
            return Ok(Expr::Gather(indirect));
        }
        if let Some(op) = UnaryOp::ALL.into_iter().find(|op| op.name() == word) {
            let [x] = self.operands(word)?;
            return Ok(Expr::unary(op, x));
        }
        if let Some(op) = BinaryOp::ALL.into_iter().find(|op| op.name() == word) {
            let [a, b] = self.operands(word)?;
            return Ok(Expr::binary(op, a, b));
        }
        Err(unknown())
    }

    /// `(e1, ..., eN)`: exactly `N` operands of `op`.
    fn operands<const N: usize>(&mut self, op: &str) -> Result<[Expr; N], ParseError> {
        self.punct('(', &format!("after {op}"))?;
        let mut operands = Vec::with_capacity(N);
        for position in 0..N {
            operands.push(self.expr()?);
            if position + 1 < N {
                self.punct(',', &format!("between the operands of {op} (it takes {N})"))?;
            }
        }
        self.punct(')', &format!("after the operands of {op} (it takes {N})"))?;
        Ok(operands
            .try_into()
            .unwrap_or_else(|_| unreachable!("exactly {N} operands were pushed")))
    }
}

/// `nn`, `nt`, `tn`, `tt`: whether A and B are transposed.
fn transposes(flags: &str) -> Option<(bool, bool)> {
    match flags {
        "nn" => Some((false, false)),
        "nt" => Some((false, true)),
        "tn" => Some((true, false)),
        "tt" => Some((true, true)),
        _ => None,
    }
}

/// A constant as the printer writes it: `3i` is i32, any other number is f32 (`1.0`,
/// `1e-7`, `-0.0`).
fn literal(text: &str) -> Option<Expr> {
    let value = match text.strip_suffix('i') {
        Some(digits) => Scalar::I32(digits.parse().ok()?),
        // `f32::from_str` rounds the decimal once, so the printer's shortest
        // round-trip form reads back as the same value.
        None => Scalar::F32(text.parse().ok()?),
    };
    Some(Expr::Const(value))
}

fn bad_literal(here: (usize, usize), text: &str) -> ParseError {
    error_at(
        here.0,
        here.1,
        format!("expected a constant (an f32 such as 1.5 or an i32 such as 3i), found {text}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADD: &str = r#"program "add" {
  b0: f32[2,3] input "a"
  b1: f32[1,3] param "b"
  b2: f32[2,3] temp
  output "y" = b2: f32[6]
  update "b" = b1

  kernel k0 add {
    local r0: f32x4
    local r1: i32
    op matmul.tn a=b0 b=b1 c=b2 batches=1 m=2 n=3 k=1
    for i0 in 0..2 step 2 unroll2 {
      for i1 in 0..3 vec4 {
        b2[3*i0 + i1] = add(b0[3*i0 + i1], b1[i1])
      }
    }
    r0 = fma(b0[-i0 + 1]x4, splat.x4(-1.5e-7), splat.x4(cast.f32(index(i0))))
    r1 = select(cmp.lt(-2147483648i, 3i), neg(max(2i, -5i)), 0i)
    b2[0] = select(true, -inf, 1e20)
    for i2 in 0..1 parallel {
      call matmul.nt.f32x4 m=2 n=3 k=1 mc=4 kc=1 nc=8 rows=4*i2 (b0[0; 2], b1[0; 3], b2[6*i2; 6], b0[0; 100])
    }
  }
}
"#;

    #[test]
    fn printing_a_parsed_program_gives_the_text_back() {
        let program = parse(ADD).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(program.to_string(), ADD);
        assert_eq!(parse(&program.to_string()), Ok(program));
    }

    #[test]
    fn contractions_print_and_parse_back() {
        for op in [
            "contraction a=b0 b=b1 c=b2 batches=1:10:6:2 m=[2:2:1] n=[] k=[3:1:1 2:5:3]",
            "contraction a=b0 b=b1 c=b2 batches=2:36:54:60 m=[2:72:120 6:0:5 5:0:1] n=[2:9:30] \
             k=[3:12:18] taps=[3:1:1:1:6:2:3 3:1:2:1:2:1:1]",
        ] {
            let text = format!(
                "program \"p\" {{\n  b0: f32[200] input \"a\"\n  b1: f32[200] input \"b\"\n  \
                 b2: f32[200] temp\n\n  kernel k0 k {{\n    op {op}\n  }}\n}}\n"
            );
            let program = parse(&text).unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(program.to_string(), text);
            assert!(matches!(
                &program.kernels[0].op,
                Some(KernelOp::Contraction(c)) if c.k.len() + c.taps.len() >= 2
            ));
        }
    }

    #[test]
    fn constants_keep_their_bits() {
        for value in [
            0.1f32,
            -0.0,
            1e-45,
            f32::MAX,
            f32::MIN_POSITIVE,
            16_777_216.0,
        ] {
            let text = Scalar::F32(value).to_string();
            match literal(&text) {
                Some(Expr::Const(Scalar::F32(back))) => {
                    assert_eq!(back.to_bits(), value.to_bits(), "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        // NaN prints without its payload; it reads back as a NaN.
        let program =
            parse("program \"p\" {\n  b0: f32[1] temp\n  kernel k0 k {\n    b0[0] = NaN\n  }\n}\n")
                .unwrap_or_else(|err| panic!("{err}"));
        match &program.kernels[0].body[0] {
            Stmt::Store {
                value: Expr::Const(Scalar::F32(value)),
                ..
            } => assert!(value.is_nan()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_position_and_what_was_expected() {
        let cases = [
            (
                "program \"p\" {\n  b0: f32[4] temp\n  kernel k0 k {\n    b0[i0, 1] = 0.0\n",
                "4:10: expected ']' after the index, found ','",
            ),
            (
                "program \"p\" {\n  b1: f32[4] temp\n}",
                "2:3: expected buffer b0 (buffers are declared in order), found b1",
            ),
            (
                "program \"p\" {\n  b0: f16[4] temp\n}",
                "2:7: unknown dtype 'f16': expected f32, i32 or bool",
            ),
            (
                "program \"p\" {\n  kernel k0 k {\n    for i0 in 0..4 simd {\n",
                "3:20: expected a loop kind (vecN, unrollN, parallel) or '{', found 'simd'",
            ),
            (
                "program \"p\" {\n  kernel k0 k {\n    r0 = frob(1.0)\n",
                "3:10: expected an expression, found 'frob'",
            ),
            (
                "program \"p\" {\n  kernel k0 k {\n    r0 = add(1.0)\n",
                "3:17: expected ',' between the operands of add (it takes 2), found ')'",
            ),
            (
                "program \"p\" {\n  kernel k0 k {\n    b0[i0 + i0] = 1.0\n",
                "3:13: i0 appears twice in the index",
            ),
            (
                "program \"p\" {\n  kernel k0 k {\n  }\n",
                "4:1: expected buffer b0, 'output', 'update', 'kernel' or '}' to close the program, found end of input",
            ),
        ];
        for (src, expected) in cases {
            let err = parse(src).expect_err(src);
            assert_eq!(err.to_string(), expected, "{src}");
        }
    }
}
