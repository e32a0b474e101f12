//! Dataset manifests: one CSV row per tile, readable by any tool.

use crate::messages::{ByteRange, Split, Tile, TileGeo};
use serde::{Deserialize, Serialize};

/// One manifest row (flat, so it is plain CSV).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestRow {
    /// Tile id, unique in the dataset.
    pub id: String,
    /// S3 key of the tile image, or of the pack holding it.
    pub key: String,
    /// Offset of the tile's bytes in a pack (empty: the whole object).
    #[serde(default)]
    pub offset: Option<u64>,
    /// Length of the tile's bytes in a pack.
    #[serde(default)]
    pub length: Option<u64>,
    /// `train`, `val` or empty.
    pub split: String,
    /// Label or empty.
    pub label: String,
    /// Acquisition date or empty.
    pub date: String,
    /// Grid row (scenes).
    pub row: Option<u32>,
    /// Grid column (scenes).
    pub col: Option<u32>,
    /// CRS of the footprint (scenes).
    pub crs: String,
    /// Footprint min x in the CRS.
    pub min_x: Option<f64>,
    /// Footprint min y.
    pub min_y: Option<f64>,
    /// Footprint max x.
    pub max_x: Option<f64>,
    /// Footprint max y.
    pub max_y: Option<f64>,
    /// West longitude.
    pub lon_min: Option<f64>,
    /// South latitude.
    pub lat_min: Option<f64>,
    /// East longitude.
    pub lon_max: Option<f64>,
    /// North latitude.
    pub lat_max: Option<f64>,
    /// sha256 of the tile bytes.
    pub sha256: String,
    /// Input file the tile came from (for labels: `<region>:<score job>`).
    pub source: String,
    /// Share of the tile's pixels that are no-data (scene tiles; absent in parts written
    /// before it was measured, and for labelled images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodata: Option<f32>,
    /// Who labelled the tile, for labels given in the dashboard (absent in older manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labelled_by: Option<String>,
    /// When, for labels given in the dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labelled_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl ManifestRow {
    /// The row describing `tile`, cut from `source`.
    pub fn from_tile(tile: &Tile, source: &str) -> Self {
        let g = tile.geo.as_ref();
        Self {
            id: tile.tile_id.clone(),
            key: tile.key.clone(),
            offset: tile.range.map(|r| r.offset),
            length: tile.range.map(|r| r.length),
            split: tile
                .split
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            label: tile.label.clone().unwrap_or_default(),
            date: tile.date.clone().unwrap_or_default(),
            row: g.map(|g| g.row),
            col: g.map(|g| g.col),
            crs: g.map(|g| g.crs.clone()).unwrap_or_default(),
            min_x: g.map(|g| g.bounds[0]),
            min_y: g.map(|g| g.bounds[1]),
            max_x: g.map(|g| g.bounds[2]),
            max_y: g.map(|g| g.bounds[3]),
            lon_min: g.map(|g| g.lonlat_bounds[0]),
            lat_min: g.map(|g| g.lonlat_bounds[1]),
            lon_max: g.map(|g| g.lonlat_bounds[2]),
            lat_max: g.map(|g| g.lonlat_bounds[3]),
            sha256: tile.sha256.clone(),
            source: source.to_string(),
            nodata: g.and_then(|g| g.nodata),
            labelled_by: None,
            labelled_at: None,
        }
    }

    /// The tile message for this row.
    pub fn to_tile(&self, dataset: &str, backbone: &str) -> Tile {
        let geo = match (
            self.row, self.col, self.min_x, self.min_y, self.max_x, self.max_y,
        ) {
            (Some(row), Some(col), Some(a), Some(b), Some(c), Some(d)) => Some(TileGeo {
                row,
                col,
                crs: self.crs.clone(),
                bounds: [a, b, c, d],
                lonlat_bounds: [
                    self.lon_min.unwrap_or(f64::NAN),
                    self.lat_min.unwrap_or(f64::NAN),
                    self.lon_max.unwrap_or(f64::NAN),
                    self.lat_max.unwrap_or(f64::NAN),
                ],
                nodata: self.nodata,
            }),
            _ => None,
        };
        Tile {
            dataset: dataset.to_string(),
            tile_id: self.id.clone(),
            key: self.key.clone(),
            range: match (self.offset, self.length) {
                (Some(offset), Some(length)) => Some(ByteRange { offset, length }),
                _ => None,
            },
            sha256: self.sha256.clone(),
            label: (!self.label.is_empty()).then(|| self.label.clone()),
            split: match self.split.as_str() {
                "train" => Some(Split::Train),
                "val" => Some(Split::Val),
                _ => None,
            },
            date: (!self.date.is_empty()).then(|| self.date.clone()),
            geo,
            backbone: backbone.to_string(),
        }
    }
}

/// Serialises rows as CSV with a header.
///
/// Optional trailing columns are written only when a row has them, so every row of one part
/// must have the same ones: a part mixing tiles with and without a measured no-data share
/// (tiles ingested before it was measured) writes 0 for the unmeasured, as score reads them.
pub fn to_csv(rows: &[ManifestRow]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let any_nodata = rows.iter().any(|r| r.nodata.is_some());
    for r in rows {
        if any_nodata && r.nodata.is_none() {
            let r = ManifestRow {
                nodata: Some(0.0),
                ..r.clone()
            };
            w.serialize(&r).expect("rows serialise");
            continue;
        }
        w.serialize(r).expect("rows serialise");
    }
    w.into_inner().expect("in-memory writer")
}

