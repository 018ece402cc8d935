//! Small in-memory data sets for examples and tests: dense f32 features with integer
//! class labels, loaded from (optionally gzipped) CSV.

use kiln_ir::alloc::{try_collect, try_with_capacity, OutOfMemory};
use kiln_ir::Rng;
use std::io::Read;
use std::path::Path;
use thiserror::Error;

/// A data set that could not be read or built. Every variant is the user's mistake
/// (their file, path, or the values handed to `Dataset::new`).
#[derive(Debug, Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A line of the CSV file is not features followed by a label.
    #[error("{path}:{line}: {message}")]
    Format {
        path: String,
        line: usize,
        message: String,
    },
    /// The feature count is not `examples * features_per_example` (or that product
    /// does not fit in memory at all).
    #[error("{features} features do not make {examples} examples of {features_per_example}")]
    Shape {
        features: usize,
        examples: usize,
        features_per_example: usize,
    },
    /// A label outside `0..classes`: the one-hot encoding of the loss would silently
    /// give it a row of zeros.
    #[error("example {example}: label {label} is outside 0..{classes}")]
    Label {
        example: usize,
        label: i32,
        classes: usize,
    },
    /// A NaN or infinite feature, which would turn the loss and every weight into NaN.
    #[error("example {example}: feature {feature} is {value}, not a finite number")]
    Feature {
        example: usize,
        feature: usize,
        value: f32,
    },
    /// `subset` was given an index past the end.
    #[error("example {index} does not exist: the data set has {examples} examples")]
    NoSuchExample { index: usize, examples: usize },
    /// A copy of examples (`subset`, `split`) needs more memory than there is.
    #[error(transparent)]
    OutOfMemory(#[from] OutOfMemory),
}

/// `len()` examples of `features_per_example()` finite f32 features and one label in
/// `0..classes()` each. Built by `new` (or the CSV readers), which check exactly that,
/// so code that trains on a `Dataset` can index it without checking again.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    features: Vec<f32>,
    labels: Vec<i32>,
    features_per_example: usize,
    classes: usize,
}

/// The text of the file at `path`, gunzipped when its name ends in `.gz`.
pub fn read_text(path: &Path) -> Result<String, DataError> {
    let io = |source| DataError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    if path.extension().is_some_and(|ext| ext == "gz") {
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .map_err(io)?;
    } else {
        std::io::BufReader::new(file)
            .read_to_string(&mut text)
            .map_err(io)?;
    }
    Ok(text)
}

impl Dataset {
    /// A data set of `labels.len()` examples whose features are the consecutive rows of
    /// `features_per_example` values of `features`. Errors name the first example that
    /// breaks an invariant: a label outside `0..classes` or a non-finite feature.
    pub fn new(
        features: Vec<f32>,
        labels: Vec<i32>,
        features_per_example: usize,
        classes: usize,
    ) -> Result<Dataset, DataError> {
        let expected = labels.len().checked_mul(features_per_example);
        if expected != Some(features.len()) {
            return Err(DataError::Shape {
                features: features.len(),
                examples: labels.len(),
                features_per_example,
            });
        }
        check_labels(&labels, classes)?;
        if let Some(position) = features.iter().position(|value| !value.is_finite()) {
            return Err(DataError::Feature {
                // A non-empty `features` means `features_per_example` is not zero.
                example: position / features_per_example,
                feature: position % features_per_example,
                value: features[position],
            });
        }
        Ok(Dataset {
            features,
            labels,
            features_per_example,
            classes,
        })
    }

