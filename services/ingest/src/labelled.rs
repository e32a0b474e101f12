//! Reading a labelled folder layout: `train/<label>/*` + `val/<label>/*`, or `<label>/*`
//! split here with a seeded, stratified draw.

use aerial_shared::messages::Split;
use rand::{seq::SliceRandom, SeedableRng};
use std::collections::BTreeMap;

/// Marker the CLI uploads for an empty folder, so the service can report it.
pub const DIR_MARKER: &str = ".aerial-dir";

/// One input file with its label and split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledFile {
    /// Path relative to the upload root.
    pub rel: String,
    /// Label (folder name).
    pub label: String,
    /// Split.
    pub split: Split,
}

/// A parsed layout: the files, the label folders (`split/label` or `label`), and paths that
/// fit no layout.
#[derive(Debug, Default)]
pub struct Layout {
    /// Files to ingest.
    pub files: Vec<LabelledFile>,
    /// Every label folder seen, empty or not.
    pub folders: Vec<String>,
    /// Paths outside any label folder, with the reason.
    pub misplaced: Vec<(String, String)>,
}

/// Parses relative paths. With `train/` or `val/` at the top the splits are taken as given;
/// otherwise each label's files are sorted, shuffled with `seed` and `val_frac` go to val.
pub fn parse(paths: &[String], val_frac: f64, seed: u64) -> Layout {
    let split_layout = paths
        .iter()
        .any(|p| p.starts_with("train/") || p.starts_with("val/"));
    let mut layout = Layout::default();
    let mut folders = std::collections::BTreeSet::new();
    let mut unsplit: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in paths {
        let parts: Vec<&str> = p.split('/').collect();
        let is_marker = parts.last() == Some(&DIR_MARKER);
        let (split, label, depth) = if split_layout {
            match parts.as_slice() {
                [s @ ("train" | "val"), label, ..] if parts.len() >= 3 => {
                    let split = if *s == "train" {
                        Split::Train
                    } else {
                        Split::Val
                    };
                    (Some(split), *label, 3)
                }
                _ => {
                    layout
                        .misplaced
                        .push((p.clone(), "not under train/<label>/ or val/<label>/".into()));
                    continue;
                }
            }
        } else {
            match parts.as_slice() {
                [label, _, ..] => (None, *label, 2),
                _ => {
                    layout
                        .misplaced
                        .push((p.clone(), "not inside a <label>/ folder".into()));
                    continue;
                }
            }
        };
        let folder = match split {
            Some(s) => format!("{}/{label}", s.as_str()),
            None => label.to_string(),
        };
        folders.insert(folder);
        if is_marker {
            continue;
        }
        if parts.len() > depth {
            layout
                .misplaced
                .push((p.clone(), "nested folder inside a label folder".into()));
            continue;
        }
        match split {
            Some(split) => layout.files.push(LabelledFile {
                rel: p.clone(),
                label: label.to_string(),
                split,
            }),
            None => unsplit
                .entry(label.to_string())
                .or_default()
                .push(p.clone()),
        }
    }
    for (label, mut files) in unsplit {
        files.sort();
        // per-label seed so adding a class does not reshuffle the others
        let label_seed = label
            .bytes()
            .fold(seed, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        files.shuffle(&mut rand::rngs::StdRng::seed_from_u64(label_seed));
        let n_val = (files.len() as f64 * val_frac).round() as usize;
        for (i, rel) in files.into_iter().enumerate() {
            layout.files.push(LabelledFile {
                rel,
                label: label.clone(),
                split: if i < n_val { Split::Val } else { Split::Train },
            });
        }
    }
    layout.folders = folders.into_iter().collect();
    layout
}

/// Tile id of a labelled file: its relative path without extension.
pub fn tile_id(f: &LabelledFile) -> String {
    let stem = f.rel.rsplit_once('.').map_or(f.rel.as_str(), |(s, _)| s);
    if f.rel.starts_with("train/") || f.rel.starts_with("val/") {
        stem.to_string()
    } else {
        format!("{}/{stem}", f.split.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn split_layout_is_taken_as_given() {
        let l = parse(
            &s(&[
                "train/a/1.jpg",
                "val/a/2.jpg",
                "train/b/.aerial-dir",
                "x.jpg",
            ]),
            0.2,
            1,
        );
        assert_eq!(l.files.len(), 2);
        assert_eq!(l.folders, vec!["train/a", "train/b", "val/a"]);
        assert_eq!(l.misplaced.len(), 1);
        assert_eq!(tile_id(&l.files[0]), "train/a/1");
    }

    #[test]
    fn unsplit_layout_is_stratified_and_seeded() {
        let mut paths = Vec::new();
        for label in ["a", "b"] {
            for i in 0..50 {
                paths.push(format!("{label}/{i}.jpg"));
            }
        }
        let l1 = parse(&paths, 0.2, 7);
        let l2 = parse(&paths, 0.2, 7);
        assert_eq!(l1.files, l2.files);
        for label in ["a", "b"] {
            let val = l1
                .files
                .iter()
                .filter(|f| f.label == label && f.split == Split::Val)
                .count();
            assert_eq!(val, 10);
        }
        let l3 = parse(&paths, 0.2, 8);
        assert_ne!(l1.files, l3.files);
    }
}
