//! A static STAC catalogue (STAC 1.1.0) of a score job's outputs, under `outputs/stac/`, so
//! catalogues and tools find the maps: `catalog.json` → `collection.json` (the job) → one
//! Item per date, whose assets are the date's COG (classification, raster and projection
//! extensions: class names and colours, band types, CRS, shape and transform), its sidecar,
//! style and PNG, and the job's GeoPackage; and one Item for the run's model (the Machine
//! Learning Model extension, MLM 1.4: backbone, input size and normalisation, classes,
//! validation accuracy). Every link is relative, so the folder can be copied or served from
//! object storage as it is (the model item's asset points into `runs/`, so inside the bucket).

use crate::cog::DateMap;
use aerial_shared::{imaging, keys, palette, predictions::ScoreSpec, runs::RunSummary};
use serde_json::{json, Value};

/// Extension schemas, at the versions the tests validate against.
const CLASSIFICATION: &str = "https://stac-extensions.github.io/classification/v2.0.0/schema.json";
const RASTER: &str = "https://stac-extensions.github.io/raster/v1.1.0/schema.json";
const PROJECTION: &str = "https://stac-extensions.github.io/projection/v2.0.0/schema.json";
const MLM: &str = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json";
const STAC_VERSION: &str = "1.1.0";

/// A date's map with what its Item says about it.
pub struct DateItem<'a> {
    /// The map (grid, transform, cells).
    pub map: &'a DateMap<'a>,
    /// Its footprint in WGS84: west, south, east, north.
    pub lonlat: [f64; 4],
}

/// A class name as the classification extension allows it (`[0-9A-Za-z-_]`); the label
/// itself goes in `title`.
fn class_name(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The model's name as MLM allows it (a letter first, then letters, digits, `_.-` and spaces,
/// a letter or digit last, 3 characters at least): `aerial-run-<run>`.
fn model_name(run: &str) -> String {
    let mut name: String = format!("aerial-run-{run}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.- ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        name.push('0');
    }
    name
}

fn classes(labels: &[String], counts: Option<&[u64]>) -> Vec<Value> {
    let total: u64 = counts.map_or(0, |c| c.iter().sum());
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let [r, g, b] = palette::colour(l, i);
            let mut c = json!({
                "value": i,
                "name": class_name(l),
                "title": l,
                "color_hint": format!("{r:02X}{g:02X}{b:02X}"),
            });
            if let (Some(counts), true) = (counts, total > 0) {
                c["count"] = json!(counts[i]);
                c["percentage"] = json!(counts[i] as f64 * 100.0 / total as f64);
            }
            c
        })
        .collect()
}

fn polygon(b: [f64; 4]) -> Value {
    json!({
        "type": "Polygon",
        "coordinates": [[[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]], [b[0], b[1]]]],
    })
}

/// The union of footprints.
pub fn union(boxes: impl IntoIterator<Item = [f64; 4]>) -> Option<[f64; 4]> {
    boxes.into_iter().reduce(|a, b| {
        [
            a[0].min(b[0]),
            a[1].min(b[1]),
            a[2].max(b[2]),
            a[3].max(b[3]),
        ]
    })
}

fn json_file(path: String, v: &Value) -> (String, Vec<u8>) {
    (path, serde_json::to_vec_pretty(v).expect("json"))
}

