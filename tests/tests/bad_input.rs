//! Bad input end to end, through the real featurize service: malformed JSON, a wrong schema
//! version, a wrong schema, an oversized message, a missing object, byte ranges outside their
//! pack, keys with `..` or an absolute path, and images that are truncated, zero-byte,
//! gigantic in their header or of the wrong band count. Each lands in the DLQ with a reason that names the item; the service
//! keeps running and featurizes the good tile sent after them. Counts go to
//! `target/reliability/bad-input.json` for RELIABILITY.md.

use aerial_shared::{feature_index::FeatureIndex, manifest, messages, topology};
use aerial_tests::{eventually, header_str, record_reliability, rsscn7_sample, servers};
use std::io::Cursor;
use std::path::Path;
use std::time::Duration;

fn png(img: image::DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A PNG whose header claims 40000×40000 pixels (a decompression bomb's calling card).
fn bomb() -> Vec<u8> {
    let mut b = png(image::DynamicImage::ImageRgb8(image::RgbImage::new(4, 4)));
    b[16..20].copy_from_slice(&40000u32.to_be_bytes());
    b[20..24].copy_from_slice(&40000u32.to_be_bytes());
    // the IHDR CRC, so the header itself is well formed
    let crc = {
        let mut c = 0xFFFF_FFFFu32;
        for &byte in &b[12..29] {
            c ^= u32::from(byte);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
        }
        !c
    };
    b[29..33].copy_from_slice(&crc.to_be_bytes());
    b
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_dead_lettered_with_its_reason_and_the_service_keeps_running() {
    let iso = servers().isolated("bad-input").await;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
    let ingest = iso.spawn("aerial-ingest", &[]);
    let feat = iso.spawn(
        "aerial-featurize",
        &[("AERIAL__MODELS__DIR", models.to_str().unwrap())],
    );
    ingest.wait_log("consuming", Duration::from_secs(60)).await;
    feat.wait_log("consuming", Duration::from_secs(60)).await;

    // one real tile gives a valid message to start from
    let dir = tempfile::tempdir().unwrap();
    rsscn7_sample(dir.path(), &["forest"], &[("train", 1)]);
    let (ok, out) = iso.cli(&[
        "ingest",
        "labelled",
        dir.path().to_str().unwrap(),
        "--dataset",
        "d",
    ]);
    assert!(ok, "{out}");
    let row = manifest::load(&iso.store, "d").await.unwrap().remove(0);
    let good = row.to_tile("d", "mobilenet_v2");
    let jpg = iso.store.get(&good.key).await.unwrap();

    // (item, message body, what the reason must say)
    let mut cases: Vec<(String, Vec<u8>, &str)> = Vec::new();
    let tile = |id: &str, key: &str| {
        let mut t = good.clone();
        t.tile_id = id.into();
        t.key = key.into();
        messages::encode(&t)
    };
    let objects: [(&str, Vec<u8>, &str); 5] = [
        ("truncated", jpg[..jpg.len() / 2].to_vec(), "truncated"),
        ("zero-byte", Vec::new(), "zero-byte file"),
        ("bomb", bomb(), "40000x40000 exceeds"),
        (
            "one-band",
            png(image::DynamicImage::ImageLuma8(image::GrayImage::new(
                64, 64,
            ))),
            "wrong band count: 1",
        ),
        (
            "two-band",
            png(image::DynamicImage::ImageLumaA8(
                image::GrayAlphaImage::new(64, 64),
            )),
            "wrong band count: 2",
        ),
    ];
    for (id, bytes, why) in objects {
        let key = format!("tiles/bad/{id}.img");
        iso.store.put(&key, bytes).await.unwrap();
        cases.push((id.into(), tile(id, &key), why));
    }
    // ranges in a pack that ends sooner: one starts past its end, one runs over it
    let pack = "tiles/bad/short.pack";
    iso.store.put(pack, jpg.to_vec()).await.unwrap();
    let n = jpg.len() as u64;
    for (id, offset, length) in [("past-end", n + 100, 50), ("over-end", n / 2, n)] {
        let mut t = good.clone();
        t.tile_id = id.into();
        t.key = pack.into();
        t.range = Some(messages::ByteRange { offset, length });
        cases.push((id.into(), messages::encode(&t), "lies past the end"));
    }
    cases.push((
        "missing".into(),
        tile("missing", "tiles/bad/nowhere.jpg"),
        "object not found",
    ));
    cases.push((
        "dotdot".into(),
        tile("dotdot", "tiles/../../etc/passwd"),
        "unsafe object key",
    ));
    cases.push((
        "absolute".into(),
        tile("absolute", "/etc/passwd"),
        "unsafe object key",
    ));
    cases.push((
        "malformed".into(),
        b"{\"schema_version\": 1, \"tile_id\": \"malformed\"".to_vec(),
        "malformed json",
    ));
    let mut v2 = serde_json::from_slice::<serde_json::Value>(&messages::encode(&good)).unwrap();
    v2["schema_version"] = 99.into();
    v2["tile_id"] = "future".into();
    cases.push((
        "future".into(),
        serde_json::to_vec(&v2).unwrap(),
        "schema_version 99",
    ));
    cases.push((
        "wrong-schema".into(),
        br#"{"schema_version": 1, "job_id": "not-a-tile"}"#.to_vec(),
        "invalid tile message",
    ));
    let mut big = serde_json::from_slice::<serde_json::Value>(&messages::encode(&good)).unwrap();
    big["tile_id"] = "oversized".into();
    big["padding"] = "x".repeat(messages::MAX_MESSAGE_BYTES).into();
    cases.push((
        "oversized".into(),
        serde_json::to_vec(&big).unwrap(),
        "exceeds the",
    ));

    for (_, body, _) in &cases {
        iso.publish_raw(topology::FEATURIZE_TILES, body).await;
    }
    // then the good tile again, under a new id: it must still be featurized
    let mut after = good.clone();
    after.tile_id = "after-the-bad-ones".into();
    iso.publish_raw(topology::FEATURIZE_TILES, &messages::encode(&after))
        .await;

    let dlq = topology::dlq(topology::FEATURIZE_TILES);
    eventually(
        Duration::from_secs(120),
        "every bad message dead-lettered",
        || async { (iso.ready(&dlq).await as usize == cases.len()).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(120),
        "the good tile featurized",
        || async {
            let index = FeatureIndex::load(&iso.store, "d", "mobilenet_v2")
                .await
                .ok()?;
            index.contains("after-the-bad-ones").then_some(())
        },
    )
    .await;
    let dead = iso.drain(&dlq).await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|(_, h)| header_str(h, topology::ERROR_HEADER).unwrap_or_default())
        .collect();
    let mut rows = Vec::new();
    for (item, body, why) in &cases {
        // an undecodable body has no readable tile id: its reason names it by size and
        // content hash instead (and the body itself is kept in the DLQ)
        let hash = &hex_sha256(body)[..12];
        let reason = reasons
            .iter()
            .find(|r| r.contains(&format!("tile {item}")) || r.contains(hash))
            .unwrap_or_else(|| panic!("no DLQ reason for {item} (wanted {why:?}) in {reasons:#?}"));
        assert!(reason.contains(why), "{item}: {reason}");
        rows.push(serde_json::json!({"item": item, "reason": reason}));
    }
    assert!(feat.log_text().contains("consuming"));
    let mut feat = feat;
    assert!(feat.alive(), "featurize died on bad input");
    record_reliability(
        "bad-input",
        serde_json::json!({
            "kind": "bad-input",
            "input": cases.len() + 1,
            "output": 1,
            "duplicates": 0,
            "dlq": dead.len(),
            "cases": rows,
        }),
    );
}
