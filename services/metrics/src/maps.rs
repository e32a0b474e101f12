//! A finished score job's map as the viewer and the labelling pages need it: the class grid
//! of each date with probabilities, the region's tiles (their bytes, for the tile views)
//! and each date's scene under the grid, made from those tiles. Read once per job and kept.

use aerial_shared::{
    keys,
    labels::{self, MapCell},
    manifest::{self, ManifestRow},
    palette,
    predictions::ScoreSummary,
    store::StoreError,
    tile_fetch, Store,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::Mutex;

/// A job's map, loaded.
pub struct JobMap {
    /// The job's report.
    pub summary: ScoreSummary,
    /// Every scored tile with its class and probabilities.
    pub cells: Vec<MapCell>,
    /// The region's manifest rows of those tiles, by tile id.
    pub tiles: HashMap<String, ManifestRow>,
    /// Scene images made so far, by date (PNG).
    scenes: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

/// Why a map cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// Store trouble (or the job is unknown).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job is not a finished score job of a scene dataset.
    #[error("{0}")]
    NotAMap(String),
}

/// Jobs kept loaded at once (each holds its region's manifest and its scenes' PNGs).
const KEPT_JOBS: usize = 8;
/// Largest tile edge in a scene image: bigger tiles are shrunk, so a large scene's image
/// stays a few megabytes.
const SCENE_TILE_PX: u32 = 96;

/// Loaded maps, by job id (a finished job's outputs never change); the least recently used
/// is dropped beyond [`KEPT_JOBS`], so anyone's requests cannot grow memory without bound.
#[derive(Clone, Default)]
pub struct Maps(Arc<Mutex<Vec<Kept>>>);

/// A loaded job, least recently used first in [`Maps`].
type Kept = (String, Arc<JobMap>);

impl Maps {
    /// The map of `job`, read from the store the first time.
    pub async fn get(&self, store: &Store, job: &str) -> Result<Arc<JobMap>, MapError> {
        keys::validate_name(job).map_err(|e| MapError::NotAMap(e.to_string()))?;
        {
            let mut kept = self.0.lock().await;
            if let Some(i) = kept.iter().position(|(j, _)| j == job) {
                let hit = kept.remove(i);
                let m = hit.1.clone();
                kept.push(hit);
                return Ok(m);
            }
        }
        let summary: ScoreSummary = store
            .get_json(&keys::job_output(job, keys::OUTPUT_SUMMARY))
            .await?;
        if summary.stride.is_some() {
            // its table lists overlapping windows, not the tiles the pages draw and label
            return Err(MapError::NotAMap(format!(
                "job {job} was scored with a stride: the viewer and the labelling pages show \
                 jobs scored tile by tile (score the dataset again without --stride-meters)"
            )));
        }
        let table = store
            .get(&keys::job_output(job, keys::OUTPUT_TABLE))
            .await?;
        let cells = labels::map_cells(&table, &summary.labels).map_err(MapError::NotAMap)?;
        if cells.is_empty() {
            return Err(MapError::NotAMap(format!(
                "job {job} has no tiles on a grid (not a scene dataset)"
            )));
        }
        let tiles = manifest::load(store, &summary.dataset)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let m = Arc::new(JobMap {
            summary,
            cells,
            tiles,
            scenes: Mutex::new(HashMap::new()),
        });
        let mut kept = self.0.lock().await;
        kept.retain(|(j, _)| j != job);
        kept.push((job.to_string(), m.clone()));
        if kept.len() > KEPT_JOBS {
            kept.remove(0);
        }
        Ok(m)
    }
}

/// One date's grid, as the pages draw it.
#[derive(Debug, Serialize)]
pub struct Grid {
    /// Dates of the job.
    pub dates: Vec<String>,
    /// This date.
    pub date: String,
    /// Class names, in probability order.
    pub labels: Vec<String>,
    /// Colour of each class (`#rrggbb`).
    pub colours: Vec<String>,
    /// Grid size.
    pub rows: u32,
    /// Grid size.
    pub cols: u32,
    /// Scored cells.
    pub cells: Vec<GridCell>,
}

/// One cell.
#[derive(Debug, Serialize)]
pub struct GridCell {
    /// Tile id.
    pub id: String,
    /// Row.
    pub r: u32,
    /// Column.
    pub c: u32,
    /// Class index.
    pub k: usize,
    /// Probabilities, rounded to 3 decimals.
    pub p: Vec<f32>,
}

impl JobMap {
    /// The dates scored, sorted.
    pub fn dates(&self) -> Vec<String> {
        let mut d: Vec<String> = self
            .cells
            .iter()
            .map(|c| c.date.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        d.sort();
        d
    }

    /// The grid of `date` (the first date when `None` or unknown).
    pub fn grid(&self, date: Option<&str>) -> Grid {
        let dates = self.dates();
        let date = date
            .filter(|d| dates.iter().any(|x| x == d))
            .map(str::to_string)
            .unwrap_or_else(|| dates[0].clone());
        let labels = &self.summary.labels;
        let index: HashMap<&str, usize> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), i))
            .collect();
        let cells: Vec<GridCell> = self
            .cells
            .iter()
            .filter(|c| c.date == date)
            .map(|c| GridCell {
                id: c.tile_id.clone(),
                r: c.row,
                c: c.col,
                k: index.get(c.label.as_str()).copied().unwrap_or(0),
                p: c.probs
                    .iter()
                    .map(|p| (p * 1000.0).round() / 1000.0)
                    .collect(),
            })
            .collect();
        // the job's whole grid: tiles left out as no-data at an edge keep their place
        let (rows, cols) = self.summary.extent.unwrap_or_default();
        Grid {
            rows: cells.iter().map(|c| c.r + 1).max().unwrap_or(0).max(rows),
            cols: cells.iter().map(|c| c.c + 1).max().unwrap_or(0).max(cols),
            colours: labels
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let [r, g, b] = palette::colour(l, i);
                    format!("#{r:02x}{g:02x}{b:02x}")
                })
                .collect(),
            labels: labels.clone(),
            dates,
            date,
            cells,
        }
    }

    /// The cell of a tile id.
    pub fn cell(&self, tile_id: &str) -> Option<&MapCell> {
        self.cells.iter().find(|c| c.tile_id == tile_id)
    }

    /// The PNG bytes of one tile of the map.
    pub async fn tile_png(&self, store: &Store, tile_id: &str) -> Result<Vec<u8>, MapError> {
        let row = self.tiles.get(tile_id).ok_or_else(|| {
            MapError::NotAMap(format!("tile {tile_id:?} is not in this job's dataset"))
        })?;
        let tile = row.to_tile(&self.summary.dataset, "");
        let got = tile_fetch::fetch_bytes(store, &[&tile]).await;
        match got.into_iter().next() {
            Some(Ok(b)) => Ok(b.to_vec()),
            Some(Err(tile_fetch::FetchError::Bad(e))) => Err(MapError::NotAMap(e)),
            Some(Err(tile_fetch::FetchError::Transient(e))) => {
                Err(MapError::Store(StoreError::Request {
                    op: "get",
                    key: row.key.clone(),
                    message: e,
                }))
            }
            None => Err(MapError::NotAMap("no tile".into())),
        }
    }

    /// The scene of `date` as one PNG: its tiles at their native size on the job's grid
    /// (cells without a tile stay grey). Made once per date.
    pub async fn scene_png(&self, store: &Store, date: &str) -> Result<Arc<Vec<u8>>, MapError> {
        if let Some(png) = self.scenes.lock().await.get(date) {
            return Ok(png.clone());
        }
        let grid = self.grid(Some(date));
        if grid.date != date {
            return Err(MapError::NotAMap(format!("the job has no date {date}")));
        }
        let tiles: Vec<_> = grid
            .cells
            .iter()
            .filter_map(|c| {
                let row = self.tiles.get(&c.id)?;
                Some(((c.r, c.c), row.to_tile(&self.summary.dataset, "")))
            })
            .collect();
        let refs: Vec<&_> = tiles.iter().map(|(_, t)| t).collect();
        let bytes = tile_fetch::fetch_bytes(store, &refs).await;
        let mut decoded = BTreeMap::new();
        for ((rc, _), b) in tiles.iter().zip(bytes) {
            match b {
                Ok(b) => {
                    decoded.insert(*rc, b);
                }
                Err(tile_fetch::FetchError::Transient(e)) => {
                    return Err(MapError::Store(StoreError::Request {
                        op: "get",
                        key: format!("scene {date}"),
                        message: e,
                    }))
                }
                Err(tile_fetch::FetchError::Bad(_)) => {}
            }
        }
        let (rows, cols) = (grid.rows, grid.cols);
        let png = tokio::task::spawn_blocking(move || mosaic(rows, cols, decoded))
            .await
            .map_err(|e| MapError::NotAMap(format!("composing the scene failed: {e}")))?;
        let png = Arc::new(png);
        self.scenes
            .lock()
            .await
            .insert(date.to_string(), png.clone());
        Ok(png)
    }
}

