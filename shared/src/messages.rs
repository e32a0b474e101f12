//! Every message that crosses the broker, wrapped in a versioned envelope.
//!
//! On the wire a message is one JSON object: `{"schema_version": 1, ...fields}`. A consumer
//! rejects an unknown version with [`DecodeError::UnsupportedVersion`] before looking at the
//! rest, so an old replica never misreads a newer producer's message.
//!
//! Versions: 1 is every message as first published. 2 adds optional fields (a score job's
//! `stride_m`, a score tile's `window`, a train job's `params.tta` and `test_frac`); a message is written as version 2 only when it uses
//! one of them, so everything else stays readable by builds that read only version 1, and a
//! build that reads only version 1 dead-letters a version-2 message instead of scoring it
//! wrongly. This build reads both.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The newest schema version this build reads and writes (it reads every version from 1).
pub const SCHEMA_VERSION: u32 = 2;
/// Largest message body accepted; larger ones are dead-lettered unread.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A message body with its schema version, as it travels.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Envelope<M> {
    /// Schema version of the body: 1, or 2 for a message using a version-2 field (at most
    /// [`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The message itself, flattened into the same JSON object.
    #[serde(flatten)]
    pub body: M,
}

/// A type that travels on a queue.
pub trait Message: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// Name used for its JSON Schema file and in errors.
    const NAME: &'static str;

    /// The oldest schema version that can carry this message (2 when it uses a field that
    /// version 1 readers would silently ignore).
    fn schema_version(&self) -> u32 {
        1
    }
}

/// Why a message body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Body size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON at all.
    #[error("malformed json: {0}")]
    Malformed(serde_json::Error),
    /// JSON without a numeric `schema_version`.
    #[error("missing or non-numeric schema_version")]
    MissingVersion,
    /// A version this build does not know.
    #[error("unsupported schema_version {found} (this build reads 1 to {supported})")]
    UnsupportedVersion {
        /// Version in the message.
        found: u64,
        /// Newest version understood here.
        supported: u32,
    },
    /// Right version, but the fields do not match the schema of `kind`.
    #[error("invalid {kind} message: {source}")]
    Invalid {
        /// Expected message type.
        kind: &'static str,
        /// What serde found wrong.
        source: serde_json::Error,
    },
}

/// Serialises `msg` inside an envelope of the oldest version that carries it.
pub fn encode<M: Message>(msg: &M) -> Vec<u8> {
    let env = Envelope {
        schema_version: msg.schema_version(),
        body: msg,
    };
    serde_json::to_vec(&env).expect("message types always serialise")
}

/// Checks size and version, then parses the body as `M`.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
    let version = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or(DecodeError::MissingVersion)?;
    if !(1..=u64::from(SCHEMA_VERSION)).contains(&version) {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let env: Envelope<M> =
        serde_json::from_value(value).map_err(|source| DecodeError::Invalid {
            kind: M::NAME,
            source,
        })?;
    Ok(env.body)
}

/// Training or validation split of a labelled tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Used to fit models.
    Train,
    /// Held out to measure them.
    Val,
}

impl Split {
    /// Lower-case name, as in folder names and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// Where a tile lies on the ground.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TileGeo {
    /// Grid row of the tile in its scene (0 = north edge).
    pub row: u32,
    /// Grid column (0 = west edge).
    pub col: u32,
    /// CRS of `bounds`, e.g. `EPSG:26914`.
    pub crs: String,
    /// Footprint in the scene CRS: min x, min y, max x, max y.
    pub bounds: [f64; 4],
    /// Footprint in WGS84: west, south, east, north (degrees).
    pub lonlat_bounds: [f64; 4],
    /// Share of the tile's pixels that are no-data in its scene (0 to 1): collars, gaps,
    /// masked pixels. Absent for tiles ingested before it was measured (read as 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodata: Option<f32>,
}

/// Where a tile's bytes lie inside a larger object (the tiles of a scene share one pack).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Number of bytes.
    pub length: u64,
}

impl ByteRange {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// What the ingest service does with a dataset's tiles once they are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum IngestTarget {
    /// Publish tiles to the featurize queue (datasets to learn from).
    #[default]
    Featurize,
    /// Publish nothing yet: tiles wait for a score job (regions to map).
    Store,
}

