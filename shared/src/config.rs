//! Layered configuration: built-in defaults, then an optional TOML file, then `AERIAL__*`
//! environment variables (`AERIAL__AMQP__URI`, `AERIAL__S3__BUCKET`, ...).

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Errors while loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be parsed into settings.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    /// The broker URI is missing or has no credentials of its own.
    #[error("{0}")]
    Credentials(String),
}

/// Everything a service or the CLI needs to reach the broker, the store and its peers.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Broker connection.
    pub amqp: AmqpSettings,
    /// Object store connection.
    pub s3: S3Settings,
    /// Logs and the health/metrics HTTP server.
    pub telemetry: TelemetrySettings,
    /// Batching and threads for the consumer runtime.
    pub worker: WorkerSettings,
    /// Where backbones live on local disk.
    pub models: ModelSettings,
    /// The dashboard's write access (labelling, retraining).
    #[serde(default)]
    pub dashboard: DashboardSettings,
    /// Caps on what one ingest accepts.
    pub ingest: IngestSettings,
    /// How score jobs cut scenes.
    pub score: ScoreSettings,
}

/// How score jobs cut scenes.
#[derive(Debug, Clone, Deserialize)]
pub struct ScoreSettings {
    /// A strided job's window with more than this share (0..1) of its area outside the
    /// stored tiles is not scored and stays no-data.
    pub max_nodata: f64,
    /// Most windows one strided job may have (the fan-out holds them all while publishing).
    pub max_windows: u64,
}

/// Caps on uploaded scenes, checked before their pixels are read.
#[derive(Debug, Clone, Deserialize)]
pub struct IngestSettings {
    /// Largest scene in megapixels (a 0.6 m NAIP quarter-quad is ~130).
    pub max_scene_megapixels: u64,
    /// Most tiles one scene may be cut into.
    pub max_scene_tiles: u64,
    /// Buckets besides `s3.bucket` whose scenes `aerial ingest scene s3://...` may read in
    /// place, comma-separated; `*` for any the service's credentials can read.
    pub scene_buckets: String,
}

impl IngestSettings {
    /// Whether scenes may be read by reference from `bucket` (the service's own `own` always).
    pub fn reads_bucket(&self, bucket: &str, own: &str) -> bool {
        bucket == own
            || self
                .scene_buckets
                .split(',')
                .map(str::trim)
                .any(|b| b == "*" || b == bucket)
    }
}

/// Who may write through the dashboard.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DashboardSettings {
    /// Bearer token that labelling and retraining requests must carry; without one the
    /// dashboard stays read-only. Secret: never logged or shown.
    #[serde(default)]
    pub token: Option<SecretString>,
}

/// RabbitMQ connection settings.
#[derive(Debug, Clone, Deserialize)]
pub struct AmqpSettings {
    /// Full AMQP URI, credentials included, hence secret (`amqp://user:pass@host:port/vhost`).
    pub uri: SecretString,
    /// Path to a PEM CA bundle for `amqps://` URIs; empty means the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// RabbitMQ management API base URL (`http://host:15672`), for queue depths in the
    /// metrics service; it uses the AMQP URI's user, password and vhost.
    #[serde(default)]
    pub management_url: Option<String>,
    /// Deliveries a work message gets before it goes to its DLQ with the last error
    /// (`x-delivery-limit` of the quorum queues too; changing it needs `aerial migrate-queues`).
    pub delivery_limit: u32,
    /// Longest wait for the broker to confirm a publish; a broker under a memory or disk
    /// alarm blocks publishers, and the wait then fails as a transient error.
    pub confirm_timeout_secs: u64,
    /// Most events `metrics.events` holds; the oldest are dropped beyond it (metrics down).
    pub events_max_length: u32,
}

impl AmqpSettings {
    /// The URI with its password replaced, safe to log.
    pub fn redacted_uri(&self) -> String {
        redact_uri(self.uri.expose_secret())
    }
}

