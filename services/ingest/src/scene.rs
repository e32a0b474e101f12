//! Cutting a geo-referenced scene into tiles of a fixed ground size with GDAL.
//!
//! Rule: a tile is `round(tile_meters / pixel_size)` pixels square (224 m on a 5 m grid →
//! 45 px, 225 m), laid from the scene's upper-left corner; only tiles wholly inside the
//! scene are kept, partial edge tiles are dropped. Bands 1-3 are taken as R, G, B (NAIP's
//! 4th band, near infrared, is ignored). Tiles are stored as PNG at their native size; the
//! shared preprocessing resizes them to the model's input.
//!
//! Memory stays bounded whatever the scene's size: it is read one strip of tile rows at a
//! time (GDAL window reads), and the tiles' PNGs go straight into a pack file on disk.
//!
//! No-data: each tile records the share of its pixels that GDAL's mask marks invalid (a
//! nodata value, an internal or per-dataset mask, an alpha band: NAIP collars and gaps).
//! A pixel is no-data when every one of R, G, B that has a mask says so, so one dark band
//! under a per-band nodata value of 0 does not blank a pixel. Score leaves out tiles and
//! windows above its `max_nodata` share.

use aerial_shared::messages::ByteRange;
use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use gdal::{Dataset, DatasetOptions, GdalOpenFlags};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// Caps on one scene, checked before any pixel is read.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most pixels (width × height).
    pub max_pixels: u64,
    /// Most tiles it may be cut into.
    pub max_tiles: u64,
}

/// Why a scene was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SceneError {
    /// GDAL could not open or read it.
    #[error("unreadable raster: {0}")]
    Unreadable(String),
    /// Not a TIFF file: only GeoTIFF is read, never GDAL's other drivers.
    #[error("not a GeoTIFF ({0}): only GeoTIFF scenes are accepted (VRT and other formats can read files and URLs on the server)")]
    NotGeoTiff(String),
    /// No CRS or no geotransform.
    #[error("scene has no geo-reference (no CRS or geotransform)")]
    NoGeoReference,
    /// Fewer than 3 bands, or not 8-bit.
    #[error("band layout not RGB: {0}")]
    Bands(String),
    /// Rotated or non-square pixels.
    #[error("unsupported geotransform: {0}")]
    Transform(String),
    /// Writing the local pack file failed (disk full): the service's fault, not the scene's.
    #[error("local disk: {0}")]
    Io(String),
    /// Over a cap on pixels or tiles.
    #[error("scene too large: {0}")]
    TooLarge(String),
    /// Reading a scene in S3 failed for a reason of the store or the network (HTTP error,
    /// timeout, credentials): the scene may be fine, the job is retried.
    #[error("reading it in s3: {0}")]
    Remote(String),
    /// The scene is smaller than one tile.
    #[error("scene of {width}x{height} px holds no whole {tile} px tile")]
    TooSmall {
        /// Width.
        width: usize,
        /// Height.
        height: usize,
        /// Tile edge.
        tile: usize,
    },
}

/// One cut tile.
pub struct SceneTile {
    /// Grid row (0 = north).
    pub row: u32,
    /// Grid column (0 = west).
    pub col: u32,
    /// PNG bytes.
    pub png: Vec<u8>,
    /// Footprint in the scene CRS: min x, min y, max x, max y.
    pub bounds: [f64; 4],
    /// Footprint in WGS84: west, south, east, north.
    pub lonlat: [f64; 4],
    /// Share of the tile's pixels that are no-data (0 to 1).
    pub nodata: f32,
}

/// What the scene is.
#[derive(Debug)]
pub struct SceneInfo {
    /// `EPSG:<code>` (or the CRS name when it has no EPSG code).
    pub crs: String,
    /// Tile edge in pixels.
    pub tile_px: usize,
    /// Grid rows and columns kept.
    pub grid: (usize, usize),
    /// How no-data is known (`none`, `nodata value`, `mask`, `alpha band`).
    pub mask: &'static str,
    /// Tiles with at least one no-data pixel.
    pub tiles_with_nodata: usize,
}

fn gdal_err(e: gdal::errors::GdalError) -> SceneError {
    SceneError::Unreadable(e.to_string())
}

