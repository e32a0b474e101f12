//! Classifiers on frozen CNN features: multinomial logistic regression (our L-BFGS fit in
//! [`crate::logistic`]; runs fitted earlier by `linfa-logistic` still load) and a random forest
//! (`linfa-ensemble`), both behind a per-feature standardiser, stored as JSON so train writes
//! and score/evaluate read the same thing.

use crate::logistic::{Lbfgs, Softmax};
use linfa::prelude::*;
use linfa_ensemble::RandomForestParams;
use linfa_logistic::MultiFittedLogisticRegression;
use linfa_trees::DecisionTree;
use ndarray::{Array1, Array2, Axis};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// Fitting failures.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// The linfa algorithm failed.
    #[error("fitting failed: {0}")]
    Linfa(String),
    /// Not enough data.
    #[error("cannot fit: {0}")]
    Data(String),
}

/// Per-feature standardisation learnt on the training set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Feature means.
    pub mean: Vec<f64>,
    /// Feature standard deviations (floored so constant features stay finite).
    pub std: Vec<f64>,
}

impl Standardizer {
    /// Learns mean and std of each column.
    pub fn fit(x: &Array2<f64>) -> Self {
        let mean = x.mean_axis(Axis(0)).expect("non-empty");
        let std = x.std_axis(Axis(0), 0.0).mapv(|s| s.max(1e-6));
        Self {
            mean: mean.to_vec(),
            std: std.to_vec(),
        }
    }

    /// Standardises `x` in place.
    pub fn apply(&self, x: &mut Array2<f64>) {
        let mean = Array1::from(self.mean.clone());
        let std = Array1::from(self.std.clone());
        *x -= &mean;
        *x /= &std;
    }
}

/// A fitted classifier over `n_classes` labels (indices into the run's sorted label list).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClassicModel {
    /// Multinomial logistic regression fitted by [`crate::logistic`] (`"kind": "softmax"`).
    Softmax {
        /// Feature scaling.
        scaler: Standardizer,
        /// Weights and intercepts.
        model: Softmax,
        /// Number of labels.
        n_classes: usize,
    },
    /// Multinomial logistic regression fitted by `linfa-logistic` (runs made before the
    /// L-BFGS fit; read, no longer written).
    Logistic {
        /// Feature scaling.
        scaler: Standardizer,
        /// linfa's fitted model.
        model: MultiFittedLogisticRegression<f64, usize>,
        /// Number of labels.
        n_classes: usize,
    },
    /// Random forest; probabilities are the trees' vote shares.
    RandomForest {
        /// Feature scaling.
        scaler: Standardizer,
        /// The trees.
        trees: Vec<DecisionTree<f64, usize>>,
        /// Columns each tree sees.
        features: Vec<Vec<usize>>,
        /// Number of labels.
        n_classes: usize,
    },
}

fn check(x: &Array2<f64>, y: &[usize], n_classes: usize) -> Result<(), FitError> {
    if x.nrows() == 0 || x.nrows() != y.len() {
        return Err(FitError::Data(format!(
            "{} rows, {} labels",
            x.nrows(),
            y.len()
        )));
    }
    let mut seen = vec![false; n_classes];
    y.iter().for_each(|&c| seen[c] = true);
    if seen.iter().any(|s| !s) {
        return Err(FitError::Data(
            "every label needs at least one training tile".into(),
        ));
    }
    Ok(())
}

impl ClassicModel {
    /// Fits multinomial logistic regression with L2 strength `l2` (scikit-learn's `1 / C`: the
    /// summed cross-entropy plus `l2 / 2 · ‖W‖²`) for at most `iterations` L-BFGS steps.
    pub fn fit_logistic(
        mut x: Array2<f64>,
        y: &[usize],
        n_classes: usize,
        iterations: u64,
        l2: f64,
    ) -> Result<Self, FitError> {
        check(&x, y, n_classes)?;
        if !(l2.is_finite() && l2 >= 0.0) {
            return Err(FitError::Data(format!(
                "l2 strength {l2} is not a finite number >= 0"
            )));
        }
        let scaler = Standardizer::fit(&x);
        scaler.apply(&mut x);
        let opts = Lbfgs {
            max_iterations: iterations.max(1) as usize,
            ..Lbfgs::default()
        };
        let (model, report) = Softmax::fit(x.view(), y, n_classes, l2, opts);
        tracing::info!(
            iterations = report.iterations,
            evaluations = report.evaluations,
            objective = report.objective,
            converged = report.converged,
            "logistic fit"
        );
        if !report.objective.is_finite() {
            return Err(FitError::Linfa(
                "the fit diverged (objective not finite)".into(),
            ));
        }
        Ok(Self::Softmax {
            scaler,
            model,
            n_classes,
        })
    }

