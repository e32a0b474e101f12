//! Accuracy assessment of a map from a stratified random sample of its units, by the
//! estimators of Olofsson et al. (2014), "Good practices for estimating area and assessing
//! accuracy of land change", Remote Sensing of Environment 148, 42–57 (eqs. 1–11).
//!
//! The strata are the map's classes: stratum `i` holds `N_i` map units (tiles) of mapped class
//! `i`, of which `n_i` were sampled and labelled by an analyst. From the sample's confusion
//! matrix `n_ij` (map `i`, reference `j`) it estimates overall, user's and producer's accuracy
//! and each class's area corrected for the map's errors, each with a 95 % confidence
//! interval (± 1.96 standard errors). Pixel counts of the map alone are biased by its errors;
//! these are not.

use serde::{Deserialize, Serialize};

/// z for a two-sided 95 % interval.
pub const Z95: f64 = 1.96;

/// An estimate and the half-width of its 95 % confidence interval (`None` when the sample
/// cannot give one, e.g. a stratum with a single sampled unit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Point estimate.
    pub value: f64,
    /// ± this for 95 %.
    pub ci95: Option<f64>,
}

impl Estimate {
    fn new(value: f64, variance: Option<f64>) -> Self {
        Self {
            value,
            ci95: variance
                .filter(|v| v.is_finite())
                .map(|v| Z95 * v.max(0.0).sqrt()),
        }
    }
}

/// Results for one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassAccuracy {
    /// Class name.
    pub class: String,
    /// Units the map gives this class (`N_i`).
    pub mapped_units: u64,
    /// Mapped area (`N_i` × unit area).
    pub mapped_area: f64,
    /// Sampled units in this stratum (`n_i`).
    pub sampled: u64,
    /// User's accuracy (1 − commission error): of what the map calls this class, the share
    /// that is. `None` when the stratum has no sample.
    pub users: Option<Estimate>,
    /// Producer's accuracy (1 − omission error): of what is this class, the share the map
    /// calls so. `None` when no sampled unit is this class.
    pub producers: Option<Estimate>,
    /// Area of the class estimated from the reference labels (error-adjusted).
    pub area: Estimate,
}

/// A whole assessment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// Class names, in matrix order (strata and reference classes share it).
    pub classes: Vec<String>,
    /// Sample counts, `counts[map][reference]`.
    pub counts: Vec<Vec<u64>>,
    /// Overall accuracy.
    pub overall: Estimate,
    /// Per class.
    pub per_class: Vec<ClassAccuracy>,
    /// Area of one map unit (e.g. hectares per tile).
    pub unit_area: f64,
    /// Total mapped area.
    pub total_area: f64,
    /// Mapped classes with units on the map but no sampled unit: their area is left out of
    /// every estimate, which is then biased; say so where the numbers are shown.
    pub unsampled_strata: Vec<String>,
    /// Sampled classes with a single labelled unit: no variance can be estimated for them, so
    /// the intervals that depend on them are not given.
    pub single_unit_strata: Vec<String>,
}

/// Why an assessment cannot be computed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AssessmentError {
    /// Dimensions do not agree.
    #[error("{0}")]
    Shape(String),
    /// Nothing sampled.
    #[error("the sample holds no labelled unit")]
    Empty,
}

