//! A recursive-descent parser from tokens to the syntax tree; the grammar is in
//! docs/model-format.md. Every error names what was found and what was expected.

use super::ast::*;
use super::diagnostic::{ModelError, Span};
use super::lexer::{lex, Token};

/// Parses a whole model file.
pub fn parse(source: &str) -> Result<File, ModelError> {
    let mut parser = Parser {
        tokens: lex(source)?,
        at: 0,
    };
    parser.file()
}

struct Parser {
    tokens: Vec<(Token, Span)>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.at].0
    }

    fn span(&self) -> Span {
        self.tokens[self.at].1.clone()
    }

    fn bump(&mut self) -> (Token, Span) {
        let token = self.tokens[self.at].clone();
        // The last token is End, which is never consumed past.
        if self.at + 1 < self.tokens.len() {
            self.at += 1;
        }
        token
    }

    /// The error "`found` where `expected` was".
    fn unexpected(&self, expected: &str) -> ModelError {
        ModelError::new(
            self.span(),
            format!("unexpected {}", self.peek().describe()),
        )
        .expected(expected)
    }

    fn is_punct(&self, c: char) -> bool {
        *self.peek() == Token::Punct(c)
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Token::Name(name) if name == keyword)
    }

    fn eat_punct(&mut self, c: char) -> bool {
        let found = self.is_punct(c);
        if found {
            self.bump();
        }
        found
    }

    fn expect_punct(&mut self, c: char, expected: &str) -> Result<Span, ModelError> {
        if self.is_punct(c) {
            Ok(self.bump().1)
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn expect_keyword(&mut self, keyword: &str, expected: &str) -> Result<Span, ModelError> {
        if self.is_keyword(keyword) {
            Ok(self.bump().1)
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn ident(&mut self, expected: &str) -> Result<Ident, ModelError> {
        match self.peek().clone() {
            Token::Name(name) => {
                let span = self.bump().1;
                Ok(Ident { name, span })
            }
            _ => Err(self.unexpected(expected)),
        }
    }

    /// `file = (block | model)*`
    fn file(&mut self) -> Result<File, ModelError> {
        let mut file = File {
            blocks: Vec::new(),
            models: Vec::new(),
        };
        loop {
            if *self.peek() == Token::End {
                return Ok(file);
            } else if self.is_keyword("block") {
                file.blocks.push(self.block()?);
            } else if self.is_keyword("model") {
                file.models.push(self.model()?);
            } else {
                return Err(self.unexpected("`model` or `block`"));
            }
        }
    }

    /// `"(" [name ("," name)*] ")"`
    fn names_in_parens(&mut self, what: &str) -> Result<Vec<Ident>, ModelError> {
        self.expect_punct('(', &format!("`(` and the {what}"))?;
        let mut names = Vec::new();
        while !self.eat_punct(')') {
            names.push(self.ident(&format!("a name for one of the {what}, or `)`"))?);
            if !self.is_punct(')') {
                self.expect_punct(',', "`,` or `)`")?;
            }
        }
        Ok(names)
    }

    /// `block Name(params) { layer* forward(params) { stmt* } }`
    fn block(&mut self) -> Result<BlockDef, ModelError> {
        self.bump();
        let name = self.ident("the block's name")?;
        let params = self.names_in_parens("block's numeric parameters")?;
        self.expect_punct('{', "`{` to open the block")?;
        let mut layers = Vec::new();
        let mut forward = None;
        while !self.eat_punct('}') {
            if self.is_keyword("forward") {
                let start = self.bump().1;
                if forward.is_some() {
                    return Err(ModelError::new(start, "a second `forward`")
                        .note("a block has one forward"));
                }
                let params = self.names_in_parens("forward's tensor arguments")?;
                forward = Some(self.forward_body(params, start)?);
            } else {
                layers.push(self.layer()?);
            }
        }
        let forward = forward.ok_or_else(|| {
            ModelError::new(
                name.span.clone(),
                format!("block `{}` has no forward", name.name),
            )
            .expected("`forward(x) { … }` inside the block")
        })?;
        Ok(BlockDef {
            name,
            params,
            layers,
            forward,
        })
    }

    /// `model Name([dim = expr, …]) { (input | layer | forward | train)* }`
    fn model(&mut self) -> Result<ModelDef, ModelError> {
        self.bump();
        let name = self.ident("the model's name")?;
        self.expect_punct('(', "`(` and the model's dimensions, like `(B = 32)`")?;
        let mut dims = Vec::new();
        while !self.eat_punct(')') {
            let dim = self.ident("a dimension name, like `B`, or `)`")?;
            self.expect_punct('=', "`=` and the dimension's default value")?;
            dims.push((dim, self.expr()?));
            if !self.is_punct(')') {
                self.expect_punct(',', "`,` or `)`")?;
            }
        }
        self.expect_punct('{', "`{` to open the model")?;
        let (mut inputs, mut layers, mut forward, mut train) = (Vec::new(), Vec::new(), None, None);
        while !self.eat_punct('}') {
            if self.is_keyword("input") {
                self.bump();
                inputs.push(self.input()?);
            } else if self.is_keyword("forward") {
                let start = self.bump().1;
                if forward.is_some() {
                    return Err(ModelError::new(start, "a second `forward`")
                        .note("a model has one forward"));
                }
                forward = Some(self.forward_body(Vec::new(), start)?);
            } else if self.is_keyword("train") {
                let start = self.bump().1;
                if train.is_some() {
                    return Err(ModelError::new(start, "a second `train`")
                        .note("a model is trained on one loss"));
                }
                train = Some(self.train(start)?);
            } else {
                layers.push(self.layer()?);
            }
        }
        let forward = forward.ok_or_else(|| {
            ModelError::new(
                name.span.clone(),
                format!("model `{}` has no forward", name.name),
            )
            .expected("`forward { … }` inside the model")
        })?;
        Ok(ModelDef {
            name,
            dims,
            inputs,
            layers,
            forward,
            train,
        })
    }

    /// `name ":" dtype "[" expr ("," expr)* "]"` (after `input`); `[]` is a scalar.
    fn input(&mut self) -> Result<InputDecl, ModelError> {
        let name = self.ident("the input's name")?;
        self.expect_punct(':', "`:` and the input's type, like `f32[B, 64]`")?;
        let dtype = self.ident("a dtype: `f32` or `i32`")?;
        self.expect_punct('[', "`[` and the input's shape")?;
        let mut shape = Vec::new();
        while !self.eat_punct(']') {
            shape.push(self.expr()?);
            if !self.is_punct(']') {
                self.expect_punct(',', "`,` or `]`")?;
            }
        }
        Ok(InputDecl { name, dtype, shape })
    }

    /// `name "=" Kind "(" args ")" ["*" expr]`
    fn layer(&mut self) -> Result<LayerDecl, ModelError> {
        let name = self
            .ident("a layer declaration like `fc1 = Linear(64, 128)`, `input`, `forward` or `}`")?;
        self.expect_punct('=', "`=` and a layer, like `Linear(64, 128)`")?;
        let kind = self.ident("a layer type, like `Linear`")?;
        let args = self.args()?;
        let repeat = if self.eat_punct('*') {
            Some(self.unary()?)
        } else {
            None
        };
        let end = self.tokens[self.at.saturating_sub(1)].1.end;
        let span = name.span.start..end;
        Ok(LayerDecl {
            name,
            kind,
            args,
            repeat,
            span,
        })
    }

    /// `"{" stmt* "}"` after `forward` and its parameters.
    fn forward_body(&mut self, params: Vec<Ident>, start: Span) -> Result<Forward, ModelError> {
        self.expect_punct('{', "`{` to open the forward")?;
        let mut body = Vec::new();
        while !self.is_punct('}') {
            body.push(self.stmt()?);
        }
        let end = self.bump().1;
        Ok(Forward {
            params,
            body,
            span: start.start..end.end,
        })
    }

    /// `name "=" expr | "return" expr | "output" name ("," name)*`
    fn stmt(&mut self) -> Result<Stmt, ModelError> {
        if self.is_keyword("return") {
            self.bump();
            return Ok(Stmt::Return(self.expr()?));
        }
        if self.is_keyword("output") {
            self.bump();
            let mut names = vec![self.ident("the name of a value to output")?];
            while self.eat_punct(',') {
                names.push(self.ident("the name of a value to output")?);
            }
            return Ok(Stmt::Output(names));
        }
        let name = self.ident("a statement: `name = …`, `return …`, `output …` or `}`")?;
        self.expect_punct('=', "`=` and an expression")?;
        Ok(Stmt::Assign(name, self.expr()?))
    }

    /// `loss "with" optimizer "(" args ")" ["batch" unary]` (after `train`).
    fn train(&mut self, start: Span) -> Result<TrainDecl, ModelError> {
        let loss = self.ident("the name of the loss to train on")?;
        self.expect_keyword("with", "`with` and an optimizer, like `with sgd(lr = 0.1)`")?;
        let optimizer = self.ident("an optimizer, like `sgd`")?;
        let args = self.args()?;
        let batch = if self.is_keyword("batch") {
            self.bump();
            Some(self.unary()?)
        } else {
            None
        };
        let end = self.tokens[self.at.saturating_sub(1)].1.end;
        Ok(TrainDecl {
            loss,
            optimizer,
            args,
            batch,
            span: start.start..end,
        })
    }

    /// `"(" [arg ("," arg)*] ")"` with `arg = [name "="] expr`.
    fn args(&mut self) -> Result<Vec<Arg>, ModelError> {
        self.expect_punct('(', "`(` and the arguments")?;
        let mut args = Vec::new();
        while !self.eat_punct(')') {
            let named = matches!(self.peek(), Token::Name(_))
                && self.tokens.get(self.at + 1).map(|(token, _)| token) == Some(&Token::Punct('='));
            let name = if named {
                let name = self.ident("an argument name")?;
                self.bump();
                Some(name)
            } else {
                None
            };
            args.push(Arg {
                name,
                value: self.expr()?,
            });
            if !self.is_punct(')') {
                self.expect_punct(',', "`,` or `)`")?;
            }
        }
        Ok(args)
    }

    /// `expr = term (("+" | "-") term)*`
    fn expr(&mut self) -> Result<Expr, ModelError> {
        let mut left = self.term()?;
        loop {
            let op = if self.is_punct('+') {
                BinOp::Add
            } else if self.is_punct('-') {
                BinOp::Sub
            } else {
                return Ok(left);
            };
            self.bump();
            let right = self.term()?;
            left = binary(op, left, right);
        }
    }

    /// `term = unary (("*" | "/" | "@") unary)*`
    fn term(&mut self) -> Result<Expr, ModelError> {
        let mut left = self.unary()?;
        loop {
            let op = if self.is_punct('*') {
                BinOp::Mul
            } else if self.is_punct('/') {
                BinOp::Div
            } else if self.is_punct('@') {
                BinOp::MatMul
            } else {
                return Ok(left);
            };
            self.bump();
            let right = self.unary()?;
            left = binary(op, left, right);
        }
    }

    /// `unary = "-" unary | postfix`
    fn unary(&mut self) -> Result<Expr, ModelError> {
        if self.is_punct('-') {
            let start = self.bump().1;
            let operand = self.unary()?;
            let span = start.start..operand.span.end;
            return Ok(Expr {
                kind: ExprKind::Neg(Box::new(operand)),
                span,
            });
        }
        self.postfix()
    }

    /// `postfix = atom ("(" args ")" | "[" expr "]")*`
    fn postfix(&mut self) -> Result<Expr, ModelError> {
        let mut expr = self.atom()?;
        loop {
            if self.is_punct('(') {
                let args = self.args()?;
                let end = self.tokens[self.at - 1].1.end;
                let span = expr.span.start..end;
                expr = Expr {
                    kind: ExprKind::Call(Box::new(expr), args),
                    span,
                };
            } else if self.is_punct('[') {
                self.bump();
                let index = self.expr()?;
                let end = self.expect_punct(']', "`]` to close the index")?.end;
                let span = expr.span.start..end;
                expr = Expr {
                    kind: ExprKind::Index(Box::new(expr), Box::new(index)),
                    span,
                };
            } else {
                return Ok(expr);
            }
        }
    }

    /// `atom = int | float | string | name | "(" expr ")" | "(" expr "," [expr ("," expr)*] ")"`
    fn atom(&mut self) -> Result<Expr, ModelError> {
        let kind = match self.peek().clone() {
            Token::Int(value) => ExprKind::Int(value),
            Token::Float(value) => ExprKind::Float(value),
            Token::Str(text) => ExprKind::Str(text),
            Token::Name(name) => ExprKind::Name(name),
            Token::Punct('(') => {
                let start = self.bump().1;
                let inner = self.expr()?;
                if !self.is_punct(',') {
                    let end = self.expect_punct(')', "`)` to close the parenthesis")?;
                    return Ok(Expr {
                        kind: inner.kind,
                        span: start.start..end.end,
                    });
                }
                // A tuple: `(a,)`, `(a, b)`, `(a, b,)`.
                let mut items = vec![inner];
                while self.is_punct(',') {
                    self.bump();
                    if self.is_punct(')') {
                        break;
                    }
                    items.push(self.expr()?);
                }
                let end = self.expect_punct(')', "`,` or `)` to close the tuple")?;
                return Ok(Expr {
                    kind: ExprKind::Tuple(items),
                    span: start.start..end.end,
                });
            }
            _ => return Err(self.unexpected("an expression: a name, a number or `(`")),
        };
        let span = self.bump().1;
        Ok(Expr { kind, span })
    }
}

fn binary(op: BinOp, left: Expr, right: Expr) -> Expr {
    let span = left.span.start..right.span.end;
    Expr {
        kind: ExprKind::Binary(op, Box::new(left), Box::new(right)),
        span,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_the_usual_one() {
        let file = parse("model m() { forward { y = -a + b * c @ d - e(f)[1] } }").unwrap();
        let Stmt::Assign(_, expr) = &file.models[0].forward.body[0] else {
            panic!("an assignment");
        };
        // ((-a) + ((b * c) @ d)) - (e(f)[1])
        let ExprKind::Binary(BinOp::Sub, left, right) = &expr.kind else {
            panic!("{expr:?}");
        };
        assert!(matches!(right.kind, ExprKind::Index(..)));
        let ExprKind::Binary(BinOp::Add, neg, product) = &left.kind else {
            panic!("{left:?}");
        };
        assert!(matches!(neg.kind, ExprKind::Neg(_)));
        assert!(matches!(product.kind, ExprKind::Binary(BinOp::MatMul, ..)));
    }

    #[test]
    fn errors_say_what_was_found_and_expected() {
        let err = parse("model m( { }").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected `{` (expected a dimension name, like `B`, or `)`)"
        );
        assert_eq!(err.span, 9..10);
        let err = parse("model m() { input x f32[3] }").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected `f32` (expected `:` and the input's type, like `f32[B, 64]`)"
        );
        let err = parse("model m() { }").unwrap_err();
        assert_eq!(
            err.to_string(),
            "model `m` has no forward (expected `forward { … }` inside the model)"
        );
        let err = parse("model m() { forward { y = (a + } }").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected `}` (expected an expression: a name, a number or `(`)"
        );
        let err = parse("layer").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected `layer` (expected `model` or `block`)"
        );
    }
}
