//! The kernel IR's file tests (Cranelift's filetests are the model): a `.kir` file is
//! a program in the text form of [`crate::kernel_text`] with directives in lines that
//! start with `;`, giving the values to run it on and what must come out, or the
//! error it must be rejected with. The harnesses (`ir/tests/kernel_files.rs` with the
//! kernel interpreter, `backend/tests/kernel_files.rs` with the JIT) share this
//! reading of the directives and the comparison of results.
//!
//! ```text
//! // What the file checks, in a comment.
//! program "double" { ... }
//! ; input "x" = [1.0, -0.0, inf, nan]
//! ; param "w" = [3i, 4i]
//! ; expect "y" = [2.0, -0.0, inf, nan]
//! ; expect param "w" = [4i, 5i]
//! ```
//!
//! - `; input "name" = [values]` and `; param "name" = [values]` give an input's or a
//!   parameter's value, typed by its buffer: f32 (`1.5`, `-0.0`, `1e-7`, `inf`,
//!   `nan`), i32 (`-3`, also written `-3i`) or bool (`true`, `false`). Every input and
//!   parameter needs one.
//! - `; expect "name" = [values]` is an output after the run, `; expect param "name" =
//!   [values]` a parameter's value after the run (its update applied). Values match
//!   bit for bit (so `-0.0` is not `0.0`), except that any NaN matches `nan`.
//! - `; error: text` says that parsing, checking or running the program fails with a
//!   message containing `text`.
//!
//! Directive lines are blanked before the program is parsed, so parse errors keep
//! the file's line and column numbers.

use crate::kernel::Program;
use crate::kernel_interp::Values;
use crate::lex::{tokenize, Spanned, Token};
use crate::tensor::Tensor;
use crate::text::ParseError;
use crate::types::{DType, TensorType};
use std::fmt::Write as _;

/// A file test: the program text and its directives.
#[derive(Clone, Debug, PartialEq)]
pub struct FileTest {
    /// The file with every directive line blanked.
    pub source: String,
    /// `; input` values, in file order.
    pub inputs: Vec<Literals>,
    /// `; param` values.
    pub params: Vec<Literals>,
    /// `; expect` and `; expect param` values.
    pub expects: Vec<Expect>,
    /// The `; error:` text, if the program must be rejected.
    pub error: Option<String>,
}

/// A named list of literal values from a directive, typed later by the program.
#[derive(Clone, Debug, PartialEq)]
pub struct Literals {
    pub name: String,
    /// The literals as written (`-0.0`, `inf`, `3i`, `true`).
    pub literals: Vec<String>,
    /// The directive's line, from 1.
    pub line: usize,
}

/// What must come out of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Expect {
    /// An output, or (when `param`) a parameter after its update.
    pub param: bool,
    pub values: Literals,
}

/// Reads a file test's directives. The program itself is parsed by
/// [`FileTest::program`].
pub fn read(text: &str) -> Result<FileTest, ParseError> {
    let mut test = FileTest {
        source: String::with_capacity(text.len()),
        inputs: Vec::new(),
        params: Vec::new(),
        expects: Vec::new(),
        error: None,
    };
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if !trimmed.starts_with(';') {
            test.source.push_str(line);
            test.source.push('\n');
            continue;
        }
        test.source.push('\n');
        let column = line.len() - trimmed.len() + 1;
        let body = &trimmed[1..];
        if let Some(message) = body.trim_start().strip_prefix("error:") {
            test.error = Some(message.trim().to_string());
            continue;
        }
        directive(&mut test, body, number + 1, column + 1)?;
    }
    Ok(test)
}