/// Estimates accuracy and area from a stratified sample.
///
/// `classes[k]` names row and column `k` of `counts` (`counts[i][j]`: sampled units mapped
/// `i` and labelled `j`); `mapped_units[i]` is `N_i`, the units the map gives class `i`;
/// `unit_area` converts units to area.
pub fn assess(
    classes: &[String],
    counts: &[Vec<u64>],
    mapped_units: &[u64],
    unit_area: f64,
) -> Result<Assessment, AssessmentError> {
    let q = classes.len();
    if counts.len() != q || mapped_units.len() != q || counts.iter().any(|r| r.len() != q) {
        return Err(AssessmentError::Shape(format!(
            "{q} classes but a {}-row matrix and {} strata",
            counts.len(),
            mapped_units.len()
        )));
    }
    let n_row: Vec<f64> = counts
        .iter()
        .map(|r| r.iter().sum::<u64>() as f64)
        .collect();
    if n_row.iter().sum::<f64>() == 0.0 {
        return Err(AssessmentError::Empty);
    }
    // only sampled strata enter the estimates; their weights are renormalised over them
    let sampled = |i: usize| n_row[i] > 0.0;
    let n_total: f64 = (0..q)
        .filter(|&i| sampled(i))
        .map(|i| mapped_units[i] as f64)
        .sum();
    let w: Vec<f64> = (0..q)
        .map(|i| {
            if sampled(i) && n_total > 0.0 {
                mapped_units[i] as f64 / n_total
            } else {
                0.0
            }
        })
        .collect();
    let frac = |i: usize, j: usize| {
        if sampled(i) {
            counts[i][j] as f64 / n_row[i]
        } else {
            0.0
        }
    };
    // the variance term of a proportion estimated in stratum i, None when n_i < 2
    let var_term = |i: usize, p: f64| {
        if n_row[i] > 1.0 {
            Some(p * (1.0 - p) / (n_row[i] - 1.0))
        } else {
            None
        }
    };
    let sum_opt = |terms: Vec<Option<f64>>| terms.into_iter().sum::<Option<f64>>();
    // overall accuracy (eqs. 1 and 5)
    let overall = Estimate::new(
        (0..q).map(|i| w[i] * frac(i, i)).sum(),
        sum_opt(
            (0..q)
                .filter(|&i| sampled(i))
                .map(|i| var_term(i, frac(i, i)).map(|v| w[i] * w[i] * v))
                .collect(),
        ),
    );
    let total_area = n_total * unit_area;
    let mut per_class = Vec::with_capacity(q);
    for k in 0..q {
        // estimated area proportion of reference class k (eqs. 9 and 10)
        let p_k: f64 = (0..q).map(|i| w[i] * frac(i, k)).sum();
        let var_p = sum_opt(
            (0..q)
                .filter(|&i| sampled(i))
                .map(|i| var_term(i, frac(i, k)).map(|v| w[i] * w[i] * v))
                .collect(),
        );
        let area = Estimate::new(p_k * total_area, var_p.map(|v| v * total_area * total_area));
        let users = sampled(k).then(|| Estimate::new(frac(k, k), var_term(k, frac(k, k))));
        // producer's accuracy (eqs. 3 and 7), with estimated reference totals N̂_·k
        let producers = (p_k > 0.0).then(|| {
            let p = w[k] * frac(k, k) / p_k;
            let n_hat_k: f64 = (0..q)
                .filter(|&i| sampled(i))
                .map(|i| mapped_units[i] as f64 * frac(i, k))
                .sum();
            let nk = mapped_units[k] as f64;
            let own = var_term(k, frac(k, k))
                .map(|v| nk * nk * (1.0 - p) * (1.0 - p) * v)
                .or(if sampled(k) { None } else { Some(0.0) });
            let others = sum_opt(
                (0..q)
                    .filter(|&i| i != k && sampled(i))
                    .map(|i| {
                        let ni = mapped_units[i] as f64;
                        var_term(i, frac(i, k)).map(|v| ni * ni * v)
                    })
                    .collect(),
            );
            let var = match (own, others) {
                (Some(a), Some(b)) => Some((a + p * p * b) / (n_hat_k * n_hat_k)),
                _ => None,
            };
            Estimate::new(p, var)
        });
        per_class.push(ClassAccuracy {
            class: classes[k].clone(),
            mapped_units: mapped_units[k],
            mapped_area: mapped_units[k] as f64 * unit_area,
            sampled: n_row[k] as u64,
            users,
            producers,
            area,
        });
    }
    Ok(Assessment {
        classes: classes.to_vec(),
        counts: counts.to_vec(),
        overall,
        per_class,
        unit_area,
        total_area,
        unsampled_strata: (0..q)
            .filter(|&i| !sampled(i) && mapped_units[i] > 0)
            .map(|i| classes[i].clone())
            .collect(),
        single_unit_strata: (0..q)
            .filter(|&i| n_row[i] == 1.0)
            .map(|i| classes[i].clone())
            .collect(),
    })
}

