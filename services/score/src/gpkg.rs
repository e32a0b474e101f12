//! A score job's vector layers as one GeoPackage, which QGIS opens directly, in the scenes'
//! CRS: `windows`, one polygon per scored window (date, class, the probability of each class
//! `p_<class>`), and `regions`, each date's class map dissolved into polygons of one class
//! (date, class, area in hectares), traced from the same raster as the date's COG.

use crate::cog::{self, DateMap};
use aerial_shared::predictions::PredictionRow;
use gdal::errors::GdalError;
use gdal::spatial_ref::SpatialRef;
use gdal::vector::{Feature, Geometry, LayerAccess, LayerOptions, OGRFieldType};
use gdal::DriverManager;
use gdal_sys::OGRwkbGeometryType::wkbPolygon;

/// Layer of the scored windows.
pub const WINDOWS: &str = "windows";
/// Layer of the dissolved class regions.
pub const REGIONS: &str = "regions";

/// The GeoPackage's bytes; `None` when no row has a footprint (a labelled dataset).
pub fn write(
    labels: &[String],
    rows: &[PredictionRow],
    maps: &[DateMap],
) -> Result<Option<Vec<u8>>, GdalError> {
    let Some(crs) = rows
        .iter()
        .find(|r| r.bounds.is_some())
        .and_then(|r| r.crs.clone())
    else {
        return Ok(None);
    };
    let srs = SpatialRef::from_definition(&crs)?;
    let dir = tempfile::tempdir().map_err(|e| GdalError::BadArgument(e.to_string()))?;
    let path = dir.path().join("layers.gpkg");
    {
        let mut ds = DriverManager::get_driver_by_name("GPKG")?.create_vector_only(&path)?;
        let mut txn = ds.start_transaction()?;
        windows(&mut txn, &srs, labels, rows)?;
        regions(&mut txn, &srs, maps)?;
        txn.commit()?;
    }
    std::fs::read(&path)
        .map(Some)
        .map_err(|e| GdalError::BadArgument(e.to_string()))
}

fn windows(
    ds: &mut gdal::Dataset,
    srs: &SpatialRef,
    labels: &[String],
    rows: &[PredictionRow],
) -> Result<(), GdalError> {
    let layer = ds.create_layer(LayerOptions {
        name: WINDOWS,
        srs: Some(srs),
        ty: wkbPolygon,
        ..Default::default()
    })?;
    let probs: Vec<String> = labels.iter().map(|l| format!("p_{l}")).collect();
    let mut fields = vec![
        ("tile_id", OGRFieldType::OFTString),
        ("date", OGRFieldType::OFTString),
        ("class", OGRFieldType::OFTString),
    ];
    fields.extend(probs.iter().map(|p| (p.as_str(), OGRFieldType::OFTReal)));
    layer.create_defn_fields(&fields)?;
    for r in rows {
        let Some(b) = r.bounds else { continue };
        let mut f = Feature::new(layer.defn())?;
        f.set_geometry(Geometry::bbox(b[0], b[1], b[2], b[3])?)?;
        f.set_field_string(0, &r.tile_id)?;
        f.set_field_string(1, r.date.as_deref().unwrap_or_default())?;
        f.set_field_string(2, &r.label)?;
        for (k, p) in r.probs.iter().enumerate().take(labels.len()) {
            f.set_field_double(3 + k, f64::from(*p))?;
        }
        f.create(&layer)?;
    }
    Ok(())
}

