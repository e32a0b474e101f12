//! `aerial train --degrade-for DATASET`: the training resolution of the imagery a run will
//! map, read off a scene dataset's own tiles, so the user names the region rather than a
//! pixel count.

use aerial_shared::{manifest, tile_fetch, Store};

/// What one tile of a scene dataset is: its side in pixels and its ground size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TileResolution {
    /// Pixels a side (the tile's width).
    pub px: u32,
    /// Metres a side (the footprint's width).
    pub metres: f64,
}

impl TileResolution {
    /// The `degrade_px` that trains at this resolution: none when the tiles already have at
    /// least the network's 224 pixels (degrading would only lose detail score still sees).
    pub fn degrade_px(&self) -> Option<u32> {
        (self.px < aerial_shared::imaging::INPUT_SIZE).then_some(self.px.max(8))
    }
}

/// Reads the side of the first scene tile of `dataset` (every tile of a scene dataset is
/// cut to one ground size and one resolution per scene; the first stands for them).
pub async fn of_dataset(store: &Store, dataset: &str) -> anyhow::Result<TileResolution> {
    let rows = manifest::load(store, dataset).await?;
    let tile = rows
        .iter()
        .map(|r| r.to_tile(dataset, ""))
        .find(|t| t.geo.is_some())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "dataset {dataset} has no scene tiles (ingest the imagery to map with `aerial ingest scene`)"
            )
        })?;
    let bytes = match tile_fetch::fetch_bytes(store, &[&tile]).await.pop() {
        Some(Ok(b)) => b,
        Some(Err(tile_fetch::FetchError::Bad(m) | tile_fetch::FetchError::Transient(m))) => {
            anyhow::bail!("reading tile {} of {dataset}: {m}", tile.tile_id)
        }
        None => anyhow::bail!("reading tile {} of {dataset}: no answer", tile.tile_id),
    };
    let (px, _) = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()?
        .into_dimensions()
        .map_err(|e| anyhow::anyhow!("tile {} of {dataset}: {e}", tile.tile_id))?;
    let b = tile.geo.expect("found with geo").bounds;
    Ok(TileResolution {
        px,
        metres: b[2] - b[0],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_tiles_set_the_training_side_and_sharp_ones_leave_images_as_they_are() {
        let naip_5m = TileResolution {
            px: 45,
            metres: 224.0,
        };
        assert_eq!(naip_5m.degrade_px(), Some(45));
        let naip_1m = TileResolution {
            px: 224,
            metres: 224.0,
        };
        assert_eq!(naip_1m.degrade_px(), None);
        let tiny = TileResolution {
            px: 3,
            metres: 15.0,
        };
        assert_eq!(tiny.degrade_px(), Some(8));
    }
}