/// What the first bytes say the file is, when it is not a TIFF (classic or BigTIFF, either
/// byte order).
fn not_tiff(head: &[u8]) -> Option<String> {
    const MAGIC: [&[u8]; 4] = [b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"];
    if MAGIC.iter().any(|m| head.starts_with(m)) {
        return None;
    }
    let text = String::from_utf8_lossy(&head[..head.len().min(64)]);
    let text = text.trim_start();
    Some(if text.starts_with("<VRTDataset") {
        "a GDAL VRT".into()
    } else if text.starts_with('<') {
        "an XML file".into()
    } else if head.is_empty() {
        "an empty file".into()
    } else {
        "no TIFF signature".into()
    })
}

/// Opens a scene with the GeoTIFF driver alone.
///
/// Why so strict: a VRT (or any of GDAL's ~200 drivers) can name other files or URLs as its
/// pixels (`/proc/self/environ`, `/vsicurl/...`), and the tiles cut from it would hand those
/// bytes, the service's secrets included, to whoever uploaded it. The file's signature is
/// checked first, then GDAL may only use `GTiff`, with no side-car files read (a private
/// directory and PAM off, see [`harden_gdal`]).
fn open_geotiff(path: &Path) -> Result<Dataset, SceneError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(64);
    std::fs::File::open(path)
        .and_then(|f| f.take(64).read_to_end(&mut head))
        .map_err(|e| SceneError::Unreadable(e.to_string()))?;
    open_checked(path, &head)
}

/// Opens `path` (a file, or a `/vsis3/` name) as GeoTIFF once its first bytes `head` are a
/// TIFF signature.
fn open_checked(path: &Path, head: &[u8]) -> Result<Dataset, SceneError> {
    if let Some(what) = not_tiff(head) {
        return Err(SceneError::NotGeoTiff(what));
    }
    harden_gdal();
    Dataset::open_ex(
        path,
        DatasetOptions {
            open_flags: GdalOpenFlags::GDAL_OF_RASTER | GdalOpenFlags::GDAL_OF_READONLY,
            allowed_drivers: Some(&["GTiff"]),
            ..Default::default()
        },
    )
    .map_err(gdal_err)
}

/// GDAL settings for untrusted input, set once per process: no `.aux.xml` side-cars (PAM),
/// no directory listing, and no network file systems even if a path named one.
pub fn harden_gdal() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (k, v) in [
            ("GDAL_PAM_ENABLED", "NO"),
            ("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR"),
            ("CPL_VSIL_CURL_ALLOWED_EXTENSIONS", "NONE"),
            ("GDAL_HTTP_MAX_RETRY", "0"),
            // each strip is read once: GDAL's block cache (5 % of RAM by default, 1.2 GB on a
            // 23 GiB machine) would only hold pixels already cut, as resident memory
            ("GDAL_CACHEMAX", "32"),
        ] {
            // a failed set leaves GDAL's default, which the driver allow-list still bounds
            let _ = gdal::config::set_config_option(k, v);
        }
    });
}

/// Opens `path` and cuts it into tiles of `tile_meters` on the ground, handing each tile to
/// `each` in row-major order.
pub fn cut(
    path: &Path,
    tile_meters: f64,
    limits: Limits,
    each: impl FnMut(SceneTile) -> Result<(), SceneError>,
) -> Result<SceneInfo, SceneError> {
    cut_dataset(&open_geotiff(path)?, tile_meters, limits, each)
}

