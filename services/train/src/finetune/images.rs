//! The images of a labelled dataset for fine-tuning: decoded once per job segment and kept
//! as 224×224 RGB bytes (≈150 KB a tile), normalised per batch after augmentation.

use crate::data::{stratified_sample, DataError};
use aerial_shared::{imaging, manifest, Store};
use futures::StreamExt;
use tch::Tensor;

/// Downloads and decodes in flight at once.
const PARALLEL_FETCH: usize = 16;

/// One split's images.
pub struct Split {
    /// Tile ids.
    pub ids: Vec<String>,
    /// `[n, 224, 224, 3]` u8.
    pub pixels: Tensor,
    /// Label index per tile.
    pub y: Vec<usize>,
}

/// Train (sampled) and validation images over the sorted label list.
pub struct Images {
    /// Labels, sorted; index = class.
    pub labels: Vec<String>,
    /// Training images.
    pub train: Split,
    /// Validation images.
    pub val: Split,
}

async fn fetch(store: &Store, items: Vec<(String, String, usize)>) -> Result<Split, DataError> {
    let fetched = futures::stream::iter(items.into_iter().map(|(id, key, y)| async move {
        let bytes = store.get(&key).await?;
        let px = tokio::task::spawn_blocking(move || {
            imaging::decode_rgb(&bytes).map(|img| imaging::resize_to_input(&img).into_raw())
        })
        .await
        .expect("decode does not panic")
        .map_err(|e| DataError::Unusable(format!("tile {id} ({key}): {e}")))?;
        Ok::<_, DataError>((id, px, y))
    }))
    .buffered(PARALLEL_FETCH)
    .collect::<Vec<_>>()
    .await;
    let (mut ids, mut bytes, mut ys) = (Vec::new(), Vec::new(), Vec::new());
    for r in fetched {
        let (id, px, y) = r?;
        ids.push(id);
        bytes.extend_from_slice(&px);
        ys.push(y);
    }
    let side = i64::from(imaging::INPUT_SIZE);
    let pixels = Tensor::from_slice(&bytes).view([ids.len() as i64, side, side, 3]);
    Ok(Split { ids, pixels, y: ys })
}

/// Loads the labelled tiles of `dataset`, keeping `frac` of each label's training tiles.
pub async fn load(store: &Store, dataset: &str, frac: f64, seed: u64) -> Result<Images, DataError> {
    let rows = manifest::load(store, dataset).await?;
    let mut labels: Vec<String> = rows
        .iter()
        .filter(|r| !r.label.is_empty())
        .map(|r| r.label.clone())
        .collect();
    labels.sort();
    labels.dedup();
    let index = |l: &str| labels.iter().position(|x| x == l).expect("label listed");
    let of_split = |split: &str| -> Vec<((String, String), usize)> {
        rows.iter()
            .filter(|r| !r.label.is_empty() && r.split == split)
            .map(|r| ((r.id.clone(), r.key.clone()), index(&r.label)))
            .collect()
    };
    let train = stratified_sample(&of_split("train"), frac, seed);
    let val = of_split("val");
    if train.is_empty() || val.is_empty() {
        return Err(DataError::Unusable(format!(
            "dataset {dataset} needs labelled train and val tiles ({} train, {} val)",
            train.len(),
            val.len()
        )));
    }
    let flat = |v: Vec<((String, String), usize)>| -> Vec<(String, String, usize)> {
        v.into_iter().map(|((id, key), y)| (id, key, y)).collect()
    };
    Ok(Images {
        train: fetch(store, flat(train)).await?,
        val: fetch(store, flat(val)).await?,
        labels,
    })
}
