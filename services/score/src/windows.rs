//! The windows of a strided score job: per date, windows of the tile size every stride over
//! the date's tile grid, each made of the stored tiles it overlaps. A window with more than
//! the allowed share of its area outside every stored tile (a gap or the edge of the scene)
//! or no-data inside one (each tile's measured share, taken as spread evenly over the tile)
//! is not scored: its cells stay no-data.

use aerial_shared::cells::Stride;
use aerial_shared::messages::{Tile, TileGeo, Window, WindowPart};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

/// What a strided job scores.
#[derive(Debug, Default)]
pub struct Plan {
    /// Each window as a tile (id, footprint, window grid cell, content hash) and its parts.
    pub windows: Vec<(Tile, Window)>,
    /// Windows left out for too much no-data, per date.
    pub skipped: BTreeMap<String, u64>,
    /// Per date, the tiles of its grid (row, column) that are missing or over the no-data
    /// share: cells whose centre lies in one are no-data whatever window covers them.
    pub holes: BTreeMap<String, Vec<(u32, u32)>>,
}

/// Each date's tile grid: rows and columns.
fn grids(tiles: &[Tile]) -> BTreeMap<&str, (u32, u32)> {
    let mut extent: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for t in tiles {
        if let (Some(d), Some(g)) = (&t.date, &t.geo) {
            let e = extent.entry(d).or_default();
            *e = (e.0.max(g.row + 1), e.1.max(g.col + 1));
        }
    }
    extent
}

/// How many windows [`plan`] would make (before leaving out no-data ones), counted from the
/// tile grids alone.
pub fn count(tiles: &[Tile], stride: &Stride) -> u64 {
    grids(tiles)
        .values()
        .map(|&(r, c)| u64::from(stride.windows_along(r)) * u64::from(stride.windows_along(c)))
        .sum()
}

/// The map's cell grid (rows, columns) over every stored tile, scored or not: tiles or
/// windows left out as no-data at the edges keep their place in the map as no-data cells.
pub fn cell_extent(tiles: &[Tile], stride: Option<&Stride>) -> (u32, u32) {
    let (rows, cols) = grids(tiles)
        .values()
        .fold((0, 0), |a, &(r, c)| (a.0.max(r), a.1.max(c)));
    match stride {
        None => (rows, cols),
        Some(s) => {
            let along = |n: u32| match s.windows_along(n) {
                0 => 0,
                w => w - 1 + s.cover(),
            };
            (along(rows), along(cols))
        }
    }
}

/// Why the dates of `tiles` do not lie on one grid, if they do not: maps are compared cell
/// by cell by grid index, so every date must have the same CRS and a grid origin within half
/// a cell (`cell_m`) of the first date's (the sample region's differ by up to 3 m).
pub fn misaligned(tiles: &[Tile], cell_m: Option<f64>) -> Option<String> {
    let mut origin: BTreeMap<&str, (&str, f64, f64, f64)> = BTreeMap::new();
    for t in tiles {
        let (Some(d), Some(g)) = (&t.date, &t.geo) else {
            continue;
        };
        origin.entry(d).or_insert_with(|| {
            let (w, h) = (g.bounds[2] - g.bounds[0], g.bounds[3] - g.bounds[1]);
            (
                g.crs.as_str(),
                g.bounds[0] - f64::from(g.col) * w,
                g.bounds[3] + f64::from(g.row) * h,
                w,
            )
        });
    }
    let mut dates = origin.iter();
    let (first, &(crs, x, y, tile_m)) = dates.next()?;
    let half = cell_m.unwrap_or(tile_m) / 2.0;
    for (date, &(c, x2, y2, w2)) in dates {
        if c != crs {
            return Some(format!(
                "dates are not on one grid: {first} is in {crs}, {date} in {c}"
            ));
        }
        if (w2 - tile_m).abs() > 1e-6 * tile_m {
            return Some(format!(
                "dates are not on one grid: {first} has tiles of {tile_m} m, {date} of {w2} m; \
                 maps of one dataset are compared cell by cell"
            ));
        }
        let off = (x2 - x).hypot(y2 - y);
        if off > half {
            return Some(format!(
                "dates are not on one grid: {date}'s origin is {off:.1} m from {first}'s, more \
                 than half a {:.1} m cell; maps of one dataset are compared cell by cell",
                half * 2.0
            ));
        }
    }
    None
}

