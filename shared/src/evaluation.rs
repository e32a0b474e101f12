//! Classification metrics, computed from a confusion matrix: accuracy, and per class
//! precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = harmonic mean of the two.
//! (The reference notebook divided recall by TN + FN; this does not.)

use serde::{Deserialize, Serialize};

/// Metrics of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Label.
    pub label: String,
    /// TP / (TP + FP); 0 when nothing was predicted as this class.
    pub precision: f64,
    /// TP / (TP + FN); 0 when the class has no true samples.
    pub recall: f64,
    /// 2PR / (P + R); 0 when both are 0.
    pub f1: f64,
    /// True samples of the class.
    pub support: u64,
}

/// Everything measured on one labelled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Correct / total.
    pub accuracy: f64,
    /// Samples evaluated.
    pub total: u64,
    /// `confusion[true][predicted]` counts, rows and columns in `labels` order.
    pub confusion: Vec<Vec<u64>>,
    /// Per-class metrics in `labels` order.
    pub per_class: Vec<ClassMetrics>,
    /// Unweighted mean F1.
    pub macro_f1: f64,
}

/// Builds the confusion matrix and metrics from (true, predicted) class indices.
pub fn evaluate(labels: &[String], pairs: impl IntoIterator<Item = (usize, usize)>) -> Evaluation {
    let k = labels.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for (t, p) in pairs {
        confusion[t][p] += 1;
    }
    from_confusion(labels, confusion)
}

/// Metrics of a given confusion matrix (`[true][predicted]`).
pub fn from_confusion(labels: &[String], confusion: Vec<Vec<u64>>) -> Evaluation {
    let k = labels.len();
    let total: u64 = confusion.iter().flatten().sum();
    let correct: u64 = (0..k).map(|i| confusion[i][i]).sum();
    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let predicted: u64 = (0..k).map(|t| confusion[t][c]).sum();
            let actual: u64 = confusion[c].iter().sum();
            let precision = if predicted > 0 {
                tp / predicted as f64
            } else {
                0.0
            };
            let recall = if actual > 0 { tp / actual as f64 } else { 0.0 };
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassMetrics {
                label: labels[c].clone(),
                precision,
                recall,
                f1,
                support: actual,
            }
        })
        .collect();
    let macro_f1 = if k > 0 {
        per_class.iter().map(|m| m.f1).sum::<f64>() / k as f64
    } else {
        0.0
    };
    Evaluation {
        accuracy: if total > 0 {
            correct as f64 / total as f64
        } else {
            0.0
        },
        total,
        confusion,
        per_class,
        macro_f1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_three_class_matrix() {
        // rows = true, cols = predicted
        //          a  b  c
        //   a  [   5, 2, 0 ]
        //   b  [   1, 3, 1 ]
        //   c  [   0, 0, 4 ]
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let e = from_confusion(&labels, vec![vec![5, 2, 0], vec![1, 3, 1], vec![0, 0, 4]]);
        assert_eq!(e.total, 16);
        assert!((e.accuracy - 12.0 / 16.0).abs() < 1e-12);
        // a: TP 5, FP 1 (b predicted as a), FN 2 -> P 5/6, R 5/7
        let a = &e.per_class[0];
        assert!((a.precision - 5.0 / 6.0).abs() < 1e-12);
        assert!((a.recall - 5.0 / 7.0).abs() < 1e-12);
        assert!((a.f1 - 2.0 * (5.0 / 6.0) * (5.0 / 7.0) / (5.0 / 6.0 + 5.0 / 7.0)).abs() < 1e-12);
        // b: TP 3, FP 2, FN 2 -> P 0.6, R 0.6, F1 0.6
        let b = &e.per_class[1];
        assert!(
            (b.precision - 0.6).abs() < 1e-12
                && (b.recall - 0.6).abs() < 1e-12
                && (b.f1 - 0.6).abs() < 1e-12
        );
        // c: TP 4, FP 1, FN 0 -> P 0.8, R 1
        let c = &e.per_class[2];
        assert!((c.precision - 0.8).abs() < 1e-12 && (c.recall - 1.0).abs() < 1e-12);
        assert_eq!((a.support, b.support, c.support), (7, 5, 4));
    }

    #[test]
    fn empty_class_has_zero_not_nan() {
        let labels: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let e = evaluate(&labels, [(0, 0), (0, 0)]);
        assert_eq!(e.per_class[1].precision, 0.0);
        assert_eq!(e.per_class[1].recall, 0.0);
        assert_eq!(e.accuracy, 1.0);
    }
}
