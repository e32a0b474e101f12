//! Assembling training and validation matrices from a dataset's manifest and feature shards.

use aerial_shared::{keys, manifest, messages::Split, shards, store::StoreError, Store};
use ndarray::Array2;
use rand::{seq::SliceRandom, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Rows of one split.
pub struct Part {
    /// Tile ids.
    pub ids: Vec<String>,
    /// The tiles themselves, in the same order (to read their images again).
    pub tiles: Vec<aerial_shared::messages::Tile>,
    /// Features, one row per tile.
    pub x: Array2<f64>,
    /// Label indices.
    pub y: Vec<usize>,
}

/// Train and validation parts over a sorted label list.
pub struct Data {
    /// Labels, sorted; index = class.
    pub labels: Vec<String>,
    /// Training rows (after sampling).
    pub train: Part,
    /// Validation rows.
    pub val: Part,
    /// Test rows: the job's `test_frac` of the training tiles, kept out of training (empty
    /// without one).
    pub test: Part,
    /// Feature size.
    pub dim: usize,
    /// Labelled tiles that had no features (not featurized yet).
    pub missing: usize,
}

/// Why data could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Store trouble: retry later.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A tile read failed in a way another try may not repeat.
    #[error("{0}")]
    Transient(String),
    /// The dataset cannot be trained on as it is.
    #[error("{0}")]
    Unusable(String),
}

impl DataError {
    /// Whether another try may succeed (store trouble, a failed read) rather than repeat.
    pub fn is_transient(&self) -> bool {
        !matches!(self, DataError::Unusable(_))
    }

    /// What the worker does with the job that met this error: retry it later, or dead-letter
    /// it with the reason.
    pub fn outcome(&self) -> aerial_shared::worker::Outcome {
        use aerial_shared::worker::Outcome;
        if self.is_transient() {
            Outcome::Retry(self.to_string())
        } else {
            Outcome::Dead(self.to_string())
        }
    }
}

