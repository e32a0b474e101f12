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
    /// sha256 (hex) of each tile's image, one per row: the content the features were
    /// computed from, so a changed image under the same tile id is not taken for featurized.
    /// Absent in shards written before this field (metadata key `tile_sha256`).
    pub tile_sha256: Option<Vec<String>>,
}

/// The tiles a shard's header names.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderTiles {
    /// Tile ids, one per row.
    pub ids: Vec<String>,
    /// Their content hashes, when the shard records them.
    pub sha256: Option<Vec<String>>,
}

/// Serialises a shard.
pub fn encode(shard: &Shard) -> Result<Vec<u8>, ShardError> {
    if shard.features.len() != shard.tile_ids.len() * shard.dim {
        return Err(ShardError::Layout(
            "features length is not rows x dim".into(),
        ));
    }
    if shard
        .tile_sha256
        .as_ref()
        .is_some_and(|h| h.len() != shard.tile_ids.len())
    {
        return Err(ShardError::Layout("one sha256 per tile id".into()));
    }
    let bytes: Vec<u8> = shard
        .features
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let view = TensorView::new(Dtype::F32, vec![shard.tile_ids.len(), shard.dim], &bytes)?;
    let mut meta = HashMap::from([(
        "tile_ids".to_string(),
        serde_json::to_string(&shard.tile_ids).expect("strings serialise"),
    )]);
    if let Some(h) = &shard.tile_sha256 {
        meta.insert(
            "tile_sha256".to_string(),
            serde_json::to_string(h).expect("strings serialise"),
        );
    }
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
    let tile_sha256 = sha256_of(meta.metadata().as_ref(), tile_ids.len())?;
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
        tile_sha256,
    })
}

fn sha256_of(
    meta: Option<&HashMap<String, String>>,
    n: usize,
) -> Result<Option<Vec<String>>, ShardError> {
    let Some(json) = meta.and_then(|m| m.get("tile_sha256")) else {
        return Ok(None);
    };
    let h: Vec<String> =
        serde_json::from_str(json).map_err(|e| ShardError::Layout(e.to_string()))?;
    if h.len() != n {
        return Err(ShardError::Layout("one sha256 per tile id".into()));
    }
    Ok(Some(h))
}

/// Bytes to read from the start of a shard to find its tile ids in one request, usually.
pub const HEADER_PROBE_BYTES: usize = 16 * 1024;

/// Largest header accepted (the safetensors limit).
const MAX_HEADER_BYTES: usize = 100_000_000;

/// What the first bytes of a shard say about its tile ids.
#[derive(Debug, PartialEq)]
pub enum HeaderIds {
    /// The ids (and content hashes), read from the header's metadata.
    Ids(HeaderTiles),
    /// The header is longer: this many bytes from the start of the file are needed.
    NeedBytes(usize),
}

/// Reads a shard's tile ids from its header alone, so indexing needs no feature bytes.
pub fn header_tile_ids(start: &[u8]) -> Result<HeaderIds, ShardError> {
    let Some(len) = start.get(..8) else {
        return Err(ShardError::Layout(
            "shorter than a safetensors header".into(),
        ));
    };
    let n = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
    if n > MAX_HEADER_BYTES {
        return Err(ShardError::Layout(format!("header of {n} bytes")));
    }
    let Some(header) = start.get(8..8 + n) else {
        return Ok(HeaderIds::NeedBytes(8 + n));
    };
    #[derive(serde::Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__")]
        metadata: Option<HashMap<String, String>>,
    }
    let h: Header =
        serde_json::from_slice(header).map_err(|e| ShardError::Layout(format!("header: {e}")))?;
    let ids = h
        .metadata
        .as_ref()
        .and_then(|m| m.get("tile_ids"))
        .ok_or_else(|| ShardError::Layout("no tile_ids metadata".into()))?;
    let ids: Vec<String> =
        serde_json::from_str(ids).map_err(|e| ShardError::Layout(e.to_string()))?;
    let sha256 = sha256_of(h.metadata.as_ref(), ids.len())?;
    Ok(HeaderIds::Ids(HeaderTiles { ids, sha256 }))
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
            tile_sha256: Some(vec!["aa".into(), "bb".into()]),
        };
        assert_eq!(decode(&encode(&s).unwrap()).unwrap(), s);
        // shards of earlier versions carry no hashes and still decode
        let old = Shard {
            tile_sha256: None,
            ..s.clone()
        };
        assert_eq!(decode(&encode(&old).unwrap()).unwrap(), old);
        let short = Shard {
            tile_sha256: Some(vec!["aa".into()]),
            ..s.clone()
        };
        assert!(encode(&short).is_err(), "one hash per row");
        assert!(decode(b"garbage").is_err());
        let bad = Shard { dim: 4, ..s };
        assert!(encode(&bad).is_err());
    }

    #[test]
    fn tile_ids_from_the_header_alone() {
        let s = Shard {
            tile_ids: (0..40).map(|i| format!("tile-{i:03}")).collect(),
            dim: 2,
            features: vec![0.5; 80],
            tile_sha256: Some((0..40).map(|i| format!("{i:064x}")).collect()),
        };
        let header = |s: &Shard| {
            HeaderIds::Ids(HeaderTiles {
                ids: s.tile_ids.clone(),
                sha256: s.tile_sha256.clone(),
            })
        };
        let bytes = encode(&s).unwrap();
        assert_eq!(header_tile_ids(&bytes).unwrap(), header(&s));
        // a prefix that stops inside the header asks for exactly the header
        let need = match header_tile_ids(&bytes[..20]).unwrap() {
            HeaderIds::NeedBytes(n) => n,
            other => panic!("expected NeedBytes, got {other:?}"),
        };
        assert!(need < bytes.len() - 80 * 4 + 1);
        assert_eq!(header_tile_ids(&bytes[..need]).unwrap(), header(&s));
        assert!(header_tile_ids(b"1234").is_err());
        assert!(header_tile_ids(&u64::MAX.to_le_bytes()).is_err());
        let mut no_meta = 2u64.to_le_bytes().to_vec();
        no_meta.extend_from_slice(b"{}");
        assert!(header_tile_ids(&no_meta).is_err());
    }
}
