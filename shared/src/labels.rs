//! Analysts' labels on a mapped region's own tiles, for two uses kept apart:
//!
//! - **Corrections** join a labelled dataset (default `<region>-labels`): one record per tile
//!   (`datasets/<labels>/labels/<hash>.json`, who and when included) and one manifest part
//!   per tile pointing at the same tile bytes, split `train`, so `aerial train` learns from
//!   them alone or beside another dataset.
//! - **Assessment** labels belong to a sample design drawn from one score job's map
//!   ([`crate::assessment`]) and are only ever used to measure maps, never to train.

use crate::keys;
use crate::manifest::ManifestRow;
use crate::messages::{Split, Tile};
use crate::store::StoreError;
use crate::Store;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

pub(crate) fn tile_hash(tile_id: &str) -> String {
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

/// The tile of a correction as `labels_dataset` trains on it (its label, split `train`).
pub fn training_tile(labels_dataset: &str, rec: &LabelRecord) -> Tile {
    let mut tile = rec.tile.clone();
    tile.dataset = labels_dataset.to_string();
    tile.label = Some(rec.label.clone());
    tile.split = Some(Split::Train);
    tile
}

/// Stores a correction in `labels_dataset`: the record, then the tile's manifest part (split
/// `train`). Relabelling a tile overwrites both.
pub async fn put_correction(
    store: &Store,
    labels_dataset: &str,
    rec: &LabelRecord,
) -> Result<Tile, StoreError> {
    let tile = training_tile(labels_dataset, rec);
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
pub(crate) async fn records(
    store: &Store,
    prefix: &str,
) -> Result<BTreeMap<String, LabelRecord>, StoreError> {
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

/// A text cell for CSV files opened in spreadsheets: one starting like a formula (`=`, `+`,
/// `-`, `@`, tab, CR) gets a leading `'`, so it is shown, never evaluated.
pub fn csv_cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

/// Label records as CSV, one row per tile: what was given, by whom and when, where the tile
/// is and where its bytes are.
pub fn records_csv(records: &BTreeMap<String, LabelRecord>) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "tile_id",
        "label",
        "by",
        "at",
        "job",
        "predicted",
        "date",
        "row",
        "col",
        "lon_min",
        "lat_min",
        "lon_max",
        "lat_max",
        "key",
        "offset",
        "length",
        "sha256",
    ])
    .expect("memory");
    for r in records.values() {
        let g = r.tile.geo.as_ref();
        let opt = |v: Option<String>| v.unwrap_or_default();
        let ll = |i: usize| opt(g.map(|g| format!("{:.7}", g.lonlat_bounds[i])));
        w.write_record([
            r.tile.tile_id.clone(),
            csv_cell(&r.label),
            csv_cell(&r.by),
            r.at.to_rfc3339(),
            r.job.clone(),
            csv_cell(&r.predicted),
            opt(r.tile.date.clone()),
            opt(g.map(|g| g.row.to_string())),
            opt(g.map(|g| g.col.to_string())),
            ll(0),
            ll(1),
            ll(2),
            ll(3),
            r.tile.key.clone(),
            opt(r.tile.range.map(|x| x.offset.to_string())),
            opt(r.tile.range.map(|x| x.length.to_string())),
            r.tile.sha256.clone(),
        ])
        .expect("memory");
    }
    w.into_inner().expect("memory")
}

/// Label records as a GeoJSON FeatureCollection of tile footprints (WGS84).
pub fn records_geojson(records: &BTreeMap<String, LabelRecord>) -> serde_json::Value {
    let features: Vec<serde_json::Value> = records
        .values()
        .filter_map(|r| {
            let b = r.tile.geo.as_ref()?.lonlat_bounds;
            let ring = [
                [b[0], b[1]],
                [b[2], b[1]],
                [b[2], b[3]],
                [b[0], b[3]],
                [b[0], b[1]],
            ];
            Some(serde_json::json!({
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"tile_id": r.tile.tile_id, "label": r.label, "by": r.by,
                    "at": r.at, "job": r.job, "predicted": r.predicted, "date": r.tile.date},
            }))
        })
        .collect();
    serde_json::json!({"type": "FeatureCollection", "features": features})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_export_as_csv_and_geojson() {
        let tile = Tile {
            dataset: "region".into(),
            tile_id: "2015-09-26/r001c002".into(),
            key: "tiles/ab/x.pack".into(),
            range: Some(crate::messages::ByteRange {
                offset: 10,
                length: 20,
            }),
            sha256: "abc".into(),
            label: None,
            split: None,
            date: Some("2015-09-26".into()),
            geo: Some(crate::messages::TileGeo {
                row: 1,
                col: 2,
                crs: "EPSG:26914".into(),
                bounds: [0.0, 0.0, 225.0, 225.0],
                lonlat_bounds: [-99.18, 47.0, -99.17, 47.01],
                nodata: None,
            }),
            backbone: "mobilenet_v2".into(),
        };
        let rec = LabelRecord {
            tile,
            label: "cropland".into(),
            by: "Ann, \"the analyst\"".into(),
            at: "2026-11-30T20:00:00Z".parse().unwrap(),
            job: "map".into(),
            predicted: "grass".into(),
        };
        let all = BTreeMap::from([(rec.tile.tile_id.clone(), rec)]);
        let csv = records_csv(&all);
        let mut r = csv::Reader::from_reader(&csv[..]);
        let row = r.records().next().unwrap().unwrap();
        assert_eq!(&row[0], "2015-09-26/r001c002");
        assert_eq!(&row[1], "cropland");
        assert_eq!(&row[2], "Ann, \"the analyst\"", "quoted, not split");
        assert_eq!(csv_cell("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_cell("-1"), "'-1");
        assert_eq!(csv_cell("grass"), "grass");
        assert_eq!(
            (&row[7], &row[8], &row[14], &row[15]),
            ("1", "2", "10", "20")
        );
        let g = records_geojson(&all);
        assert_eq!(g["features"][0]["properties"]["label"], "cropland");
        assert_eq!(g["features"][0]["geometry"]["coordinates"][0][2][0], -99.17);
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
