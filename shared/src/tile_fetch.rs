//! Reading a batch of tiles from the store. Tiles cut from one scene share a pack object, so
//! neighbours in a batch are read with one ranged GET instead of one GET each (the per-request
//! cost of the S3 server was a tenth of a replica's work); tiles stored alone take one GET.
//! Decoding and preprocessing run off the async runtime.

use crate::imaging;
use crate::messages::{ByteRange, Tile};
use crate::store::StoreError;
use crate::Store;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::BTreeMap;

/// Unwanted bytes between two wanted ranges that are read through rather than split into
/// another GET (a few neighbouring tiles taken by another replica).
pub const MAX_GAP: u64 = 256 * 1024;
/// Most bytes one GET reads.
pub const MAX_SPAN: u64 = 8 * 1024 * 1024;
/// GETs in flight at once.
const PARALLEL_GETS: usize = 16;
/// Decodes in flight at once.
const PARALLEL_DECODES: usize = 16;

/// Why a stored tile could not become model input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Missing, unsafe key, outside its object, or undecodable: the tile itself is bad
    /// (dead-letter it).
    Bad(String),
    /// The store failed: another try may succeed.
    Transient(String),
}

/// One GET: a whole object (`span` absent) or a span of it, and the tiles (indices) it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Read {
    key: String,
    span: Option<ByteRange>,
    tiles: Vec<usize>,
}

/// Per object: tiles wanted whole, and (range, tile) of tiles in a pack.
type ByObject<'a> = BTreeMap<&'a str, (Vec<usize>, Vec<(ByteRange, usize)>)>;

/// The GETs that read every tile: one per whole object, and per pack as few spans as the
/// gaps and [`MAX_SPAN`] allow.
fn plan(tiles: &[&Tile]) -> Vec<Read> {
    let mut by_key = ByObject::new();
    for (i, t) in tiles.iter().enumerate() {
        let e = by_key.entry(t.key.as_str()).or_default();
        match t.range {
            None => e.0.push(i),
            Some(r) => e.1.push((r, i)),
        }
    }
    let mut reads = Vec::new();
    for (key, (whole, mut ranged)) in by_key {
        if !whole.is_empty() {
            reads.push(Read {
                key: key.into(),
                span: None,
                tiles: whole,
            });
        }
        ranged.sort_by_key(|(r, _)| (r.offset, r.length));
        let mut cur: Option<(ByteRange, Vec<usize>)> = None;
        for (r, i) in ranged {
            match &mut cur {
                Some((span, members))
                    if r.offset <= span.end() + MAX_GAP
                        && r.end().max(span.end()) - span.offset <= MAX_SPAN =>
                {
                    span.length = r.end().max(span.end()) - span.offset;
                    members.push(i);
                }
                _ => {
                    if let Some((span, members)) = cur.take() {
                        reads.push(Read {
                            key: key.into(),
                            span: Some(span),
                            tiles: members,
                        });
                    }
                    cur = Some((r, vec![i]));
                }
            }
        }
        if let Some((span, members)) = cur {
            reads.push(Read {
                key: key.into(),
                span: Some(span),
                tiles: members,
            });
        }
    }
    reads
}

/// `range` cut out of `data`, the bytes read for `span`; `None` when the object ended sooner.
fn cut(data: &Bytes, span: ByteRange, range: ByteRange) -> Option<Bytes> {
    let start = usize::try_from(range.offset - span.offset).ok()?;
    let end = start.checked_add(usize::try_from(range.length).ok()?)?;
    (end <= data.len()).then(|| data.slice(start..end))
}

/// Names a tile and where its bytes are, for error messages.
fn locate(t: &Tile) -> String {
    match t.range {
        None => t.key.clone(),
        Some(r) => format!("{} bytes {}..{}", t.key, r.offset, r.end()),
    }
}

/// What one tile of a finished read gets: its bytes, or why not.
fn settle(
    got: &Result<Bytes, StoreError>,
    span: Option<ByteRange>,
    t: &Tile,
) -> Result<Bytes, FetchError> {
    let past_end = || {
        FetchError::Bad(format!(
            "tile {}: {} lies past the end of the object",
            t.tile_id,
            locate(t)
        ))
    };
    match (got, span, t.range) {
        (Ok(data), Some(span), Some(range)) => cut(data, span, range).ok_or_else(past_end),
        (Ok(data), _, _) => Ok(data.clone()),
        (Err(StoreError::RangeOutside { .. }), _, _) => Err(past_end()),
        (Err(e @ (StoreError::NotFound { .. } | StoreError::InvalidKey(_))), _, _) => {
            Err(FetchError::Bad(format!("tile {}: {e}", t.tile_id)))
        }
        (Err(e), _, _) => Err(FetchError::Transient(e.to_string())),
    }
}

