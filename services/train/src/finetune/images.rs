//! The images of a labelled dataset for fine-tuning: decoded once per job segment and kept
//! as 224×224 RGB bytes (≈150 KB a tile), normalised per batch after augmentation.

use crate::data::{carve_test, stratified_sample, DataError};
use aerial_shared::{
    imaging, manifest,
    messages::Tile,
    tile_fetch::{self, FetchError},
    Store,
};
use futures::StreamExt;
use tch::Tensor;

/// Tiles read per round (their encoded bytes are held until decoded).
const FETCH_CHUNK: usize = 64;
/// Decodes in flight at once.
const PARALLEL_DECODES: usize = 16;

/// One split's images.
pub struct Split {
    /// Tile ids.
    pub ids: Vec<String>,
    /// `[n, 224, 224, 3]` u8.
    pub pixels: Tensor,
    /// Label index per tile.
    pub y: Vec<usize>,
}

impl Split {
    /// Every image degraded to `px` a side (the run's `degrade_px`).
    pub fn degrade(&mut self, px: u32) {
        self.pixels = aerial_model::resolution::degrade_pixels(&self.pixels, px);
    }
}

/// Train (sampled) and validation images over the sorted label list.
pub struct Images {
    /// Labels, sorted; index = class.
    pub labels: Vec<String>,
    /// Training images.
    pub train: Split,
    /// Validation images.
    pub val: Split,
    /// Test images (the job's `test_frac` of the training tiles), if it kept any out.
    pub test: Option<Split>,
}

/// Reads and decodes the images of `items` (tile, label index), in order.
pub async fn fetch(store: &Store, items: Vec<(Tile, usize)>) -> Result<Split, DataError> {
    let (mut ids, mut bytes, mut ys) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in items.chunks(FETCH_CHUNK) {
        let refs: Vec<&Tile> = chunk.iter().map(|(t, _)| t).collect();
        let fetched = tile_fetch::fetch_bytes(store, &refs).await;
        // owned inputs only: a stream of futures borrowing the chunk is not `Send`
        let todo: Vec<(String, usize, _)> = chunk
            .iter()
            .zip(fetched)
            .map(|((t, y), got)| (t.tile_id.clone(), *y, got))
            .collect();
        let decoded = futures::stream::iter(todo.into_iter().map(|(id, y, got)| async move {
            let raw = got.map_err(|e| match e {
                FetchError::Bad(m) => DataError::Unusable(m),
                FetchError::Transient(m) => DataError::Transient(m),
            })?;
            let px = tokio::task::spawn_blocking(move || {
                imaging::decode_rgb(&raw).map(|img| imaging::resize_to_input(&img).into_raw())
            })
            .await
            .expect("decode does not panic")
            .map_err(|e| DataError::Unusable(format!("tile {id}: {e}")))?;
            Ok::<_, DataError>((id, px, y))
        }))
        .buffered(PARALLEL_DECODES)
        .collect::<Vec<_>>()
        .await;
        for r in decoded {
            let (id, px, y) = r?;
            ids.push(id);
            bytes.extend_from_slice(&px);
            ys.push(y);
        }
    }
    let side = i64::from(imaging::INPUT_SIZE);
    let pixels = Tensor::from_slice(&bytes).view([ids.len() as i64, side, side, 3]);
    Ok(Split { ids, pixels, y: ys })
}

/// Loads the labelled tiles of `dataset`: the test share carved off the training tiles
/// first (as for classic runs), then `frac` of each label's remaining training tiles.
pub async fn load(
    store: &Store,
    dataset: &str,
    frac: f64,
    test_frac: Option<f64>,
    seed: u64,
) -> Result<Images, DataError> {
    let rows = manifest::load(store, dataset).await?;
    let mut labels: Vec<String> = rows
        .iter()
        .filter(|r| !r.label.is_empty())
        .map(|r| r.label.clone())
        .collect();
    labels.sort();
    labels.dedup();
    let index = |l: &str| labels.iter().position(|x| x == l).expect("label listed");
    let of_split = |split: &str| -> Vec<(Tile, usize)> {
        rows.iter()
            .filter(|r| !r.label.is_empty() && r.split == split)
            .map(|r| (r.to_tile(dataset, ""), index(&r.label)))
            .collect()
    };
    // the carve draws on sorted tile ids, the same draw a classic run of this dataset makes
    // (data::load sorts them too: the draw depends on their order)
    let train = of_split("train");
    let mut ids: Vec<(String, usize)> =
        train.iter().map(|(t, y)| (t.tile_id.clone(), *y)).collect();
    ids.sort();
    let (_, test_ids) = carve_test(ids, test_frac, seed);
    let test_ids: std::collections::HashSet<String> =
        test_ids.into_iter().map(|(id, _)| id).collect();
    let (test, train): (Vec<_>, Vec<_>) = train
        .into_iter()
        .partition(|(t, _)| test_ids.contains(&t.tile_id));
    let train = stratified_sample(&train, frac, seed);
    let val = of_split("val");
    if train.is_empty() || val.is_empty() {
        return Err(DataError::Unusable(format!(
            "dataset {dataset} needs labelled train and val tiles ({} train, {} val)",
            train.len(),
            val.len()
        )));
    }
    Ok(Images {
        train: fetch(store, train).await?,
        val: fetch(store, val).await?,
        test: if test.is_empty() {
            None
        } else {
            Some(fetch(store, test).await?)
        },
        labels,
    })
}