/// Cuts an opened scene (see [`cut`]).
fn cut_dataset(
    ds: &Dataset,
    tile_meters: f64,
    limits: Limits,
    mut each: impl FnMut(SceneTile) -> Result<(), SceneError>,
) -> Result<SceneInfo, SceneError> {
    let srs = ds.spatial_ref().map_err(|_| SceneError::NoGeoReference)?;
    let gt = ds.geo_transform().map_err(|_| SceneError::NoGeoReference)?;
    // GDAL reports a default identity transform for files without one
    if gt == [0.0, 1.0, 0.0, 0.0, 0.0, 1.0] {
        return Err(SceneError::NoGeoReference);
    }
    if gt[2] != 0.0 || gt[4] != 0.0 {
        return Err(SceneError::Transform(
            "rotated rasters are not supported".into(),
        ));
    }
    let (px, py) = (gt[1], -gt[5]);
    if px <= 0.0 || (px - py).abs() > 1e-6 * px {
        return Err(SceneError::Transform(format!(
            "pixels are not square north-up ({px} x {py})"
        )));
    }
    let bands = ds.raster_count();
    if bands < 3 {
        return Err(SceneError::Bands(format!(
            "{bands} band(s), need at least 3 (R, G, B)"
        )));
    }
    let (width, height) = ds.raster_size();
    let tile_px = (tile_meters / px).round().max(1.0) as usize;
    let (rows, cols) = (height / tile_px, width / tile_px);
    if rows == 0 || cols == 0 {
        return Err(SceneError::TooSmall {
            width,
            height,
            tile: tile_px,
        });
    }
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return Err(SceneError::TooLarge(format!(
            "{width} x {height} px is over the cap of {:.1} megapixels",
            limits.max_pixels as f64 / 1e6
        )));
    }
    if (rows * cols) as u64 > limits.max_tiles {
        return Err(SceneError::TooLarge(format!(
            "{} tiles of {tile_px} px is over the cap of {} tiles per scene",
            rows * cols,
            limits.max_tiles
        )));
    }
    let mut bands = Vec::with_capacity(3);
    for b in 1..=3 {
        let band = ds.rasterband(b).map_err(gdal_err)?;
        if band.band_type() != gdal::raster::GdalDataType::UInt8 {
            return Err(SceneError::Bands(format!(
                "band {b} is {:?}, need 8-bit",
                band.band_type()
            )));
        }
        bands.push(band);
    }
    let (masks, mask) = nodata_masks(&bands)?;
    let mut tiles_with_nodata = 0;
    // the kept grid's width: columns past it belong to no tile and are never read
    let strip_w = cols * tile_px;
    let crs = match (srs.auth_name(), srs.auth_code()) {
        (Some(name), Ok(code)) => format!("{name}:{code}"),
        _ => srs.name().unwrap_or_else(|| "unknown".into()),
    };
    let mut wgs84 = SpatialRef::from_epsg(4326).map_err(gdal_err)?;
    wgs84.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let mut src = srs.clone();
    src.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let to_lonlat = CoordTransform::new(&src, &wgs84).map_err(gdal_err)?;
    let edge = tile_px as f64 * px;
    // strip `r` of tile rows of a band (or mask): tile_px rows of the kept grid's width
    let read_strip = |band: &gdal::raster::RasterBand, r: usize| {
        band.read_as::<u8>(
            (0, (r * tile_px) as isize),
            (strip_w, tile_px),
            (strip_w, tile_px),
            None,
        )
        .map(|b| b.into_shape_and_vec().1)
        .map_err(gdal_err)
    };
    for r in 0..rows {
        // one strip of tile rows at a time: memory is 3 × tile_px × width bytes, not the scene
        let rgb = bands
            .iter()
            .map(|band| read_strip(band, r))
            .collect::<Result<Vec<_>, _>>()?;
        // per pixel of the strip: is it no-data (every masked band says invalid)? A nodata
        // value is compared with the pixels already read; a mask band is read (once per
        // dataset when shared)
        let mut invalid = vec![!masks.is_empty(); strip_w * tile_px];
        for m in &masks {
            match m {
                Mask::Value { band, value } => {
                    for (inv, v) in invalid.iter_mut().zip(&rgb[*band]) {
                        *inv &= v == value;
                    }
                }
                Mask::Band(mask) => {
                    for (inv, v) in invalid.iter_mut().zip(read_strip(mask, r)?) {
                        *inv &= v == 0;
                    }
                }
            }
        }
        for c in 0..cols {
            let bad = (0..tile_px)
                .map(|y| {
                    let i = y * strip_w + c * tile_px;
                    invalid[i..i + tile_px].iter().filter(|&&b| b).count()
                })
                .sum::<usize>();
            let nodata = bad as f32 / (tile_px * tile_px) as f32;
            tiles_with_nodata += usize::from(bad > 0);
            let img = image::RgbImage::from_fn(tile_px as u32, tile_px as u32, |x, y| {
                let i = y as usize * strip_w + c * tile_px + x as usize;
                image::Rgb([rgb[0][i], rgb[1][i], rgb[2][i]])
            });
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .map_err(|e| SceneError::Unreadable(e.to_string()))?;
            let min_x = gt[0] + (c * tile_px) as f64 * px;
            let max_y = gt[3] - (r * tile_px) as f64 * py;
            let bounds = [min_x, max_y - edge, min_x + edge, max_y];
            let mut xs = [bounds[0], bounds[2], bounds[2], bounds[0]];
            let mut ys = [bounds[1], bounds[1], bounds[3], bounds[3]];
            to_lonlat
                .transform_coords(&mut xs, &mut ys, &mut [])
                .map_err(gdal_err)?;
            let lonlat = [
                xs.iter().copied().fold(f64::INFINITY, f64::min),
                ys.iter().copied().fold(f64::INFINITY, f64::min),
                xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ];
            each(SceneTile {
                row: r as u32,
                col: c as u32,
                png,
                bounds,
                lonlat,
                nodata,
            })?;
        }
    }
    Ok(SceneInfo {
        crs,
        tile_px,
        grid: (rows, cols),
        mask,
        tiles_with_nodata,
    })
}

