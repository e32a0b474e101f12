//! What a score job writes: its spec, per-batch predictions, refused tiles, and the
//! assembled table (CSV) and footprints (GeoJSON) built from them.

use crate::messages::{ScoreJob, Tile};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A score job as accepted: the request, the run's labels and how many tiles to expect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSpec {
    /// The request.
    pub job: ScoreJob,
    /// The run's labels; probabilities follow this order.
    pub labels: Vec<String>,
    /// Tiles published to `score.tiles`.
    pub total: u64,
    /// Method of the run (`logistic`, `random_forest`, ...).
    pub method: String,
    /// Backbone of the run.
    pub backbone: String,
    /// When the job was accepted.
    pub accepted_at: DateTime<Utc>,
    /// For a job with a stride: how its windows map onto output cells (absent otherwise, and
    /// in specs of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<crate::cells::Stride>,
    /// Windows (tiles, without a stride) left out as no-data, per date.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodata: BTreeMap<String, u64>,
    /// The map's cells (rows, columns) over every stored tile, scored or not, so cells left
    /// out at an edge stay in the map as no-data (absent in specs of earlier versions: the
    /// scored cells' extent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extent: Option<(u32, u32)>,
    /// A strided job's holes per date: tiles (row, column) missing or left out as no-data;
    /// the cells whose centres lie in them are no-data.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub holes: BTreeMap<String, Vec<(u32, u32)>>,
}

impl ScoreSpec {
    /// Why `job` cannot be this job's request, if it cannot: a job id names one run scored
    /// on one dataset, never another's results.
    pub fn conflict(&self, job: &ScoreJob) -> Option<String> {
        let stride = |s: Option<f64>| s.map_or("tile".to_string(), |m| format!("{m} m"));
        if self.job.stride_m != job.stride_m {
            return Some(format!(
                "job id {} already holds run {} on {} at a stride of {}, not {}: choose another --name",
                job.job_id,
                self.job.run,
                self.job.dataset,
                stride(self.job.stride_m),
                stride(job.stride_m)
            ));
        }
        (self.job.run != job.run || self.job.dataset != job.dataset).then(|| {
            format!(
                "job id {} already holds run {} scored on dataset {}, not run {} on {}: choose another --name",
                job.job_id, self.job.run, self.job.dataset, job.run, job.dataset
            )
        })
    }
}

/// The prediction for one tile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRow {
    /// Tile id within the dataset.
    pub tile_id: String,
    /// Acquisition date, for scenes.
    pub date: Option<String>,
    /// Grid row and column within its scene, for scenes.
    pub row: Option<u32>,
    /// See `row`.
    pub col: Option<u32>,
    /// CRS of `bounds`.
    pub crs: Option<String>,
    /// Footprint in `crs`: min x, min y, max x, max y.
    pub bounds: Option<[f64; 4]>,
    /// Footprint in WGS84: west, south, east, north.
    pub lonlat_bounds: Option<[f64; 4]>,
    /// Predicted label.
    pub label: String,
    /// Probability per label, in the spec's label order.
    pub probs: Vec<f32>,
}

impl PredictionRow {
    /// A row for `tile` with the given prediction.
    pub fn new(tile: &Tile, label: String, probs: Vec<f32>) -> Self {
        let g = tile.geo.as_ref();
        Self {
            tile_id: tile.tile_id.clone(),
            date: tile.date.clone(),
            row: g.map(|g| g.row),
            col: g.map(|g| g.col),
            crs: g.map(|g| g.crs.clone()),
            bounds: g.map(|g| g.bounds),
            lonlat_bounds: g.map(|g| g.lonlat_bounds),
            label,
            probs,
        }
    }

    /// Area of the footprint in km², when it is in a projected (metre) CRS.
    pub fn area_km2(&self) -> Option<f64> {
        let b = self.bounds?;
        let geographic = self.crs.as_deref().is_some_and(|c| c == "EPSG:4326");
        (!geographic).then(|| (b[2] - b[0]) * (b[3] - b[1]) / 1e6)
    }
}

/// One batch of predictions, written by one replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionBatch {
    /// The job.
    pub job_id: String,
    /// Replica that scored it.
    pub replica: String,
    /// Rows.
    pub rows: Vec<PredictionRow>,
}

/// A tile of a score job that could not be scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadTile {
    /// The job.
    pub job_id: String,
    /// Tile id.
    pub tile_id: String,
    /// Acquisition date, for scenes.
    pub date: Option<String>,
    /// Why.
    pub reason: String,
    /// Replica that refused it.
    pub replica: String,
}

