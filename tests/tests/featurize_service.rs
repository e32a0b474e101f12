//! Ingest + featurize end to end on real rsscn7 tiles: every tile gets one 1280-float
//! MobileNetV2 vector in a shard, re-featurizing writes nothing new (but a changed image under
//! the same tile id is featurized again), and an undecodable or
//! missing tile goes to the DLQ with its reason while the rest proceeds.

use aerial_shared::{feature_index::FeatureIndex, keys, messages::Tile, shards, topology, Broker};
use aerial_tests::{eventually, header_str, rsscn7_sample, servers, RSSCN7_CLASSES};
use std::path::Path;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn featurizes_every_tile_once_and_dead_letters_bad_ones() {
    let iso = servers().isolated("featurize").await;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
    let models = models.to_str().unwrap();
    let ingest = iso.spawn("aerial-ingest", &[]);
    let feat = iso.spawn(
        "aerial-featurize",
        &[
            ("AERIAL__MODELS__DIR", models),
            ("AERIAL__WORKER__BATCH_SIZE", "8"),
        ],
    );
    ingest.wait_log("consuming", Duration::from_secs(30)).await;
    feat.wait_log("consuming", Duration::from_secs(30)).await;

    // 3 images per class, 21 in all
    let dir = tempfile::tempdir().unwrap();
    rsscn7_sample(dir.path(), &RSSCN7_CLASSES, &[("train", 3)]);
    let (ok, out) = iso.cli(&[
        "ingest",
        "labelled",
        dir.path().to_str().unwrap(),
        "--dataset",
        "small",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("21 published"), "{out}");

    eventually(Duration::from_secs(120), "21 tiles featurized", || async {
        let index = FeatureIndex::load(&iso.store, "small", "mobilenet_v2")
            .await
            .unwrap();
        (index.len() == 21).then_some(())
    })
    .await;
    let shard_prefix = keys::feature_shards_prefix("small", "mobilenet_v2");
    let shard_keys: Vec<String> = iso
        .store
        .list(&shard_prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut ids = Vec::new();
    for k in &shard_keys {
        let s = shards::decode(&iso.store.get(k).await.unwrap()).unwrap();
        assert_eq!(s.dim, 1280);
        assert!(s.features.iter().all(|v| v.is_finite()));
        assert!(s.features.iter().any(|v| *v != 0.0));
        ids.extend(s.tile_ids);
    }
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!((n, ids.len()), (21, 21), "each tile in exactly one shard");

    // send every tile again: all are skipped, no shard is added
    let manifest = aerial_shared::manifest::load(&iso.store, "small")
        .await
        .unwrap();
    let token = aerial_shared::shutdown::Token::new();
    let broker = Broker::connect_with_retry(&iso.settings.amqp, "test", &token)
        .await
        .unwrap();
    send_tiles(&broker, &manifest).await;
    // plus a tile whose bytes are not an image, and one whose object is missing
    iso.store
        .put("tiles/zz/garbage.jpg", b"not an image".to_vec())
        .await
        .unwrap();
    let mut bad = manifest[0].to_tile("small", "mobilenet_v2");
    bad.tile_id = "bad/garbage".into();
    bad.key = "tiles/zz/garbage.jpg".into();
    let mut missing = bad.clone();
    missing.tile_id = "bad/missing".into();
    missing.key = "tiles/zz/missing.jpg".into();
    for t in [&bad, &missing] {
        broker
            .publisher()
            .send::<Tile>(topology::FEATURIZE_TILES, t)
            .await
            .unwrap();
    }
    let dlq = topology::dlq(topology::FEATURIZE_TILES);
    eventually(
        Duration::from_secs(60),
        "2 bad tiles dead-lettered",
        || async { (iso.ready(&dlq).await == 2).then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(60), "queue drained", || async {
        (iso.ready(topology::FEATURIZE_TILES).await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: Vec<String> = iso
        .store
        .list(&shard_prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        after.len(),
        shard_keys.len(),
        "re-featurizing wrote new shards"
    );
    // the image behind a tile id changed (re-uploaded under the same path): its features
    // are computed again, not skipped on the id alone
    let mut changed = manifest[1].to_tile("small", "mobilenet_v2");
    changed.key = manifest[2].key.clone();
    changed.sha256 = manifest[2].sha256.clone();
    broker
        .publisher()
        .send::<Tile>(topology::FEATURIZE_TILES, &changed)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "changed image featurized",
        || async {
            let index = FeatureIndex::load(&iso.store, "small", "mobilenet_v2")
                .await
                .unwrap();
            index
                .contains_version(&changed.tile_id, &changed.sha256)
                .then_some(())
        },
    )
    .await;
    let index = FeatureIndex::load(&iso.store, "small", "mobilenet_v2")
        .await
        .unwrap();
    assert!(index.contains_version(&manifest[1].id, &manifest[1].sha256));
    assert!(!index.contains_version(&manifest[1].id, "0000"));
    assert_eq!(
        iso.store.list(&shard_prefix).await.unwrap().len(),
        shard_keys.len() + 1,
        "one new shard, for the changed image alone"
    );
    // features deleted to be computed again: the same service must not skip them any more
    for k in &shard_keys {
        iso.store.delete(k).await.unwrap();
    }
    send_tiles(&broker, &manifest[..5]).await;
    eventually(
        Duration::from_secs(60),
        "deleted features recomputed",
        || async {
            let index = FeatureIndex::load(&iso.store, "small", "mobilenet_v2")
                .await
                .unwrap();
            (index.len() == 5).then_some(())
        },
    )
    .await;
    let reasons: Vec<String> = iso
        .drain(&dlq)
        .await
        .iter()
        .map(|(_, h)| header_str(h, topology::ERROR_HEADER).unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("bad/garbage") && r.contains("not a recognised image format")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("bad/missing") && r.contains("not found")),
        "{reasons:?}"
    );
    assert!(feat.log_text().contains("backbone loaded"));
    broker.close().await;
    iso.cleanup().await;
}

/// Publishes the featurize message of each manifest row of dataset `small`.
async fn send_tiles(broker: &Broker, rows: &[aerial_shared::manifest::ManifestRow]) {
    for row in rows {
        broker
            .publisher()
            .send(
                topology::FEATURIZE_TILES,
                &row.to_tile("small", "mobilenet_v2"),
            )
            .await
            .unwrap();
    }
}