/// How one of R, G, B marks its no-data pixels.
enum Mask<'a> {
    /// Pixels of band `band` (0..3) equal to `value`.
    Value { band: usize, value: u8 },
    /// A mask band: 0 = no-data (a per-dataset mask or an alpha band).
    Band(gdal::raster::RasterBand<'a>),
}

/// The masks of R, G, B (none when every pixel is valid) and how no-data is known. A mask
/// shared by the whole dataset is read once; a nodata value is compared with the pixels
/// already read, not read again as GDAL's mask band would (a scene in S3 is fetched once).
fn nodata_masks<'a>(
    bands: &'a [gdal::raster::RasterBand<'a>],
) -> Result<(Vec<Mask<'a>>, &'static str), SceneError> {
    let mut masks = Vec::new();
    let mut how = "none";
    for (i, band) in bands.iter().enumerate() {
        let flags = band.mask_flags().map_err(gdal_err)?;
        if flags.is_all_valid() {
            continue;
        }
        if flags.is_nodata() && !flags.is_per_dataset() {
            how = "nodata value";
            // a value no 8-bit pixel can take marks nothing
            match band.no_data_value() {
                Some(v) if v.fract() == 0.0 && (0.0..=255.0).contains(&v) => {
                    masks.push(Mask::Value {
                        band: i,
                        value: v as u8,
                    })
                }
                _ => {}
            }
            continue;
        }
        how = if flags.is_alpha() {
            "alpha band"
        } else {
            "mask"
        };
        masks.push(Mask::Band(band.open_mask_band().map_err(gdal_err)?));
        if flags.is_per_dataset() {
            break;
        }
    }
    Ok((masks, how))
}

/// A scene's tiles as one object: their PNGs back to back, and where each one lies.
pub struct Pack {
    /// sha256 of the pack (hex): its content address.
    pub sha256: String,
    /// Its size in bytes.
    pub len: u64,
    /// The tiles, in cut order.
    pub tiles: Vec<PackedTile>,
}

/// One tile of a [`Pack`].
pub struct PackedTile {
    /// Grid row (0 = north).
    pub row: u32,
    /// Grid column (0 = west).
    pub col: u32,
    /// Footprint in the scene CRS.
    pub bounds: [f64; 4],
    /// Footprint in WGS84.
    pub lonlat: [f64; 4],
    /// The tile's PNG within the pack.
    pub range: ByteRange,
    /// sha256 of the tile's PNG (hex).
    pub sha256: String,
    /// Share of its pixels that are no-data.
    pub nodata: f32,
}

/// Writes a pack file tile by tile, hashing as it goes (no tile is kept in memory).
pub struct PackWriter {
    out: std::io::BufWriter<std::fs::File>,
    hasher: Sha256,
    len: u64,
    tiles: Vec<PackedTile>,
}

impl PackWriter {
    /// A new pack file at `path`.
    pub fn create(path: &Path) -> Result<Self, SceneError> {
        let f = std::fs::File::create(path).map_err(|e| SceneError::Io(e.to_string()))?;
        Ok(Self {
            out: std::io::BufWriter::new(f),
            hasher: Sha256::new(),
            len: 0,
            tiles: Vec::new(),
        })
    }

    /// Appends one tile.
    pub fn add(&mut self, t: SceneTile) -> Result<(), SceneError> {
        self.out
            .write_all(&t.png)
            .map_err(|e| SceneError::Io(e.to_string()))?;
        self.hasher.update(&t.png);
        self.tiles.push(PackedTile {
            row: t.row,
            col: t.col,
            bounds: t.bounds,
            lonlat: t.lonlat,
            range: ByteRange {
                offset: self.len,
                length: t.png.len() as u64,
            },
            sha256: hex::encode(Sha256::digest(&t.png)),
            nodata: t.nodata,
        });
        self.len += t.png.len() as u64;
        Ok(())
    }

