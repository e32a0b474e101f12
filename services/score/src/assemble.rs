//! Builds a finished score job's outputs from its deduplicated predictions and writes them
//! under `jobs/<job>/outputs/`, the summary last: predictions table, footprints, per date a
//! Cloud-Optimized GeoTIFF (class + probabilities) with its QGIS style and a PNG map, the
//! vector layers (GeoPackage), and the change report between the first and last date.

use crate::{cog, gpkg, mapimage, stac, style};
use aerial_shared::{
    cells::{self, CellGrid},
    change, keys,
    predictions::{self, DeadTile, PredictionRow, ScoreSpec, ScoreSummary},
    runs::{self, RunSummary},
    Store,
};
use futures::StreamExt;
use std::collections::BTreeMap;

/// Errors while building outputs.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// Writing a raster failed.
    #[error("cloud-optimized geotiff for {date}: {source}")]
    Raster {
        /// Date of the raster.
        date: String,
        /// GDAL error.
        source: gdal::errors::GdalError,
    },
    /// Writing the GeoPackage failed.
    #[error("geopackage: {0}")]
    Vector(gdal::errors::GdalError),
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

/// A georeferenced date: its cells, where they lie, and each cell's probabilities.
type Placed<'a> = (
    &'a String,
    &'a CellGrid,
    cog::GridGeo,
    Vec<Option<&'a [f32]>>,
);

/// Every output file and the summary, computed without I/O.
pub fn build(
    spec: &ScoreSpec,
    rows: &[PredictionRow],
    dead: Vec<DeadTile>,
    replicas: Vec<String>,
    run: Option<&RunSummary>,
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
    for r in rows {
        *tiles_per_date
            .entry(r.date.clone().unwrap_or_default())
            .or_default()
            .entry(r.label.clone())
            .or_default() += 1;
    }
    // the map's cells: the tiles themselves, or stride squares averaging their windows
    let grids: BTreeMap<String, CellGrid> = cells::job_grids(
        labels.len(),
        spec.stride.as_ref(),
        spec.extent,
        &spec.holes,
        rows.iter()
            .filter_map(|r| Some((r.date.as_deref()?, r.row?, r.col?, r.probs.as_slice()))),
    );
    let step_m = spec.stride.map(|s| s.cell_m());
    let cell_km2 = step_m
        .map(|m| m * m / 1e6)
        .or_else(|| rows.iter().find_map(PredictionRow::area_km2));
    let mut area: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    if let Some(km2) = cell_km2 {
        for (date, g) in &grids {
            let counts = g.classes().counts(labels.len());
            area.insert(
                date.clone(),
                labels
                    .iter()
                    .cloned()
                    .zip(counts.iter().map(|&n| n as f64 * km2))
                    .collect(),
            );
        }
    }
    // per date: where its grid lies (georeferenced dates only)
    let mut placed: Vec<Placed> = Vec::new();
    for (date, grid) in &grids {
        let of_date: Vec<&PredictionRow> = rows
            .iter()
            .filter(|r| r.date.as_deref() == Some(date.as_str()))
            .collect();
        if let Some(geo) = cog::grid_geo(&of_date, step_m) {
            let probs = grid.probs.iter().map(|p| p.as_deref()).collect();
            placed.push((date, grid, geo, probs));
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
    let maps: Vec<cog::DateMap> = placed
        .iter()
        .map(|(date, grid, geo, probs)| cog::DateMap {
            labels,
            rows: grid.rows,
            cols: grid.cols,
            cells: &grid.cells,
            probs,
            geo,
            date,
        })
        .collect();
    for map in &maps {
        let written = cog::write(map).map_err(|source| AssembleError::Raster {
            date: map.date.to_string(),
            source,
        })?;
        files.push((keys::output_geotiff(map.date), written.tif));
        files.push((keys::output_geotiff_sidecar(map.date), written.aux_xml));
        files.push((
            keys::output_style(map.date),
            style::qml(labels).into_bytes(),
        ));
    }
    let layers = gpkg::write(labels, rows, &maps).map_err(AssembleError::Vector)?;
    let with_layers = layers.is_some();
    if let Some(layers) = layers {
        files.push((keys::OUTPUT_GPKG.into(), layers));
    }
    let items: Vec<stac::DateItem> = maps
        .iter()
        .filter_map(|map| {
            let lonlat = stac::union(
                rows.iter()
                    .filter(|r| r.date.as_deref() == Some(map.date))
                    .filter_map(|r| r.lonlat_bounds),
            )?;
            Some(stac::DateItem { map, lonlat })
        })
        .collect();
    files.extend(stac::catalogue(spec, &items, with_layers, run));
    if let (Some((first, a)), Some((last, b))) = (grids.iter().next(), grids.iter().last()) {
        if first != last {
            let cell_ha = cell_km2.map(|k| k * 100.0);
            let (a, b) = (a.classes(), b.classes());
            let report = change::compare(labels, first, &a, last, &b, spec.job.smooth, cell_ha);
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
        stride: spec.stride,
        nodata_windows: spec.nodata.clone(),
        extent: spec.extent,
        holes: spec.holes.clone(),
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
    // the run's summary, for the catalogue's model item (a run without one is left out)
    let run: Option<RunSummary> = match store
        .get_json(&runs::key(&spec.job.run, runs::SUMMARY))
        .await
    {
        Ok(r) => Some(r),
        Err(aerial_shared::store::StoreError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let (files, summary) =
        tokio::task::spawn_blocking(move || build(&s, &rows, dead, replicas, run.as_ref()))
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