/// Each tile's bytes (by index) as soon as the GET holding them completes.
fn reads<'a>(
    store: &'a Store,
    tiles: &'a [&'a Tile],
) -> impl futures::Stream<Item = (usize, Result<Bytes, FetchError>)> + Send + 'a {
    futures::stream::iter(plan(tiles))
        .map(move |r| async move {
            let got = match r.span {
                None => store.get(&r.key).await,
                Some(s) => store.get_range(&r.key, s.offset, s.length).await,
            };
            (r, got)
        })
        .buffer_unordered(PARALLEL_GETS)
        .flat_map(move |(r, got)| {
            let each: Vec<_> = r
                .tiles
                .iter()
                .map(|&i| (i, settle(&got, r.span, tiles[i])))
                .collect();
            futures::stream::iter(each)
        })
}

/// The `n` results of a stream that yields each tile's (index, result) once, in index order.
async fn in_order<T>(n: usize, results: impl futures::Stream<Item = (usize, T)>) -> Vec<T> {
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    results
        .for_each(|(i, x)| {
            out[i] = Some(x);
            async {}
        })
        .await;
    out.into_iter()
        .map(|r| r.expect("every tile is in one read"))
        .collect()
}

/// The encoded bytes of every tile, in order.
pub async fn fetch_bytes(store: &Store, tiles: &[&Tile]) -> Vec<Result<Bytes, FetchError>> {
    in_order(tiles.len(), reads(store, tiles)).await
}

/// Every tile decoded and preprocessed to model input, in order; each tile is decoded as
/// soon as its GET completes. A bad tile's message names the tile and where its bytes are.
pub async fn fetch_tensors(store: &Store, tiles: &[&Tile]) -> Vec<Result<Vec<f32>, FetchError>> {
    let decoded = reads(store, tiles)
        .map(|(i, b)| {
            let at = format!("tile {} ({})", tiles[i].tile_id, locate(tiles[i]));
            async move {
                let x = match b {
                    Ok(b) => tokio::task::spawn_blocking(move || imaging::load_tensor(&b))
                        .await
                        .expect("preprocess does not panic")
                        .map_err(|e| FetchError::Bad(format!("{at}: {e}"))),
                    Err(e) => Err(e),
                };
                (i, x)
            }
        })
        .buffer_unordered(PARALLEL_DECODES);
    in_order(tiles.len(), decoded).await
}

/// Where a window part's bytes are: object key and byte range.
type PartAt<'a> = (&'a str, Option<(u64, u64)>);

