//! Feature shards: one safetensors file per featurized batch, tensor `features` `[n, dim]`
//! float32, with the tile ids (JSON array) in the file's metadata under `tile_ids`.
//! Python: `safetensors.safe_open(path, "np")` → `.get_tensor("features")`, `.metadata()`.

use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashMap;

/// Shard encode/decode failures.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// Not a valid safetensors file.
    #[error("invalid feature shard: {0}")]
    Format(#[from] safetensors::SafeTensorError),
    /// Valid file but not our layout.
    #[error("invalid feature shard: {0}")]
    Layout(String),
}

/// A decoded shard.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    /// Tile ids, one per row.
    pub tile_ids: Vec<String>,
    /// Feature dimension.
    pub dim: usize,
    /// Row-major `[n, dim]` features.
    pub features: Vec<f32>,
}

/// Serialises a shard.
pub fn encode(shard: &Shard) -> Result<Vec<u8>, ShardError> {
    if shard.features.len() != shard.tile_ids.len() * shard.dim {
        return Err(ShardError::Layout(
            "features length is not rows x dim".into(),
        ));
    }
    let bytes: Vec<u8> = shard
        .features
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let view = TensorView::new(Dtype::F32, vec![shard.tile_ids.len(), shard.dim], &bytes)?;
    let meta = HashMap::from([(
        "tile_ids".to_string(),
        serde_json::to_string(&shard.tile_ids).expect("strings serialise"),
    )]);
    Ok(safetensors::serialize([("features", view)], Some(meta))?)
}

/// Parses a shard written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Shard, ShardError> {
    let (_, meta) = SafeTensors::read_metadata(bytes)?;
    let ids_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("tile_ids"))
        .ok_or_else(|| ShardError::Layout("no tile_ids metadata".into()))?;
    let tile_ids: Vec<String> =
        serde_json::from_str(ids_json).map_err(|e| ShardError::Layout(e.to_string()))?;
    let st = SafeTensors::deserialize(bytes)?;
    let t = st.tensor("features")?;
    if t.dtype() != Dtype::F32 || t.shape().len() != 2 || t.shape()[0] != tile_ids.len() {
        return Err(ShardError::Layout(format!(
            "features tensor {:?} {:?}",
            t.dtype(),
            t.shape()
        )));
    }
    let features = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Shard {
        tile_ids,
        dim: t.shape()[1],
        features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = Shard {
            tile_ids: vec!["a".into(), "b/c".into()],
            dim: 3,
            features: vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5],
        };
        assert_eq!(decode(&encode(&s).unwrap()).unwrap(), s);
        assert!(decode(b"garbage").is_err());
        let bad = Shard { dim: 4, ..s };
        assert!(encode(&bad).is_err());
    }
}