    /// The same examples with a declared class count: for a data set (or split) in which
    /// the last classes happen not to occur. Fails if a label is outside `0..classes`.
    pub fn with_classes(self, classes: usize) -> Result<Dataset, DataError> {
        check_labels(&self.labels, classes)?;
        Ok(Dataset { classes, ..self })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Every feature, example after example.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// One label per example, each in `0..classes()`.
    pub fn labels(&self) -> &[i32] {
        &self.labels
    }

    pub fn features_per_example(&self) -> usize {
        self.features_per_example
    }

    /// The number of classes: labels lie in `0..classes()`.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The features of example `index`, or `None` past the end.
    pub fn example(&self, index: usize) -> Option<&[f32]> {
        let width = self.features_per_example;
        if index >= self.len() {
            return None;
        }
        self.features.get(index * width..(index + 1) * width)
    }

    /// The label of example `index`, or `None` past the end.
    pub fn label(&self, index: usize) -> Option<i32> {
        self.labels.get(index).copied()
    }

    /// Reads a CSV file (gzipped if the name ends in `.gz`) whose rows are features
    /// followed by an integer label, with no header. Features are multiplied by `scale`.
    /// The class count is one more than the largest label (`with_classes` declares more).
    pub fn from_csv(path: &Path, scale: f32) -> Result<Dataset, DataError> {
        let text = read_text(path)?;
        Dataset::parse_csv(&text, scale).map_err(|(line, message)| DataError::Format {
            path: path.display().to_string(),
            line,
            message,
        })
    }

    /// Parses CSV text (see `from_csv`); errors carry the 1-based line number.
    pub fn parse_csv(text: &str, scale: f32) -> Result<Dataset, (usize, String)> {
        let mut features = Vec::new();
        let mut labels: Vec<i32> = Vec::new();
        let mut features_per_example = 0;
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() < 2 {
                return Err((line_no, "expected features and a label".to_string()));
            }
            let width = fields.len() - 1;
            if labels.is_empty() {
                features_per_example = width;
            } else if width != features_per_example {
                return Err((
                    line_no,
                    format!("expected {features_per_example} features, found {width}"),
                ));
            }
            for field in &fields[..width] {
                let value: f32 = field
                    .parse()
                    .map_err(|_| (line_no, format!("feature {field:?} is not a number")))?;
                // Checked after scaling: that is the value training sees, and a
                // finite field can still overflow f32 when scaled.
                let scaled = value * scale;
                if !scaled.is_finite() {
                    return Err((
                        line_no,
                        format!(
                            "feature {field:?} scaled by {scale} is {scaled}, not a finite number"
                        ),
                    ));
                }
                features.push(scaled);
            }
            let label = fields[width];
            let label: f64 = label
                .parse()
                .map_err(|_| (line_no, format!("label {label:?} is not a number")))?;
            if label.fract() != 0.0 || label < 0.0 || label > f64::from(i32::MAX) {
                return Err((line_no, format!("label {label} is not a class index")));
            }
            labels.push(label as i32);
        }
        // Every label was checked to be a non-negative i32 above, so it is below this.
        let classes = labels.iter().max().map_or(0, |&max| max as usize + 1);
        Ok(Dataset {
            features,
            labels,
            features_per_example,
            classes,
        })
    }

    /// The examples at `indices`, in that order, with the same class count.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset, DataError> {
        if let Some(&index) = indices.iter().find(|&&index| index >= self.len()) {
            return Err(DataError::NoSuchExample {
                index,
                examples: self.len(),
            });
        }
        self.gather(indices)
    }

    /// `subset` of indices known to be in range.
    fn gather(&self, indices: &[usize]) -> Result<Dataset, DataError> {
        let width = self.features_per_example;
        // Indices may repeat, so the copy can be larger than this data set.
        let count = indices.len().saturating_mul(width);
        let what = || format!("{} examples of {width} features", indices.len());
        let mut features = try_with_capacity(count, what)?;
        for &index in indices {
            features.extend_from_slice(&self.features[index * width..(index + 1) * width]);
        }
        let labels = try_collect(indices.iter().map(|&index| self.labels[index]), || {
            format!("{} labels", indices.len())
        })?;
        Ok(Dataset {
            features,
            labels,
            features_per_example: width,
            classes: self.classes,
        })
    }

    /// A seeded random split into `first` examples (all of them if there are fewer)
    /// and the rest, both with this data set's class count (a small split may lack the
    /// last class).
    pub fn split(&self, first: usize, seed: u64) -> Result<(Dataset, Dataset), DataError> {
        let mut order = try_collect(0..self.len(), || format!("{} indices", self.len()))?;
        Rng::new(seed).shuffle(&mut order);
        let first = first.min(order.len());
        Ok((self.gather(&order[..first])?, self.gather(&order[first..])?))
    }
}

/// The example of the first label outside `0..classes`.
pub(crate) fn first_label_outside(labels: &[i32], classes: usize) -> Option<usize> {
    labels
        .iter()
        .position(|&label| usize::try_from(label).map_or(true, |label| label >= classes))
}