/// One `input`, `param` or `expect` directive: `body` follows the `;` at `line`, and
/// starts at `column`.
fn directive(
    test: &mut FileTest,
    body: &str,
    line: usize,
    column: usize,
) -> Result<(), ParseError> {
    let at = |token: &Spanned| (line, column + token.column - 1);
    let tokens = tokenize(body, &crate::kernel_text::SYNTAX).map_err(|err| ParseError {
        line,
        column: column + err.column - 1,
        message: err.message,
    })?;
    let mut position = 0;
    let error = |token: &Spanned, what: &str| {
        let (line, column) = at(token);
        ParseError {
            line,
            column,
            message: format!("expected {what}, found {}", token.token),
        }
    };
    let kind = match &tokens[position].token {
        Token::Word(word) if ["input", "param", "expect"].contains(&word.as_str()) => word.clone(),
        _ => {
            return Err(error(
                &tokens[position],
                "a directive ('input', 'param', 'expect' or 'error:') after ';'",
            ))
        }
    };
    position += 1;
    let mut param = false;
    if kind == "expect" && tokens[position].token == Token::Word("param".into()) {
        param = true;
        position += 1;
    }
    let name = match &tokens[position].token {
        Token::Str(name) => name.clone(),
        _ => return Err(error(&tokens[position], "a quoted name")),
    };
    position += 1;
    for (punct, what) in [('=', "'=' after the name"), ('[', "'[' to open the values")] {
        if tokens[position].token != Token::Punct(punct) {
            return Err(error(&tokens[position], what));
        }
        position += 1;
    }
    let mut literals = Vec::new();
    if tokens[position].token == Token::Punct(']') {
        position += 1;
    } else {
        loop {
            let negative = tokens[position].token == Token::Punct('-');
            if negative {
                position += 1;
            }
            let literal = match &tokens[position].token {
                Token::Number(text) => text.clone(),
                Token::Word(word)
                    if ["inf", "nan", "NaN", "true", "false"].contains(&word.as_str()) =>
                {
                    word.clone()
                }
                _ => {
                    return Err(error(
                        &tokens[position],
                        "a value (a number, inf, nan, true or false)",
                    ))
                }
            };
            literals.push(if negative {
                format!("-{literal}")
            } else {
                literal
            });
            position += 1;
            match tokens[position].token {
                Token::Punct(']') => {
                    position += 1;
                    break;
                }
                Token::Punct(',') => position += 1,
                _ => return Err(error(&tokens[position], "',' or ']' after a value")),
            }
        }
    }
    if tokens[position].token != Token::End {
        return Err(error(&tokens[position], "the end of the directive"));
    }
    let values = Literals {
        name,
        literals,
        line,
    };
    match kind.as_str() {
        "input" => test.inputs.push(values),
        "param" => test.params.push(values),
        _ => test.expects.push(Expect { param, values }),
    }
    Ok(())
}

/// A literal as a value of `dtype` (as `f64`, the way [`Tensor`] holds it).
fn value(literal: &str, dtype: DType) -> Option<f64> {
    match dtype {
        // Parsed straight to f32, so a decimal is rounded once.
        DType::F32 => match literal {
            "nan" | "NaN" => Some(f64::NAN),
            _ => literal.parse::<f32>().ok().map(f64::from),
        },
        DType::I32 => literal
            .strip_suffix('i')
            .unwrap_or(literal)
            .parse::<i32>()
            .ok()
            .map(f64::from),
        DType::Bool => match literal {
            "true" => Some(1.0),
            "false" => Some(0.0),
            _ => None,
        },
    }
}

/// Whether two elements are the same for a file test: bit for bit as values of their
/// dtype, except that any NaN matches any NaN.
pub fn same(dtype: DType, actual: f64, expected: f64) -> bool {
    match dtype {
        DType::F32 => {
            let (actual, expected) = (actual as f32, expected as f32);
            actual.to_bits() == expected.to_bits() || (actual.is_nan() && expected.is_nan())
        }
        DType::I32 | DType::Bool => actual == expected,
    }
}

/// A tensor's elements as a directive writes them: `[1.0, -0.0, nan]`, `[3, -1]`,
/// `[true]`.
pub fn format_values(tensor: &Tensor) -> String {
    let items: Vec<String> = tensor
        .data()
        .iter()
        .map(|&value| match tensor.dtype() {
            DType::F32 if value.is_nan() => "nan".to_string(),
            DType::F32 => format!("{:?}", value as f32),
            DType::I32 => format!("{}", value as i32),
            DType::Bool => format!("{}", value != 0.0),
        })
        .collect();
    format!("[{}]", items.join(", "))
}

impl FileTest {
    /// The program of the file.
    pub fn program(&self) -> Result<Program, ParseError> {
        crate::kernel_text::parse(&self.source)
    }

