//! Evaluation metrics computed on the host from a model's outputs.

/// The index of the largest value of `row` (the first one on ties); 0 for an empty row.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (index, &value) in row.iter().enumerate() {
        if value > row[best] {
            best = index;
        }
    }
    best
}

/// The fraction of rows of `logits` (`labels.len()` rows of `classes` scores) whose
/// largest score is at the label.
pub fn accuracy(logits: &[f32], labels: &[i32], classes: usize) -> f64 {
    if labels.is_empty() || classes == 0 {
        return 0.0;
    }
    let correct = logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, &label)| usize::try_from(label).is_ok_and(|label| argmax(row) == label))
        .count();
    correct as f64 / labels.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_rows_whose_argmax_is_the_label() {
        let logits = [
            0.1, 0.9, 0.0, /* */ 2.0, 1.0, 0.0, /* */ 0.0, 0.0, 5.0,
        ];
        assert_eq!(accuracy(&logits, &[1, 1, 2], 3), 2.0 / 3.0);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(accuracy(&[], &[], 3), 0.0);
    }
}