/// The final report of a score job (`outputs/summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSummary {
    /// Job id.
    pub job_id: String,
    /// Run that scored.
    pub run: String,
    /// Dataset scored.
    pub dataset: String,
    /// Labels.
    pub labels: Vec<String>,
    /// Tiles expected.
    pub total: u64,
    /// Tiles predicted (each once).
    pub predicted: u64,
    /// Tiles refused, with reasons.
    pub dead: Vec<DeadTile>,
    /// Tiles per label per date (`""` for tiles without a date).
    pub tiles_per_date: BTreeMap<String, BTreeMap<String, u64>>,
    /// Area in km² per label per date (of the map's cells), when footprints are projected.
    pub area_km2_per_date: BTreeMap<String, BTreeMap<String, f64>>,
    /// A strided job's windows and cells (absent for a job scoring the tiles themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<crate::cells::Stride>,
    /// Windows (tiles, without a stride) left out as no-data, per date: not scored, no-data
    /// in every output.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodata_windows: BTreeMap<String, u64>,
    /// The map's cells (rows, columns), as in the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extent: Option<(u32, u32)>,
    /// The holes, as in the spec.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub holes: BTreeMap<String, Vec<(u32, u32)>>,
    /// Output file names under the job's `outputs/` prefix.
    pub outputs: Vec<String>,
    /// Whether the change report used 3×3 plurality smoothing.
    pub smoothed: bool,
    /// Replicas that contributed.
    pub replicas: Vec<String>,
    /// Seconds from acceptance to assembly.
    pub duration_s: f64,
}

impl ScoreSummary {
    /// Ground area of one map cell in hectares (a stride squared, or a date's area over its
    /// tiles), when the tiles are in a metre CRS.
    pub fn cell_area_ha(&self) -> Option<f64> {
        if self.area_km2_per_date.is_empty() {
            return None;
        }
        if let Some(s) = self.stride {
            return Some(s.cell_m() * s.cell_m() / 10_000.0);
        }
        self.area_km2_per_date.iter().find_map(|(date, areas)| {
            let tiles: u64 = self.tiles_per_date.get(date)?.values().sum();
            let km2: f64 = areas.values().sum();
            (tiles > 0 && km2 > 0.0).then(|| km2 * 100.0 / tiles as f64)
        })
    }
}

/// Writes the predictions table: one row per tile, sorted by date then tile id.
pub fn to_csv(labels: &[String], rows: &[PredictionRow]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = [
        "tile_id",
        "date",
        "row",
        "col",
        "lon",
        "lat",
        "label",
        "confidence",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(labels.iter().map(|l| format!("p_{l}")));
    w.write_record(&header).expect("writing to memory");
    let opt = |v: Option<String>| v.unwrap_or_default();
    for r in rows {
        let centre = r
            .lonlat_bounds
            .map(|b| ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0));
        let confidence = r.probs.iter().copied().fold(0f32, f32::max);
        let mut rec = vec![
            r.tile_id.clone(),
            opt(r.date.clone()),
            opt(r.row.map(|v| v.to_string())),
            opt(r.col.map(|v| v.to_string())),
            opt(centre.map(|c| format!("{:.6}", c.0))),
            opt(centre.map(|c| format!("{:.6}", c.1))),
            r.label.clone(),
            format!("{confidence:.4}"),
        ];
        rec.extend(r.probs.iter().map(|p| format!("{p:.4}")));
        w.write_record(&rec).expect("writing to memory");
    }
    w.into_inner().expect("flushing to memory")
}

/// One row read back from the predictions table (what the change report needs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TableRow {
    /// Tile id.
    pub tile_id: String,
    /// Date.
    pub date: String,
    /// Grid row.
    pub row: Option<u32>,
    /// Grid column.
    pub col: Option<u32>,
    /// Predicted label.
    pub label: String,
}

/// Reads the predictions table written by [`to_csv`].
pub fn from_csv(bytes: &[u8]) -> Result<Vec<TableRow>, csv::Error> {
    csv::Reader::from_reader(bytes).deserialize().collect()
}

/// Reads the predictions table with each row's probabilities in `labels` order (a label
/// without its `p_<label>` column reads as 0).
pub fn from_csv_with_probs(
    bytes: &[u8],
    labels: &[String],
) -> Result<Vec<(TableRow, Vec<f32>)>, csv::Error> {
    let mut r = csv::Reader::from_reader(bytes);
    let headers = r.headers()?.clone();
    let cols: Vec<Option<usize>> = labels
        .iter()
        .map(|l| headers.iter().position(|h| h == format!("p_{l}")))
        .collect();
    r.records()
        .map(|rec| {
            let rec = rec?;
            let row: TableRow = rec.deserialize(Some(&headers))?;
            let probs = cols
                .iter()
                .map(|c| {
                    c.and_then(|c| rec.get(c))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0.0)
                })
                .collect();
            Ok((row, probs))
        })
        .collect()
}

