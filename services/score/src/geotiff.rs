//! A per-date class raster as GeoTIFF: one pixel per tile, the tiles' CRS and transform,
//! a colour table, and the class names in the band metadata (`class_<index>`).

use aerial_shared::palette;
use aerial_shared::predictions::PredictionRow;
use gdal::raster::{Buffer, ColorEntry, ColorTable, PaletteInterpretation};
use gdal::spatial_ref::SpatialRef;
use gdal::{DriverManager, Metadata};

/// Pixel value of tiles without a prediction.
pub const NO_DATA: u8 = 255;

/// Geometry of a date's tile grid, derived from its tiles' footprints.
#[derive(Debug, Clone, PartialEq)]
pub struct GridGeo {
    /// CRS of the footprints.
    pub crs: String,
    /// GDAL geotransform: origin x, pixel width, 0, origin y, 0, -pixel height.
    pub transform: [f64; 6],
}

/// The grid geometry of `rows` (one date), from the footprint of the first tile with one.
pub fn grid_geo(rows: &[&PredictionRow]) -> Option<GridGeo> {
    rows.iter().find_map(|r| {
        let (b, row, col, crs) = (r.bounds?, r.row?, r.col?, r.crs.clone()?);
        let (w, h) = (b[2] - b[0], b[3] - b[1]);
        Some(GridGeo {
            crs,
            transform: [
                b[0] - col as f64 * w,
                w,
                0.0,
                b[3] + row as f64 * h,
                0.0,
                -h,
            ],
        })
    })
}

/// Writes the class raster (`cells[row * cols + col]`, `None` = no data) as GeoTIFF bytes.
pub fn write(
    labels: &[String],
    rows: usize,
    cols: usize,
    cells: &[Option<usize>],
    geo: &GridGeo,
    date: &str,
) -> Result<Vec<u8>, gdal::errors::GdalError> {
    let dir =
        tempfile::tempdir().map_err(|e| gdal::errors::GdalError::BadArgument(e.to_string()))?;
    let path = dir.path().join("map.tif");
    {
        let driver = DriverManager::get_driver_by_name("GTiff")?;
        let mut ds = driver.create_with_band_type::<u8, _>(&path, cols, rows, 1)?;
        ds.set_geo_transform(&geo.transform)?;
        ds.set_spatial_ref(&SpatialRef::from_definition(&geo.crs)?)?;
        ds.set_metadata_item("DATE", date, "")?;
        ds.set_metadata_item("CLASSES", &labels.join(","), "")?;
        let mut band = ds.rasterband(1)?;
        band.set_description("land-use class")?;
        band.set_no_data_value(Some(NO_DATA as f64))?;
        let mut table = ColorTable::new(PaletteInterpretation::Rgba);
        for (i, l) in labels.iter().enumerate() {
            let c = palette::colour(l, i);
            table.set_color_entry(
                i as u16,
                &ColorEntry::rgba(c[0].into(), c[1].into(), c[2].into(), 255),
            );
            band.set_metadata_item(&format!("class_{i}"), l, "")?;
        }
        table.set_color_entry(NO_DATA as u16, &ColorEntry::rgba(0, 0, 0, 0));
        band.set_color_table(&table);
        let data: Vec<u8> = cells
            .iter()
            .map(|c| c.map_or(NO_DATA, |v| v as u8))
            .collect();
        let mut buf = Buffer::new((cols, rows), data);
        band.write((0, 0), (cols, rows), &mut buf)?;
        ds.close()?;
    }
    std::fs::read(&path).map_err(|e| gdal::errors::GdalError::BadArgument(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(r: u32, c: u32) -> PredictionRow {
        let (x0, y1) = (485900.0 + c as f64 * 225.0, 5209247.0 - r as f64 * 225.0);
        PredictionRow {
            tile_id: format!("r{r}c{c}"),
            date: Some("2009-08-18".into()),
            row: Some(r),
            col: Some(c),
            crs: Some("EPSG:26914".into()),
            bounds: Some([x0, y1 - 225.0, x0 + 225.0, y1]),
            lonlat_bounds: None,
            label: "field".into(),
            probs: vec![1.0],
        }
    }

    #[test]
    fn transform_comes_from_any_tile() {
        let r = row(2, 3);
        let g = grid_geo(&[&r]).unwrap();
        assert_eq!(g.transform, [485900.0, 225.0, 0.0, 5209247.0, 0.0, -225.0]);
    }

    #[test]
    fn writes_a_readable_georeferenced_raster() {
        let labels = vec!["field".to_string(), "forest".to_string()];
        let r = row(0, 0);
        let geo = grid_geo(&[&r]).unwrap();
        let bytes = write(
            &labels,
            2,
            3,
            &[Some(0), Some(1), None, Some(1), Some(1), Some(0)],
            &geo,
            "2009-08-18",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tif");
        std::fs::write(&p, bytes).unwrap();
        let ds = gdal::Dataset::open(&p).unwrap();
        assert_eq!(ds.raster_size(), (3, 2));
        assert_eq!(ds.geo_transform().unwrap(), geo.transform);
        assert_eq!(ds.spatial_ref().unwrap().auth_code().unwrap(), 26914);
        let band = ds.rasterband(1).unwrap();
        let px = band.read_as::<u8>((0, 0), (3, 2), (3, 2), None).unwrap();
        assert_eq!(px.data(), &[0, 1, 255, 1, 1, 0]);
        assert_eq!(band.no_data_value(), Some(255.0));
        assert!(band.color_table().is_some());
        assert_eq!(band.metadata_item("class_1", ""), Some("forest".into()));
    }
}