/// What an ingest job reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum IngestSource {
    /// A folder of `train/<label>/*` and `val/<label>/*`, or `<label>/*` to be split.
    Labelled {
        /// S3 prefix holding the uploaded folder (`raw/<dataset>/<upload>/`).
        raw_prefix: String,
        /// Validation share for a folder without splits.
        val_frac: f64,
        /// Seed of that split.
        seed: u64,
    },
    /// Geo-referenced scenes to cut into tiles of a fixed ground size.
    Scene {
        /// S3 prefix holding the uploaded `.tif` files.
        raw_prefix: String,
        /// Tile edge on the ground, metres.
        tile_meters: f64,
        /// Acquisition date for every scene, overriding dates parsed from file names.
        date: Option<String>,
    },
    /// GeoTIFF scenes already in S3, read where they lie (ranged reads, never copied); schema
    /// version 2.
    SceneRefs {
        /// `s3://bucket/key` of each scene, on the service's S3 endpoint.
        scenes: Vec<String>,
        /// Tile edge on the ground, metres.
        tile_meters: f64,
        /// Acquisition date for every scene, overriding dates parsed from file names.
        date: Option<String>,
    },
}

/// Ask the ingest service to validate, tile and store one uploaded input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IngestJob {
    /// Unique job id (also the progress key).
    pub job_id: String,
    /// Dataset the tiles join.
    pub dataset: String,
    /// What to read.
    pub source: IngestSource,
    /// Where the tiles go next.
    #[serde(default)]
    pub target: IngestTarget,
    /// Backbone the featurize stage should use.
    #[serde(default = "default_backbone")]
    pub backbone: String,
}

/// Default backbone name.
pub fn default_backbone() -> String {
    "mobilenet_v2".into()
}

/// One stored tile, as published to featurize (and to score, with its job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Tile {
    /// Dataset the tile belongs to.
    pub dataset: String,
    /// Stable id of the tile within its dataset.
    pub tile_id: String,
    /// S3 key of the encoded tile image, or of the pack holding it.
    pub key: String,
    /// The tile's bytes within the object at `key`; the whole object when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<ByteRange>,
    /// sha256 of the tile bytes (hex).
    pub sha256: String,
    /// Label, for labelled datasets.
    #[serde(default)]
    pub label: Option<String>,
    /// Split, for labelled datasets.
    #[serde(default)]
    pub split: Option<Split>,
    /// Acquisition date (`YYYY-MM-DD`), for scenes.
    #[serde(default)]
    pub date: Option<String>,
    /// Footprint, for scenes.
    #[serde(default)]
    pub geo: Option<TileGeo>,
    /// Backbone to featurize with.
    #[serde(default = "default_backbone")]
    pub backbone: String,
}

/// Ask the train service to fit one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainJob {
    /// Run name, unique; the run's S3 prefix.
    pub run: String,
    /// Labelled dataset to learn from.
    pub dataset: String,
    /// More labelled datasets learnt from together with `dataset` (e.g. a region's own labels
    /// beside rsscn7: `aerial train --dataset rsscn7,region-labels`); classic methods only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
    /// Backbone whose features (or weights) are used.
    pub backbone: String,
    /// Learning method.
    pub method: Method,
    /// Stratified share of each class's training tiles used (0 < f ≤ 1).
    pub sample_frac: f64,
    /// Seed for sampling, initialisation and shuffling.
    pub seed: u64,
    /// Method parameters.
    pub params: TrainParams,
    /// Schema 2: a seeded, stratified share of each label's training tiles kept out of
    /// training and model choice (the validation split), reported apart as the run's test
    /// accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_frac: Option<f64>,
}

/// How a run learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Multinomial logistic regression on frozen features.
    Logistic,
    /// Random forest on frozen features.
    RandomForest,
    /// Fine-tune the CNN itself.
    Finetune,
}

impl Method {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Logistic => "logistic",
            Method::RandomForest => "random_forest",
            Method::Finetune => "finetune",
        }
    }
}

/// Which layers a fine-tune updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Retraining {
    /// Only the new classification layer.
    LastOnly,
    /// The classifier plus the final feature blocks.
    FullyConnected,
    /// Every layer.
    All,
}

