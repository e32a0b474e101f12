//! Analysts' labels on a mapped region's own tiles, for two uses kept apart:
//!
//! - **Corrections** join a labelled dataset (default `<region>-labels`): one record per tile
//!   (`datasets/<labels>/labels/<hash>.json`, who and when included) and one manifest part
//!   per tile pointing at the same tile bytes, split `train`, so `aerial train` learns from
//!   them alone or beside another dataset.
//! - **Assessment** labels belong to a sample design drawn from one score job's map
//!   (stratified by mapped class, seeded) and are only ever used to measure maps
//!   ([`crate::accuracy`]), never to train.

use crate::accuracy::{self, Assessment, Estimate};
use crate::keys;
use crate::manifest::ManifestRow;
use crate::messages::{Split, Tile};
use crate::store::StoreError;
use crate::Store;
use chrono::{DateTime, Utc};
use rand::{seq::SliceRandom, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Longest label or analyst name accepted.
pub const MAX_NAME: usize = 64;

/// Checks a class name typed by an analyst: 1–64 of `[a-z0-9_]`, starting with a letter (the
/// dataset's classes all are), so it is safe in CSV headers, keys and pages.
pub fn validate_class(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "label {name:?} is not a class name: 1-{MAX_NAME} of a-z, 0-9, _ starting with a letter"
        ))
    }
}

/// Checks who labelled: 1–64 printable characters.
pub fn validate_analyst(name: &str) -> Result<(), String> {
    if name.trim().is_empty()
        || name.chars().count() > MAX_NAME
        || name.chars().any(char::is_control)
    {
        return Err("analyst name must be 1-64 printable characters".into());
    }
    Ok(())
}

/// One label given to one tile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelRecord {
    /// The tile (its bytes, date and footprint as in the region's manifest).
    pub tile: Tile,
    /// The class the analyst gave it.
    pub label: String,
    /// Who.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Score job whose map was being corrected or assessed.
    pub job: String,
    /// What that map said.
    pub predicted: String,
}

fn tile_hash(tile_id: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(tile_id.as_bytes()))[..32].to_string()
}

/// Key of a correction label record.
pub fn correction_key(labels_dataset: &str, tile_id: &str) -> String {
    format!(
        "{}{}.json",
        keys::label_records_prefix(labels_dataset),
        tile_hash(tile_id)
    )
}

/// Stores a correction in `labels_dataset`: the record, then the tile's manifest part (split
/// `train`). Relabelling a tile overwrites both.
pub async fn put_correction(
    store: &Store,
    labels_dataset: &str,
    rec: &LabelRecord,
) -> Result<Tile, StoreError> {
    let mut tile = rec.tile.clone();
    tile.dataset = labels_dataset.to_string();
    tile.label = Some(rec.label.clone());
    tile.split = Some(Split::Train);
    store
        .put_json(&correction_key(labels_dataset, &tile.tile_id), rec)
        .await?;
    let mut row = ManifestRow::from_tile(&tile, &format!("{}:{}", rec.tile.dataset, rec.job));
    row.labelled_by = Some(rec.by.clone());
    row.labelled_at = Some(rec.at);
    store
        .put(
            &keys::manifest_part(
                labels_dataset,
                &format!("label-{}", tile_hash(&tile.tile_id)),
            ),
            crate::manifest::to_csv(&[row]),
        )
        .await?;
    Ok(tile)
}

/// Every record under a prefix, keyed by tile id.
async fn records(store: &Store, prefix: &str) -> Result<BTreeMap<String, LabelRecord>, StoreError> {
    use futures::StreamExt;
    let objs = store.list(prefix).await?;
    let got: Vec<Result<LabelRecord, StoreError>> = futures::stream::iter(objs)
        .map(|o| async move { store.get_json::<LabelRecord>(&o.key).await })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut out = BTreeMap::new();
    for r in got {
        let r = r?;
        out.insert(r.tile.tile_id.clone(), r);
    }
    Ok(out)
}

/// The corrections of a labels dataset.
pub async fn corrections(
    store: &Store,
    labels_dataset: &str,
) -> Result<BTreeMap<String, LabelRecord>, StoreError> {
    records(store, &keys::label_records_prefix(labels_dataset)).await
}

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

/// One cell of a job's map (a predictions table row with its probabilities).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapCell {
    /// Tile id.
    pub tile_id: String,
    /// Date.
    pub date: String,
    /// Grid row.
    pub row: u32,
    /// Grid column.
    pub col: u32,
    /// Predicted class.
    pub label: String,
    /// Probability of the predicted class.
    pub confidence: f32,
    /// Probability per class, in the job's label order.
    pub probs: Vec<f32>,
}

/// Reads a job's `predictions.csv` with its probability columns (`p_<label>` for `labels`).
pub fn map_cells(bytes: &[u8], labels: &[String]) -> Result<Vec<MapCell>, String> {
    let mut r = csv::Reader::from_reader(bytes);
    let header = r.headers().map_err(|e| e.to_string())?.clone();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("predictions table has no column {name}"))
    };
    let (id, date, row, c, label, conf) = (
        col("tile_id")?,
        col("date")?,
        col("row")?,
        col("col")?,
        col("label")?,
        col("confidence")?,
    );
    let pcols: Vec<usize> = labels
        .iter()
        .map(|l| col(&format!("p_{l}")))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| e.to_string())?;
        let num = |i: usize| rec.get(i).unwrap_or("").parse::<f32>().unwrap_or(f32::NAN);
        let (Ok(rw), Ok(cl)) = (rec[row].parse::<u32>(), rec[c].parse::<u32>()) else {
            continue; // tiles without a grid place are not on a map
        };
        out.push(MapCell {
            tile_id: rec[id].to_string(),
            date: rec[date].to_string(),
            row: rw,
            col: cl,
            label: rec[label].to_string(),
            confidence: num(conf),
            probs: pcols.iter().map(|&i| num(i)).collect(),
        });
    }
    Ok(out)
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

/// The reference labels given so far to a design's sample.
pub async fn references(
    store: &Store,
    d: &Design,
) -> Result<BTreeMap<String, LabelRecord>, StoreError> {
    records(store, &keys::assessment_labels_prefix(&d.dataset, &d.name)).await
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
    let mut w = csv::Writer::from_writer(Vec::new());
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
            c.class.clone(),
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
    let mut out = w.into_inner().expect("memory");
    // the confusion matrix, rows = map, columns = reference
    out.extend_from_slice(b"\nmap \\ reference");
    for c in &a.classes {
        out.extend_from_slice(format!(",{c}").as_bytes());
    }
    out.push(b'\n');
    for (c, row) in a.classes.iter().zip(&a.counts) {
        out.extend_from_slice(c.as_bytes());
        for n in row {
            out.extend_from_slice(format!(",{n}").as_bytes());
        }
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn names_are_checked() {
        assert!(validate_class("cropland").is_ok());
        for bad in ["", "Crop", "1x", "a b", "<b>", &"x".repeat(65)] {
            assert!(validate_class(bad).is_err(), "{bad:?}");
        }
        assert!(validate_analyst("Ann O'Neil").is_ok());
        assert!(validate_analyst(" ").is_err());
        assert!(validate_analyst("a\nb").is_err());
    }
}