fn regions(ds: &mut gdal::Dataset, srs: &SpatialRef, maps: &[DateMap]) -> Result<(), GdalError> {
    let layer = ds.create_layer(LayerOptions {
        name: REGIONS,
        srs: Some(srs),
        ty: wkbPolygon,
        ..Default::default()
    })?;
    layer.create_defn_fields(&[
        ("date", OGRFieldType::OFTString),
        ("class", OGRFieldType::OFTString),
        ("area_ha", OGRFieldType::OFTReal),
    ])?;
    for map in maps {
        let raster = cog::in_memory(map)?;
        let band = raster.rasterband(1)?;
        let mask = band.open_mask_band()?;
        let mut traced = DriverManager::get_driver_by_name("Memory")?.create_vector_only("")?;
        let mut polys = traced.create_layer(LayerOptions {
            name: "traced",
            srs: Some(srs),
            ty: wkbPolygon,
            ..Default::default()
        })?;
        polys.create_defn_fields(&[("class", OGRFieldType::OFTInteger)])?;
        // SAFETY: the band, its mask and the layer outlive the call; no options, no progress
        let rv = unsafe {
            gdal_sys::GDALPolygonize(
                band.c_rasterband(),
                mask.c_rasterband(),
                polys.c_layer(),
                0,
                std::ptr::null_mut(),
                None,
                std::ptr::null_mut(),
            )
        };
        if rv != gdal_sys::CPLErr::CE_None {
            return Err(GdalError::BadArgument(format!(
                "tracing the class regions of {} failed",
                map.date
            )));
        }
        for p in polys.features() {
            let (Some(class), Some(geom)) = (p.field_as_integer(0)?, p.geometry()) else {
                continue;
            };
            let Some(label) = usize::try_from(class).ok().and_then(|c| map.labels.get(c)) else {
                continue;
            };
            let mut f = Feature::new(layer.defn())?;
            f.set_geometry(geom.clone())?;
            f.set_field_string(0, map.date)?;
            f.set_field_string(1, label)?;
            f.set_field_double(2, geom.area() / 10_000.0)?;
            f.create(&layer)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cog::GridGeo;

    fn row(date: &str, r: u32, c: u32, label: &str, p: [f32; 2]) -> PredictionRow {
        let (x0, y1) = (485900.0 + c as f64 * 225.0, 5209247.0 - r as f64 * 225.0);
        PredictionRow {
            tile_id: format!("{date}/r{r}c{c}"),
            date: Some(date.into()),
            row: Some(r),
            col: Some(c),
            crs: Some("EPSG:26914".into()),
            bounds: Some([x0, y1 - 225.0, x0 + 225.0, y1]),
            lonlat_bounds: None,
            label: label.into(),
            probs: p.to_vec(),
        }
    }

    fn text(f: &Feature, name: &str) -> String {
        f.field_as_string(f.field_index(name).unwrap())
            .unwrap()
            .unwrap()
    }

    fn num(f: &Feature, name: &str) -> f64 {
        f.field_as_double(f.field_index(name).unwrap())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn windows_and_dissolved_regions_per_date() {
        let labels = vec!["field".to_string(), "forest".to_string()];
        // 2009: a 2×2 grid, the left column field and the right forest; 2020: all field
        let rows = vec![
            row("2009", 0, 0, "field", [0.9, 0.1]),
            row("2009", 1, 0, "field", [0.8, 0.2]),
            row("2009", 0, 1, "forest", [0.3, 0.7]),
            row("2009", 1, 1, "forest", [0.1, 0.9]),
            row("2020", 0, 0, "field", [0.9, 0.1]),
            row("2020", 0, 1, "field", [0.9, 0.1]),
        ];
        let geo = GridGeo {
            crs: "EPSG:26914".into(),
            transform: [485900.0, 225.0, 0.0, 5209247.0, 0.0, -225.0],
        };
        let c2009 = [Some(0), Some(1), Some(0), Some(1)];
        let c2020 = [Some(0), Some(0), None, None];
        let none: Vec<Option<&[f32]>> = vec![None; 4];
        let maps = [
            DateMap {
                labels: &labels,
                rows: 2,
                cols: 2,
                cells: &c2009,
                probs: &none,
                geo: &geo,
                date: "2009",
            },
            DateMap {
                labels: &labels,
                rows: 2,
                cols: 2,
                cells: &c2020,
                probs: &none,
                geo: &geo,
                date: "2020",
            },
        ];
        let bytes = write(&labels, &rows, &maps).unwrap().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.gpkg");
        std::fs::write(&p, bytes).unwrap();
        let ds = gdal::Dataset::open(&p).unwrap();
        let mut w = ds.layer_by_name(WINDOWS).unwrap();
        assert_eq!(w.feature_count(), 6);
        assert_eq!(w.spatial_ref().unwrap().auth_code().unwrap(), 26914);
        let f = w.features().next().unwrap();
        assert_eq!(text(&f, "class"), "field");
        assert!((num(&f, "p_forest") - 0.1).abs() < 1e-6);
        let mut r = ds.layer_by_name(REGIONS).unwrap();
        let mut got: Vec<(String, String, f64)> = r
            .features()
            .map(|f| (text(&f, "date"), text(&f, "class"), num(&f, "area_ha")))
            .collect();
        got.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        // a 225 m cell is 5.0625 ha; each class region is dissolved into one polygon
        assert_eq!(
            got,
            vec![
                ("2009".into(), "field".into(), 10.125),
                ("2009".into(), "forest".into(), 10.125),
                ("2020".into(), "field".into(), 10.125),
            ]
        );
    }

    #[test]
    fn no_footprints_no_geopackage() {
        let labels = vec!["field".to_string()];
        let mut r = row("2009", 0, 0, "field", [1.0, 0.0]);
        r.bounds = None;
        assert!(write(&labels, &[r], &[]).unwrap().is_none());
    }
}