/// Overall accuracy of another map (e.g. after retraining) on a sample drawn for the first:
/// the strata stay those of the sample's design (Stehman 2014, "Estimating area and map
/// accuracy for stratified random sampling when the strata are different from the map
/// classes", IJRS 35). `strata[u]` is unit `u`'s stratum, `agree[u]` whether the new map
/// matches its reference label, `stratum_units[h]` the units of stratum `h` on the map the
/// sample was drawn from.
pub fn overall_on_design(
    strata: &[usize],
    agree: &[bool],
    stratum_units: &[u64],
) -> Option<Estimate> {
    let h_n = stratum_units.len();
    let mut n = vec![0.0f64; h_n];
    let mut hits = vec![0.0f64; h_n];
    for (&h, &a) in strata.iter().zip(agree) {
        n[h] += 1.0;
        hits[h] += f64::from(u8::from(a));
    }
    let total: f64 = (0..h_n)
        .filter(|&h| n[h] > 0.0)
        .map(|h| stratum_units[h] as f64)
        .sum();
    if total == 0.0 {
        return None;
    }
    let mut value = 0.0;
    let mut var = Some(0.0);
    for h in (0..h_n).filter(|&h| n[h] > 0.0) {
        let wh = stratum_units[h] as f64 / total;
        let p = hits[h] / n[h];
        value += wh * p;
        var = match var {
            Some(v) if n[h] > 1.0 => Some(v + wh * wh * p * (1.0 - p) / (n[h] - 1.0)),
            _ => None,
        };
    }
    Some(Estimate::new(value, var))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Olofsson et al. 2014, section 5 (Table 8): Landsat 30 m pixels (0.09 ha), classes
    /// deforestation, forest gain, stable forest, stable non-forest.
    fn paper() -> Assessment {
        let classes: Vec<String> = [
            "deforestation",
            "gain",
            "stable forest",
            "stable non-forest",
        ]
        .map(String::from)
        .to_vec();
        let counts = vec![
            vec![66, 0, 5, 4],
            vec![0, 55, 8, 12],
            vec![1, 0, 153, 11],
            vec![2, 1, 9, 313],
        ];
        let mapped = [200_000, 150_000, 3_200_000, 6_450_000];
        assess(&classes, &counts, &mapped, 0.09).unwrap()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn worked_example_of_the_paper() {
        let a = paper();
        // overall accuracy 0.947 ± 0.018 (the paper's section 5)
        assert!(close(a.overall.value, 0.947, 0.0005), "{:?}", a.overall);
        assert!(
            close(a.overall.ci95.unwrap(), 0.018, 0.0005),
            "{:?}",
            a.overall
        );
        // user's accuracy 0.88 ± 0.07, 0.73 ± 0.10, 0.93 ± 0.04, 0.96 ± 0.02
        let users = [(0.88, 0.07), (0.73, 0.10), (0.93, 0.04), (0.96, 0.02)];
        // producer's accuracy 0.75 ± 0.21, 0.85, 0.93 ± 0.03, 0.96. The paper prints the
        // half-widths of forest gain and stable non-forest as ± 0.23 and ± 0.01, which its
        // own eq. 7 does not give: it gives ± 0.254 and ± 0.018, as do the independent
        // reproductions we checked (PyMapAccuracy's tests; accuracyAssessmentTools leaves
        // those two out, calling them a rounding error in the paper). We test eq. 7's values.
        let producers = [(0.75, 0.21), (0.85, 0.254), (0.93, 0.03), (0.96, 0.018)];
        // error-adjusted areas (ha): 21,158 ± 6,158; 11,686 ± 3,756; 285,770 ± 15,510;
        // 581,386 ± 16,282
        let areas = [
            (21_158.0, 6_158.0),
            (11_686.0, 3_756.0),
            (285_770.0, 15_510.0),
            (581_386.0, 16_282.0),
        ];
        for (k, c) in a.per_class.iter().enumerate() {
            let u = c.users.unwrap();
            assert!(close(u.value, users[k].0, 0.005), "{k} users {u:?}");
            assert!(close(u.ci95.unwrap(), users[k].1, 0.005), "{k} users {u:?}");
            let p = c.producers.unwrap();
            assert!(close(p.value, producers[k].0, 0.005), "{k} producers {p:?}");
            assert!(
                close(p.ci95.unwrap(), producers[k].1, 0.005),
                "{k} producers {p:?}"
            );
            assert!(
                close(c.area.value, areas[k].0, 1.0),
                "{k} area {:?}",
                c.area
            );
            assert!(
                close(c.area.ci95.unwrap(), areas[k].1, 1.0),
                "{k} area {:?}",
                c.area
            );
        }
        assert!(close(a.total_area, 900_000.0, 1e-6));
        let sum: f64 = a.per_class.iter().map(|c| c.area.value).sum();
        assert!(close(sum, a.total_area, 1e-6), "areas add up to the map");
        assert!(a.unsampled_strata.is_empty());
    }

    #[test]
    fn design_based_overall_matches_for_the_same_map() {
        // the paper's sample, unit by unit: a "new" map equal to the old one must give the
        // same overall accuracy and interval as eq. 1 / 5
        let a = paper();
        let (mut strata, mut agree) = (Vec::new(), Vec::new());
        for (i, row) in a.counts.iter().enumerate() {
            for (j, &n) in row.iter().enumerate() {
                for _ in 0..n {
                    strata.push(i);
                    agree.push(i == j);
                }
            }
        }
        let e =
            overall_on_design(&strata, &agree, &[200_000, 150_000, 3_200_000, 6_450_000]).unwrap();
        assert!(close(e.value, a.overall.value, 1e-12));
        assert!(close(e.ci95.unwrap(), a.overall.ci95.unwrap(), 1e-12));
        // a map right everywhere on the sample: accuracy 1 with no spread
        let all = vec![true; agree.len()];
        let e =
            overall_on_design(&strata, &all, &[200_000, 150_000, 3_200_000, 6_450_000]).unwrap();
        assert_eq!((e.value, e.ci95), (1.0, Some(0.0)));
    }

    #[test]
    fn small_and_missing_strata_are_said_not_hidden() {
        let classes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        // stratum b has one sampled unit (no variance), c none at all
        let counts = vec![vec![4, 1, 0], vec![0, 1, 0], vec![0, 0, 0]];
        let a = assess(&classes, &counts, &[60, 30, 10], 5.0625).unwrap();
        assert_eq!(a.unsampled_strata, vec!["c".to_string()]);
        assert_eq!(a.single_unit_strata, vec!["b".to_string()]);
        assert_eq!(a.per_class[1].users.unwrap().ci95, None);
        assert!(a.per_class[2].users.is_none());
        assert!(a.overall.ci95.is_none());
        assert!(close(a.total_area, 90.0 * 5.0625, 1e-9));
        assert_eq!(
            assess(
                &classes,
                &[vec![0; 3], vec![0; 3], vec![0; 3]],
                &[1, 1, 1],
                1.0
            ),
            Err(AssessmentError::Empty)
        );
        assert!(matches!(
            assess(&classes, &counts, &[1, 1], 1.0),
            Err(AssessmentError::Shape(_))
        ));
    }
}