/// Replaces the password of an AMQP URI with `***`, parsing it as a URL (a password may hold
/// `@` or `:`); a string that does not parse is hidden whole.
pub fn redact_uri(uri: &str) -> String {
    // "user:pass@host" parses as a URL of scheme "user": only hierarchical URIs are shown
    if !uri.contains("://") {
        return "***".into();
    }
    match url::Url::parse(uri) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "***".into(),
    }
}

/// S3-compatible object store settings.
#[derive(Debug, Clone, Deserialize)]
pub struct S3Settings {
    /// Endpoint URL, e.g. `http://127.0.0.1:8333`; empty for AWS itself.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region name (any value for SeaweedFS).
    pub region: String,
    /// Bucket holding everything aerial writes.
    pub bucket: String,
    /// Static access key; when absent the standard AWS credential chain is used.
    #[serde(default)]
    pub access_key: Option<String>,
    /// Static secret key paired with `access_key`.
    #[serde(default)]
    pub secret_key: Option<SecretString>,
    /// PEM CA bundle trusted for an `https://` endpoint in addition to the system roots
    /// (a private CA in front of a self-hosted S3 server).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Path-style addressing (required by SeaweedFS and most self-hosted servers).
    pub path_style: bool,
    /// Attempts per request, first included, before an error is returned.
    pub max_attempts: u32,
}

/// Log format and HTTP listener.
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    /// `json` or `pretty`.
    pub log_format: String,
    /// `tracing` filter directive, e.g. `info,aerial=debug`.
    pub log_filter: String,
    /// Address of the `/metrics`, `/healthz`, `/readyz` server; port 0 picks a free one.
    pub http_addr: String,
}

/// Consumer runtime tuning.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    /// Messages gathered into one batch.
    pub batch_size: usize,
    /// A partial batch is flushed after this long.
    pub batch_wait_ms: u64,
    /// Batches processed at once (I/O of one overlaps compute of another); keep it above
    /// `threads` so every inference worker has a batch while the next is fetched.
    pub concurrency: usize,
    /// CPU threads for inference: that many single-threaded inference workers, each on its
    /// own batch (with CUDA: torch's CPU threads beside the GPU).
    pub threads: usize,
    /// A job (ingest, train) holds its delivery at most this long, then saves its progress,
    /// publishes its next segment and acks: keep it well under the broker's `consumer_timeout`.
    pub segment_secs: f64,
    /// `/healthz` fails when deliveries have been held this long without any being settled.
    pub stall_secs: u64,
}

/// Where model files are read from.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelSettings {
    /// Folder with one sub-folder per backbone (`mobilenet_v2/`, `efficientnet_lite0/`).
    pub dir: PathBuf,
}

const DEFAULTS: &str = r#"
[amqp]
uri = ""
delivery_limit = 5
confirm_timeout_secs = 30
events_max_length = 100000
[s3]
region = "us-east-1"
bucket = "aerial"
path_style = true
max_attempts = 5
[telemetry]
log_format = "pretty"
log_filter = "info"
http_addr = "127.0.0.1:0"
[worker]
batch_size = 32
batch_wait_ms = 200
concurrency = 3
threads = 2
segment_secs = 600
stall_secs = 1800
[models]
dir = "../shared/models"
[ingest]
max_scene_megapixels = 1000
max_scene_tiles = 250000
scene_buckets = ""
[score]
max_nodata = 0.5
max_windows = 500000
"#;

impl Settings {
    /// Loads defaults, then `path` (or `$AERIAL_CONFIG`) if given, then `AERIAL__*` env vars.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(path, None)
    }

    /// As [`Settings::load`], with `env` (`AERIAL__*` names) in place of the process
    /// environment when given: for tests and tools that hold settings for another process.
    pub fn load_from(
        path: Option<&Path>,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let env_path = std::env::var_os("AERIAL_CONFIG").map(PathBuf::from);
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(p) = path.map(Path::to_path_buf).or(env_path) {
            builder = builder.add_source(config::File::from(p).required(true));
        }
        let cfg = builder
            .add_source(
                config::Environment::with_prefix("AERIAL")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(env),
            )
            .build()?;
        let s: Self = cfg.try_deserialize()?;
        check_broker_credentials(s.amqp.uri.expose_secret())?;
        Ok(s)
    }
}

