//! Accuracy assessment samples: a stratified random sample of one date of one score job's
//! map (strata = mapped classes, seeded, shown in random order), the analysts' reference
//! labels for it, and the estimates of [`crate::accuracy`] from them. These labels are only
//! ever used to measure maps, never to train.

use crate::accuracy::{self, Assessment, Estimate};
use crate::keys;
use crate::labels::{records, tile_hash, LabelRecord, MapCell};
use crate::store::StoreError;
use crate::Store;
use chrono::{DateTime, Utc};
use rand::{seq::SliceRandom, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One sampled unit of an assessment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampledTile {
    /// Tile id.
    pub tile_id: String,
    /// Its stratum: the class the design's map gave it (index into `classes`).
    pub stratum: usize,
}

/// A stratified random sample of one date of one score job's map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Design {
    /// Name (key segment), `<job>-<date>` by default.
    pub name: String,
    /// Region dataset.
    pub dataset: String,
    /// Score job whose map defines the strata.
    pub job: String,
    /// Run of that job.
    pub run: String,
    /// Date assessed.
    pub date: String,
    /// Seed of the draw.
    pub seed: u64,
    /// Units requested per stratum.
    pub per_class: u32,
    /// The map's classes (strata), in the run's label order.
    pub classes: Vec<String>,
    /// Units of each stratum on the map (`N_h`).
    pub stratum_units: Vec<u64>,
    /// Area of one unit (tile), hectares.
    pub unit_area_ha: f64,
    /// The sample, in the order the analyst sees it (shuffled).
    pub tiles: Vec<SampledTile>,
    /// When drawn.
    pub created_at: DateTime<Utc>,
}

