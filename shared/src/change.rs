//! Land-use change between two dates of a scored region: per-date class grids (one cell per
//! tile), the reference analysis's optional 3×3 plurality smoothing, the tiles whose class
//! changed, and the from → to matrix in hectares.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One date's class map: `cells[row * cols + col]` is a label index, `None` where no tile
/// was scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Label index per cell.
    pub cells: Vec<Option<usize>>,
}

impl Grid {
    /// A grid of the given size holding `(row, col, label)` cells.
    pub fn from_cells(rows: usize, cols: usize, cells: &[(u32, u32, usize)]) -> Self {
        let mut g = Self {
            rows,
            cols,
            cells: vec![None; rows * cols],
        };
        for &(r, c, l) in cells {
            if (r as usize) < rows && (c as usize) < cols {
                g.cells[r as usize * cols + c as usize] = Some(l);
            }
        }
        g
    }

    /// Label at `(r, c)`.
    pub fn get(&self, r: usize, c: usize) -> Option<usize> {
        self.cells[r * self.cols + c]
    }

    /// Each cell takes the most frequent label of its 3×3 neighbourhood (cells that exist);
    /// on a tie a cell keeps its own label when it is among the most frequent, else the
    /// lowest label index. Empty cells stay empty.
    pub fn plurality_smoothed(&self, n_labels: usize) -> Self {
        let mut out = self.clone();
        for r in 0..self.rows {
            for c in 0..self.cols {
                let Some(own) = self.get(r, c) else { continue };
                let mut counts = vec![0u32; n_labels.max(own + 1)];
                for dr in -1i64..=1 {
                    for dc in -1i64..=1 {
                        let (rr, cc) = (r as i64 + dr, c as i64 + dc);
                        if rr < 0 || cc < 0 || rr >= self.rows as i64 || cc >= self.cols as i64 {
                            continue;
                        }
                        if let Some(l) = self.get(rr as usize, cc as usize) {
                            counts[l] += 1;
                        }
                    }
                }
                let best = *counts.iter().max().expect("at least own label");
                let winner = if counts[own] == best {
                    own
                } else {
                    counts.iter().position(|&n| n == best).expect("max exists")
                };
                out.cells[r * self.cols + c] = Some(winner);
            }
        }
        out
    }

    /// Cells per label index.
    pub fn counts(&self, n_labels: usize) -> Vec<u64> {
        let mut v = vec![0u64; n_labels];
        for l in self.cells.iter().flatten() {
            if *l < n_labels {
                v[*l] += 1;
            }
        }
        v
    }
}

/// A tile whose class differs between the two dates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangedTile {
    /// Grid row.
    pub row: usize,
    /// Grid column.
    pub col: usize,
    /// Label at the first date.
    pub from: String,
    /// Label at the second date.
    pub to: String,
}

/// Change between two dates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeReport {
    /// Earlier date.
    pub from_date: String,
    /// Later date.
    pub to_date: String,
    /// Whether both grids were plurality-smoothed first.
    pub smoothed: bool,
    /// Tiles per label at `from_date`.
    pub tiles_from: BTreeMap<String, u64>,
    /// Tiles per label at `to_date`.
    pub tiles_to: BTreeMap<String, u64>,
    /// Transition counts: from label → to label → tiles (changed tiles only).
    pub transitions: BTreeMap<String, BTreeMap<String, u64>>,
    /// Tiles compared (scored at both dates).
    pub compared: u64,
    /// Every changed tile.
    pub changed: Vec<ChangedTile>,
    /// Area of one cell in hectares, when the grid is in a metre CRS (absent in reports of
    /// earlier versions).
    #[serde(default)]
    pub cell_area_ha: Option<f64>,
    /// The from → to matrix over compared cells, unchanged cells on the diagonal: label at
    /// `from_date` → label at `to_date` → cells.
    #[serde(default)]
    pub matrix: BTreeMap<String, BTreeMap<String, u64>>,
}

impl ChangeReport {
    /// The from → to matrix in hectares (every label, zeros included), when the cell area
    /// is known.
    pub fn matrix_ha(&self, labels: &[String]) -> Option<Vec<(String, Vec<f64>)>> {
        let ha = self.cell_area_ha?;
        Some(
            labels
                .iter()
                .map(|from| {
                    let row = self.matrix.get(from);
                    let cells = labels
                        .iter()
                        .map(|to| row.and_then(|r| r.get(to)).copied().unwrap_or(0) as f64 * ha)
                        .collect();
                    (from.clone(), cells)
                })
                .collect(),
        )
    }
}

