//! The output cells of a score job. Without a stride a cell is a stored tile. With one, the
//! job scores windows of the tile size every `stride_px` pixels; a cell is one stride square
//! and takes the mean class probabilities of the windows covering its centre, so the map is
//! finer than the tiles and has no seams between them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a strided job's windows lie on its scenes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stride {
    /// Window side, pixels (the stored tiles' side).
    pub window_px: u32,
    /// Distance between neighbouring windows, pixels (1 to `window_px`).
    pub stride_px: u32,
    /// Ground size of one pixel, in the scenes' CRS units (metres).
    pub pixel_m: f64,
}

/// Why a stride cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StrideError {
    /// Not a positive number of metres.
    #[error("stride must be a positive number of metres, not {0}")]
    NotPositive(f64),
    /// Longer than a tile: windows would leave gaps.
    #[error(
        "a stride of {stride_m} m is longer than the {tile_m} m tiles: windows would leave gaps"
    )]
    LongerThanTile {
        /// Asked stride.
        stride_m: f64,
        /// Tile side on the ground.
        tile_m: f64,
    },
}

impl Stride {
    /// The stride nearest `stride_m` in whole pixels, for tiles of `window_px` pixels of
    /// `pixel_m` each.
    pub fn new(window_px: u32, pixel_m: f64, stride_m: f64) -> Result<Self, StrideError> {
        if !(stride_m.is_finite() && stride_m > 0.0) {
            return Err(StrideError::NotPositive(stride_m));
        }
        let tile_m = f64::from(window_px) * pixel_m;
        let px = (stride_m / pixel_m).round().max(1.0);
        if px > f64::from(window_px) {
            return Err(StrideError::LongerThanTile { stride_m, tile_m });
        }
        Ok(Self {
            window_px,
            stride_px: px as u32,
            pixel_m,
        })
    }

    /// Ground size of a cell (the stride in whole pixels).
    pub fn cell_m(&self) -> f64 {
        f64::from(self.stride_px) * self.pixel_m
    }

    /// Windows along an axis of `tiles` stored tiles (every window inside the tiles).
    pub fn windows_along(&self, tiles: u32) -> u32 {
        if tiles == 0 {
            return 0;
        }
        (tiles * self.window_px - self.window_px) / self.stride_px + 1
    }

    /// Cells along an axis that one window covers: a window covers a cell when it holds the
    /// cell's centre.
    pub fn cover(&self) -> u32 {
        let (w, s) = (f64::from(self.window_px), f64::from(self.stride_px));
        ((w - s / 2.0) / s).ceil() as u32
    }
}

/// One date's cells: class and mean probabilities, row-major; `None` where no window
/// covers a cell.
#[derive(Debug, Clone, PartialEq)]
pub struct CellGrid {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Class index per cell (the most probable; the lowest index on a tie).
    pub cells: Vec<Option<usize>>,
    /// Mean class probabilities per cell.
    pub probs: Vec<Option<Vec<f32>>>,
}

impl CellGrid {
    /// Makes no-data every cell whose centre lies in one of `holes`, tiles (row, column) of
    /// the date's grid that are missing or were left out as no-data: a window kept for being
    /// mostly over valid tiles must not give a class to the part of it that is a gap.
    pub fn blank_holes(&mut self, holes: &[(u32, u32)], stride: &Stride) {
        if holes.is_empty() {
            return;
        }
        let holes: std::collections::HashSet<(u32, u32)> = holes.iter().copied().collect();
        let (s, n) = (u64::from(stride.stride_px), u64::from(stride.window_px));
        // the tile under the centre of cell i (pixels i·s .. (i+1)·s from the grid's corner)
        let tile = |i: usize| ((i as u64 * s + s / 2) / n) as u32;
        for r in 0..self.rows {
            for c in 0..self.cols {
                if holes.contains(&(tile(r), tile(c))) {
                    self.cells[r * self.cols + c] = None;
                    self.probs[r * self.cols + c] = None;
                }
            }
        }
    }

