//! Tokens of the `.kiln` model language, each with its byte span in the source.
//!
//! Whitespace and newlines separate tokens and are otherwise insignificant (every
//! statement starts with a keyword or `name =`, so none needs a terminator); `#`
//! starts a comment that runs to the end of the line.

use super::diagnostic::{ModelError, Span};

/// One token.
#[derive(Clone, Debug, PartialEq)]
pub enum Token {
    /// A name or a keyword (`model`, `block`, `input`, `forward`, …): keywords are
    /// names the parser gives a meaning to where a statement starts.
    Name(String),
    /// A whole number: a dimension, an axis, a count.
    Int(i64),
    /// A number with a `.` or an exponent.
    Float(f64),
    /// A double-quoted string without escapes.
    Str(String),
    /// One of `( ) { } [ ] , : = + - * / @ .`
    Punct(char),
    /// The end of the source.
    End,
}

impl Token {
    /// How an error message names the token.
    pub fn describe(&self) -> String {
        match self {
            Token::Name(name) => format!("`{name}`"),
            Token::Int(value) => format!("the number {value}"),
            Token::Float(value) => format!("the number {value}"),
            Token::Str(text) => format!("the string \"{text}\""),
            Token::Punct(c) => format!("`{c}`"),
            Token::End => "the end of the file".to_string(),
        }
    }
}

/// The tokens of `source`, the last one [`Token::End`].
pub fn lex(source: &str) -> Result<Vec<(Token, Span)>, ModelError> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let c = bytes[at];
        let start = at;
        if c.is_ascii_whitespace() {
            at += 1;
        } else if c == b'#' {
            while at < bytes.len() && bytes[at] != b'\n' {
                at += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
                at += 1;
            }
            tokens.push((Token::Name(source[start..at].to_string()), start..at));
        } else if c.is_ascii_digit() {
            let (token, end) = number(source, start)?;
            tokens.push((token, start..end));
            at = end;
        } else if c == b'"' {
            let close = source[start + 1..]
                .find(['"', '\n'])
                .map(|offset| start + 1 + offset)
                .filter(|&end| bytes[end] == b'"')
                .ok_or_else(|| {
                    ModelError::new(start..start + 1, "this string is not closed on its line")
                        .expected("a closing `\"`")
                })?;
            tokens.push((
                Token::Str(source[start + 1..close].to_string()),
                start..close + 1,
            ));
            at = close + 1;
        } else if "(){}[],:=+-*/@.".contains(c as char) {
            tokens.push((Token::Punct(c as char), start..start + 1));
            at += 1;
        } else {
            // A character outside ASCII is reported whole.
            let width = source[start..].chars().next().map_or(1, char::len_utf8);
            let found = &source[start..start + width];
            return Err(ModelError::new(
                start..start + width,
                format!("unexpected character `{found}`"),
            )
            .expected("a name, a number, an operator or a bracket"));
        }
    }
    tokens.push((Token::End, bytes.len()..bytes.len()));
    Ok(tokens)
}

/// The number starting at `start`: digits, then an optional fraction and exponent.
fn number(source: &str, start: usize) -> Result<(Token, usize), ModelError> {
    let bytes = source.as_bytes();
    let digits = |mut at: usize| {
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            at += 1;
        }
        at
    };
    let mut end = digits(start);
    let mut float = false;
    // `2.` followed by a name is a number and a field access, not `2.0`.
    if end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit() {
        end = digits(end + 1);
        float = true;
    }
    if end < bytes.len() && (bytes[end] == b'e' || bytes[end] == b'E') {
        let mut exponent = end + 1;
        if exponent < bytes.len() && (bytes[exponent] == b'+' || bytes[exponent] == b'-') {
            exponent += 1;
        }
        if exponent < bytes.len() && bytes[exponent].is_ascii_digit() {
            end = digits(exponent);
            float = true;
        }
    }
    let text = &source[start..end];
    let token = if float {
        // `1e999` parses as inf in Rust; a literal must be a finite number.
        text.parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .map(Token::Float)
    } else {
        text.parse().map(Token::Int).ok()
    };
    token.map(|token| (token, end)).ok_or_else(|| {
        ModelError::new(start..end, format!("the number {text} is out of range"))
            .expected("a whole number below 2^63 or a finite float")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(source: &str) -> Vec<Token> {
        lex(source)
            .unwrap()
            .into_iter()
            .map(|(token, _)| token)
            .collect()
    }

    #[test]
    fn names_numbers_strings_and_punctuation_with_comments_skipped() {
        let tokens = kinds("fc1 = Linear(64, 1e-3, 0.5) # a layer\n\"he\" @");
        assert_eq!(
            tokens,
            [
                Token::Name("fc1".into()),
                Token::Punct('='),
                Token::Name("Linear".into()),
                Token::Punct('('),
                Token::Int(64),
                Token::Punct(','),
                Token::Float(1e-3),
                Token::Punct(','),
                Token::Float(0.5),
                Token::Punct(')'),
                Token::Str("he".into()),
                Token::Punct('@'),
                Token::End,
            ]
        );
    }

    #[test]
    fn spans_are_byte_ranges() {
        let tokens = lex("  ab 12").unwrap();
        assert_eq!(tokens[0].1, 2..4);
        assert_eq!(tokens[1].1, 5..7);
        assert_eq!(tokens[2].1, 7..7);
    }

    #[test]
    fn bad_characters_strings_and_numbers_are_located() {
        let err = lex("x = 3 $ 4").unwrap_err();
        assert_eq!(
            (err.span.clone(), err.message.as_str()),
            (6..7, "unexpected character `$`")
        );
        let err = lex("a = \"open\nb").unwrap_err();
        assert_eq!(err.span, 4..5);
        let err = lex("n = 99999999999999999999").unwrap_err();
        assert_eq!(err.span, 4..24);
        let err = lex("x = 1e999").unwrap_err();
        assert_eq!(err.to_string(), "the number 1e999 is out of range (expected a whole number below 2^63 or a finite float)");
        let err = lex("é").unwrap_err();
        assert_eq!(err.span, 0..2);
    }
}