/// Keeps `frac` of each label's items (at least one), chosen with `seed`. Stratified: every
/// label keeps the same share, as `--sample-frac` promises.
pub fn stratified_sample<T: Clone>(items: &[(T, usize)], frac: f64, seed: u64) -> Vec<(T, usize)> {
    if frac >= 1.0 {
        return items.to_vec();
    }
    let mut by_label: BTreeMap<usize, Vec<&(T, usize)>> = BTreeMap::new();
    for it in items {
        by_label.entry(it.1).or_default().push(it);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (_, mut group) in by_label {
        group.shuffle(&mut rng);
        let keep = ((group.len() as f64 * frac).round() as usize).max(1);
        out.extend(group.into_iter().take(keep).cloned());
    }
    out
}

/// Labelled items: (id, label index).
pub type Items<T> = Vec<(T, usize)>;

/// Mixed into the seed of the test carve, so it is another draw than the validation hold-out.
const TEST_SEED: u64 = 0x7e57;

/// Splits the job's `test_frac` of each label's training items off as the test share
/// (seeded, stratified; nothing without one): (train, test).
pub fn carve_test<T: Clone + Ord>(
    train: Items<T>,
    test_frac: Option<f64>,
    seed: u64,
) -> (Items<T>, Items<T>) {
    match test_frac {
        Some(f) => hold_out(train, f, seed ^ TEST_SEED),
        None => (train, Vec::new()),
    }
}

/// Splits `frac` of each label's items (at least one, never a label's only item) off `items`,
/// seeded: (kept, held out).
pub fn hold_out<T: Clone + Ord>(items: Items<T>, frac: f64, seed: u64) -> (Items<T>, Items<T>) {
    let mut by_label: BTreeMap<usize, Items<T>> = BTreeMap::new();
    for it in items {
        by_label.entry(it.1).or_default().push(it);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut kept, mut held) = (Vec::new(), Vec::new());
    for (_, mut group) in by_label {
        group.shuffle(&mut rng);
        let n = if group.len() < 2 {
            0
        } else {
            ((group.len() as f64 * frac).round() as usize).clamp(1, group.len() - 1)
        };
        held.extend(group.drain(..n));
        kept.extend(group);
    }
    kept.sort();
    held.sort();
    (kept, held)
}

/// Feature vectors of one tile id: the image's sha256 they were computed from (`None` for
/// shards of earlier versions, which did not record it) and the vector.
type Versions = Vec<(Option<String>, Vec<f32>)>;

/// Loads every feature vector of `dataset`/`backbone`, keyed by tile id.
pub async fn load_features(
    store: &Store,
    dataset: &str,
    backbone: &str,
) -> Result<(HashMap<String, Versions>, usize), DataError> {
    let prefix = keys::feature_shards_prefix(dataset, backbone);
    let mut out: HashMap<String, Versions> = HashMap::new();
    let mut dim = 0;
    for obj in store.list(&prefix).await? {
        let bytes = store.get(&obj.key).await?;
        let shard =
            shards::decode(&bytes).map_err(|e| DataError::Unusable(format!("{}: {e}", obj.key)))?;
        dim = shard.dim;
        for (i, id) in shard.tile_ids.into_iter().enumerate() {
            let sha = shard.tile_sha256.as_ref().map(|h| h[i].clone());
            out.entry(id)
                .or_default()
                .push((sha, shard.features[i * dim..(i + 1) * dim].to_vec()));
        }
    }
    Ok((out, dim))
}

/// The vector computed from the image whose sha256 is `sha256`; an unhashed one (older
/// shard) when there is none; nothing when only other images' features exist.
fn current(versions: Versions, sha256: &str) -> Option<Vec<f32>> {
    let mut unhashed = None;
    for (h, v) in versions {
        match h {
            Some(h) if h == sha256 => return Some(v),
            None => unhashed = Some(v),
            Some(_) => {}
        }
    }
    unhashed
}

/// Builds the train/val matrices of one labelled dataset or several learnt together
/// (`datasets[0]` first; tiles of the others are named `<dataset>:<tile id>` in the run's
/// records, so ids cannot collide). Labels are the sorted union of all their labels.
pub async fn load(
    store: &Store,
    datasets: &[String],
    backbone: &str,
    sample_frac: f64,
    test_frac: Option<f64>,
    seed: u64,
) -> Result<Data, DataError> {
    let mut labelled = Vec::new();
    let mut tiles = HashMap::new();
    let mut features = HashMap::new();
    let mut dim = 0;
    for (k, dataset) in datasets.iter().enumerate() {
        let rows = manifest::load(store, dataset).await?;
        let before = labelled.len();
        let name = |id: &str| {
            if k == 0 {
                id.to_string()
            } else {
                format!("{dataset}:{id}")
            }
        };
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|r| !r.label.is_empty() && !r.split.is_empty())
            .collect();
        let shas: HashMap<String, String> = rows
            .iter()
            .map(|r| (r.id.clone(), r.sha256.clone()))
            .collect();
        tiles.extend(
            rows.iter()
                .map(|r| (name(&r.id), r.to_tile(dataset, backbone))),
        );
        labelled.extend(rows.into_iter().map(|r| (name(&r.id), r.label, r.split)));
        if labelled.len() == before {
            return Err(DataError::Unusable(format!(
                "dataset {dataset} has no labelled tiles"
            )));
        }
        let (f, d) = load_features(store, dataset, backbone).await?;
        if dim != 0 && d != 0 && d != dim {
            return Err(DataError::Unusable(format!(
                "dataset {dataset} has {d}-wide features, the others {dim}"
            )));
        }
        dim = dim.max(d);
        // only features of the image the manifest names now: a tile whose image changed
        // under the same id counts as without features until it is featurized again
        features.extend(f.into_iter().filter_map(|(id, versions)| {
            let v = current(versions, shas.get(&id)?)?;
            Some((name(&id), v))
        }));
    }
    let labels: Vec<String> = labelled
        .iter()
        .map(|r| r.1.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut train = Vec::new();
    let mut val = Vec::new();
    let mut missing = 0;
    for (id, label, split) in &labelled {
        if !features.contains_key(id) {
            missing += 1;
            continue;
        }
        let item = (id.clone(), index[label.as_str()]);
        match split.as_str() {
            s if s == Split::Val.as_str() => val.push(item),
            _ => train.push(item),
        }
    }
    train.sort();
    val.sort();
    if val.is_empty() {
        // a dataset of labels alone (corrections are all `train`): hold out a seeded fifth
        // of each label that has at least two tiles, so the run still reports validation
        (train, val) = hold_out(train, 0.2, seed);
        tracing::info!(
            val = val.len(),
            seed,
            "no val split: a fifth of each label held out"
        );
    }
    let (train, test) = carve_test(train, test_frac, seed);
    let train = stratified_sample(&train, sample_frac, seed);
    let to_part = |items: Vec<(String, usize)>| {
        let mut x = Array2::<f64>::zeros((items.len(), dim));
        for (i, (id, _)) in items.iter().enumerate() {
            for (j, v) in features[id].iter().enumerate() {
                x[[i, j]] = f64::from(*v);
            }
        }
        Part {
            y: items.iter().map(|(_, y)| *y).collect(),
            tiles: items.iter().map(|(id, _)| tiles[id].clone()).collect(),
            ids: items.into_iter().map(|(id, _)| id).collect(),
            x,
        }
    };
    Ok(Data {
        labels,
        train: to_part(train),
        val: to_part(val),
        test: to_part(test),
        dim,
        missing,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn features_of_a_changed_image_are_not_used() {
        let v = |x: f32| vec![x; 2];
        let both = vec![
            (Some("old".to_string()), v(1.0)),
            (Some("new".to_string()), v(2.0)),
        ];
        assert_eq!(current(both.clone(), "new"), Some(v(2.0)));
        assert_eq!(
            current(both, "other"),
            None,
            "only another image's features"
        );
        let legacy = vec![(None, v(3.0)), (Some("old".to_string()), v(1.0))];
        assert_eq!(
            current(legacy, "new"),
            Some(v(3.0)),
            "unhashed shards are taken as current"
        );
    }

    #[test]
    fn store_trouble_and_failed_reads_are_retried_and_an_unusable_dataset_dead_lettered() {
        use aerial_shared::worker::Outcome;
        let store = DataError::Store(aerial_shared::store::StoreError::NotFound {
            key: "features/x".into(),
        });
        assert!(matches!(store.outcome(), Outcome::Retry(m) if m.contains("features/x")));
        let read = DataError::Transient("tile a: timed out".into());
        assert!(matches!(read.outcome(), Outcome::Retry(m) if m == "tile a: timed out"));
        let bad = DataError::Unusable("no label has two tiles".into());
        assert!(!bad.is_transient());
        assert!(matches!(bad.outcome(), Outcome::Dead(m) if m == "no label has two tiles"));
    }

    use super::*;

    #[test]
    fn quarter_of_each_class() {
        let mut items = Vec::new();
        for c in 0..3 {
            for i in 0..40 {
                items.push((format!("{c}-{i}"), c));
            }
        }
        let s = stratified_sample(&items, 0.25, 9);
        for c in 0..3 {
            assert_eq!(s.iter().filter(|(_, l)| *l == c).count(), 10);
        }
        assert_ne!(
            stratified_sample(&items, 0.25, 9),
            stratified_sample(&items, 0.25, 10)
        );
        assert_eq!(stratified_sample(&items, 1.0, 9).len(), 120);
    }

    #[test]
    fn hold_out_keeps_every_label_trainable() {
        let mut items = vec![("lonely".to_string(), 3)];
        for c in 0..3 {
            for i in 0..10 {
                items.push((format!("{c}-{i}"), c));
            }
        }
        let (kept, held) = hold_out(items.clone(), 0.2, 4);
        assert_eq!(kept.len() + held.len(), items.len());
        for c in 0..3 {
            assert_eq!(held.iter().filter(|(_, l)| *l == c).count(), 2);
        }
        assert!(
            kept.iter().any(|(_, l)| *l == 3),
            "a label's only tile stays in train"
        );
        assert_eq!(hold_out(items, 0.2, 4).1, held, "seeded");
    }

    #[test]
    fn the_test_carve_is_seeded_stratified_and_disjoint_from_training() {
        let items: Vec<(String, usize)> = (0..3)
            .flat_map(|c| (0..50).map(move |i| (format!("{c}-{i:02}"), c)))
            .collect();
        let (train, test) = carve_test(items.clone(), Some(0.2), 42);
        assert_eq!(train.len() + test.len(), 150);
        for c in 0..3 {
            assert_eq!(test.iter().filter(|(_, l)| *l == c).count(), 10);
        }
        assert!(test.iter().all(|t| !train.contains(t)), "no tile in both");
        assert_eq!(carve_test(items.clone(), Some(0.2), 42).1, test, "seeded");
        // another draw than the validation hold-out of the same seed
        assert_ne!(hold_out(items.clone(), 0.2, 42).1, test);
        let (all, none) = carve_test(items.clone(), None, 42);
        assert_eq!((all.len(), none.len()), (150, 0));
    }
}