/// Every window (a strided job's input) cut from its parts and preprocessed to model input,
/// in order. A part shared by neighbouring windows is read once. A bad part makes its windows
/// bad, naming the part.
pub async fn fetch_windows(
    store: &Store,
    windows: &[(&Tile, &crate::messages::Window)],
) -> Vec<Result<Vec<f32>, FetchError>> {
    let mut index: std::collections::HashMap<PartAt, usize> = Default::default();
    let mut parts: Vec<Tile> = Vec::new();
    for (_, w) in windows {
        for p in &w.parts {
            let at = (p.key.as_str(), p.range.map(|r| (r.offset, r.length)));
            index.entry(at).or_insert_with(|| {
                parts.push(Tile {
                    dataset: String::new(),
                    tile_id: p.tile_id.clone(),
                    key: p.key.clone(),
                    range: p.range,
                    sha256: String::new(),
                    label: None,
                    split: None,
                    date: None,
                    geo: None,
                    backbone: String::new(),
                });
                parts.len() - 1
            });
        }
    }
    let refs: Vec<&Tile> = parts.iter().collect();
    let bytes = fetch_bytes(store, &refs).await;
    // owned per window (its id, its window, its parts' bytes or the first failure), so the
    // stream below borrows nothing
    let owned: Vec<(
        String,
        crate::messages::Window,
        Result<Vec<Bytes>, FetchError>,
    )> = windows
        .iter()
        .map(|(t, w)| {
            let got = w
                .parts
                .iter()
                .map(|p| {
                    bytes[index[&(p.key.as_str(), p.range.map(|r| (r.offset, r.length)))]].clone()
                })
                .collect();
            (t.tile_id.clone(), (*w).clone(), got)
        })
        .collect();
    futures::stream::iter(owned)
        .map(|(id, w, got)| async move {
            let got = got.map_err(|e| match e {
                FetchError::Bad(why) => FetchError::Bad(format!("window {id}: {why}")),
                t => t,
            })?;
            tokio::task::spawn_blocking(move || {
                let slices: Vec<&[u8]> = got.iter().map(|b| b.as_ref()).collect();
                crate::window::compose(&w, &slices)
                    .map(|img| imaging::preprocess(&img))
                    .map_err(|(part, e)| FetchError::Bad(format!("window {id}: tile {part}: {e}")))
            })
            .await
            .expect("composing does not panic")
        })
        .buffered(PARALLEL_DECODES)
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(id: &str, key: &str, range: Option<(u64, u64)>) -> Tile {
        Tile {
            dataset: "d".into(),
            tile_id: id.into(),
            key: key.into(),
            range: range.map(|(offset, length)| ByteRange { offset, length }),
            sha256: String::new(),
            label: None,
            split: None,
            date: None,
            geo: None,
            backbone: "mobilenet_v2".into(),
        }
    }

    /// key, span (offset, length), tiles
    type Span<'a> = (&'a str, Option<(u64, u64)>, Vec<usize>);

    fn spans(reads: &[Read]) -> Vec<Span<'_>> {
        reads
            .iter()
            .map(|r| {
                (
                    r.key.as_str(),
                    r.span.map(|s| (s.offset, s.length)),
                    r.tiles.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn neighbours_in_a_pack_are_one_read_and_lone_tiles_one_each() {
        let ts = [
            tile("c", "p", Some((200, 100))),
            tile("x", "a.jpg", None),
            tile("a", "p", Some((0, 100))),
            // a gap of 100 bytes (a tile another replica took) is read through
            tile("d", "p", Some((400, 50))),
            tile("y", "a.jpg", None),
        ];
        let refs: Vec<&Tile> = ts.iter().collect();
        assert_eq!(
            spans(&plan(&refs)),
            vec![
                ("a.jpg", None, vec![1, 4]),
                ("p", Some((0, 450)), vec![2, 0, 3]),
            ]
        );
    }

    #[test]
    fn far_apart_or_oversized_ranges_split_into_several_reads() {
        let ts = [
            tile("a", "p", Some((0, 10))),
            tile("b", "p", Some((10 + MAX_GAP + 1, 10))),
            tile("c", "q", Some((0, MAX_SPAN - 5))),
            tile("d", "q", Some((MAX_SPAN - 5, 10))),
            tile("e", "q", Some((MAX_SPAN - 5, 5))),
        ];
        let refs: Vec<&Tile> = ts.iter().collect();
        assert_eq!(
            spans(&plan(&refs)),
            vec![
                ("p", Some((0, 10)), vec![0]),
                ("p", Some((MAX_GAP + 11, 10)), vec![1]),
                ("q", Some((0, MAX_SPAN)), vec![2, 4]),
                ("q", Some((MAX_SPAN - 5, 10)), vec![3]),
            ]
        );
    }

    #[test]
    fn overlapping_ranges_share_a_span_and_cut_their_own_bytes() {
        let ts = [
            tile("a", "p", Some((10, 20))),
            tile("b", "p", Some((15, 5))),
        ];
        let refs: Vec<&Tile> = ts.iter().collect();
        let reads = plan(&refs);
        assert_eq!(spans(&reads), vec![("p", Some((10, 20)), vec![0, 1])]);
        let data = Bytes::from((10u8..30).collect::<Vec<_>>());
        let span = reads[0].span.unwrap();
        assert_eq!(
            &cut(&data, span, ts[1].range.unwrap()).unwrap()[..],
            &[15, 16, 17, 18, 19]
        );
        // the object ended after 8 of the span's 20 bytes
        let short = data.slice(..8);
        assert_eq!(cut(&short, span, ts[1].range.unwrap()), None);
        assert_eq!(
            &cut(
                &short,
                span,
                ByteRange {
                    offset: 12,
                    length: 6
                }
            )
            .unwrap()[..],
            &[12, 13, 14, 15, 16, 17]
        );
    }
}