/// GeoJSON FeatureCollection of tile footprints (WGS84) with their labels and probabilities.
pub fn to_geojson(labels: &[String], rows: &[PredictionRow]) -> serde_json::Value {
    let features: Vec<serde_json::Value> = rows
        .iter()
        .filter_map(|r| {
            let b = r.lonlat_bounds?;
            let ring = vec![
                [b[0], b[1]],
                [b[2], b[1]],
                [b[2], b[3]],
                [b[0], b[3]],
                [b[0], b[1]],
            ];
            let probs: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .zip(&r.probs)
                .map(|(l, p)| (format!("p_{l}"), serde_json::json!(*p)))
                .collect();
            let mut props = serde_json::json!({
                "tile_id": r.tile_id, "date": r.date, "row": r.row, "col": r.col, "label": r.label,
            });
            props.as_object_mut().expect("object literal").extend(probs);
            Some(serde_json::json!({
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": props,
            }))
        })
        .collect();
    serde_json::json!({"type": "FeatureCollection", "features": features})
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_job_id_names_one_run_on_one_dataset() {
        let job = |dataset: &str, run: &str| ScoreJob {
            job_id: "a-b-c".into(),
            run: run.into(),
            dataset: dataset.into(),
            smooth: false,
            stride_m: None,
        };
        let spec = ScoreSpec {
            job: job("a-b", "c"),
            labels: vec![],
            total: 1,
            method: "logistic".into(),
            backbone: "mobilenet_v2".into(),
            accepted_at: chrono::Utc::now(),
            stride: None,
            nodata: Default::default(),
            extent: None,
            holes: Default::default(),
        };
        assert!(
            spec.conflict(&job("a-b", "c")).is_none(),
            "the same request"
        );
        let why = spec
            .conflict(&job("a", "b-c"))
            .expect("same id, other request");
        assert!(
            why.contains("already holds run c scored on dataset a-b"),
            "{why}"
        );
        let strided = ScoreJob {
            stride_m: Some(112.0),
            ..job("a-b", "c")
        };
        let why = spec.conflict(&strided).expect("same id, other stride");
        assert!(why.contains("at a stride of tile, not 112 m"), "{why}");
    }

    use super::*;

    fn row(id: &str, label: &str) -> PredictionRow {
        PredictionRow {
            tile_id: id.into(),
            date: Some("2010-06-29".into()),
            row: Some(1),
            col: Some(2),
            crs: Some("EPSG:26914".into()),
            bounds: Some([0.0, 0.0, 225.0, 225.0]),
            lonlat_bounds: Some([-99.2, 47.0, -99.1, 47.1]),
            label: label.into(),
            probs: vec![0.25, 0.75],
        }
    }

    #[test]
    fn table_round_trips_what_the_change_report_needs() {
        let labels = vec!["field".to_string(), "forest".to_string()];
        let csv = to_csv(&labels, &[row("a", "forest")]);
        let text = String::from_utf8(csv.clone()).unwrap();
        assert!(
            text.starts_with("tile_id,date,row,col,lon,lat,label,confidence,p_field,p_forest\n")
        );
        assert!(text.contains("a,2010-06-29,1,2,-99.150000,47.050000,forest,0.7500,0.2500,0.7500"));
        let back = from_csv(&csv).unwrap();
        assert_eq!(back[0].label, "forest");
        assert_eq!(back[0].col, Some(2));
    }

    #[test]
    fn geojson_closes_each_footprint() {
        let g = to_geojson(&["field".into(), "forest".into()], &[row("a", "forest")]);
        let ring = &g["features"][0]["geometry"]["coordinates"][0];
        assert_eq!(ring.as_array().unwrap().len(), 5);
        assert_eq!(ring[0], ring[4]);
        assert_eq!(g["features"][0]["properties"]["p_forest"], 0.75);
    }

    #[test]
    fn area_is_known_only_for_projected_footprints() {
        let mut r = row("a", "forest");
        assert!((r.area_km2().unwrap() - 0.050625).abs() < 1e-12);
        r.crs = Some("EPSG:4326".into());
        assert_eq!(r.area_km2(), None);
    }
}
