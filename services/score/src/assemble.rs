//! Builds a finished score job's outputs from its deduplicated predictions and writes them
//! under `jobs/<job>/outputs/`, the summary last: predictions table, footprints, per date a
//! GeoTIFF and a PNG map, and the change report between the first and last date.

use crate::{geotiff, mapimage};
use aerial_shared::{
    change::{self, Grid},
    keys,
    predictions::{self, DeadTile, PredictionRow, ScoreSpec, ScoreSummary},
    Store,
};
use futures::StreamExt;
use std::collections::BTreeMap;

/// Errors while building outputs.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// Writing a raster failed.
    #[error("geotiff for {date}: {source}")]
    Raster {
        /// Date of the raster.
        date: String,
        /// GDAL error.
        source: gdal::errors::GdalError,
    },
    /// Encoding a map failed.
    #[error("png map for {date}: {source}")]
    Map {
        /// Date of the map.
        date: String,
        /// Encoder error.
        source: image::ImageError,
    },
    /// Uploading failed.
    #[error("writing output: {0}")]
    Store(#[from] aerial_shared::store::StoreError),
}

/// Output files: name under `outputs/`, bytes.
pub type Files = Vec<(String, Vec<u8>)>;

/// Every output file and the summary, computed without I/O.
pub fn build(
    spec: &ScoreSpec,
    rows: &[PredictionRow],
    dead: Vec<DeadTile>,
    replicas: Vec<String>,
) -> Result<(Files, ScoreSummary), AssembleError> {
    let labels = &spec.labels;
    let mut files: Files = vec![
        (keys::OUTPUT_TABLE.into(), predictions::to_csv(labels, rows)),
        (
            keys::OUTPUT_GEOJSON.into(),
            serde_json::to_vec(&predictions::to_geojson(labels, rows)).expect("json"),
        ),
    ];
    let mut tiles_per_date: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut area: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for r in rows {
        let date = r.date.clone().unwrap_or_default();
        *tiles_per_date
            .entry(date.clone())
            .or_default()
            .entry(r.label.clone())
            .or_default() += 1;
        if let Some(a) = r.area_km2() {
            *area
                .entry(date)
                .or_default()
                .entry(r.label.clone())
                .or_default() += a;
        }
    }
    let grids: BTreeMap<String, Grid> = change::grids_by_date(
        labels,
        rows.iter()
            .filter_map(|r| Some((r.date.as_deref()?, r.row?, r.col?, r.label.as_str()))),
    );
    for (date, grid) in &grids {
        let of_date: Vec<&PredictionRow> = rows
            .iter()
            .filter(|r| r.date.as_deref() == Some(date.as_str()))
            .collect();
        if let Some(geo) = geotiff::grid_geo(&of_date) {
            let tif = geotiff::write(labels, grid.rows, grid.cols, &grid.cells, &geo, date)
                .map_err(|source| AssembleError::Raster {
                    date: date.clone(),
                    source,
                })?;
            files.push((keys::output_geotiff(date), tif));
        }
        let title = format!("{} {} ({})", spec.job.dataset, date, spec.job.run);
        let png = mapimage::render(labels, grid.rows, grid.cols, &grid.cells, &title).map_err(
            |source| AssembleError::Map {
                date: date.clone(),
                source,
            },
        )?;
        files.push((keys::output_png(date), png));
    }
    if let (Some((first, a)), Some((last, b))) = (grids.iter().next(), grids.iter().last()) {
        if first != last {
            let report = change::compare(labels, first, a, last, b, spec.job.smooth);
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(["row", "col", "from", "to"])
                .expect("memory");
            for c in &report.changed {
                w.write_record([
                    c.row.to_string(),
                    c.col.to_string(),
                    c.from.clone(),
                    c.to.clone(),
                ])
                .expect("memory");
            }
            files.push((
                keys::OUTPUT_CHANGE_CSV.into(),
                w.into_inner().expect("memory"),
            ));
            files.push((
                keys::OUTPUT_CHANGE.into(),
                serde_json::to_vec_pretty(&report).expect("json"),
            ));
        }
    }
    let summary = ScoreSummary {
        job_id: spec.job.job_id.clone(),
        run: spec.job.run.clone(),
        dataset: spec.job.dataset.clone(),
        labels: labels.clone(),
        total: spec.total,
        predicted: rows.len() as u64,
        dead,
        tiles_per_date,
        area_km2_per_date: area,
        outputs: files
            .iter()
            .map(|(n, _)| n.clone())
            .chain([keys::OUTPUT_SUMMARY.to_string()])
            .collect(),
        smoothed: spec.job.smooth,
        replicas,
        duration_s: (chrono::Utc::now() - spec.accepted_at).num_milliseconds() as f64 / 1000.0,
    };
    Ok((files, summary))
}

/// Builds the outputs off the runtime and uploads them, the summary last.
pub async fn assemble(
    store: &Store,
    spec: &ScoreSpec,
    rows: Vec<PredictionRow>,
    dead: Vec<DeadTile>,
    replicas: Vec<String>,
) -> Result<ScoreSummary, AssembleError> {
    let s = spec.clone();
    let (files, summary) = tokio::task::spawn_blocking(move || build(&s, &rows, dead, replicas))
        .await
        .expect("assembly does not panic")?;
    let job = &spec.job.job_id;
    let uploads =
        futures::stream::iter(files.into_iter().map(|(name, body)| async move {
            store.put(&keys::job_output(job, &name), body).await
        }))
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    uploads.into_iter().collect::<Result<Vec<()>, _>>()?;
    store
        .put_json(&keys::job_output(job, keys::OUTPUT_SUMMARY), &summary)
        .await?;
    Ok(summary)
}