/// Draws `per_class` tiles (fewer when a class has fewer) from each mapped class of `date`,
/// seeded, and shuffles them into the order the analyst will see.
#[allow(clippy::too_many_arguments)]
pub fn draw(
    name: &str,
    dataset: &str,
    job: &str,
    run: &str,
    date: &str,
    classes: &[String],
    cells: &[MapCell],
    per_class: u32,
    seed: u64,
    unit_area_ha: f64,
) -> Design {
    let index: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut strata: Vec<Vec<&str>> = vec![Vec::new(); classes.len()];
    for c in cells.iter().filter(|c| c.date == date) {
        if let Some(&h) = index.get(c.label.as_str()) {
            strata[h].push(c.tile_id.as_str());
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut tiles = Vec::new();
    for (h, ids) in strata.iter_mut().enumerate() {
        ids.sort_unstable();
        ids.shuffle(&mut rng);
        tiles.extend(ids.iter().take(per_class as usize).map(|id| SampledTile {
            tile_id: id.to_string(),
            stratum: h,
        }));
    }
    tiles.shuffle(&mut rng);
    Design {
        name: name.to_string(),
        dataset: dataset.to_string(),
        job: job.to_string(),
        run: run.to_string(),
        date: date.to_string(),
        seed,
        per_class,
        classes: classes.to_vec(),
        stratum_units: strata.iter().map(|s| s.len() as u64).collect(),
        unit_area_ha,
        tiles,
        created_at: Utc::now(),
    }
}

/// Stores a design.
pub async fn put_design(store: &Store, d: &Design) -> Result<(), StoreError> {
    store
        .put_json(&keys::assessment_design(&d.dataset, &d.name), d)
        .await
}

/// Reads a design.
pub async fn design(store: &Store, dataset: &str, name: &str) -> Result<Design, StoreError> {
    store
        .get_json(&keys::assessment_design(dataset, name))
        .await
}

/// The designs of a dataset (names).
pub async fn designs(store: &Store, dataset: &str) -> Result<Vec<String>, StoreError> {
    let prefix = keys::assessments_prefix(dataset);
    let mut names: Vec<String> = store
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|o| {
            o.key
                .strip_prefix(&prefix)?
                .strip_suffix("/design.json")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Stores an assessment label.
pub async fn put_reference(store: &Store, d: &Design, rec: &LabelRecord) -> Result<(), StoreError> {
    let key = format!(
        "{}{}.json",
        keys::assessment_labels_prefix(&d.dataset, &d.name),
        tile_hash(&rec.tile.tile_id)
    );
    store.put_json(&key, rec).await
}

/// The reference labels given so far to a design's sample (only of tiles in its sample).
pub async fn references(
    store: &Store,
    d: &Design,
) -> Result<BTreeMap<String, LabelRecord>, StoreError> {
    let mut refs = records(store, &keys::assessment_labels_prefix(&d.dataset, &d.name)).await?;
    let sampled: std::collections::HashSet<&str> =
        d.tiles.iter().map(|t| t.tile_id.as_str()).collect();
    refs.retain(|id, _| sampled.contains(id.as_str()));
    Ok(refs)
}

/// Accuracy of a design's own map from its labelled units (Olofsson et al.). Reference
/// classes the map does not have (a new class name) join the matrix as empty strata.
pub fn assess_design(
    d: &Design,
    refs: &BTreeMap<String, LabelRecord>,
) -> Result<Assessment, accuracy::AssessmentError> {
    let mut classes = d.classes.clone();
    for r in refs.values() {
        if !classes.contains(&r.label) {
            classes.push(r.label.clone());
        }
    }
    let q = classes.len();
    let mut counts = vec![vec![0u64; q]; q];
    for t in &d.tiles {
        if let Some(r) = refs.get(&t.tile_id) {
            let j = classes
                .iter()
                .position(|c| *c == r.label)
                .expect("added above");
            counts[t.stratum][j] += 1;
        }
    }
    let mut units = d.stratum_units.clone();
    units.resize(q, 0);
    accuracy::assess(&classes, &counts, &units, d.unit_area_ha)
}

/// Overall accuracy of any map of the same dataset and date (`labels_by_tile`: tile id →
/// that map's class) on a design's labelled units, with the design's strata.
pub fn overall_of_map(
    d: &Design,
    refs: &BTreeMap<String, LabelRecord>,
    labels_by_tile: &HashMap<String, String>,
) -> Option<Estimate> {
    let (mut strata, mut agree) = (Vec::new(), Vec::new());
    for t in &d.tiles {
        if let (Some(r), Some(m)) = (refs.get(&t.tile_id), labels_by_tile.get(&t.tile_id)) {
            strata.push(t.stratum);
            agree.push(*m == r.label);
        }
    }
    accuracy::overall_on_design(&strata, &agree, &d.stratum_units)
}

/// An assessment as CSV: one row per class (mapped and estimated area in hectares, user's and
/// producer's accuracy, 95 % half-widths), then the overall accuracy, then the matrix.
pub fn assessment_csv(a: &Assessment) -> Vec<u8> {
    let f = |e: Option<Estimate>| {
        (
            e.map(|e| format!("{:.4}", e.value)).unwrap_or_default(),
            e.and_then(|e| e.ci95)
                .map(|c| format!("{c:.4}"))
                .unwrap_or_default(),
        )
    };
    // flexible: the matrix below has one column per class, the table above ten
    let mut w = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(Vec::new());
    w.write_record([
        "class",
        "mapped_tiles",
        "sampled",
        "mapped_area_ha",
        "estimated_area_ha",
        "area_ci95_ha",
        "users_accuracy",
        "users_ci95",
        "producers_accuracy",
        "producers_ci95",
    ])
    .expect("memory");
    for c in &a.per_class {
        let (u, uc) = f(c.users);
        let (p, pc) = f(c.producers);
        w.write_record([
            crate::labels::csv_cell(&c.class),
            c.mapped_units.to_string(),
            c.sampled.to_string(),
            format!("{:.2}", c.mapped_area),
            format!("{:.2}", c.area.value),
            c.area.ci95.map(|v| format!("{v:.2}")).unwrap_or_default(),
            u,
            uc,
            p,
            pc,
        ])
        .expect("memory");
    }
    let (o, oc) = f(Some(a.overall));
    let blank = || String::new();
    w.write_record([
        "overall".to_string(),
        blank(),
        a.counts.iter().flatten().sum::<u64>().to_string(),
        format!("{:.2}", a.total_area),
        blank(),
        blank(),
        o,
        oc,
        blank(),
        blank(),
    ])
    .expect("memory");
    // the confusion matrix, rows = map, columns = reference, after an empty line
    w.write_record(std::iter::repeat_n("", 10)).expect("memory");
    let mut head = vec!["map \\ reference".to_string()];
    head.extend(a.classes.iter().map(|c| crate::labels::csv_cell(c)));
    head.resize(head.len().max(10), String::new());
    w.write_record(&head).expect("memory");
    for (c, row) in a.classes.iter().zip(&a.counts) {
        let mut rec = vec![crate::labels::csv_cell(c)];
        rec.extend(row.iter().map(u64::to_string));
        rec.resize(rec.len().max(10), String::new());
        w.write_record(&rec).expect("memory");
    }
    w.into_inner().expect("memory")
}

/// A map's accuracy on one assessment sample of its dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapAccuracy {
    /// The sample's name.
    pub design: String,
    /// Its date.
    pub date: String,
    /// The job whose map it was drawn from (its strata).
    pub drawn_from: String,
    /// That job's run.
    pub run: String,
    /// Tiles in the sample.
    pub sample: usize,
    /// Of them labelled.
    pub labelled: usize,
    /// The draw's seed.
    pub seed: u64,
    /// Overall accuracy of the map asked about, with the sample's strata.
    pub overall_this_map: Option<Estimate>,
    /// The full table, when the map asked about is the one the sample was drawn from.
    pub assessment: Option<Assessment>,
}

/// The accuracy of job `job`'s map (`cells`) on every assessment sample of `dataset`.
pub async fn map_accuracy(
    store: &Store,
    dataset: &str,
    job: &str,
    cells: &[MapCell],
) -> Result<Vec<MapAccuracy>, StoreError> {
    let mut out = Vec::new();
    for name in designs(store, dataset).await? {
        let d = design(store, dataset, &name).await?;
        let refs = references(store, &d).await?;
        let ours: HashMap<String, String> = cells
            .iter()
            .filter(|c| c.date == d.date)
            .map(|c| (c.tile_id.clone(), c.label.clone()))
            .collect();
        out.push(MapAccuracy {
            overall_this_map: overall_of_map(&d, &refs, &ours),
            assessment: (d.job == job)
                .then(|| assess_design(&d, &refs).ok())
                .flatten(),
            sample: d.tiles.len(),
            labelled: refs.len(),
            design: d.name,
            date: d.date,
            drawn_from: d.job,
            run: d.run,
            seed: d.seed,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Tile;

    fn cells() -> Vec<MapCell> {
        let mut v = Vec::new();
        for i in 0..100u32 {
            let label = match i % 10 {
                0..=5 => "grass",
                6..=8 => "river_lake",
                _ => "field",
            };
            v.push(MapCell {
                tile_id: format!("2015-09-26/r{}c{}", i / 10, i % 10),
                date: "2015-09-26".into(),
                row: i / 10,
                col: i % 10,
                label: label.into(),
                confidence: 0.9,
                probs: vec![],
            });
        }
        v
    }

    #[test]
    fn draw_is_stratified_seeded_and_capped() {
        let classes: Vec<String> = ["field", "forest", "grass", "river_lake"]
            .map(String::from)
            .to_vec();
        let d = draw(
            "a",
            "region",
            "j",
            "r",
            "2015-09-26",
            &classes,
            &cells(),
            15,
            7,
            5.0625,
        );
        assert_eq!(d.stratum_units, vec![10, 0, 60, 30]);
        let per: Vec<usize> = (0..4)
            .map(|h| d.tiles.iter().filter(|t| t.stratum == h).count())
            .collect();
        assert_eq!(per, vec![10, 0, 15, 15], "fewer when a class has fewer");
        let mut ids: Vec<&str> = d.tiles.iter().map(|t| t.tile_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 40, "no tile drawn twice");
        let again = draw(
            "a",
            "region",
            "j",
            "r",
            "2015-09-26",
            &classes,
            &cells(),
            15,
            7,
            5.0625,
        );
        assert_eq!(again.tiles, d.tiles, "same seed, same sample and order");
        let other = draw(
            "a",
            "region",
            "j",
            "r",
            "2015-09-26",
            &classes,
            &cells(),
            15,
            8,
            5.0625,
        );
        assert_ne!(other.tiles, d.tiles);
        // shown in random order, not stratum by stratum
        let strata: Vec<usize> = d.tiles.iter().map(|t| t.stratum).collect();
        let mut sorted = strata.clone();
        sorted.sort_unstable();
        assert_ne!(strata, sorted);
    }

    fn rec(tile_id: &str, label: &str) -> LabelRecord {
        LabelRecord {
            tile: Tile {
                dataset: "region".into(),
                tile_id: tile_id.into(),
                key: "tiles/ab/x.pack".into(),
                range: None,
                sha256: "x".into(),
                label: None,
                split: None,
                date: Some("2015-09-26".into()),
                geo: None,
                backbone: "mobilenet_v2".into(),
            },
            label: label.into(),
            by: "ann".into(),
            at: Utc::now(),
            job: "j".into(),
            predicted: String::new(),
        }
    }

    #[test]
    fn assessment_counts_map_against_reference_and_new_classes() {
        let classes: Vec<String> = ["field", "grass", "river_lake"].map(String::from).to_vec();
        let d = draw(
            "a",
            "region",
            "j",
            "r",
            "2015-09-26",
            &classes,
            &cells(),
            5,
            1,
            5.0625,
        );
        let mut refs = BTreeMap::new();
        // every sampled grass tile is really cropland (a class the map does not know)
        for t in &d.tiles {
            let truth = if d.classes[t.stratum] == "grass" {
                "cropland"
            } else {
                d.classes[t.stratum].as_str()
            };
            refs.insert(t.tile_id.clone(), rec(&t.tile_id, truth));
        }
        let a = assess_design(&d, &refs).unwrap();
        assert_eq!(a.classes.last().unwrap(), "cropland");
        assert_eq!(a.counts[1][3], 5, "grass row, cropland column");
        // grass is 60 % of the map and always wrong: overall accuracy 0.4
        assert!((a.overall.value - 0.4).abs() < 1e-12, "{:?}", a.overall);
        let crop = &a.per_class[3];
        assert_eq!(crop.mapped_units, 0);
        assert!((crop.area.value - 60.0 * 5.0625).abs() < 1e-9);
        // a new map calling those tiles cropland scores 1 on the same design
        let fixed: HashMap<String, String> = refs
            .values()
            .map(|r| (r.tile.tile_id.clone(), r.label.clone()))
            .collect();
        assert_eq!(overall_of_map(&d, &refs, &fixed).unwrap().value, 1.0);
        let csv = String::from_utf8(assessment_csv(&a)).unwrap();
        assert!(csv.contains("overall,"), "{csv}");
        assert!(
            csv.contains("map \\ reference,field,grass,river_lake,cropland"),
            "{csv}"
        );
    }
}
