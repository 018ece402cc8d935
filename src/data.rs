//! Small in-memory data sets for examples and tests: dense f32 features with integer
//! class labels, loaded from (optionally gzipped) CSV.

use kiln_ir::Rng;
use std::io::Read;
use std::path::Path;
use thiserror::Error;

/// A data set that could not be read (the user's file or path).
#[derive(Debug, Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Format {
        path: String,
        line: usize,
        message: String,
    },
}

/// `len()` examples of `features_per_example` f32 features and one i32 label each.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub features: Vec<f32>,
    pub labels: Vec<i32>,
    pub features_per_example: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The features of example `index`.
    pub fn example(&self, index: usize) -> &[f32] {
        let width = self.features_per_example;
        &self.features[index * width..(index + 1) * width]
    }

    /// Reads a CSV file (gzipped if the name ends in `.gz`) whose rows are features
    /// followed by an integer label, with no header. Features are multiplied by `scale`.
    pub fn from_csv(path: &Path, scale: f32) -> Result<Dataset, DataError> {
        let shown = path.display().to_string();
        let io = |source| DataError::Io {
            path: shown.clone(),
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
        Dataset::parse_csv(&text, scale).map_err(|(line, message)| DataError::Format {
            path: shown.clone(),
            line,
            message,
        })
    }

    /// Parses CSV text (see `from_csv`); errors carry the 1-based line number.
    pub fn parse_csv(text: &str, scale: f32) -> Result<Dataset, (usize, String)> {
        let mut data = Dataset {
            features: Vec::new(),
            labels: Vec::new(),
            features_per_example: 0,
        };
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
            if data.labels.is_empty() {
                data.features_per_example = width;
            } else if width != data.features_per_example {
                return Err((
                    line_no,
                    format!(
                        "expected {} features, found {width}",
                        data.features_per_example
                    ),
                ));
            }
            for field in &fields[..width] {
                let value: f32 = field
                    .parse()
                    .map_err(|_| (line_no, format!("feature {field:?} is not a number")))?;
                data.features.push(value * scale);
            }
            let label = fields[width];
            let label: f64 = label
                .parse()
                .map_err(|_| (line_no, format!("label {label:?} is not a number")))?;
            if label.fract() != 0.0 || label < 0.0 || label > f64::from(i32::MAX) {
                return Err((line_no, format!("label {label} is not a class index")));
            }
            data.labels.push(label as i32);
        }
        Ok(data)
    }

    /// The examples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(indices.len() * self.features_per_example);
        for &index in indices {
            features.extend_from_slice(self.example(index));
        }
        Dataset {
            features,
            labels: indices.iter().map(|&index| self.labels[index]).collect(),
            features_per_example: self.features_per_example,
        }
    }

    /// A seeded random split into `first` examples and the rest.
    pub fn split(&self, first: usize, seed: u64) -> (Dataset, Dataset) {
        let mut order: Vec<usize> = (0..self.len()).collect();
        Rng::new(seed).shuffle(&mut order);
        let first = first.min(order.len());
        (self.subset(&order[..first]), self.subset(&order[first..]))
    }

    /// The number of classes: one more than the largest label.
    pub fn num_classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&max| max as usize + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_scales_features() {
        let data = Dataset::parse_csv("0,16,1\n8,4,0\n", 1.0 / 16.0).unwrap();
        assert_eq!(data.features, vec![0.0, 1.0, 0.5, 0.25]);
        assert_eq!(data.labels, vec![1, 0]);
        assert_eq!(data.features_per_example, 2);
        assert_eq!(data.num_classes(), 2);
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
    fn split_is_seeded_and_covers_every_example() {
        let text: String = (0..10).map(|i| format!("{i},{}\n", i % 3)).collect();
        let data = Dataset::parse_csv(&text, 1.0).unwrap();
        let (train, test) = data.split(7, 5);
        assert_eq!((train.len(), test.len()), (7, 3));
        assert_eq!(data.split(7, 5).0, train);
        let mut all: Vec<f32> = train
            .features
            .iter()
            .chain(&test.features)
            .copied()
            .collect();
        all.sort_by(f32::total_cmp);
        assert_eq!(all, (0..10).map(|i| i as f32).collect::<Vec<_>>());
    }
}
