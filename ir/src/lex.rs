//! The lexer and token cursor that the graph text ([`crate::text`]) and the kernel
//! text ([`crate::kernel_text`]) share: strings with `\"`, `\\` and `\n` escapes,
//! numbers, words, `//` comments, and positions as 1-based line and column counted in
//! characters. What the two languages spell differently is a [`Syntax`].

use crate::text::{quote, ParseError};
use std::fmt;
use std::marker::PhantomData;

/// What a language's tokens look like beyond what both languages share.
pub(crate) struct Syntax {
    /// The characters that are tokens on their own. A `-` or `+` that is not one of
    /// them starts a number when a digit, `i` (`-inf`) or `n` (`-nan`) follows.
    pub(crate) punct: &'static str,
    /// Whether `%name` is a value name (the graph text's `%3`).
    pub(crate) value_names: bool,
    /// Whether `..` is a token (the kernel text's loop ranges): a '.' followed by a
    /// '.' then ends a word or number instead of joining it, so `0..6` is three tokens.
    pub(crate) ranges: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Token {
    /// Keywords, mnemonics with dots (`cmp.lt`, `matmul.nn.avx2`), dtypes, ids such as
    /// the kernel text's `b3`, `inf`, `nan`.
    Word(String),
    /// `%name`, where [`Syntax::value_names`] allows it.
    Value(String),
    Str(String),
    /// `12`, `1.5`, `1e-7`, `3i`, and where signs are not punctuation `-3`, `+inf`.
    Number(String),
    /// `..`, where [`Syntax::ranges`] allows it.
    DotDot,
    Punct(char),
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(word) => write!(f, "'{word}'"),
            Token::Value(name) => write!(f, "'%{name}'"),
            Token::Str(text) => write!(f, "string {}", quote(text)),
            Token::Number(number) => write!(f, "number {number}"),
            Token::DotDot => f.write_str("'..'"),
            Token::Punct(c) => write!(f, "'{c}'"),
            Token::End => f.write_str("end of input"),
        }
    }
}

/// A token and where it starts.
pub(crate) struct Spanned {
    pub(crate) token: Token,
    pub(crate) line: usize,
    pub(crate) column: usize,
}

pub(crate) fn error_at(line: usize, column: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        column,
        message: message.into(),
    }
}

/// The tokens of `src`, ending with [`Token::End`].
pub(crate) fn tokenize(src: &str, syntax: &Syntax) -> Result<Vec<Spanned>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut column) = (0, 1, 1);
    let dot_in_token =
        |at: usize| chars[at] == '.' && !(syntax.ranges && chars.get(at + 1) == Some(&'.'));
    while i < chars.len() {
        let c = chars[i];
        let (start_line, start_column) = (line, column);
        let mut advance = |n: usize, i: &mut usize| {
            for _ in 0..n {
                if chars[*i] == '\n' {
                    line += 1;
                    column = 1;
                } else {
                    column += 1;
                }
                *i += 1;
            }
        };
        if c.is_whitespace() {
            advance(1, &mut i);
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                advance(1, &mut i);
            }
            continue;
        }
        let token = if c == '%' && syntax.value_names {
            let length = chars[i + 1..]
                .iter()
                .take_while(|&&c| c.is_ascii_alphanumeric() || c == '_')
                .count();
            if length == 0 {
                return Err(error_at(line, column, "expected a value name after '%'"));
            }
            let name: String = chars[i + 1..i + 1 + length].iter().collect();
            advance(1 + length, &mut i);
            Token::Value(name)
        } else if c == '"' {
            let mut text = String::new();
            advance(1, &mut i);
            loop {
                match chars.get(i) {
                    None => return Err(error_at(start_line, start_column, "unterminated string")),
                    Some('"') => {
                        advance(1, &mut i);
                        break;
                    }
                    Some('\\') => {
                        let escaped = match chars.get(i + 1) {
                            Some('"') => '"',
                            Some('\\') => '\\',
                            Some('n') => '\n',
                            _ => {
                                return Err(error_at(
                                    line,
                                    column,
                                    "unknown escape in string: expected \\\", \\\\ or \\n",
                                ))
                            }
                        };
                        text.push(escaped);
                        advance(2, &mut i);
                    }
                    Some(&c) => {
                        text.push(c);
                        advance(1, &mut i);
                    }
                }
            }
            Token::Str(text)
        } else if c.is_ascii_digit()
            || (matches!(c, '-' | '+')
                && !syntax.punct.contains(c)
                && chars
                    .get(i + 1)
                    .is_some_and(|n| n.is_ascii_digit() || *n == 'i' || *n == 'n'))
        {
            let mut length = 1;
            while let Some(&n) = chars.get(i + length) {
                // `1e-7`: a sign right after an exponent marker is part of the number.
                // Where signs are operators, only after a decimal mantissa, so that
                // the operator after a malformed number stays an operator.
                let exponent_sign = matches!(n, '-' | '+')
                    && matches!(chars[i + length - 1], 'e' | 'E')
                    && (!syntax.punct.contains(n)
                        || chars[i..i + length - 1]
                            .iter()
                            .all(|c| c.is_ascii_digit() || *c == '.'));
                if n.is_ascii_alphanumeric() || exponent_sign || dot_in_token(i + length) {
                    length += 1;
                } else {
                    break;
                }
            }
            let number: String = chars[i..i + length].iter().collect();
            advance(length, &mut i);
            Token::Number(number)
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut length = 1;
            while let Some(&n) = chars.get(i + length) {
                if n.is_ascii_alphanumeric() || n == '_' || dot_in_token(i + length) {
                    length += 1;
                } else {
                    break;
                }
            }
            let word: String = chars[i..i + length].iter().collect();
            advance(length, &mut i);
            Token::Word(word)
        } else if syntax.ranges && c == '.' && chars.get(i + 1) == Some(&'.') {
            advance(2, &mut i);
            Token::DotDot
        } else if syntax.punct.contains(c) {
            advance(1, &mut i);
            Token::Punct(c)
        } else {
            return Err(error_at(
                line,
                column,
                format!("unexpected character {c:?}"),
            ));
        };
        tokens.push(Spanned {
            token,
            line: start_line,
            column: start_column,
        });
    }
    tokens.push(Spanned {
        token: Token::End,
        line,
        column,
    });
    Ok(tokens)
}