    /// Fits `trees` depth-limited trees on bootstrap samples and random feature subsets.
    pub fn fit_forest(
        mut x: Array2<f64>,
        y: &[usize],
        n_classes: usize,
        trees: usize,
        max_depth: usize,
        seed: u64,
    ) -> Result<Self, FitError> {
        check(&x, y, n_classes)?;
        let scaler = Standardizer::fit(&x);
        scaler.apply(&mut x);
        let ds = Dataset::new(x, Array1::from(y.to_vec()));
        let rng = rand::rngs::StdRng::seed_from_u64(seed);
        let forest = RandomForestParams::new_fixed_rng(
            DecisionTree::params().max_depth(Some(max_depth)),
            rng,
        )
        .ensemble_size(trees)
        .bootstrap_proportion(0.7)
        .feature_proportion(0.2)
        .fit(&ds)
        .map_err(|e| FitError::Linfa(e.to_string()))?;
        Ok(Self::RandomForest {
            scaler,
            trees: forest.models,
            features: forest.model_features,
            n_classes,
        })
    }

    /// Class probabilities, `[rows, n_classes]`.
    pub fn predict_proba(&self, mut x: Array2<f64>) -> Array2<f64> {
        match self {
            Self::Softmax { scaler, model, .. } => {
                scaler.apply(&mut x);
                model.predict_proba(x.view())
            }
            Self::Logistic {
                scaler,
                model,
                n_classes,
            } => {
                scaler.apply(&mut x);
                let p = model.predict_probabilities(&x);
                // linfa's columns follow its own class list; map them onto label indices
                let mut out = Array2::zeros((x.nrows(), *n_classes));
                for (col, &class) in model.classes().iter().enumerate() {
                    out.column_mut(class).assign(&p.column(col));
                }
                out
            }
            Self::RandomForest {
                scaler,
                trees,
                features,
                n_classes,
            } => {
                scaler.apply(&mut x);
                let mut votes = Array2::<f64>::zeros((x.nrows(), *n_classes));
                for (tree, cols) in trees.iter().zip(features) {
                    let pred: Array1<usize> = tree.predict(&x.select(Axis(1), cols));
                    for (row, &c) in pred.iter().enumerate() {
                        votes[[row, c]] += 1.0;
                    }
                }
                votes / trees.len().max(1) as f64
            }
        }
    }
}

/// Index of the largest value of each row.
pub fn argmax_rows(p: &Array2<f64>) -> Vec<usize> {
    p.rows()
        .into_iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .fold((0, f64::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                .0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three separable blobs in 4-D.
    fn blobs() -> (Array2<f64>, Vec<usize>) {
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for c in 0..3usize {
            for i in 0..30 {
                let j = (i as f64 * 0.37).sin() * 0.3;
                rows.extend([c as f64 * 3.0 + j, -(c as f64) + j, 1.0 + j * 0.5, 5.0]);
                y.push(c);
            }
        }
        (Array2::from_shape_vec((90, 4), rows).unwrap(), y)
    }

    #[test]
    fn both_models_separate_blobs_and_survive_json() {
        let (x, y) = blobs();
        // a run fitted before the L-BFGS fit: linfa's model, `"kind": "logistic"`
        let legacy = {
            let mut xs = x.clone();
            let scaler = Standardizer::fit(&xs);
            scaler.apply(&mut xs);
            let model = linfa_logistic::MultiLogisticRegression::default()
                .max_iterations(50)
                .fit(&Dataset::new(xs, Array1::from(y.clone())))
                .unwrap();
            ClassicModel::Logistic {
                scaler,
                model,
                n_classes: 3,
            }
        };
        assert!(serde_json::to_string(&legacy)
            .unwrap()
            .starts_with(r#"{"kind":"logistic""#));
        let fitted = ClassicModel::fit_logistic(x.clone(), &y, 3, 100, 1.0).unwrap();
        assert!(serde_json::to_string(&fitted)
            .unwrap()
            .starts_with(r#"{"kind":"softmax""#));
        for m in [
            fitted,
            legacy,
            ClassicModel::fit_forest(x.clone(), &y, 3, 15, 4, 1).unwrap(),
        ] {
            let back: ClassicModel =
                serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            let p = back.predict_proba(x.clone());
            assert_eq!(p.dim(), (90, 3));
            for r in p.rows() {
                assert!((r.sum() - 1.0).abs() < 1e-9);
            }
            let acc = argmax_rows(&p)
                .iter()
                .zip(&y)
                .filter(|(a, b)| a == b)
                .count();
            assert!(acc >= 85, "{acc}/90");
        }
    }

    #[test]
    fn refuses_missing_class() {
        let (x, y) = blobs();
        assert!(matches!(
            ClassicModel::fit_logistic(x, &y, 4, 10, 0.01),
            Err(FitError::Data(_))
        ));
    }
}