/// Hyper-parameters; each method reads the ones it uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainParams {
    /// Epochs (finetune) or iterations (logistic).
    pub epochs: u32,
    /// Minibatch size (finetune).
    pub batch: u32,
    /// Learning rate (finetune) or L2 strength (logistic).
    pub lr: f64,
    /// Retraining depth (finetune).
    #[serde(default)]
    pub retraining: Option<Retraining>,
    /// Trees (random forest).
    #[serde(default)]
    pub trees: Option<u32>,
    /// Maximum tree depth (random forest).
    #[serde(default)]
    pub max_depth: Option<u32>,
    /// Schema 2: test-time augmentation the run's model is used with (validation, score,
    /// `aerial evaluate`); absent = none.
    #[serde(default, skip_serializing_if = "Tta::is_none")]
    pub tta: Tta,
    /// Schema 2: train (and validate, test, evaluate) on images box-downsampled to this many
    /// pixels a side before the resize to the network's 224, so the classifier learns at the
    /// ground resolution of the imagery it will map (45 for 225 m tiles at 5 m/px); absent =
    /// the images as they are. Score feeds the mapped tiles as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degrade_px: Option<u32>,
    /// Schema 2: label smoothing of a fine-tune's cross-entropy (the share of each target
    /// spread evenly over the classes); absent = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_smoothing: Option<f64>,
    /// Schema 2: mixup for a fine-tune: each batch is blended with a shuffled copy of itself,
    /// weights drawn from Beta(α, α), and the loss is blended alike; the value is α; absent =
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixup: Option<f64>,
}

/// Test-time augmentation: which views of a tile the model sees at inference. Aerial
/// imagery has no "up", so the 8 symmetries of the square (4 quarter turns, each mirrored)
/// are equally likely views of the same ground.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tta {
    /// The tile as it is.
    #[default]
    None,
    /// The 8 symmetries of the square: a classic run's features are averaged over them, a
    /// fine-tuned run's class probabilities are.
    D4,
}

impl Tta {
    /// Views per tile.
    pub fn views(self) -> usize {
        match self {
            Tta::None => 1,
            Tta::D4 => 8,
        }
    }

    /// Whether this is no augmentation (the default, left out of messages).
    pub fn is_none(&self) -> bool {
        *self == Tta::None
    }

    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tta::None => "none",
            Tta::D4 => "d4",
        }
    }
}

/// Ask for a dataset to be scored with a run's model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScoreJob {
    /// Unique job id.
    pub job_id: String,
    /// Run whose model scores.
    pub run: String,
    /// Dataset (region) to score.
    pub dataset: String,
    /// Apply a 3×3 plurality filter to each date's class grid before the change report.
    #[serde(default)]
    pub smooth: bool,
    /// Schema 2: windows of the tile size every this many metres instead of the tiles
    /// themselves; each output cell is one stride and averages the windows covering it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride_m: Option<f64>,
}

/// A score replica wrote one object of a job (a prediction batch or a refused tile);
/// consumed by the job's coordinator, which counts tiles and assembles the outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScoreProgress {
    /// The job.
    pub job_id: String,
    /// Key of the object just written (under `jobs/<job>/predictions/` or `.../dead/`).
    pub key: String,
    /// Replica that wrote it.
    pub replica: String,
}

/// One tile of a score job, consumed by score replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScoreTile {
    /// The job it belongs to.
    pub job_id: String,
    /// Run whose model scores it.
    pub run: String,
    /// The tile (for a window: its id, footprint, window grid cell and content hash).
    pub tile: Tile,
    /// Schema 2: the tile is a window cut across neighbouring stored tiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

/// A square window of a scene made of the stored tiles it overlaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Window {
    /// Side in pixels (the stored tiles' side).
    pub size: u32,
    /// The stored tiles it overlaps; pixels no part covers are no-data.
    pub parts: Vec<WindowPart>,
}

/// A stored tile inside a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WindowPart {
    /// Tile id.
    pub tile_id: String,
    /// Object holding its encoded image.
    pub key: String,
    /// Its bytes inside `key`, for a tile in a pack.
    #[serde(default)]
    pub range: Option<ByteRange>,
    /// Where its top-left pixel lands in the window (may be negative).
    pub x: i32,
    /// See `x`.
    pub y: i32,
}