/// Lays decoded tiles on a `rows × cols` grid; the tile size is the first tile's.
fn mosaic(rows: u32, cols: u32, tiles: BTreeMap<(u32, u32), bytes::Bytes>) -> Vec<u8> {
    let imgs: BTreeMap<(u32, u32), image::RgbImage> = tiles
        .into_iter()
        .filter_map(|(rc, b)| Some((rc, image::load_from_memory(&b).ok()?.to_rgb8())))
        .collect();
    let px = imgs
        .values()
        .next()
        .map(|i| i.width())
        .unwrap_or(1)
        .min(SCENE_TILE_PX);
    let mut out = image::RgbImage::from_pixel(cols * px, rows * px, image::Rgb([200, 200, 200]));
    for ((r, c), img) in &imgs {
        let img = if img.width() == px && img.height() == px {
            img.clone()
        } else {
            image::imageops::resize(img, px, px, image::imageops::FilterType::Triangle)
        };
        image::imageops::replace(&mut out, &img, i64::from(c * px), i64::from(r * px));
    }
    let mut png = Vec::new();
    out.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encoding a PNG in memory");
    png
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(v: u8) -> bytes::Bytes {
        let img = image::RgbImage::from_pixel(3, 3, image::Rgb([v, v, v]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out.into()
    }

    #[test]
    fn mosaic_places_tiles_on_their_cells() {
        let mut t = BTreeMap::new();
        t.insert((0, 1), png(10));
        t.insert((1, 0), png(250));
        let img = image::load_from_memory(&mosaic(2, 2, t)).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (6, 6));
        assert_eq!(img.get_pixel(4, 1).0, [10, 10, 10]);
        assert_eq!(img.get_pixel(1, 4).0, [250, 250, 250]);
        assert_eq!(img.get_pixel(1, 1).0, [200, 200, 200], "no tile: grey");
        // tiles larger than SCENE_TILE_PX are shrunk to it
        let big = image::RgbImage::from_pixel(200, 200, image::Rgb([9, 9, 9]));
        let mut b = Vec::new();
        big.write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Png)
            .unwrap();
        let img =
            image::load_from_memory(&mosaic(1, 2, BTreeMap::from([((0, 1), b.into())]))).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (2 * SCENE_TILE_PX, SCENE_TILE_PX)
        );
    }
}
