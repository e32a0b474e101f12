//! Scene ingest of the 10-date NAIP region: one dataset, 320 whole 45 px (225 m) tiles per
//! date, lon/lat inside the documented bounds, each scene's tiles in one pack; scenes without
//! geo-reference, with 2 bands, unreadable or not GeoTIFF at all (a VRT over
//! `/proc/self/environ`) are reported by file and do not stop the job. Scenes already in S3
//! are read in place (`s3://bucket/key.tif`), not copied, and give the same tiles.

use aerial_tests::{servers, shared_data};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A VRT whose three bands are the reading process's environment (S3 secret, AMQP password).
fn environ_vrt() -> String {
    let band = |b| {
        format!("<VRTRasterBand dataType=\"Byte\" band=\"{b}\" subClass=\"VRTRawRasterBand\"><SourceFilename relativetoVRT=\"0\">/proc/self/environ</SourceFilename><ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>64</LineOffset></VRTRasterBand>")
    };
    format!("<VRTDataset rasterXSize=\"64\" rasterYSize=\"64\"><SRS>EPSG:26914</SRS><GeoTransform>485900, 5, 0, 5209247, 0, -5</GeoTransform>{}{}{}</VRTDataset>", band(1), band(2), band(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_scenes_become_one_dated_geo_dataset() {
    let iso = servers().isolated("scene").await;
    let svc = iso.spawn("aerial-ingest", &[]);
    svc.wait_log("consuming", Duration::from_secs(30)).await;
    let region = shared_data().join("region/naip_nd_m_4709963_se");
    let mut files: Vec<String> = std::fs::read_dir(&region)
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().to_string())
        .filter(|p| p.ends_with(".tif"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 10);
    let bad = tempfile::tempdir().unwrap();
    // a TIFF with pixels but no CRS or geotransform (made from a JPEG)
    let nogeo = bad.path().join("nogeo_20200101.tif");
    let jpeg = shared_data().join("rsscn7/train/field/b001.jpg");
    let st = std::process::Command::new("gdal_translate")
        .args([
            "-q",
            "-of",
            "GTiff",
            jpeg.to_str().unwrap(),
            nogeo.to_str().unwrap(),
        ])
        .status()
        .expect("gdal_translate (gdal-bin) installed by make");
    assert!(st.success());
    // a JPEG named .tif is not a GeoTIFF at all
    let renamed = bad.path().join("renamed_20200104.tif");
    std::fs::copy(&jpeg, &renamed).unwrap();
    let two_band = bad.path().join("twoband_20200102.tif");
    let st = std::process::Command::new("gdal_translate")
        .args([
            "-q",
            "-b",
            "1",
            "-b",
            "2",
            &files[0],
            two_band.to_str().unwrap(),
        ])
        .status()
        .expect("gdal_translate (gdal-bin) installed by make");
    assert!(st.success());
    let garbage = bad.path().join("garbage_20200103.tif");
    std::fs::write(&garbage, b"II*\0 truncated").unwrap();
    // the verified leak: a VRT named like a NAIP scene, its pixels the ingest service's
    // environment (S3 secret and AMQP password); it must be refused, not cut into tiles
    let vrt = bad.path().join("m_0000000_ne_14_1_20200101.tif");
    std::fs::write(&vrt, environ_vrt()).unwrap();
    let mut args = vec!["ingest", "scene"];
    args.extend(files.iter().map(String::as_str));
    let extra = [
        nogeo.to_str().unwrap(),
        two_band.to_str().unwrap(),
        garbage.to_str().unwrap(),
        vrt.to_str().unwrap(),
        renamed.to_str().unwrap(),
    ];
    args.extend(extra);
    args.extend(["--dataset", "region", "--tile-meters", "224"]);
    let (ok, out) = iso.cli(&args);
    assert!(ok, "{out}");
    assert!(
        out.contains("3200 tiles (3200 new, 0 already stored), 0 published, 5 bad"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("nogeo_20200101.tif") && l.contains("no geo-reference")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("twoband_20200102.tif") && l.contains("2 band(s)")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("garbage_20200103.tif") && l.contains("unreadable")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.contains("renamed_20200104.tif")
            && l.contains("not a GeoTIFF (no TIFF signature)")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("m_0000000_ne_14_1_20200101.tif")
                && l.contains("not a GeoTIFF (a GDAL VRT)")),
        "{out}"
    );

    let rows = aerial_shared::manifest::load(&iso.store, "region")
        .await
        .unwrap();
    assert_eq!(rows.len(), 3200);
    let mut per_date: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        *per_date.entry(r.date.as_str()).or_default() += 1;
        let (w, s, e, n) = (
            r.lon_min.unwrap(),
            r.lat_min.unwrap(),
            r.lon_max.unwrap(),
            r.lat_max.unwrap(),
        );
        // union of the README's per-file bounds, which are rounded to 5 decimals
        let eps = 0.5e-5;
        assert!(
            w >= -99.18560 - eps && e <= -99.12402 + eps && w < e,
            "{r:?}"
        );
        assert!(s >= 47.00402 - eps && n <= 47.03668 + eps && s < n, "{r:?}");
        assert_eq!(r.crs, "EPSG:26914");
        assert!(r.row.unwrap() < 16 && r.col.unwrap() < 20);
    }
    assert_eq!(per_date.len(), 10, "{per_date:?}");
    assert!(!per_date.contains_key("2020-01-01"), "the VRT made no tile");
    assert!(per_date.values().all(|&n| n == 320), "{per_date:?}");
    assert!(per_date.contains_key("2009-08-18") && per_date.contains_key("2020-08-31"));

    // each scene's tiles share one pack; a tile's range holds a 45 px PNG with its sha256
    let mut packs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &rows {
        packs
            .entry(r.key.as_str())
            .or_default()
            .insert(r.date.as_str());
    }
    assert_eq!(packs.len(), 10, "{packs:?}");
    assert!(packs.values().all(|dates| dates.len() == 1), "{packs:?}");
    for r in rows.iter().step_by(397) {
        let bytes = iso
            .store
            .get_range(&r.key, r.offset.unwrap(), r.length.unwrap())
            .await
            .unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), r.sha256, "{r:?}");
        let img = image::load_from_memory(&bytes).unwrap();
        assert_eq!((img.width(), img.height()), (45, 45), "{r:?}");
    }
    iso.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenes_in_s3_are_read_in_place_and_give_the_same_tiles() {
    let iso = servers().isolated("inplace").await;
    // a bucket of the user's scenes the service may read, and one it may not
    let (src, other) = (format!("{}-src", iso.id), format!("{}-other", iso.id));
    let svc = iso.spawn("aerial-ingest", &[("AERIAL__INGEST__SCENE_BUCKETS", &src)]);
    svc.wait_log("consuming", Duration::from_secs(30)).await;
    let scene = shared_data().join("region/naip_nd_m_4709963_se/m_4709963_se_14_1_20090818.tif");
    let bytes = std::fs::read(&scene).unwrap();
    let vrt = environ_vrt();
    let (src_store, other_store) = (iso.store.with_bucket(&src), iso.store.with_bucket(&other));
    for s in [&src_store, &other_store] {
        s.ensure_bucket().await.unwrap();
    }
    let put = [
        (
            &src_store,
            "nd/m_4709963_se_14_1_20090818.tif",
            bytes.clone(),
        ),
        (
            &src_store,
            "nd/m_0000000_ne_14_1_20200101.tif",
            vrt.as_bytes().to_vec(),
        ),
        (&src_store, "nd/x_20200103.vrt", vrt.as_bytes().to_vec()),
        (
            &other_store,
            "nd/m_4709963_se_14_1_20100629.tif",
            bytes.clone(),
        ),
    ];
    for (s, key, body) in put {
        s.put(key, body).await.unwrap();
    }
    let refs = [
        format!("s3://{src}/nd/m_4709963_se_14_1_20090818.tif"),
        format!("s3://{src}/nd/m_0000000_ne_14_1_20200101.tif"),
        format!("s3://{src}/nd/missing_20200102.tif"),
        format!("s3://{src}/nd/x_20200103.vrt"),
        format!("s3://{other}/nd/m_4709963_se_14_1_20100629.tif"),
    ];
    let mut args = vec!["ingest", "scene"];
    args.extend(refs.iter().map(String::as_str));
    args.extend(["--dataset", "inplace"]);
    let (ok, out) = iso.cli(&args);
    assert!(ok, "{out}");
    assert!(out.contains("5 scene(s) read in place"), "{out}");
    assert!(
        out.contains("320 tiles (320 new, 0 already stored), 0 published, 4 bad"),
        "{out}"
    );
    for (item, reason) in [
        (
            "m_0000000_ne_14_1_20200101.tif",
            "not a GeoTIFF (a GDAL VRT)",
        ),
        ("missing_20200102.tif", "no such object"),
        ("x_20200103.vrt", "only .tif or .tiff objects"),
        (
            "m_4709963_se_14_1_20100629.tif",
            "is not one ingest reads scenes from",
        ),
    ] {
        assert!(
            out.lines().any(|l| l.contains(item) && l.contains(reason)),
            "{item}: {reason}\n{out}"
        );
    }
    // nothing uploaded or copied: no raw objects for the dataset, the user's bucket as it was
    assert!(iso.store.list("raw/inplace/").await.unwrap().is_empty());
    assert_eq!(src_store.list("").await.unwrap().len(), 3);
    let rows = aerial_shared::manifest::load(&iso.store, "inplace")
        .await
        .unwrap();
    assert_eq!(rows.len(), 320);
    assert!(rows
        .iter()
        .all(|r| r.source == refs[0] && r.date == "2009-08-18" && r.nodata == Some(0.0)));

    // the same scene uploaded from disk: the very same tiles, in the same pack
    let out = iso.ingest_scene(&scene, "uploaded");
    assert!(
        out.contains("320 tiles (0 new, 320 already stored)"),
        "{out}"
    );
    let uploaded = aerial_shared::manifest::load(&iso.store, "uploaded")
        .await
        .unwrap();
    let tiles =
        |rows: &[aerial_shared::manifest::ManifestRow]| -> BTreeSet<(String, String, String)> {
            rows.iter()
                .map(|r| (r.id.clone(), r.key.clone(), r.sha256.clone()))
                .collect()
        };
    assert_eq!(tiles(&rows), tiles(&uploaded));

    // aerial's own objects are not scenes to read in place, even in its own bucket
    let upload = iso.store.list("raw/uploaded/").await.unwrap();
    let own = format!("s3://{}/{}", iso.store.bucket(), upload[0].key);
    let (_, out) = iso.cli(&["ingest", "scene", &own, "--dataset", "sneaky"]);
    assert!(out.contains("is aerial's own data"), "{out}");
    assert!(aerial_shared::manifest::load(&iso.store, "sneaky")
        .await
        .unwrap()
        .is_empty());

    // local files and references are not mixed in one ingest
    let (ok, out) = iso.cli(&[
        "ingest",
        "scene",
        scene.to_str().unwrap(),
        &refs[0],
        "--dataset",
        "mixed",
    ]);
    assert!(!ok && out.contains("not both in one ingest"), "{out}");
    iso.cleanup().await;
}