    /// Flushes the file and returns what it holds.
    pub fn finish(mut self) -> Result<Pack, SceneError> {
        self.out
            .flush()
            .map_err(|e| SceneError::Io(e.to_string()))?;
        Ok(Pack {
            sha256: hex::encode(self.hasher.finalize()),
            len: self.len,
            tiles: self.tiles,
        })
    }
}

/// Cuts the scene at `path` into a pack file at `pack_path`.
pub fn cut_to_pack(
    path: &Path,
    tile_meters: f64,
    limits: Limits,
    pack_path: &Path,
) -> Result<(SceneInfo, Pack), SceneError> {
    let mut w = PackWriter::create(pack_path)?;
    let info = cut(path, tile_meters, limits, |t| w.add(t))?;
    Ok((info, w.finish()?))
}

/// Cuts a scene that lies in S3 into a pack file, reading it where it is through GDAL's
/// `/vsis3/` (HTTP range requests for the header and each strip; the scene is never copied).
/// `head` is the object's first bytes, read by the caller: anything but a TIFF is refused
/// before GDAL sees it. Blocking: call it off the async runtime.
pub fn cut_remote_to_pack(
    object: &aerial_shared::keys::ObjectRef,
    head: &[u8],
    access: &crate::remote::S3Access,
    tile_meters: f64,
    limits: Limits,
    pack_path: &Path,
) -> Result<(SceneInfo, Pack), SceneError> {
    let _options = access.for_this_thread();
    let name = crate::remote::vsis3_path(object);
    // SAFETY: resets this thread's GDAL error state, so the class read below is this read's
    unsafe { gdal_sys::CPLErrorReset() };
    let result = (|| {
        let ds = open_checked(Path::new(&name), head)?;
        let mut w = PackWriter::create(pack_path)?;
        let info = cut_dataset(&ds, tile_meters, limits, |t| w.add(t))?;
        Ok((info, w.finish()?))
    })()
    .map_err(|e| match e {
        SceneError::Unreadable(m) if crate::remote::failed_in_transit(&m) => SceneError::Remote(m),
        e => e,
    });
    // the next read of this key must see the object as it is then, not GDAL's cached blocks
    crate::remote::forget(&name);
    result
}

