//! Evaluation metrics computed on the host from a model's outputs.
//!
//! A row with a NaN score has no largest score: `argmax` returns `None` for it and
//! `accuracy` counts it as wrong and reports it in `nan_rows`, so a model that has
//! diverged cannot look as if it predicted class 0.

use std::fmt;
use thiserror::Error;

/// Why a metric could not be computed (the caller's mistake).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MetricsError {
    /// The scores are not `labels.len()` rows of `classes` values: comparing them
    /// would pair scores with the wrong examples.
    #[error("{scores} scores are not {rows} rows of {classes} classes")]
    Shape {
        scores: usize,
        rows: usize,
        classes: usize,
    },
    /// A label outside `0..classes`, which no row of scores can predict.
    #[error("example {example}: label {label} is outside 0..{classes}")]
    Label {
        example: usize,
        label: i32,
        classes: usize,
    },
}

/// The index of the largest value of `row` (the first one on ties), or `None` for an
/// empty row or a row holding a NaN.
pub fn argmax(row: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (index, &value) in row.iter().enumerate() {
        if value.is_nan() {
            return None;
        }
        if best.is_none_or(|(_, largest)| value > largest) {
            best = Some((index, value));
        }
    }
    best.map(|(index, _)| index)
}

/// How many rows a classifier got right, out of how many, and how many rows of
/// scores held a NaN (those count as wrong).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accuracy {
    pub correct: usize,
    pub rows: usize,
    pub nan_rows: usize,
}

impl Accuracy {
    /// `correct / rows`, or `None` when there are no rows.
    pub fn fraction(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.correct as f64 / self.rows as f64)
    }
}

impl fmt::Display for Accuracy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fraction() {
            Some(fraction) => write!(f, "{fraction:.4} ({} of {})", self.correct, self.rows)?,
            None => write!(f, "no rows")?,
        }
        if self.nan_rows > 0 {
            write!(f, ", {} rows with NaN scores", self.nan_rows)?;
        }
        Ok(())
    }
}

/// Compares each of the `labels.len()` rows of `classes` scores in `scores` (row-major
/// logits or probabilities) with its label: a row is correct when its `argmax` is the
/// label.
pub fn accuracy(scores: &[f32], labels: &[i32], classes: usize) -> Result<Accuracy, MetricsError> {
    if labels.len().checked_mul(classes) != Some(scores.len()) {
        return Err(MetricsError::Shape {
            scores: scores.len(),
            rows: labels.len(),
            classes,
        });
    }
    let mut result = Accuracy {
        correct: 0,
        rows: labels.len(),
        nan_rows: 0,
    };
    for (example, &label) in labels.iter().enumerate() {
        let class = usize::try_from(label)
            .ok()
            .filter(|&class| class < classes)
            .ok_or(MetricsError::Label {
                example,
                label,
                classes,
            })?;
        // In range: the shape check above makes `scores` exactly rows * classes long.
        let row = &scores[example * classes..(example + 1) * classes];
        match argmax(row) {
            Some(predicted) if predicted == class => result.correct += 1,
            Some(_) => {}
            None => result.nan_rows += 1,
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_rows_whose_argmax_is_the_label() {
        let scores = [
            0.1, 0.9, 0.0, /* */ 2.0, 1.0, 0.0, /* */ 0.0, 0.0, 5.0,
        ];
        let result = accuracy(&scores, &[1, 1, 2], 3).unwrap();
        assert_eq!(
            result,
            Accuracy {
                correct: 2,
                rows: 3,
                nan_rows: 0
            }
        );
        assert_eq!(result.fraction(), Some(2.0 / 3.0));
        assert_eq!(result.to_string(), "0.6667 (2 of 3)");
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), Some(0));
        assert_eq!(accuracy(&[], &[], 3).unwrap().fraction(), None);
    }

    #[test]
    fn a_nan_row_is_reported_not_counted_as_class_zero() {
        // Before, argmax skipped NaN comparisons and returned 0, so these rows scored
        // as correct predictions of class 0.
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), None);
        assert_eq!(argmax(&[0.0, f32::NAN, 1.0]), None);
        assert_eq!(argmax(&[]), None);
        let scores = [
            f32::NAN,
            f32::NAN,
            /* */ 1.0,
            f32::NAN,
            /* */ 3.0,
            1.0,
        ];
        let result = accuracy(&scores, &[0, 0, 0], 2).unwrap();
        assert_eq!(
            result,
            Accuracy {
                correct: 1,
                rows: 3,
                nan_rows: 2
            }
        );
        assert_eq!(
            result.to_string(),
            "0.3333 (1 of 3), 2 rows with NaN scores"
        );
    }

    #[test]
    fn a_label_outside_the_classes_is_an_error_naming_the_example() {
        let err = accuracy(&[0.0; 6], &[0, 3, 1], 2).unwrap_err();
        assert_eq!(err.to_string(), "example 1: label 3 is outside 0..2");
        let err = accuracy(&[0.0; 4], &[-2, 0], 2).unwrap_err();
        assert_eq!(err.to_string(), "example 0: label -2 is outside 0..2");
    }

    #[test]
    fn scores_that_are_not_one_row_per_label_are_an_error() {
        // Before, the extra labels were silently dropped by `zip`.
        let err = accuracy(&[0.0; 4], &[0, 1, 1], 2).unwrap_err();
        assert_eq!(err.to_string(), "4 scores are not 3 rows of 2 classes");
        assert!(accuracy(&[0.0; 3], &[0], 0).is_err());
    }
}