/// Something that happened, published on the events exchange for the metrics service and CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Service that saw it.
    pub service: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// Progress of an ingest or score job.
    JobProgress {
        /// Job id.
        job_id: String,
        /// Items done so far.
        done: u64,
        /// Items expected, when known.
        total: Option<u64>,
        /// Items rejected so far.
        failed: u64,
    },
    /// A feature shard was written.
    Featurized {
        /// Dataset.
        dataset: String,
        /// Backbone.
        backbone: String,
        /// Rows in the shard.
        tiles: u64,
        /// Shard key.
        key: String,
    },
    /// A training run began.
    RunStarted {
        /// Run name.
        run: String,
    },
    /// A fine-tune epoch ended.
    Epoch {
        /// Run name.
        run: String,
        /// 1-based epoch.
        epoch: u32,
        /// Mean training loss.
        train_loss: f64,
        /// Training error, percent.
        train_error_pct: f64,
        /// Validation accuracy, 0..1.
        val_accuracy: f64,
    },
    /// A training run ended.
    RunFinished {
        /// Run name.
        run: String,
        /// Validation accuracy, 0..1.
        accuracy: f64,
    },
    /// A message went to a dead-letter queue.
    DeadLettered {
        /// Queue it came from.
        queue: String,
        /// Why.
        reason: String,
    },
}

impl Message for IngestJob {
    const NAME: &'static str = "ingest_job";
    fn schema_version(&self) -> u32 {
        match self.source {
            IngestSource::SceneRefs { .. } => 2,
            _ => 1,
        }
    }
}
impl Message for Tile {
    const NAME: &'static str = "tile";
}
impl Message for TrainJob {
    const NAME: &'static str = "train_job";
    fn schema_version(&self) -> u32 {
        let p = &self.params;
        if p.tta.is_none()
            && self.test_frac.is_none()
            && p.degrade_px.is_none()
            && p.label_smoothing.is_none()
            && p.mixup.is_none()
        {
            1
        } else {
            2
        }
    }
}
impl Message for ScoreJob {
    const NAME: &'static str = "score_job";
    fn schema_version(&self) -> u32 {
        if self.stride_m.is_some() {
            2
        } else {
            1
        }
    }
}
impl Message for ScoreProgress {
    const NAME: &'static str = "score_progress";
}
impl Message for ScoreTile {
    const NAME: &'static str = "score_tile";
    fn schema_version(&self) -> u32 {
        if self.window.is_some() {
            2
        } else {
            1
        }
    }
}
impl Message for Event {
    const NAME: &'static str = "event";
}