/// Parses CSV written by [`to_csv`].
pub fn from_csv(bytes: &[u8]) -> Result<Vec<ManifestRow>, csv::Error> {
    csv::Reader::from_reader(bytes).deserialize().collect()
}

/// Reads every part of a dataset's manifest, deduplicated by tile id (last part wins).
pub async fn load(
    store: &crate::Store,
    dataset: &str,
) -> Result<Vec<ManifestRow>, crate::store::StoreError> {
    let mut by_id = std::collections::BTreeMap::new();
    let mut parts = store.list(&crate::keys::manifest_prefix(dataset)).await?;
    parts.sort_by(|a, b| a.key.cmp(&b.key));
    for part in parts {
        let bytes = store.get(&part.key).await?;
        let rows = from_csv(&bytes).map_err(|e| crate::store::StoreError::Corrupt {
            key: part.key.clone(),
            message: e.to_string(),
        })?;
        for r in rows {
            by_id.insert(r.id.clone(), r);
        }
    }
    Ok(by_id.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trip_keeps_geo_and_labels() {
        let t = Tile {
            dataset: "d".into(),
            tile_id: "2009-08-18/r3c4".into(),
            key: "tiles/ab/abc.pack".into(),
            range: Some(ByteRange {
                offset: 1200,
                length: 345,
            }),
            sha256: "abc".into(),
            label: None,
            split: None,
            date: Some("2009-08-18".into()),
            geo: Some(TileGeo {
                row: 3,
                col: 4,
                crs: "EPSG:26914".into(),
                bounds: [1.0, 2.0, 3.0, 4.0],
                lonlat_bounds: [-99.1, 47.0, -99.0, 47.1],
                nodata: None,
            }),
            backbone: "mobilenet_v2".into(),
        };
        let rows = vec![ManifestRow::from_tile(&t, "a.tif")];
        let csv = to_csv(&rows);
        assert!(
            !String::from_utf8_lossy(&csv).contains("labelled_by"),
            "scene rows keep the old columns"
        );
        let back = from_csv(&csv).unwrap();
        assert_eq!(back, rows);
        assert_eq!(back[0].to_tile("d", "mobilenet_v2"), t);
        // a label given in the dashboard carries who and when
        let mut row = ManifestRow::from_tile(&t, "region:job-1");
        row.labelled_by = Some("ann".into());
        row.labelled_at = Some("2026-11-30T20:00:00Z".parse().unwrap());
        let back = from_csv(&to_csv(std::slice::from_ref(&row))).unwrap();
        assert_eq!(back, vec![row]);
    }

    #[test]
    fn no_data_shares_round_trip_and_old_rows_read_as_unmeasured() {
        let row = |id: &str, nodata: Option<f32>| {
            ManifestRow {
            id: id.into(),
            nodata,
            ..from_csv(b"id,key,split,label,date,row,col,crs,min_x,min_y,max_x,max_y,lon_min,lat_min,lon_max,lat_max,sha256,source\n\
2009-08-18/r000c000,tiles/p,,,2009-08-18,0,0,EPSG:26914,0,0,225,225,-99.2,47.0,-99.1,47.1,abc,a.tif\n").unwrap()[0].clone()
        }
        };
        let old = row("2009-08-18/r000c000", None);
        assert_eq!(old.to_tile("d", "b").geo.unwrap().nodata, None);
        // a part of measured tiles keeps each share, and the tile message carries it
        let rows = vec![row("a", Some(0.25)), row("b", Some(0.0))];
        let csv = to_csv(&rows);
        assert!(String::from_utf8_lossy(&csv)
            .lines()
            .next()
            .unwrap()
            .ends_with(",nodata"));
        let back = from_csv(&csv).unwrap();
        assert_eq!(back, rows);
        assert_eq!(back[0].to_tile("d", "b").geo.unwrap().nodata, Some(0.25));
        // mixed with an unmeasured row, the part stays rectangular: it is written as 0
        let mixed = to_csv(&[row("a", Some(0.5)), old.clone()]);
        let back = from_csv(&mixed).unwrap();
        assert_eq!(
            back.iter().map(|r| r.nodata).collect::<Vec<_>>(),
            vec![Some(0.5), Some(0.0)]
        );
    }

    #[test]
    fn manifests_without_range_columns_read_as_whole_objects() {
        // written before tiles could live in packs
        let old = b"id,key,split,label,date,row,col,crs,min_x,min_y,max_x,max_y,lon_min,lat_min,lon_max,lat_max,sha256,source\n\
forest/a.jpg,tiles/ab/abc.jpg,train,forest,,,,,,,,,,,,,abc,train/forest/a.jpg\n";
        let rows = from_csv(old).unwrap();
        assert_eq!(rows.len(), 1);
        let t = rows[0].to_tile("d", "mobilenet_v2");
        assert_eq!(t.key, "tiles/ab/abc.jpg");
        assert_eq!(t.range, None);
        assert_eq!(t.label.as_deref(), Some("forest"));
    }
}