    /// The `; input` and `; param` values as tensors of their buffers' types; the
    /// error names the directive's line.
    pub fn feeds(&self, program: &Program) -> Result<(Values, Values), String> {
        let mut inputs = Values::new();
        let mut params = Values::new();
        for (values, named, into) in [
            (&self.inputs, program.inputs(), &mut inputs),
            (&self.params, program.params(), &mut params),
        ] {
            for directive in values {
                let buffer = named
                    .iter()
                    .find(|(name, _)| *name == directive.name)
                    .map(|&(_, buffer)| program.buffer(buffer))
                    .ok_or_else(|| {
                        format!(
                            "line {}: the program has no {:?} to set",
                            directive.line, directive.name
                        )
                    })?;
                let tensor = self.tensor(directive, &buffer.ty)?;
                into.insert(directive.name.clone(), tensor);
            }
        }
        Ok((inputs, params))
    }

    fn tensor(&self, directive: &Literals, ty: &TensorType) -> Result<Tensor, String> {
        let data = directive
            .literals
            .iter()
            .map(|literal| {
                value(literal, ty.dtype).ok_or_else(|| {
                    format!(
                        "line {}: {literal} is not a {} value",
                        directive.line, ty.dtype
                    )
                })
            })
            .collect::<Result<Vec<f64>, String>>()?;
        Tensor::new(ty.clone(), data).map_err(|err| format!("line {}: {err}", directive.line))
    }

    /// Every `; expect` the run's outputs and parameters do not meet, one message
    /// each.
    pub fn mismatches(&self, outputs: &Values, params: &Values) -> Vec<String> {
        let mut mismatches = Vec::new();
        for expect in &self.expects {
            let directive = &expect.values;
            let (kind, values) = if expect.param {
                ("parameter", params)
            } else {
                ("output", outputs)
            };
            let Some(actual) = values.get(&directive.name) else {
                mismatches.push(format!(
                    "line {}: no {kind} {:?}",
                    directive.line, directive.name
                ));
                continue;
            };
            let wanted = match self.tensor(directive, &actual.ty()) {
                Ok(tensor) => tensor,
                Err(err) => {
                    mismatches.push(err);
                    continue;
                }
            };
            let equal = actual
                .data()
                .iter()
                .zip(wanted.data())
                .all(|(&a, &e)| same(actual.dtype(), a, e));
            if !equal {
                mismatches.push(format!(
                    "line {}: {kind} {:?} is {}, expected {}",
                    directive.line,
                    directive.name,
                    format_values(actual),
                    format_values(&wanted)
                ));
            }
        }
        mismatches
    }
}

/// A run's outputs and parameters as a snapshot shows them, one per line.
pub fn format_run(outputs: &Values, params: &Values) -> String {
    let mut text = String::new();
    for (name, tensor) in outputs {
        let _ = writeln!(
            text,
            "output {name:?}: {} = {}",
            tensor.ty(),
            format_values(tensor)
        );
    }
    for (name, tensor) in params {
        let _ = writeln!(
            text,
            "param {name:?}: {} = {}",
            tensor.ty(),
            format_values(tensor)
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_read_and_blanked() {
        let text = "// doc\nprogram \"p\" {\n}\n; input \"x\" = [1.0, -0.0, nan, -inf]\n  ; expect param \"w\" = []\n; error: reaches elements\n";
        let test = read(text).unwrap();
        assert_eq!(test.source, "// doc\nprogram \"p\" {\n}\n\n\n\n");
        assert_eq!(test.inputs[0].literals, ["1.0", "-0.0", "nan", "-inf"]);
        assert_eq!(test.inputs[0].line, 4);
        assert!(test.expects[0].param);
        assert_eq!(test.error.as_deref(), Some("reaches elements"));
    }

    #[test]
    fn bad_directives_name_their_position() {
        let err = read("program \"p\" {\n}\n; input \"x\" = [1.0 2.0]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "3:20: expected ',' or ']' after a value, found number 2.0"
        );
        let err = read("; expected \"y\" = []\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "1:3: expected a directive ('input', 'param', 'expect' or 'error:') after ';', found 'expected'"
        );
    }

    #[test]
    fn values_match_bit_for_bit_but_nan_matches_any_nan() {
        assert!(same(DType::F32, f64::NAN, -f64::NAN));
        assert!(!same(DType::F32, -0.0, 0.0));
        assert_eq!(value("16777217.0", DType::F32), Some(16_777_216.0));
        assert_eq!(value("-3i", DType::I32), Some(-3.0));
        assert_eq!(value("1.5", DType::I32), None);
    }
}