/// The share of a tile that is no-data (0 when it was not measured).
pub fn nodata_of(t: &Tile) -> f64 {
    t.geo
        .as_ref()
        .and_then(|g| g.nodata)
        .map_or(0.0, |n| f64::from(n).clamp(0.0, 1.0))
}

/// The windows over `tiles` (georeferenced scene tiles of `stride.window_px` pixels), at most
/// `max_nodata` (0..1) of each outside the stored tiles.
pub fn plan(tiles: &[Tile], stride: &Stride, max_nodata: f64) -> Plan {
    let mut by_date: BTreeMap<&str, HashMap<(u32, u32), &Tile>> = BTreeMap::new();
    for t in tiles {
        if let (Some(d), Some(g)) = (&t.date, &t.geo) {
            by_date.entry(d).or_default().insert((g.row, g.col), t);
        }
    }
    let (n, s) = (stride.window_px, stride.stride_px);
    let mut plan = Plan::default();
    for (date, grid) in by_date {
        let rows = grid.keys().map(|k| k.0).max().map_or(0, |r| r + 1);
        let cols = grid.keys().map(|k| k.1).max().map_or(0, |c| c + 1);
        let Some(base) = grid.values().next().copied() else {
            continue;
        };
        let holes: Vec<(u32, u32)> = (0..rows)
            .flat_map(|r| (0..cols).map(move |c| (r, c)))
            .filter(|k| grid.get(k).is_none_or(|t| nodata_of(t) > max_nodata))
            .collect();
        if !holes.is_empty() {
            plan.holes.insert(date.to_string(), holes);
        }
        let any = base.geo.as_ref().expect("grid tiles have geo");
        // the grid's top-left corner and pixel size, from any tile
        let px = (any.bounds[2] - any.bounds[0]) / f64::from(n);
        let origin = (
            any.bounds[0] - f64::from(any.col * n) * px,
            any.bounds[3] + f64::from(any.row * n) * px,
        );
        for wr in 0..stride.windows_along(rows) {
            for wc in 0..stride.windows_along(cols) {
                let (x0, y0) = (wc * s, wr * s);
                let mut parts = Vec::new();
                let mut holders: Vec<&Tile> = Vec::new();
                // pixels of the window inside a stored tile and valid there
                let mut valid = 0f64;
                let mut hash = Sha256::new();
                hash.update(format!("window {n} px:"));
                // the tiles under pixels y0..y0+n and x0..x0+n (the last is ceil(y0 / n))
                for r in y0 / n..=y0.div_ceil(n) {
                    for c in x0 / n..=x0.div_ceil(n) {
                        let Some(t) = grid.get(&(r, c)) else { continue };
                        let (x, y) = ((c * n) as i32 - x0 as i32, (r * n) as i32 - y0 as i32);
                        let w = (x.max(0)..(x + n as i32).min(n as i32)).len() as u64;
                        let h = (y.max(0)..(y + n as i32).min(n as i32)).len() as u64;
                        valid += (w * h) as f64 * (1.0 - nodata_of(t));
                        hash.update(format!("{}@{x},{y};", t.sha256));
                        parts.push(WindowPart {
                            tile_id: t.tile_id.clone(),
                            key: t.key.clone(),
                            range: t.range,
                            x,
                            y,
                        });
                        holders.push(t);
                    }
                }
                let nodata = 1.0 - valid / (f64::from(n) * f64::from(n));
                if parts.is_empty() || nodata > max_nodata {
                    *plan.skipped.entry(date.to_string()).or_default() += 1;
                    continue;
                }
                let bounds = [
                    origin.0 + f64::from(x0) * px,
                    origin.1 - f64::from(y0 + n) * px,
                    origin.0 + f64::from(x0 + n) * px,
                    origin.1 - f64::from(y0) * px,
                ];
                // lon/lat: the tiles' own (the scene CRS is near-linear over a tile), from the
                // part holding the window's top-left corner when there is one
                let at = parts.iter().position(|p| p.x <= 0 && p.y <= 0).unwrap_or(0);
                let g = holders[at].geo.as_ref().expect("grid tiles have geo");
                let (b, ll) = (g.bounds, g.lonlat_bounds);
                let lon = |x: f64| ll[0] + (x - b[0]) / (b[2] - b[0]) * (ll[2] - ll[0]);
                let lat = |y: f64| ll[1] + (y - b[1]) / (b[3] - b[1]) * (ll[3] - ll[1]);
                let tile = Tile {
                    tile_id: format!("{date}/s{s}r{wr}c{wc}"),
                    key: parts[0].key.clone(),
                    range: parts[0].range,
                    sha256: hex::encode(hash.finalize()),
                    // a label given to one tile is not the window's
                    label: None,
                    split: None,
                    geo: Some(TileGeo {
                        row: wr,
                        col: wc,
                        crs: any.crs.clone(),
                        bounds,
                        lonlat_bounds: [
                            lon(bounds[0]),
                            lat(bounds[1]),
                            lon(bounds[2]),
                            lat(bounds[3]),
                        ],
                        nodata: Some(nodata as f32),
                    }),
                    ..base.clone()
                };
                plan.windows.push((tile, Window { size: n, parts }));
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `rows` × `cols` grid of 45 px, 5 m tiles at the region's origin, minus `missing`.
    fn grid(rows: u32, cols: u32, missing: &[(u32, u32)]) -> Vec<Tile> {
        let mut out = Vec::new();
        for r in 0..rows {
            for c in 0..cols {
                if missing.contains(&(r, c)) {
                    continue;
                }
                let (x0, y1) = (
                    485900.0 + f64::from(c) * 225.0,
                    5209247.0 - f64::from(r) * 225.0,
                );
                out.push(Tile {
                    dataset: "region".into(),
                    tile_id: format!("2009-08-18/r{r}c{c}"),
                    key: "tiles/pack".into(),
                    range: None,
                    sha256: format!("sha{r}-{c}"),
                    label: None,
                    split: None,
                    date: Some("2009-08-18".into()),
                    geo: Some(TileGeo {
                        row: r,
                        col: c,
                        crs: "EPSG:26914".into(),
                        bounds: [x0, y1 - 225.0, x0 + 225.0, y1],
                        lonlat_bounds: [
                            -99.2 + f64::from(c) * 0.003,
                            47.0 - f64::from(r + 1) * 0.002,
                            -99.2 + f64::from(c + 1) * 0.003,
                            47.0 - f64::from(r) * 0.002,
                        ],
                        nodata: None,
                    }),
                    backbone: "mobilenet_v2".into(),
                });
            }
        }
        out
    }

    #[test]
    fn the_sample_region_at_112_m() {
        let stride = Stride::new(45, 5.0, 112.0).unwrap();
        let p = plan(&grid(16, 20, &[]), &stride, 0.5);
        assert_eq!(p.windows.len(), 31 * 39);
        assert_eq!(count(&grid(16, 20, &[]), &stride), 31 * 39);
        assert!(p.skipped.is_empty());
        let (t, w) = &p.windows[1];
        assert_eq!(t.tile_id, "2009-08-18/s22r0c1");
        let g = t.geo.as_ref().unwrap();
        assert_eq!((g.row, g.col), (0, 1));
        assert_eq!(g.bounds, [486010.0, 5209022.0, 486235.0, 5209247.0]);
        // lon/lat interpolated in tile r0c0: 110 m of its 225 m east
        assert!((g.lonlat_bounds[0] - (-99.2 + 0.003 * 110.0 / 225.0)).abs() < 1e-12);
        // 22 px into tile 0: its right 23 px, then 22 px of tile 1
        assert_eq!(
            w.parts
                .iter()
                .map(|p| (p.tile_id.as_str(), p.x, p.y))
                .collect::<Vec<_>>(),
            vec![("2009-08-18/r0c0", -22, 0), ("2009-08-18/r0c1", 23, 0)]
        );
        assert_eq!(t.dataset, "region");
        let ids: std::collections::HashSet<&str> =
            p.windows.iter().map(|(t, _)| t.sha256.as_str()).collect();
        assert_eq!(ids.len(), p.windows.len(), "distinct content hashes");
    }

    #[test]
    fn windows_mostly_over_a_gap_are_not_scored() {
        let stride = Stride::new(45, 5.0, 112.0).unwrap();
        // one tile missing: the window exactly on it (r1c1 of tiles = window r2c2 at 44 px?)
        let p = plan(&grid(3, 3, &[(1, 1)]), &stride, 0.5);
        let all = stride.windows_along(3) * stride.windows_along(3);
        let skipped: u64 = p.skipped.values().sum();
        assert!(skipped >= 1, "{skipped}");
        assert_eq!(p.windows.len() as u64 + skipped, u64::from(all));
        // every window kept has at least half its area in stored tiles
        for (_, w) in &p.windows {
            assert!(!w.parts.is_empty());
        }
        let strict = plan(&grid(3, 3, &[(1, 1)]), &stride, 0.0);
        assert!(
            strict.windows.len() < p.windows.len(),
            "a stricter threshold skips more"
        );
    }

    #[test]
    fn dates_must_lie_on_one_grid() {
        let mut tiles = grid(2, 2, &[]);
        let mut other = grid(2, 2, &[]);
        let shift = |tiles: &mut Vec<Tile>, dx: f64| {
            for t in tiles {
                t.date = Some("2020-08-31".into());
                t.geo.as_mut().unwrap().bounds[0] += dx;
                t.geo.as_mut().unwrap().bounds[2] += dx;
            }
        };
        // 3 m apart, as the sample region's scenes: one grid
        shift(&mut other, 3.0);
        tiles.extend(other.clone());
        assert_eq!(misaligned(&tiles, None), None);
        assert_eq!(misaligned(&tiles, Some(110.0)), None);
        // 60 m: more than half a 110 m cell, not half a 225 m tile
        shift(&mut other, 57.0);
        let mut far = grid(2, 2, &[]);
        far.extend(other.clone());
        assert_eq!(misaligned(&far, None), None);
        let why = misaligned(&far, Some(110.0)).unwrap();
        assert!(
            why.contains("2020-08-31's origin is 60.0 m from 2009-08-18's"),
            "{why}"
        );
        // another CRS
        for t in &mut other {
            t.geo.as_mut().unwrap().crs = "EPSG:26913".into();
        }
        let mut zones = grid(2, 2, &[]);
        zones.extend(other);
        assert!(misaligned(&zones, None)
            .unwrap()
            .contains("2020-08-31 in EPSG:26913"));
        // tiles of another ground size at the same corner (220 m beside 225 m)
        let mut sizes = grid(1, 1, &[]);
        let mut small = sizes[0].clone();
        small.date = Some("2020-08-31".into());
        let g = small.geo.as_mut().unwrap();
        g.bounds[2] -= 5.0;
        g.bounds[1] += 5.0;
        sizes.push(small);
        let why = misaligned(&sizes, None).unwrap();
        assert!(
            why.contains("2009-08-18 has tiles of 225 m, 2020-08-31 of 220 m"),
            "{why}"
        );
    }

    #[test]
    fn windows_over_no_data_tiles_are_not_scored_and_keep_their_cells() {
        let stride = Stride::new(45, 5.0, 112.0).unwrap();
        let mut tiles = grid(3, 3, &[]);
        // the middle tile is wholly no-data: like a gap, but stored
        tiles[4].geo.as_mut().unwrap().nodata = Some(1.0);
        let gap = plan(&grid(3, 3, &[(1, 1)]), &stride, 0.5);
        let masked = plan(&tiles, &stride, 0.5);
        assert_eq!(
            masked.skipped, gap.skipped,
            "a no-data tile counts as a gap"
        );
        assert!(masked.skipped.values().sum::<u64>() >= 1);
        // half no-data in each tile: every window is half no-data, kept at 0.5, not at 0.4
        for t in &mut tiles {
            t.geo.as_mut().unwrap().nodata = Some(0.5);
        }
        let all = u64::from(stride.windows_along(3)).pow(2);
        assert_eq!(plan(&tiles, &stride, 0.5).windows.len() as u64, all);
        let p = plan(&tiles, &stride, 0.4);
        assert_eq!((p.windows.len(), p.skipped["2009-08-18"]), (0, all));
        // the map keeps its size whatever is left out: windows 0..4 cover cells 0..5
        assert_eq!(stride.windows_along(3), 5);
        assert_eq!(cell_extent(&tiles, Some(&stride)), (6, 6));
        assert_eq!(cell_extent(&tiles, None), (3, 3));
    }
}