/// A recursive-descent parser's position in its tokens, with the steps both parsers
/// take here; each grammar `G` (a marker type) adds its own in an `impl Parser<G>` in
/// its module. Errors say what was expected and what was found, at the found token.
pub(crate) struct Parser<G> {
    tokens: Vec<Spanned>,
    position: usize,
    grammar: PhantomData<G>,
}

impl<G> Parser<G> {
    pub(crate) fn new(src: &str, syntax: &Syntax) -> Result<Self, ParseError> {
        Ok(Parser {
            tokens: tokenize(src, syntax)?,
            position: 0,
            grammar: PhantomData,
        })
    }

    pub(crate) fn peek(&self) -> &Spanned {
        &self.tokens[self.position]
    }

    /// Where the next token starts, as (line, column).
    pub(crate) fn here(&self) -> (usize, usize) {
        (self.peek().line, self.peek().column)
    }

    pub(crate) fn peek_word(&self) -> Option<&str> {
        match &self.peek().token {
            Token::Word(word) => Some(word),
            _ => None,
        }
    }

    /// Steps past the next token; [`Token::End`] stays.
    pub(crate) fn next(&mut self) {
        if self.position + 1 < self.tokens.len() {
            self.position += 1;
        }
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> ParseError {
        let (line, column) = self.here();
        error_at(line, column, message)
    }

    pub(crate) fn expected(&self, what: &str) -> ParseError {
        self.error(format!("expected {what}, found {}", self.peek().token))
    }

    pub(crate) fn punct(&mut self, c: char, context: &str) -> Result<(), ParseError> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            Err(self.expected(&format!("'{c}' {context}")))
        }
    }

    pub(crate) fn eat_punct(&mut self, c: char) -> bool {
        let found = self.peek().token == Token::Punct(c);
        if found {
            self.next();
        }
        found
    }

    pub(crate) fn keyword(&mut self, keyword: &str, context: &str) -> Result<(), ParseError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            Err(self.expected(&format!("'{keyword}' {context}")))
        }
    }

    pub(crate) fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.peek_word() == Some(keyword);
        if found {
            self.next();
        }
        found
    }

    pub(crate) fn word(&mut self, what: &str) -> Result<String, ParseError> {
        match self.peek_word() {
            Some(word) => {
                let word = word.to_string();
                self.next();
                Ok(word)
            }
            None => Err(self.expected(what)),
        }
    }

    pub(crate) fn string(&mut self, what: &str) -> Result<String, ParseError> {
        match &self.peek().token {
            Token::Str(text) => {
                let text = text.clone();
                self.next();
                Ok(text)
            }
            _ => Err(self.expected(what)),
        }
    }

    /// A non-negative integer that fits `T`.
    pub(crate) fn integer<T: TryFrom<u64>>(&mut self, what: &str) -> Result<T, ParseError> {
        match &self.peek().token {
            Token::Number(number) => {
                // `u64::from_str` also takes a leading '+', which the printers never
                // write; keep the grammars as strict as the printers.
                let value = number
                    .bytes()
                    .all(|byte| byte.is_ascii_digit())
                    .then(|| number.parse::<u64>().ok())
                    .flatten()
                    .and_then(|value| T::try_from(value).ok())
                    .ok_or_else(|| self.error(format!("expected {what}, found number {number}")))?;
                self.next();
                Ok(value)
            }
            _ => Err(self.expected(what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(src: &str, syntax: &Syntax) -> Vec<String> {
        let tokens = tokenize(src, syntax).expect("tokenizes");
        tokens
            .iter()
            .map(|spanned| spanned.token.to_string())
            .collect()
    }

    #[test]
    fn the_two_syntaxes_split_numbers_dots_and_signs_their_own_way() {
        let graph = tokens("%a cmp.lt -1e-7 +inf 1xe-3 0..2", &crate::text::SYNTAX);
        assert_eq!(
            graph,
            [
                "'%a'",
                "'cmp.lt'",
                "number -1e-7",
                "number +inf",
                "number 1xe-3",
                "number 0..2",
                "end of input"
            ]
        );
        let kernel = tokens(
            "matmul.nn.avx2 0..2 1e-7 1xe-3 i0-1",
            &crate::kernel_text::SYNTAX,
        );
        assert_eq!(
            kernel,
            [
                "'matmul.nn.avx2'",
                "number 0",
                "'..'",
                "number 2",
                "number 1e-7",
                "number 1xe",
                "'-'",
                "number 3",
                "'i0'",
                "'-'",
                "number 1",
                "end of input"
            ]
        );
        let err = tokenize("%3", &crate::kernel_text::SYNTAX)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.to_string(), "1:1: unexpected character '%'");
    }
}