    /// The class grid, as the change report reads it.
    pub fn classes(&self) -> crate::change::Grid {
        crate::change::Grid {
            rows: self.rows,
            cols: self.cols,
            cells: self.cells.clone(),
        }
    }
}

/// A window's grid cell and probabilities.
type Placed<'a> = (usize, usize, &'a [f32]);

/// One cell grid per date from `(date, window row, window col, probabilities)`, each window
/// covering `cover` × `cover` cells from its own index (1 without a stride: a window is a
/// cell). All dates get one size, so they line up cell by cell: at least `extent` (rows,
/// columns: the job's whole grid, so cells left out at an edge stay as no-data), more if a
/// window reaches further. Windows whose probabilities do not have one value per label are
/// skipped.
pub fn by_date<'a>(
    n_labels: usize,
    cover: u32,
    extent: Option<(u32, u32)>,
    windows: impl IntoIterator<Item = (&'a str, u32, u32, &'a [f32])>,
) -> BTreeMap<String, CellGrid> {
    let cover = cover.max(1) as usize;
    let mut per_date: BTreeMap<&str, Vec<Placed>> = BTreeMap::new();
    let (mut rows, mut cols) = extent.map_or((0, 0), |(r, c)| (r as usize, c as usize));
    for (date, r, c, p) in windows {
        if p.len() != n_labels {
            continue;
        }
        let (r, c) = (r as usize, c as usize);
        rows = rows.max(r + cover);
        cols = cols.max(c + cover);
        per_date.entry(date).or_default().push((r, c, p));
    }
    per_date
        .into_iter()
        .map(|(date, ws)| {
            let mut sum = vec![0f64; rows * cols * n_labels];
            let mut count = vec![0u32; rows * cols];
            for (r, c, p) in ws {
                for rr in r..r + cover {
                    for cc in c..c + cover {
                        let i = rr * cols + cc;
                        count[i] += 1;
                        for (k, v) in p.iter().enumerate() {
                            sum[i * n_labels + k] += f64::from(*v);
                        }
                    }
                }
            }
            let probs: Vec<Option<Vec<f32>>> = (0..rows * cols)
                .map(|i| {
                    (count[i] > 0).then(|| {
                        sum[i * n_labels..(i + 1) * n_labels]
                            .iter()
                            .map(|s| (s / f64::from(count[i])) as f32)
                            .collect()
                    })
                })
                .collect();
            let cells = probs
                .iter()
                .map(|p| {
                    p.as_ref().map(|p| {
                        p.iter()
                            .enumerate()
                            .fold(0, |best, (k, v)| if *v > p[best] { k } else { best })
                    })
                })
                .collect();
            (
                date.to_string(),
                CellGrid {
                    rows,
                    cols,
                    cells,
                    probs,
                },
            )
        })
        .collect()
}