/// The first label outside `0..classes`, as an error naming its example.
fn check_labels(labels: &[i32], classes: usize) -> Result<(), DataError> {
    match first_label_outside(labels, classes) {
        Some(example) => Err(DataError::Label {
            example,
            label: labels[example],
            classes,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_scales_features() {
        let data = Dataset::parse_csv("0,16,1\n8,4,0\n", 1.0 / 16.0).unwrap();
        assert_eq!(data.features(), [0.0, 1.0, 0.5, 0.25]);
        assert_eq!(data.labels(), [1, 0]);
        assert_eq!(data.features_per_example(), 2);
        assert_eq!(data.classes(), 2);
        assert_eq!(data.example(1), Some(&[0.5, 0.25][..]));
        assert_eq!(data.example(2), None);
        assert_eq!(data.label(2), None);
    }

    #[test]
    fn reports_the_line_of_a_bad_row() {
        let err = Dataset::parse_csv("1,2,0\n1,x,1\n", 1.0).unwrap_err();
        assert_eq!(err, (2, "feature \"x\" is not a number".to_string()));
        let err = Dataset::parse_csv("1,2,0\n1,1\n", 1.0).unwrap_err();
        assert_eq!(err, (2, "expected 2 features, found 1".to_string()));
        let err = Dataset::parse_csv("1,2,0.5\n", 1.0).unwrap_err();
        assert_eq!(err.0, 1);
    }

    #[test]
    fn a_feature_that_is_not_finite_after_scaling_names_its_line() {
        let err = Dataset::parse_csv("1,2,0\n3e38,1,1\n", 10.0).unwrap_err();
        assert_eq!(
            err,
            (
                2,
                "feature \"3e38\" scaled by 10 is inf, not a finite number".to_string()
            )
        );
        let err = Dataset::parse_csv("NaN,1,1\n", 1.0).unwrap_err();
        assert_eq!(err.0, 1);
    }

    #[test]
    fn new_rejects_features_that_do_not_fill_the_examples() {
        // Five features cannot be two examples of two; `Trainer::epoch` used to panic
        // slicing the third example's row.
        let err = Dataset::new(vec![0.0; 5], vec![0, 1], 2, 2).unwrap_err();
        assert_eq!(err.to_string(), "5 features do not make 2 examples of 2");
        // A product that overflows is the same mistake, not a wrapped-around match.
        let err = Dataset::new(Vec::new(), vec![0, 0], usize::MAX / 2 + 1, 1).unwrap_err();
        assert!(matches!(err, DataError::Shape { .. }), "{err}");
        let data = Dataset::new(vec![1.0, 2.0, 3.0, 4.0], vec![0, 2], 2, 3).unwrap();
        assert_eq!((data.len(), data.classes()), (2, 3));
    }

    #[test]
    fn new_names_the_example_with_a_label_outside_the_classes() {
        let err = Dataset::new(vec![0.0; 3], vec![0, 1, 3], 1, 3).unwrap_err();
        assert_eq!(err.to_string(), "example 2: label 3 is outside 0..3");
        let err = Dataset::new(vec![0.0; 2], vec![-1, 0], 1, 3).unwrap_err();
        assert_eq!(err.to_string(), "example 0: label -1 is outside 0..3");
        let data = Dataset::parse_csv("1,0\n2,1\n", 1.0).unwrap();
        let err = data.clone().with_classes(1).unwrap_err();
        assert_eq!(err.to_string(), "example 1: label 1 is outside 0..1");
        assert_eq!(data.with_classes(10).unwrap().classes(), 10);
    }

    #[test]
    fn new_names_the_example_and_feature_that_is_not_finite() {
        let err = Dataset::new(vec![0.0, 1.0, 2.0, f32::NAN], vec![0, 0], 2, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "example 1: feature 1 is NaN, not a finite number"
        );
        let err = Dataset::new(vec![f32::NEG_INFINITY], vec![0], 1, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "example 0: feature 0 is -inf, not a finite number"
        );
    }

    #[test]
    fn subset_of_a_missing_example_is_an_error() {
        let data = Dataset::parse_csv("1,0\n2,1\n", 1.0).unwrap();
        let err = data.subset(&[1, 2]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "example 2 does not exist: the data set has 2 examples"
        );
        let picked = data.subset(&[1, 1]).unwrap();
        assert_eq!(picked.features(), [2.0, 2.0]);
        assert_eq!(picked.labels(), [1, 1]);
    }

    #[test]
    fn split_is_seeded_and_covers_every_example() {
        let text: String = (0..10).map(|i| format!("{i},{}\n", i % 3)).collect();
        let data = Dataset::parse_csv(&text, 1.0).unwrap();
        let (train, test) = data.split(7, 5).unwrap();
        assert_eq!((train.len(), test.len()), (7, 3));
        assert_eq!((train.classes(), test.classes()), (3, 3));
        assert_eq!(data.split(7, 5).unwrap().0, train);
        let mut all: Vec<f32> = train
            .features()
            .iter()
            .chain(test.features())
            .copied()
            .collect();
        all.sort_by(f32::total_cmp);
        assert_eq!(all, (0..10).map(|i| i as f32).collect::<Vec<_>>());
    }
}
