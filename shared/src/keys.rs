//! The S3 key layout, in one place. Keys derive from content or ids, never from time or
//! replica, so a repeated write overwrites rather than duplicates.

/// Errors for keys that must not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Empty, absolute, or containing `..`, a backslash or a control character.
    #[error("unsafe object key {key:?}: {reason}")]
    Unsafe {
        /// The rejected key.
        key: String,
        /// Why.
        reason: &'static str,
    },
}

/// An object named by a user as `s3://bucket/key` (a scene read where it lies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Bucket.
    pub bucket: String,
    /// Key in the bucket.
    pub key: String,
}

/// Why an `s3://` reference was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad s3 reference {reference:?}: {reason}")]
pub struct RefError {
    /// The reference as given.
    pub reference: String,
    /// Why.
    pub reason: String,
}

impl ObjectRef {
    /// Parses `s3://bucket/key`: a bucket name as S3 allows (3-63 of `a-z 0-9 . -`) and a
    /// safe key (see [`validate`]).
    pub fn parse(s: &str) -> Result<Self, RefError> {
        let bad = |reason: String| RefError {
            reference: s.to_string(),
            reason,
        };
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| bad("does not start with s3://".into()))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| bad("no key after the bucket".into()))?;
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && !bucket.starts_with(['.', '-'])
            && !bucket.ends_with(['.', '-']);
        if !bucket_ok {
            return Err(bad(format!("{bucket:?} is not an s3 bucket name")));
        }
        validate(key).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            bucket: bucket.into(),
            key: key.into(),
        })
    }

    /// Whether the key lies under one of the prefixes aerial itself writes (uploads, tiles,
    /// features, runs, jobs, datasets): in aerial's own bucket those are other datasets' data
    /// and outputs, never a scene to read in place.
    pub fn is_aerials_own(&self) -> bool {
        ["raw/", "tiles/", "features/", "runs/", "jobs/", "datasets/"]
            .iter()
            .any(|p| self.key.starts_with(p))
    }

    /// The object's file name (the key's last part).
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Rejects keys that could escape a prefix when mapped to paths by a client or server.
pub fn validate(key: &str) -> Result<(), KeyError> {
    let bad = |reason| {
        Err(KeyError::Unsafe {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.starts_with('/') {
        return bad("absolute path");
    }
    if key.split('/').any(|part| part == ".." || part == ".") {
        return bad("dot segment");
    }
    if key.contains('\\') || key.chars().any(char::is_control) {
        return bad("backslash or control character");
    }
    Ok(())
}

/// Rejects names (dataset, run, job) that are not `[A-Za-z0-9._-]{1,128}` or start with a dot.
pub fn validate_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(KeyError::Unsafe {
            key: name.to_string(),
            reason: "names are 1-128 of [A-Za-z0-9._-], not starting with '.'",
        })
    }
}

/// Rejects run names that are empty, longer than 128 characters, made only of dots, or hold
/// control characters. Anything else is allowed (a run name is a label people choose); keys
/// use [`encode_name`], so such names cannot escape their prefix.
pub fn validate_run_name(name: &str) -> Result<(), KeyError> {
    let bad = |reason| {
        Err(KeyError::Unsafe {
            key: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.chars().count() > 128 {
        return bad("run names are 1-128 characters");
    }
    if name.chars().all(|c| c == '.') {
        return bad("run names are not made of dots only");
    }
    if name.chars().any(char::is_control) {
        return bad("control character");
    }
    Ok(())
}

/// A name as one key segment: `[A-Za-z0-9._-]` kept, every other byte as `%XX`, so plain
/// names read as themselves and no name can contain `/`.
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Uploaded raw input of an ingest job.
pub fn raw_prefix(dataset: &str, job_id: &str) -> String {
    format!("raw/{dataset}/{job_id}/")
}

/// A tile image, addressed by its content hash.
pub fn tile(sha256: &str, ext: &str) -> String {
    format!("tiles/{}/{sha256}.{ext}", &sha256[..2])
}

/// The tiles of one scene, concatenated; addressed by the content hash of the whole pack.
/// Each tile's manifest row holds its byte range, so a batch of neighbours is one GET.
pub fn tile_pack(sha256: &str) -> String {
    tile(sha256, "pack")
}

/// A dataset's manifest prefix; one part per ingest job.
pub fn manifest_prefix(dataset: &str) -> String {
    format!("datasets/{dataset}/manifest/")
}

/// One ingest job's share of a dataset manifest (CSV).
pub fn manifest_part(dataset: &str, job_id: &str) -> String {
    format!("{}{job_id}.csv", manifest_prefix(dataset))
}

/// Correction label records of a labels dataset (one JSON per tile, who and when).
pub fn label_records_prefix(dataset: &str) -> String {
    format!("datasets/{dataset}/labels/")
}

/// Assessment sample designs of a region dataset.
pub fn assessments_prefix(dataset: &str) -> String {
    format!("datasets/{dataset}/assessments/")
}

/// One assessment's sample design.
pub fn assessment_design(dataset: &str, name: &str) -> String {
    format!("{}{name}/design.json", assessments_prefix(dataset))
}

/// One assessment's reference labels (one JSON per sampled tile).
pub fn assessment_labels_prefix(dataset: &str, name: &str) -> String {
    format!("{}{name}/labels/", assessments_prefix(dataset))
}

/// Progress/summary record of a job (ingest or score).
pub fn job_status(job_id: &str) -> String {
    format!("jobs/{job_id}/status.json")
}

/// What an ingest job continued in segments has done so far (deleted when it finishes).
pub fn ingest_partial(job_id: &str) -> String {
    format!("jobs/{job_id}/partial.json")
}

/// Prefix of a dataset's feature shards for a backbone.
pub fn features_prefix(dataset: &str, backbone: &str) -> String {
    format!("features/{dataset}/{backbone}/")
}

/// Prefix of a dataset's feature shards for a backbone (the only record of its features).
pub fn feature_shards_prefix(dataset: &str, backbone: &str) -> String {
    format!("{}shards/", features_prefix(dataset, backbone))
}

/// Features the score replicas keep of a dataset's tiles, by tile content: shards in the
/// featurize format whose row ids are the tiles' sha256 (see the score service). Features
/// averaged over test-time views are kept apart: `by-content-d4/`.
pub fn feature_cache_prefix(dataset: &str, backbone: &str, tta: crate::messages::Tta) -> String {
    match tta {
        crate::messages::Tta::None => format!("{}by-content/", features_prefix(dataset, backbone)),
        t => format!(
            "{}by-content-{}/",
            features_prefix(dataset, backbone),
            t.as_str()
        ),
    }
}

/// One feature shard, named by a hash of its sorted tile ids so a redelivered batch overwrites.
pub fn feature_shard(dataset: &str, backbone: &str, batch_hash: &str) -> String {
    format!(
        "{}{batch_hash}.safetensors",
        feature_shards_prefix(dataset, backbone)
    )
}

/// Everything of one training run (the name encoded with [`encode_name`]).
pub fn run_prefix(run: &str) -> String {
    format!("runs/{}/", encode_name(run))
}

/// What a score job was asked and expects ([`crate::predictions::ScoreSpec`]).
pub fn score_spec(job_id: &str) -> String {
    format!("jobs/{job_id}/spec.json")
}

/// Prefix of a score job's prediction batches.
pub fn predictions_prefix(job_id: &str) -> String {
    format!("jobs/{job_id}/predictions/")
}

/// Predictions of a score job's batch, named by a hash of its tile ids.
pub fn prediction_batch(job_id: &str, batch_hash: &str) -> String {
    format!("{}{batch_hash}.json", predictions_prefix(job_id))
}

/// Prefix of a score job's refused tiles.
pub fn dead_prefix(job_id: &str) -> String {
    format!("jobs/{job_id}/dead/")
}

/// A refused tile of a score job, named by a hash of its tile id.
pub fn dead_tile(job_id: &str, tile_hash: &str) -> String {
    format!("{}{tile_hash}.json", dead_prefix(job_id))
}

/// Assembled outputs of a score job.
pub fn job_outputs(job_id: &str) -> String {
    format!("jobs/{job_id}/outputs/")
}

/// Score job output: the predictions table.
pub const OUTPUT_TABLE: &str = "predictions.csv";
/// Score job output: tile footprints with labels (GeoJSON).
pub const OUTPUT_GEOJSON: &str = "tiles.geojson";
/// Score job output: change between the first and last date.
pub const OUTPUT_CHANGE: &str = "change.json";
/// Score job output: the changed tiles, one per line.
pub const OUTPUT_CHANGE_CSV: &str = "change.csv";
/// Score job output: accuracy assessment of the map (Olofsson et al. estimators), JSON.
pub const OUTPUT_ACCURACY: &str = "accuracy.json";
/// Score job output: the vector layers (scored windows, dissolved class regions), GeoPackage.
pub const OUTPUT_GPKG: &str = "layers.gpkg";
/// Score job output: the root of the job's static STAC catalogue (collection, one item per
/// date and one for the model beside it, under `stac/`).
pub const OUTPUT_STAC_CATALOG: &str = "stac/catalog.json";
/// Score job output: the job report, written last.
pub const OUTPUT_SUMMARY: &str = "summary.json";

/// Score job output: a date's map, a Cloud-Optimized GeoTIFF (class + probability bands).
pub fn output_geotiff(date: &str) -> String {
    format!("map_{date}.tif")
}

/// Score job output: the GDAL sidecar of a date's COG (the class band's colour table and
/// class names, which a TIFF of more than two bands cannot hold).
pub fn output_geotiff_sidecar(date: &str) -> String {
    format!("{}.aux.xml", output_geotiff(date))
}

/// Score job output: the QGIS style of a date's class raster (same base name: QGIS applies
/// it when the raster is opened).
pub fn output_style(date: &str) -> String {
    format!("map_{date}.qml")
}

/// Score job output: the accuracy assessment of a date's map as CSV (per class, overall,
/// confusion matrix).
pub fn output_accuracy_csv(date: &str) -> String {
    format!("accuracy_{date}.csv")
}

/// Score job output: a date's map image.
pub fn output_png(date: &str) -> String {
    format!("map_{date}.png")
}

/// One assembled output file of a score job.
pub fn job_output(job_id: &str, file: &str) -> String {
    format!("{}{file}", job_outputs(job_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_references() {
        let r = ObjectRef::parse("s3://naip-2020/nd/m_4709963_se_14_1_20200831.tif").unwrap();
        assert_eq!(r.bucket, "naip-2020");
        assert_eq!(r.key, "nd/m_4709963_se_14_1_20200831.tif");
        assert_eq!(r.file_name(), "m_4709963_se_14_1_20200831.tif");
        assert_eq!(
            r.to_string(),
            "s3://naip-2020/nd/m_4709963_se_14_1_20200831.tif"
        );
        for (bad, why) in [
            ("/tmp/a.tif", "does not start with s3://"),
            ("s3://bucket", "no key after the bucket"),
            ("s3://Bucket/a.tif", "not an s3 bucket name"),
            ("s3://ab/a.tif", "not an s3 bucket name"),
            ("s3://bucket/../etc/passwd", "dot segment"),
            ("s3://bucket/", "empty"),
        ] {
            let e = ObjectRef::parse(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn features_over_test_time_views_are_cached_apart() {
        use crate::messages::Tta;
        assert_eq!(
            feature_cache_prefix("region", "mobilenet_v2", Tta::None),
            "features/region/mobilenet_v2/by-content/",
            "the layout of runs without views is unchanged"
        );
        assert_eq!(
            feature_cache_prefix("region", "mobilenet_v2", Tta::D4),
            "features/region/mobilenet_v2/by-content-d4/"
        );
        assert!(!feature_cache_prefix("region", "mobilenet_v2", Tta::D4)
            .starts_with(&feature_shards_prefix("region", "mobilenet_v2")));
    }

    #[test]
    fn rejects_escaping_keys() {
        for k in ["", "/etc/passwd", "a/../b", "..", "a/./b", "a\\b", "a\nb"] {
            assert!(validate(k).is_err(), "{k:?} accepted");
        }
        assert!(validate("raw/d/j/train/field/b001.jpg").is_ok());
        assert!(validate("a/..b/c").is_ok());
    }

    #[test]
    fn names() {
        assert!(validate_name("rsscn7").is_ok());
        assert!(validate_name("run-1.2_a").is_ok());
        for n in ["", ".x", "a/b", "a b", "<script>"] {
            assert!(validate_name(n).is_err(), "{n:?}");
        }
    }

    #[test]
    fn any_run_name_stays_inside_its_prefix() {
        let evil = "<script>alert(1)</script>";
        assert!(validate_run_name(evil).is_ok());
        let p = run_prefix(evil);
        assert_eq!(p, "runs/%3Cscript%3Ealert%281%29%3C%2Fscript%3E/");
        assert!(validate(&p).is_ok());
        assert_eq!(run_prefix("lr-1.2_a"), "runs/lr-1.2_a/");
        for n in ["", "..", ".", "a\nb"] {
            assert!(validate_run_name(n).is_err(), "{n:?}");
        }
        assert!(
            validate_run_name("../../etc").is_ok(),
            "encoded, so harmless"
        );
        assert_eq!(run_prefix("../x"), "runs/..%2Fx/");
    }

    #[test]
    fn tile_keys_are_content_addressed() {
        assert_eq!(tile("abcdef", "jpg"), "tiles/ab/abcdef.jpg");
    }
}