/// A score job's cell grid per date, as its outputs and its change reports read it: the
/// windows (or tiles, without a stride) averaged over at least `extent` cells, and with a
/// stride the cells centred in each date's `holes` left no-data.
pub fn job_grids<'a>(
    n_labels: usize,
    stride: Option<&Stride>,
    extent: Option<(u32, u32)>,
    holes: &BTreeMap<String, Vec<(u32, u32)>>,
    windows: impl IntoIterator<Item = (&'a str, u32, u32, &'a [f32])>,
) -> BTreeMap<String, CellGrid> {
    let mut grids = by_date(n_labels, stride.map_or(1, Stride::cover), extent, windows);
    if let Some(stride) = stride {
        for (date, g) in &mut grids {
            g.blank_holes(holes.get(date).map_or(&[], Vec::as_slice), stride);
        }
    }
    grids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_region_at_112_m_is_40_by_32_cells_of_110_m() {
        // 45 px tiles of 5 m (225 m), 20 × 16 of them
        let s = Stride::new(45, 5.0, 112.0).unwrap();
        assert_eq!(s.stride_px, 22, "the nearest whole pixels");
        assert_eq!(s.cell_m(), 110.0);
        assert_eq!(s.cover(), 2);
        let (wc, wr) = (s.windows_along(20), s.windows_along(16));
        assert_eq!((wc, wr), (39, 31));
        assert_eq!((wc + s.cover() - 1, wr + s.cover() - 1), (40, 32));
    }

    #[test]
    fn cells_over_a_hole_are_no_data() {
        let s = Stride::new(45, 5.0, 112.0).unwrap();
        let p = [0.2f32, 0.8];
        // windows 0..5 along each axis of a 3 × 3 tile grid cover cells 0..6
        let mut ws = Vec::new();
        for r in 0..5 {
            for c in 0..5 {
                ws.push(("d", r, c, &p[..]));
            }
        }
        let mut g = by_date(2, s.cover(), None, ws).remove("d").unwrap();
        assert_eq!((g.rows, g.cols), (6, 6));
        assert!(g.cells.iter().all(Option::is_some));
        // tile r1c1 is pixels 45..90: the cells whose centres (11, 33, 55, 77, 99, 121 px)
        // fall there are 2 and 3
        g.blank_holes(&[(1, 1)], &s);
        let blank: Vec<(usize, usize)> = (0..36)
            .filter(|i| g.cells[*i].is_none())
            .map(|i| (i / 6, i % 6))
            .collect();
        assert_eq!(blank, vec![(2, 2), (2, 3), (3, 2), (3, 3)]);
        assert!(g.probs[2 * 6 + 2].is_none());
    }

    #[test]
    fn a_stride_of_one_tile_is_the_tiles() {
        let s = Stride::new(45, 5.0, 225.0).unwrap();
        assert_eq!((s.stride_px, s.cover(), s.windows_along(20)), (45, 1, 20));
    }

    #[test]
    fn strides_that_cannot_work_are_refused() {
        assert!(matches!(
            Stride::new(45, 5.0, 300.0),
            Err(StrideError::LongerThanTile { .. })
        ));
        assert!(matches!(
            Stride::new(45, 5.0, 0.0),
            Err(StrideError::NotPositive(_))
        ));
        assert!(Stride::new(45, 5.0, f64::NAN).is_err());
        assert_eq!(Stride::new(45, 5.0, 1.0).unwrap().stride_px, 1);
    }

    #[test]
    fn each_cell_averages_the_windows_covering_it() {
        // two windows side by side, each covering 2 × 2 cells, overlapping in column 1
        let a = [1.0f32, 0.0];
        let b = [0.2f32, 0.8];
        let g = by_date(2, 2, None, [("d", 0, 0, &a[..]), ("d", 0, 1, &b[..])]);
        let g = &g["d"];
        assert_eq!((g.rows, g.cols), (2, 3));
        assert_eq!(g.probs[0].as_deref(), Some(&a[..]), "only window a");
        let mid = g.probs[1].as_deref().unwrap();
        assert!((mid[0] - 0.6).abs() < 1e-6 && (mid[1] - 0.4).abs() < 1e-6);
        assert_eq!(
            g.cells,
            vec![Some(0), Some(0), Some(1), Some(0), Some(0), Some(1)]
        );
    }

    #[test]
    fn without_a_stride_a_window_is_its_cell_and_dates_share_a_size() {
        let p = [0.1f32, 0.9];
        let q = [0.7f32, 0.3];
        let wrong = [1.0f32];
        let g = by_date(
            2,
            1,
            None,
            [
                ("2009", 0, 0, &p[..]),
                ("2020", 1, 2, &q[..]),
                ("2020", 5, 5, &wrong[..]),
            ],
        );
        assert_eq!((g["2009"].rows, g["2009"].cols), (2, 3));
        assert_eq!(g["2009"].cells[0], Some(1));
        assert_eq!(g["2009"].cells[5], None);
        assert_eq!(g["2020"].cells[5], Some(0));
        assert_eq!(g["2020"].probs[5].as_deref(), Some(&q[..]));
        // the job's whole grid: a left-out edge stays as no-data cells
        let g = by_date(2, 1, Some((4, 3)), [("2009", 0, 0, &p[..])]);
        assert_eq!((g["2009"].rows, g["2009"].cols), (4, 3));
        assert_eq!(g["2009"].cells.iter().filter(|c| c.is_some()).count(), 1);
    }
}