/// The acquisition date in a file name (`..._YYYYMMDD.tif` → `YYYY-MM-DD`), if any.
pub fn date_from_name(name: &str) -> Option<String> {
    let digits: Vec<char> = name.chars().collect();
    for w in digits.windows(8).rev() {
        if w.iter().all(char::is_ascii_digit) {
            let s: String = w.iter().collect();
            let d = format!("{}-{}-{}", &s[0..4], &s[4..6], &s[6..8]);
            if chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d").is_ok()
                && s.starts_with(['1', '2'])
            {
                return Some(d);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_CAPS: Limits = Limits {
        max_pixels: u64::MAX,
        max_tiles: u64::MAX,
    };

    fn tile_scene(
        path: &Path,
        tile_meters: f64,
    ) -> Result<(SceneInfo, Vec<SceneTile>), SceneError> {
        let mut tiles = Vec::new();
        let info = cut(path, tile_meters, NO_CAPS, |t| {
            tiles.push(t);
            Ok(())
        })?;
        Ok((info, tiles))
    }

    fn region() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/region/naip_nd_m_4709963_se")
    }

    #[test]
    fn dates_from_names() {
        assert_eq!(
            date_from_name("m_4709963_se_14_1_20090818.tif").as_deref(),
            Some("2009-08-18")
        );
        assert_eq!(date_from_name("scene.tif"), None);
        assert_eq!(date_from_name("x_20091399.tif"), None);
    }

    #[test]
    fn naip_scene_gives_320_tiles_inside_its_bounds() {
        let (info, tiles) =
            tile_scene(&region().join("m_4709963_se_14_1_20090818.tif"), 224.0).unwrap();
        assert_eq!(info.crs, "EPSG:26914");
        assert_eq!(info.tile_px, 45);
        assert_eq!(info.grid, (16, 20));
        assert_eq!(tiles.len(), 320);
        // README bounds of this file: -99.18559, 47.00402, -99.12405, 47.03667
        for t in &tiles {
            assert!(
                t.lonlat[0] >= -99.18560 && t.lonlat[2] <= -99.12404,
                "{:?}",
                t.lonlat
            );
            assert!(
                t.lonlat[1] >= 47.00401 && t.lonlat[3] <= 47.03668,
                "{:?}",
                t.lonlat
            );
            assert!((t.bounds[2] - t.bounds[0] - 225.0).abs() < 1e-6);
        }
        assert_eq!(
            tiles[0].bounds[3], 5209247.0,
            "first tile starts at the scene's upper-left corner"
        );
        let img = image::load_from_memory(&tiles[0].png).unwrap();
        assert_eq!((img.width(), img.height()), (45, 45));

        // the pack file holds every PNG back to back; each range gives the tile's own bytes
        let pngs: Vec<Vec<u8>> = tiles.iter().map(|t| t.png.clone()).collect();
        let dir = tempfile::tempdir().unwrap();
        let (_, p) = cut_to_pack(
            &region().join("m_4709963_se_14_1_20090818.tif"),
            224.0,
            NO_CAPS,
            &dir.path().join("pack"),
        )
        .unwrap();
        let bytes = std::fs::read(dir.path().join("pack")).unwrap();
        assert_eq!(p.tiles.len(), 320);
        assert_eq!(bytes.len(), pngs.iter().map(Vec::len).sum::<usize>());
        assert_eq!(p.len, bytes.len() as u64);
        assert_eq!(p.sha256, hex::encode(Sha256::digest(&bytes)));
        for (t, png) in p.tiles.iter().zip(&pngs) {
            let r = t.range.offset as usize..t.range.end() as usize;
            assert_eq!(
                &bytes[r],
                &png[..],
                "strip reads give the same tiles as before"
            );
            assert_eq!(t.sha256, hex::encode(Sha256::digest(png)));
        }
        assert_eq!((p.tiles[21].row, p.tiles[21].col), (1, 1));
    }

    /// A 90 × 90 px scene of 5 m pixels (2 × 2 tiles of 45 px) at the region's corner, all
    /// 100, with `alpha` a 4th alpha band; `paint` sets pixels before it is written.
    fn synthetic(path: &Path, alpha: bool, paint: impl Fn(usize, usize, usize) -> u8) {
        let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
        let bands = if alpha { 4 } else { 3 };
        let mut ds = driver
            .create_with_band_type::<u8, _>(path, 90, 90, bands)
            .unwrap();
        ds.set_geo_transform(&[485900.0, 5.0, 0.0, 5209247.0, 0.0, -5.0])
            .unwrap();
        ds.set_spatial_ref(&SpatialRef::from_epsg(26914).unwrap())
            .unwrap();
        for b in 1..=bands {
            let mut band = ds.rasterband(b).unwrap();
            let px: Vec<u8> = (0..90 * 90).map(|i| paint(b, i % 90, i / 90)).collect();
            band.write(
                (0, 0),
                (90, 90),
                &mut gdal::raster::Buffer::new((90, 90), px),
            )
            .unwrap();
            if alpha && b == 4 {
                band.set_color_interpretation(gdal::raster::ColorInterpretation::AlphaBand)
                    .unwrap();
            } else if !alpha {
                band.set_no_data_value(Some(0.0)).unwrap();
            }
        }
    }

    #[test]
    fn each_tile_records_its_no_data_share() {
        let dir = tempfile::tempdir().unwrap();
        // nodata value 0: tile r0c0 wholly 0 (a collar), r0c1's top 9 rows 0, r1c0 only
        // its red band 0 (dark, not no-data), r1c1 valid
        let p = dir.path().join("collar.tif");
        synthetic(&p, false, |b, x, y| match (x / 45, y / 45) {
            (0, 0) => 0,
            (1, 0) if y < 9 => 0,
            (0, 1) if b == 1 => 0,
            _ => 100,
        });
        let (info, tiles) = tile_scene(&p, 225.0).unwrap();
        assert_eq!((info.mask, info.tiles_with_nodata), ("nodata value", 2));
        let share: Vec<(u32, u32, f32)> = tiles.iter().map(|t| (t.row, t.col, t.nodata)).collect();
        assert_eq!(
            share,
            vec![(0, 0, 1.0), (0, 1, 0.2), (1, 0, 0.0), (1, 1, 0.0)]
        );
        // an alpha band: transparent pixels are no-data, one mask for all bands
        let p = dir.path().join("alpha.tif");
        synthetic(&p, true, |b, x, y| match (b, x / 45, y / 45) {
            (4, 1, 1) => 0,
            (4, 0, 0) if x < 9 => 0,
            (4, ..) => 255,
            _ => 100,
        });
        let (info, tiles) = tile_scene(&p, 225.0).unwrap();
        assert_eq!(info.mask, "alpha band");
        let share: Vec<f32> = tiles.iter().map(|t| t.nodata).collect();
        assert_eq!(share, vec![0.2, 0.0, 0.0, 1.0]);
        // the region's scenes declare nodata 0 (as NAIP does) and have no collar pixels
        let (info, tiles) =
            tile_scene(&region().join("m_4709963_se_14_1_20090818.tif"), 224.0).unwrap();
        assert_eq!((info.mask, info.tiles_with_nodata), ("nodata value", 0));
        assert!(tiles.iter().all(|t| t.nodata == 0.0));
    }

    #[test]
    fn caps_refuse_before_reading() {
        let scene = region().join("m_4709963_se_14_1_20090818.tif");
        let small = Limits {
            max_pixels: 500_000,
            max_tiles: u64::MAX,
        };
        let err = cut(&scene, 224.0, small, |_| panic!("no tile is cut")).unwrap_err();
        assert!(
            matches!(&err, SceneError::TooLarge(m) if m.contains("934 x 724 px is over the cap of 0.5 megapixels")),
            "{err}"
        );
        let few = Limits {
            max_pixels: u64::MAX,
            max_tiles: 100,
        };
        let err = cut(&scene, 224.0, few, |_| panic!("no tile is cut")).unwrap_err();
        assert!(err.to_string().contains("320 tiles"), "{err}");
    }

    #[test]
    fn non_raster_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tif");
        std::fs::write(&p, b"not a tiff").unwrap();
        assert_eq!(
            tile_scene(&p, 224.0).err(),
            Some(SceneError::NotGeoTiff("no TIFF signature".into()))
        );
        // a TIFF signature with nothing behind it is still refused, by GDAL
        std::fs::write(&p, b"II*\0garbage").unwrap();
        assert!(matches!(
            tile_scene(&p, 224.0),
            Err(SceneError::Unreadable(_))
        ));
    }

    /// The verified leak: a VRT named like a NAIP scene whose bands are the process's
    /// environment. It was cut into 9 tiles that held the S3 secret; now it is refused and
    /// nothing of the file it names is read.
    pub(crate) fn environ_vrt() -> String {
        let band = |b: u32| {
            format!(
                r#"<VRTRasterBand dataType="Byte" band="{b}" subClass="VRTRawRasterBand">
  <SourceFilename relativetoVRT="0">/proc/self/environ</SourceFilename>
  <ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>64</LineOffset>
</VRTRasterBand>"#
            )
        };
        format!(
            r#"<VRTDataset rasterXSize="64" rasterYSize="64">
<SRS>EPSG:26914</SRS><GeoTransform>485900, 5, 0, 5209247, 0, -5</GeoTransform>
{}{}{}</VRTDataset>"#,
            band(1),
            band(2),
            band(3)
        )
    }

    #[test]
    fn vrt_over_proc_environ_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m_0000000_ne_14_1_20200101.tif");
        std::fs::write(&p, environ_vrt()).unwrap();
        let err = tile_scene(&p, 45.0).err().expect("refused");
        assert_eq!(err, SceneError::NotGeoTiff("a GDAL VRT".into()));
        assert!(err.to_string().contains("only GeoTIFF"), "{err}");
        // with leading whitespace too, and GDAL itself would have opened it: the file is
        // a valid VRT, so the refusal is ours, not a parse error
        std::fs::write(&p, format!("\n  {}", environ_vrt())).unwrap();
        assert!(matches!(
            tile_scene(&p, 45.0),
            Err(SceneError::NotGeoTiff(_))
        ));
        let vrt = dir.path().join("check.vrt");
        std::fs::write(&vrt, environ_vrt()).unwrap();
        let opened = Dataset::open(&vrt).expect("the VRT is valid for GDAL's own open");
        assert_eq!(opened.raster_count(), 3);
    }
}