/// `(name, JSON Schema)` of every message type, for `aerial schemas` and its currency test.
pub fn schemas() -> Vec<(&'static str, String)> {
    fn one<M: Message>() -> (&'static str, String) {
        let schema = schemars::schema_for!(Envelope<M>);
        let mut text = serde_json::to_string_pretty(&schema).expect("schema serialises");
        text.push('\n');
        (M::NAME, text)
    }
    vec![
        one::<IngestJob>(),
        one::<Tile>(),
        one::<TrainJob>(),
        one::<ScoreJob>(),
        one::<ScoreTile>(),
        one::<ScoreProgress>(),
        one::<Event>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> ScoreJob {
        ScoreJob {
            job_id: "j1".into(),
            run: "r".into(),
            dataset: "d".into(),
            smooth: false,
            stride_m: None,
        }
    }

    #[test]
    fn round_trips_with_version() {
        let bytes = encode(&job());
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert!(v.get("stride_m").is_none(), "version 1 bytes as before");
        assert_eq!(decode::<ScoreJob>(&bytes).unwrap(), job());
    }

    #[test]
    fn a_version_2_field_makes_a_version_2_message() {
        let strided = ScoreJob {
            stride_m: Some(112.0),
            ..job()
        };
        let bytes = encode(&strided);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["schema_version"], 2);
        assert_eq!(decode::<ScoreJob>(&bytes).unwrap(), strided);
        // what a build reading only version 1 says of it, so it never scores it unstrided
        let old = DecodeError::UnsupportedVersion {
            found: 2,
            supported: 1,
        };
        assert_eq!(
            old.to_string(),
            "unsupported schema_version 2 (this build reads 1 to 1)"
        );
    }

    #[test]
    fn scenes_in_place_are_a_version_2_ingest_job() {
        let uploaded = IngestJob {
            job_id: "i".into(),
            dataset: "d".into(),
            source: IngestSource::Scene {
                raw_prefix: "raw/d/x/".into(),
                tile_meters: 224.0,
                date: None,
            },
            target: IngestTarget::Store,
            backbone: default_backbone(),
        };
        let v: serde_json::Value = serde_json::from_slice(&encode(&uploaded)).unwrap();
        assert_eq!(v["schema_version"], 1, "uploads stay version 1");
        let in_place = IngestJob {
            source: IngestSource::SceneRefs {
                scenes: vec!["s3://naip/a_20200831.tif".into()],
                tile_meters: 224.0,
                date: None,
            },
            ..uploaded
        };
        let bytes = encode(&in_place);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            (v["schema_version"].as_u64(), v["source"]["source"].as_str()),
            (Some(2), Some("scene_refs"))
        );
        assert_eq!(decode::<IngestJob>(&bytes).unwrap(), in_place);
    }

    #[test]
    fn test_time_views_and_a_test_share_make_a_version_2_train_job() {
        let plain = TrainJob {
            run: "r".into(),
            dataset: "d".into(),
            also: vec![],
            backbone: "mobilenet_v2".into(),
            method: Method::Logistic,
            sample_frac: 1.0,
            seed: 42,
            params: TrainParams {
                epochs: 500,
                batch: 32,
                lr: 1.0,
                retraining: None,
                trees: None,
                max_depth: None,
                tta: Tta::None,
                degrade_px: None,
                label_smoothing: None,
                mixup: None,
            },
            test_frac: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&encode(&plain)).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert!(v.get("test_frac").is_none() && v["params"].get("tta").is_none());
        let mut d4 = plain.clone();
        d4.params.tta = Tta::D4;
        let bytes = encode(&d4);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            (v["schema_version"].as_u64(), v["params"]["tta"].as_str()),
            (Some(2), Some("d4"))
        );
        assert_eq!(decode::<TrainJob>(&bytes).unwrap(), d4);
        let held = TrainJob {
            test_frac: Some(0.2),
            ..plain
        };
        let v: serde_json::Value = serde_json::from_slice(&encode(&held)).unwrap();
        assert_eq!(v["schema_version"], 2);
        let mut coarse = held.clone();
        coarse.test_frac = None;
        coarse.params.degrade_px = Some(45);
        let v: serde_json::Value = serde_json::from_slice(&encode(&coarse)).unwrap();
        assert_eq!(
            (
                v["schema_version"].as_u64(),
                v["params"]["degrade_px"].as_u64()
            ),
            (Some(2), Some(45))
        );
        assert_eq!(Tta::D4.views(), 8);
    }

    #[test]
    fn rejects_unknown_version_and_garbage() {
        let e = decode::<ScoreJob>(br#"{"schema_version":3,"job_id":"a","run":"r","dataset":"d"}"#)
            .unwrap_err();
        assert!(
            matches!(e, DecodeError::UnsupportedVersion { found: 3, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("unsupported schema_version 3"));
        assert!(matches!(
            decode::<ScoreJob>(br#"{"schema_version":0,"job_id":"a","run":"r","dataset":"d"}"#)
                .unwrap_err(),
            DecodeError::UnsupportedVersion { found: 0, .. }
        ));
        assert!(matches!(
            decode::<ScoreJob>(b"{not json").unwrap_err(),
            DecodeError::Malformed(_)
        ));
        assert!(matches!(
            decode::<ScoreJob>(br#"{"job_id":"a"}"#).unwrap_err(),
            DecodeError::MissingVersion
        ));
        let e = decode::<ScoreJob>(br#"{"schema_version":1,"job_id":"a"}"#).unwrap_err();
        assert!(
            e.to_string().starts_with("invalid score_job message"),
            "{e}"
        );
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            decode::<ScoreJob>(&big).unwrap_err(),
            DecodeError::TooLarge { .. }
        ));
    }

    #[test]
    fn event_kind_is_tagged() {
        let ev = Event {
            at: Utc::now(),
            service: "train".into(),
            kind: EventKind::RunStarted { run: "x".into() },
        };
        let v: serde_json::Value = serde_json::from_slice(&encode(&ev)).unwrap();
        assert_eq!(v["event"], "run_started");
        assert_eq!(decode::<Event>(&encode(&ev)).unwrap(), ev);
    }
}