/// Compares two grids of the same region; `cell_area_ha` is the ground area of one cell.
pub fn compare(
    labels: &[String],
    from_date: &str,
    from: &Grid,
    to_date: &str,
    to: &Grid,
    smooth: bool,
    cell_area_ha: Option<f64>,
) -> ChangeReport {
    let (a, b) = if smooth {
        (
            from.plurality_smoothed(labels.len()),
            to.plurality_smoothed(labels.len()),
        )
    } else {
        (from.clone(), to.clone())
    };
    let named = |counts: Vec<u64>| -> BTreeMap<String, u64> {
        labels.iter().cloned().zip(counts).collect()
    };
    let mut report = ChangeReport {
        from_date: from_date.into(),
        to_date: to_date.into(),
        smoothed: smooth,
        tiles_from: named(a.counts(labels.len())),
        tiles_to: named(b.counts(labels.len())),
        transitions: BTreeMap::new(),
        compared: 0,
        changed: Vec::new(),
        cell_area_ha,
        matrix: BTreeMap::new(),
    };
    for r in 0..a.rows.min(b.rows) {
        for c in 0..a.cols.min(b.cols) {
            let (Some(x), Some(y)) = (a.get(r, c), b.get(r, c)) else {
                continue;
            };
            report.compared += 1;
            *report
                .matrix
                .entry(labels[x].clone())
                .or_default()
                .entry(labels[y].clone())
                .or_default() += 1;
            if x != y {
                let (from, to) = (labels[x].clone(), labels[y].clone());
                *report
                    .transitions
                    .entry(from.clone())
                    .or_default()
                    .entry(to.clone())
                    .or_default() += 1;
                report.changed.push(ChangedTile {
                    row: r,
                    col: c,
                    from,
                    to,
                });
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        vec!["field".into(), "forest".into(), "resident".into()]
    }

    #[test]
    fn smoothing_replaces_a_lone_cell_by_its_neighbourhood() {
        // a 3×3 of field with one resident cell in the middle
        let mut cells: Vec<(u32, u32, usize)> = (0..3)
            .flat_map(|r| (0..3).map(move |c| (r, c, 0)))
            .collect();
        cells[4] = (1, 1, 2);
        let g = Grid::from_cells(3, 3, &cells);
        let s = g.plurality_smoothed(3);
        assert_eq!(s.get(1, 1), Some(0));
        assert_eq!(s.counts(3), vec![9, 0, 0]);
    }

    #[test]
    fn smoothing_keeps_own_label_on_a_tie() {
        // corner cell sees itself, and 3 neighbours: 2 forest + 2 field in its window
        let g = Grid::from_cells(2, 2, &[(0, 0, 1), (0, 1, 1), (1, 0, 0), (1, 1, 0)]);
        let s = g.plurality_smoothed(3);
        assert_eq!(s.get(0, 0), Some(1));
        assert_eq!(s.get(1, 1), Some(0));
    }

    #[test]
    fn change_lists_changed_tiles_and_transitions() {
        let a = Grid::from_cells(1, 3, &[(0, 0, 0), (0, 1, 0), (0, 2, 1)]);
        let b = Grid::from_cells(1, 3, &[(0, 0, 2), (0, 1, 0)]);
        let r = compare(&labels(), "2009", &a, "2020", &b, false, Some(5.0625));
        assert_eq!(r.compared, 2, "the tile missing in 2020 is not compared");
        assert_eq!(
            r.changed,
            vec![ChangedTile {
                row: 0,
                col: 0,
                from: "field".into(),
                to: "resident".into()
            }]
        );
        assert_eq!(r.transitions["field"]["resident"], 1);
        assert_eq!(r.tiles_from["field"], 2);
        assert_eq!(r.tiles_to["resident"], 1);
        assert_eq!(r.matrix["field"]["field"], 1, "unchanged on the diagonal");
        let ha = r.matrix_ha(&labels()).unwrap();
        assert_eq!(ha[0].0, "field");
        assert_eq!(
            ha[0].1,
            vec![5.0625, 0.0, 5.0625],
            "field -> field, forest, resident"
        );
        assert_eq!(ha[1].1, vec![0.0; 3], "the forest tile was not compared");
        let old: ChangeReport = serde_json::from_str(
            r#"{"from_date":"a","to_date":"b","smoothed":false,"tiles_from":{},"tiles_to":{},
                "transitions":{},"compared":0,"changed":[]}"#,
        )
        .unwrap();
        assert!(
            old.matrix_ha(&labels()).is_none(),
            "an earlier report reads"
        );
    }
}
