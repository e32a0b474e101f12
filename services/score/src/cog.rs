//! A date's map as a Cloud-Optimized GeoTIFF: one pixel per cell, the tiles' CRS and
//! transform, the class band, and one uint8 probability band per class, so a map streams
//! from object storage into QGIS or a web map; the class band's colours and names travel in
//! the GDAL sidecar beside it (a TIFF holds a colour table only with one or two bands).

use aerial_shared::palette;
use aerial_shared::predictions::PredictionRow;
use gdal::raster::{Buffer, RasterCreationOptions};
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

/// The grid geometry of `rows` (one date), from the footprint of the first row with one:
/// cells of `step_m` (a stride; default the tile size), the row's grid index counting cells.
pub fn grid_geo(rows: &[&PredictionRow], step_m: Option<f64>) -> Option<GridGeo> {
    rows.iter().find_map(|r| {
        let (b, row, col, crs) = (r.bounds?, r.row?, r.col?, r.crs.clone()?);
        let (w, h) = step_m.map_or((b[2] - b[0], b[3] - b[1]), |s| (s, s));
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

/// Smallest internal tile (TIFF tiles are multiples of 16 pixels).
const MIN_BLOCK: usize = 16;

/// A date's map to write: class and class probabilities per cell, row-major.
pub struct DateMap<'a> {
    /// Class names, in the probabilities' order.
    pub labels: &'a [String],
    /// Rows of cells.
    pub rows: usize,
    /// Columns of cells.
    pub cols: usize,
    /// Class index per cell, `None` = no data.
    pub cells: &'a [Option<usize>],
    /// Class probabilities per cell (`None` = no data).
    pub probs: &'a [Option<&'a [f32]>],
    /// Where the grid lies.
    pub geo: &'a GridGeo,
    /// Acquisition date.
    pub date: &'a str,
}

/// A probability as a uint8 percentage (0..=100); `NO_DATA` where there is none.
fn percent(p: Option<f32>) -> u8 {
    p.map_or(NO_DATA, |p| (p * 100.0).round().clamp(0.0, 100.0) as u8)
}

/// Tile size of the COG: the smallest power of two (16 to 512) that holds a quarter of the
/// map's longer side, so small maps still get internal tiling and an overview.
fn block_size(rows: usize, cols: usize) -> usize {
    (rows.max(cols) / 4)
        .next_power_of_two()
        .clamp(MIN_BLOCK, 512)
}

/// A date's map: the COG and its GDAL sidecar (`.aux.xml`, read by GDAL and QGIS when it
/// lies beside the COG), which carries what a TIFF of more than two bands cannot: the class
/// band's colour table and class names.
pub struct MapFiles {
    /// The Cloud-Optimized GeoTIFF.
    pub tif: Vec<u8>,
    /// Its sidecar.
    pub aux_xml: Vec<u8>,
}

/// Writes a date's map as a Cloud-Optimized GeoTIFF: band 1 the class (nodata 255, class
/// names in the band metadata `class_<i>`; colour table and category names in the sidecar),
/// bands 2..k+1 each class's probability in percent (uint8, scale 0.01, nodata 255);
/// deflate, internal tiles, nearest-neighbour overviews (a class must never be averaged).
pub fn write(map: &DateMap) -> Result<MapFiles, gdal::errors::GdalError> {
    let dir =
        tempfile::tempdir().map_err(|e| gdal::errors::GdalError::BadArgument(e.to_string()))?;
    let path = dir.path().join("map.tif");
    let ds = in_memory(map)?;
    let cog = DriverManager::get_driver_by_name("COG")?;
    let block = format!("BLOCKSIZE={}", block_size(map.rows, map.cols));
    let options = RasterCreationOptions::from_iter([
        "COMPRESS=DEFLATE",
        block.as_str(),
        "OVERVIEWS=AUTO",
        "RESAMPLING=NEAREST",
    ]);
    ds.create_copy(&cog, &path, &options)?.close()?;
    let tif =
        std::fs::read(&path).map_err(|e| gdal::errors::GdalError::BadArgument(e.to_string()))?;
    Ok(MapFiles {
        tif,
        aux_xml: aux_xml(map.labels).into_bytes(),
    })
}

/// The sidecar: band 1 as a palette band with each class's colour (no-data transparent) and
/// name.
pub fn aux_xml(labels: &[String]) -> String {
    let mut names = String::new();
    let mut entries = String::new();
    for v in 0..=usize::from(NO_DATA) {
        let (name, [r, g, b], a) = match labels.get(v) {
            Some(l) => (crate::style::escape(l), palette::colour(l, v), 255),
            None => (String::new(), [0, 0, 0], 0),
        };
        if v < labels.len() {
            names.push_str(&format!("      <Category>{name}</Category>\n"));
        }
        entries.push_str(&format!(
            "      <Entry c1=\"{r}\" c2=\"{g}\" c3=\"{b}\" c4=\"{a}\" />\n"
        ));
    }
    format!(
        "<PAMDataset>\n  <PAMRasterBand band=\"1\">\n    <ColorInterp>Palette</ColorInterp>\n    \
         <CategoryNames>\n{names}    </CategoryNames>\n    <ColorTable>\n{entries}    </ColorTable>\n  \
         </PAMRasterBand>\n</PAMDataset>\n"
    )
}

/// The map's bands in a GDAL in-memory dataset (also what the vector regions are traced from).
pub fn in_memory(map: &DateMap) -> Result<gdal::Dataset, gdal::errors::GdalError> {
    let (rows, cols, labels) = (map.rows, map.cols, map.labels);
    let mem = DriverManager::get_driver_by_name("MEM")?;
    let mut ds = mem.create_with_band_type::<u8, _>("", cols, rows, 1 + labels.len())?;
    ds.set_geo_transform(&map.geo.transform)?;
    ds.set_spatial_ref(&SpatialRef::from_definition(&map.geo.crs)?)?;
    ds.set_metadata_item("DATE", map.date, "")?;
    ds.set_metadata_item("CLASSES", &labels.join(","), "")?;
    {
        let mut band = ds.rasterband(1)?;
        band.set_description("land-use class")?;
        band.set_no_data_value(Some(NO_DATA as f64))?;
        for (i, l) in labels.iter().enumerate() {
            band.set_metadata_item(&format!("class_{i}"), l, "")?;
        }
        let data: Vec<u8> = map
            .cells
            .iter()
            .map(|c| c.map_or(NO_DATA, |v| v as u8))
            .collect();
        band.write((0, 0), (cols, rows), &mut Buffer::new((cols, rows), data))?;
    }
    for (k, l) in labels.iter().enumerate() {
        let mut band = ds.rasterband(k + 2)?;
        band.set_description(&format!("probability of {l} (percent)"))?;
        band.set_no_data_value(Some(NO_DATA as f64))?;
        band.set_scale(0.01)?;
        band.set_offset(0.0)?;
        band.set_metadata_item("class", l, "")?;
        let data: Vec<u8> = map
            .probs
            .iter()
            .map(|p| percent(p.and_then(|p| p.get(k).copied())))
            .collect();
        band.write((0, 0), (cols, rows), &mut Buffer::new((cols, rows), data))?;
    }
    Ok(ds)
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
        let g = grid_geo(&[&r], None).unwrap();
        assert_eq!(g.transform, [485900.0, 225.0, 0.0, 5209247.0, 0.0, -225.0]);
        // a window of a 110 m stride at window cell (2, 3) starts 330 m east, 220 m south
        let mut w = row(0, 0);
        w.bounds = Some([
            485900.0 + 330.0,
            5209247.0 - 220.0 - 225.0,
            485900.0 + 555.0,
            5209247.0 - 220.0,
        ]);
        (w.row, w.col) = (Some(2), Some(3));
        let g = grid_geo(&[&w], Some(110.0)).unwrap();
        assert_eq!(g.transform, [485900.0, 110.0, 0.0, 5209247.0, 0.0, -110.0]);
    }

    #[test]
    fn writes_a_cog_with_class_and_probability_bands() {
        let labels = vec!["field".to_string(), "forest".to_string()];
        let r = row(0, 0);
        let geo = grid_geo(&[&r], None).unwrap();
        let (rows, cols) = (20, 40);
        let cells: Vec<Option<usize>> = (0..rows * cols)
            .map(|i| (i != 5).then_some(i % 2))
            .collect();
        let p0 = [0.8f32, 0.2];
        let p1 = [0.004f32, 0.996];
        let probs: Vec<Option<&[f32]>> = cells
            .iter()
            .map(|c| c.map(|c| if c == 0 { &p0[..] } else { &p1[..] }))
            .collect();
        let bytes = write(&DateMap {
            labels: &labels,
            rows,
            cols,
            cells: &cells,
            probs: &probs,
            geo: &geo,
            date: "2009-08-18",
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tif");
        std::fs::write(&p, &bytes.tif).unwrap();
        std::fs::write(dir.path().join("t.tif.aux.xml"), &bytes.aux_xml).unwrap();
        let ds = gdal::Dataset::open(&p).unwrap();
        assert_eq!(ds.raster_size(), (cols, rows));
        assert_eq!(ds.raster_count(), 3);
        assert_eq!(ds.geo_transform().unwrap(), geo.transform);
        assert_eq!(ds.spatial_ref().unwrap().auth_code().unwrap(), 26914);
        assert_eq!(
            ds.metadata_item("LAYOUT", "IMAGE_STRUCTURE"),
            Some("COG".into())
        );
        let class = ds.rasterband(1).unwrap();
        let px = class.read_as::<u8>((0, 0), (8, 1), (8, 1), None).unwrap();
        assert_eq!(px.data(), &[0, 1, 0, 1, 0, 255, 0, 1]);
        assert_eq!(class.no_data_value(), Some(255.0));
        let table = class.color_table().expect("the sidecar's colour table");
        let c = palette::colour("forest", 1);
        let e = table.entry_as_rgb(1).unwrap();
        assert_eq!(
            (e.r, e.g, e.b, e.a),
            (c[0].into(), c[1].into(), c[2].into(), 255)
        );
        assert_eq!(table.entry_as_rgb(255).unwrap().a, 0, "no-data transparent");
        assert_eq!(class.metadata_item("class_1", ""), Some("forest".into()));
        assert!(class.overview_count().unwrap() >= 1, "overviews");
        let forest = ds.rasterband(3).unwrap();
        let px = forest.read_as::<u8>((0, 0), (6, 1), (6, 1), None).unwrap();
        assert_eq!(px.data(), &[20, 100, 20, 100, 20, 255]);
        assert_eq!(forest.scale(), Some(0.01));
        assert_eq!(
            forest.description().unwrap(),
            "probability of forest (percent)"
        );
    }

    #[test]
    fn blocks_fit_the_map() {
        assert_eq!(block_size(16, 20), 16);
        assert_eq!(block_size(32, 40), 16);
        assert_eq!(block_size(3000, 4000), 512);
        assert_eq!(block_size(300, 400), 128);
    }
}