/// There is no default broker login: the URI must be given and carry a user and password,
/// and not RabbitMQ's `guest` (without credentials the AMQP client would log in as guest).
fn check_broker_credentials(uri: &str) -> Result<(), ConfigError> {
    let fail = |why: &str| {
        Err(ConfigError::Credentials(format!(
            "{why}: set AERIAL__AMQP__URI (or amqp.uri in the config file) to \
             amqp://USER:PASSWORD@HOST:PORT/VHOST"
        )))
    };
    if uri.is_empty() {
        return fail("no broker uri configured");
    }
    let Some((_, rest)) = uri.split_once("://") else {
        return fail("the broker uri has no scheme");
    };
    let Some((userinfo, _)) = rest.rsplit_once('@') else {
        return fail("the broker uri has no user:password");
    };
    match userinfo.split_once(':') {
        Some((user, pass)) if !user.is_empty() && !pass.is_empty() => {
            if user == "guest" {
                return fail("the broker user guest is refused (create a user of your own)");
            }
            Ok(())
        }
        _ => fail("the broker uri has no user:password"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_read_in_place_only_from_allowed_buckets() {
        let mut ingest = IngestSettings {
            max_scene_megapixels: 1,
            max_scene_tiles: 1,
            scene_buckets: String::new(),
        };
        assert!(ingest.reads_bucket("aerial", "aerial"), "its own bucket");
        assert!(!ingest.reads_bucket("naip", "aerial"));
        ingest.scene_buckets = "naip, naip-2020".into();
        assert!(ingest.reads_bucket("naip-2020", "aerial"));
        assert!(!ingest.reads_bucket("naip-2021", "aerial"));
        ingest.scene_buckets = "*".into();
        assert!(ingest.reads_bucket("naip-2021", "aerial"));
    }

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact_uri("amqp://bob:s3cret@127.0.0.1:5672/%2f"),
            "amqp://bob:***@127.0.0.1:5672/%2f"
        );
        assert!(!redact_uri("amqps://u:p4ss@h:5671/v").contains("p4ss"));
        // a password holding '@' is hidden whole
        assert_eq!(
            redact_uri("amqp://bob:p@ss@w0rd@h:5672/v"),
            "amqp://bob:***@h:5672/v"
        );
        assert_eq!(redact_uri("amqp://bob:pa:ss@h/v"), "amqp://bob:***@h/v");
        // not a URI at all: nothing of it is shown
        assert_eq!(redact_uri("bob:s3cret@host"), "***");
        assert!(!format!("{:?}", SecretString::from("topsecret")).contains("topsecret"));
    }

    fn env(uri: &str) -> Option<std::collections::HashMap<String, String>> {
        Some([("AERIAL__AMQP__URI".to_string(), uri.to_string())].into())
    }

    #[test]
    fn debug_of_settings_hides_secrets() {
        let s = Settings::load_from(None, env("amqp://bob:hunter2@h:5672/v")).unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert_eq!(s.worker.batch_size, 32);
    }

    #[test]
    fn no_default_or_guest_broker_login() {
        for uri in [
            "",
            "amqp://h:5672/%2f",
            "amqp://guest:guest@h:5672/%2f",
            "amqp://bob:@h/v",
        ] {
            let e = Settings::load_from(None, env(uri)).unwrap_err().to_string();
            assert!(e.contains("AERIAL__AMQP__URI"), "{uri}: {e}");
        }
        assert!(Settings::load_from(None, env("amqps://bob:pw@h:5671/v")).is_ok());
    }
}
