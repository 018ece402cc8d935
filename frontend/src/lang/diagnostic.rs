//! Located errors in model files, and their rendering: the message with
//! `file:line:column`, the source line and a caret under the offending span (by the
//! `ariadne` crate), and what was expected.

use ariadne::{Config, IndexType, Label, Report, ReportKind, Source};
use std::fmt;
use std::ops::Range;

/// A byte range of the source.
pub type Span = Range<usize>;

/// A mistake in a model file: where, what, and what was expected there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelError {
    /// The bytes the error is about.
    pub span: Span,
    /// What is wrong, in one line.
    pub message: String,
    /// What would have been right there, when that can be said.
    pub expected: Option<String>,
    /// A further hint (a defining occurrence, a way out).
    pub note: Option<String>,
}

impl ModelError {
    pub fn new(span: Span, message: impl Into<String>) -> ModelError {
        ModelError {
            span,
            message: message.into(),
            expected: None,
            note: None,
        }
    }

    /// The same error saying what was expected.
    pub fn expected(mut self, expected: impl Into<String>) -> ModelError {
        self.expected = Some(expected.into());
        self
    }

    /// The same error with a hint.
    pub fn note(mut self, note: impl Into<String>) -> ModelError {
        self.note = Some(note.into());
        self
    }

    /// `(line, column)` of the error's start, both from 1; columns count characters.
    pub fn line_column(&self, source: &str) -> (usize, usize) {
        line_column(source, self.span.start)
    }

    /// `path:line:column: message (expected …)`: the error on one line.
    pub fn located(&self, path: &str, source: &str) -> String {
        let (line, column) = self.line_column(source);
        format!("{path}:{line}:{column}: {self}")
    }

    /// The error with the source line and a caret, as the `kiln` command prints it;
    /// `color` for a terminal.
    pub fn render(&self, path: &str, source: &str, color: bool) -> String {
        // A span past the end (at the end of the file) is drawn at the last byte.
        let end = source.len();
        let start = self.span.start.min(end);
        let span = start..self.span.end.clamp(start, end);
        let (line, column) = self.line_column(source);
        let label = match &self.expected {
            Some(expected) => format!("expected {expected}"),
            None => "here".to_string(),
        };
        let mut report = Report::build(ReportKind::Error, (path, span.clone()))
            .with_config(
                Config::default()
                    .with_color(color)
                    .with_index_type(IndexType::Byte),
            )
            .with_message(format!("{path}:{line}:{column}: {}", self.message))
            .with_label(Label::new((path, span)).with_message(label));
        if let Some(note) = &self.note {
            report = report.with_note(note);
        }
        let mut out = Vec::new();
        let written = report
            .finish()
            .write((path, Source::from(source)), &mut out);
        match written {
            Ok(()) => String::from_utf8_lossy(&out).into_owned(),
            // Writing to a Vec cannot fail; keep the one-line form if it ever does.
            Err(_) => self.located(path, source),
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(expected) = &self.expected {
            write!(f, " (expected {expected})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ModelError {}

/// `(line, column)` of byte `offset` in `source`, both from 1; columns count
/// characters.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_count_from_one_in_characters() {
        let source = "ab\nçd e";
        assert_eq!(line_column(source, 0), (1, 1));
        assert_eq!(line_column(source, 3), (2, 1));
        assert_eq!(line_column(source, 7), (2, 4));
        assert_eq!(line_column(source, 100), (2, 5));
    }

    #[test]
    fn the_rendering_shows_the_line_a_caret_and_what_was_expected() {
        let source = "model m() {\n  x = 3 $ 4\n}\n";
        let err = ModelError::new(20..21, "unexpected character `$`").expected("an operator");
        assert_eq!(
            err.located("m.kiln", source),
            "m.kiln:2:9: unexpected character `$` (expected an operator)"
        );
        let text = err.render("m.kiln", source, false);
        assert!(
            text.contains("m.kiln:2:9: unexpected character `$`"),
            "{text}"
        );
        assert!(text.contains("  x = 3 $ 4"), "{text}");
        assert!(text.contains("expected an operator"), "{text}");
    }
}