/// The catalogue's files (names under `outputs/`); empty when no date is georeferenced.
pub fn catalogue(
    spec: &ScoreSpec,
    items: &[DateItem],
    with_layers: bool,
    run: Option<&RunSummary>,
) -> Vec<(String, Vec<u8>)> {
    let Some(extent) = union(items.iter().map(|i| i.lonlat)) else {
        return Vec::new();
    };
    let job = &spec.job.job_id;
    let labels = &spec.labels;
    let mut files = Vec::new();
    let links = |parent: &str| {
        json!([
            {"rel": "root", "href": "../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": parent, "type": "application/json"},
            {"rel": "collection", "href": "../collection.json", "type": "application/json"},
        ])
    };
    let mut item_links = Vec::new();
    for item in items {
        let m = item.map;
        let id = format!("{job}-{}", m.date);
        let counts = {
            let mut c = vec![0u64; labels.len()];
            for k in m.cells.iter().flatten() {
                c[*k] += 1;
            }
            c
        };
        let t = m.geo.transform;
        let proj_bbox = [
            t[0],
            t[3] + t[5] * m.rows as f64,
            t[0] + t[1] * m.cols as f64,
            t[3],
        ];
        let mut bands = vec![json!({
            "name": "class",
            "description": "land-use class",
            "data_type": "uint8",
            "nodata": crate::cog::NO_DATA,
            "classification:classes": classes(labels, Some(&counts)),
        })];
        bands.extend(labels.iter().map(|l| {
            json!({
                "name": format!("p_{}", class_name(l)),
                "description": format!("probability of {l} (percent)"),
                "data_type": "uint8",
                "nodata": crate::cog::NO_DATA,
                "scale": 0.01,
                "offset": 0.0,
            })
        }));
        let up = "../..";
        let mut assets = json!({
            "map": {
                "href": format!("{up}/{}", keys::output_geotiff(m.date)),
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "title": format!("land-use map {} (class and probabilities)", m.date),
                "roles": ["data"],
                // an EPSG code when ingest found one; otherwise unknown to this extension
                "proj:code": m.geo.crs.starts_with("EPSG:").then_some(&m.geo.crs),
                "proj:shape": [m.rows, m.cols],
                "proj:transform": [t[1], t[2], t[0], t[4], t[5], t[3]],
                "proj:bbox": proj_bbox,
                "raster:bands": bands,
            },
            "sidecar": {
                "href": format!("{up}/{}", keys::output_geotiff_sidecar(m.date)),
                "type": "application/xml",
                "title": "GDAL sidecar: the class band's colour table and names",
                "roles": ["metadata"],
            },
            "style": {
                "href": format!("{up}/{}", keys::output_style(m.date)),
                "type": "application/xml",
                "title": "QGIS style",
                "roles": ["metadata"],
            },
            "preview": {
                "href": format!("{up}/{}", keys::output_png(m.date)),
                "type": "image/png",
                "title": "map with legend",
                "roles": ["overview"],
            },
        });
        if with_layers {
            assets["vectors"] = json!({
                "href": format!("{up}/{}", keys::OUTPUT_GPKG),
                "type": "application/geopackage+sqlite3",
                "title": "windows and class regions of every date (filter on `date`)",
                "roles": ["data"],
            });
        }
        let doc = json!({
            "type": "Feature",
            "stac_version": STAC_VERSION,
            "stac_extensions": [CLASSIFICATION, RASTER, PROJECTION],
            "id": id,
            "collection": job,
            "geometry": polygon(item.lonlat),
            "bbox": item.lonlat,
            "properties": {
                "datetime": format!("{}T00:00:00Z", m.date),
                "title": format!("{} {} scored by run {}", spec.job.dataset, m.date, spec.job.run),
                "aerial:run": spec.job.run,
                "aerial:dataset": spec.job.dataset,
            },
            "assets": assets,
            "links": links("../collection.json"),
        });
        let name = format!("stac/items/{}.json", m.date);
        item_links.push(json!({
            "rel": "item",
            "href": format!("./items/{}.json", m.date),
            "type": "application/geo+json",
            "title": m.date,
        }));
        files.push(json_file(name, &doc));
    }
    if let Some(run) = run {
        let (side, mean, std) = (imaging::INPUT_SIZE, imaging::MEAN, imaging::STD);
        let (artifact, file) = match run.method {
            aerial_shared::messages::Method::Finetune => {
                ("safetensors", aerial_shared::runs::FINETUNED)
            }
            _ => ("aerial classic model (JSON)", aerial_shared::runs::MODEL),
        };
        let doc = json!({
            "type": "Feature",
            "stac_version": STAC_VERSION,
            "stac_extensions": [MLM],
            "id": format!("model-{}", run.run),
            "collection": job,
            "geometry": polygon(extent),
            "bbox": extent,
            "properties": {
                "datetime": run.finished_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "title": format!("run {} ({} on {} features)", run.run, run.method.as_str(), run.backbone),
                "mlm:name": model_name(&run.run),
                "aerial:run": run.run,
                "mlm:architecture": run.backbone,
                "mlm:tasks": ["classification"],
                "mlm:framework": "pytorch",
                "mlm:pretrained": true,
                "mlm:pretrained_source": "ImageNet",
                "mlm:input": [{
                    "name": "RGB tile",
                    "bands": [],
                    "input": {
                        "shape": [-1, 3, side, side],
                        "dim_order": ["batch", "channel", "height", "width"],
                        "data_type": "float32",
                    },
                    "value_scaling": (0..3).map(|c| json!({
                        "type": "z-score", "mean": mean[c] * 255.0, "stddev": std[c] * 255.0,
                    })).collect::<Vec<_>>(),
                    "resize_type": "interpolation-linear",
                }],
                "mlm:output": [{
                    "name": "class probabilities",
                    "tasks": ["classification"],
                    "result": {
                        "shape": [-1, labels.len()],
                        "dim_order": ["batch", "class"],
                        "data_type": "float32",
                    },
                }],
                // MLM 1.4 lists output classes with the classification extension v1.1.0, whose
                // schema no PyPI package carries, so they are given here instead
                "aerial:classes": classes(labels, None),
                "aerial:method": run.method.as_str(),
                "aerial:training_dataset": run.dataset,
                "aerial:validation_accuracy": run.accuracy,
                "aerial:train_tiles": run.train_tiles,
            },
            "assets": {
                "model": {
                    // inside the bucket only (a copied folder has no runs/); `%` of an
                    // encoded run name is escaped, as the href is a URL
                    "href": format!(
                        "../../../../../{}",
                        aerial_shared::runs::key(&run.run, file).replace('%', "%25")
                    ),
                    "type": "application/octet-stream",
                    "title": format!("run {}'s trained model", run.run),
                    "roles": ["mlm:model"],
                    "mlm:artifact_type": artifact,
                },
            },
            "links": links("../collection.json"),
        });
        item_links.push(json!({
            "rel": "item",
            "href": "./items/model.json",
            "type": "application/geo+json",
            "title": "the model",
        }));
        files.push(json_file("stac/items/model.json".into(), &doc));
    }
    let dates: Vec<&str> = items.iter().map(|i| i.map.date).collect();
    let (first, last) = (dates.iter().min(), dates.iter().max());
    let mut collection_links = vec![
        json!({"rel": "root", "href": "./catalog.json", "type": "application/json"}),
        json!({"rel": "parent", "href": "./catalog.json", "type": "application/json"}),
    ];
    collection_links.extend(item_links);
    let collection = json!({
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "id": job,
        "title": format!("land-use maps of {} by run {}", spec.job.dataset, spec.job.run),
        "description": format!(
            "Score job {job}: run {} ({}, {} backbone) applied to dataset {}, one map per date.",
            spec.job.run, spec.method, spec.backbone, spec.job.dataset
        ),
        "license": "other",
        "extent": {
            "spatial": {"bbox": [extent]},
            "temporal": {"interval": [[
                first.map(|d| format!("{d}T00:00:00Z")),
                last.map(|d| format!("{d}T00:00:00Z")),
            ]]},
        },
        "links": collection_links,
    });
    files.push(json_file("stac/collection.json".into(), &collection));
    let catalog = json!({
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": format!("aerial-{job}"),
        "description": format!("Outputs of aerial score job {job}."),
        "links": [
            {"rel": "root", "href": "./catalog.json", "type": "application/json"},
            {"rel": "child", "href": "./collection.json", "type": "application/json"},
        ],
    });
    files.push(json_file(keys::OUTPUT_STAC_CATALOG.into(), &catalog));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_fit_the_extension_and_keep_the_label_as_title() {
        assert_eq!(class_name("river_lake"), "river_lake");
        assert_eq!(class_name("bare soil/rock"), "bare_soil_rock");
        let c = classes(&["field".into(), "forest".into()], Some(&[3, 1]));
        assert_eq!(c[1]["value"], 1);
        assert_eq!(c[1]["percentage"], 25.0);
        assert_eq!(c[0]["color_hint"].as_str().unwrap().len(), 6);
    }

    #[test]
    fn model_names_fit_mlm() {
        assert_eq!(model_name("m"), "aerial-run-m");
        assert_eq!(model_name("ft/all-"), "aerial-run-ft_all-0");
    }

    #[test]
    fn union_of_footprints() {
        assert_eq!(
            union([[0.0, 1.0, 2.0, 3.0], [-1.0, 2.0, 1.0, 4.0]]),
            Some([-1.0, 1.0, 2.0, 4.0])
        );
        assert_eq!(union([]), None);
    }
}
