//! Test harness: a private RabbitMQ and SeaweedFS pair, started once per `make test` run by
//! `scripts/with-test-servers.sh` (which exports `AERIAL_TEST_ENV`), shared by every test;
//! each test gets its own vhost and bucket, and can spawn the real service binaries.

use aerial_shared::{Settings, Store};
use secrecy::SecretString;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Settings of the shared test servers.
pub struct Servers {
    vars: HashMap<String, String>,
}

/// The shared servers; panics with instructions when the tests were not started by the wrapper.
pub fn servers() -> &'static Servers {
    static S: OnceLock<Servers> = OnceLock::new();
    S.get_or_init(|| {
        let path = std::env::var("AERIAL_TEST_ENV").expect(
            "integration tests need the private servers: run `make test` or \
             `scripts/with-test-servers.sh cargo test -p aerial-tests`",
        );
        Servers {
            vars: read_env_files(Path::new(&path)),
        }
    })
}

/// The variables of a servers `env` file and of the `admin.env` beside it.
fn read_env_files(env: &Path) -> HashMap<String, String> {
    let admin = env.with_file_name("admin.env");
    [env, admin.as_path()]
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A RabbitMQ + SeaweedFS pair of one test's own (for tests that stop and restart servers),
/// stopped and removed on drop.
pub struct PrivateServers {
    dir: tempfile::TempDir,
    /// Its settings, used like [`servers()`].
    pub servers: Servers,
}

impl PrivateServers {
    /// Starts a pair on free loopback ports (about 10 s).
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("aerial-private-")
            .tempdir()
            .unwrap();
        let mut me = Self {
            servers: Servers {
                vars: HashMap::new(),
            },
            dir,
        };
        me.script("up");
        me.servers.vars = read_env_files(&me.dir.path().join("env"));
        me
    }

    fn script(&self, cmd: &str) {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/servers.sh"))
            .arg(cmd)
            .arg(self.dir.path())
            .arg("free")
            .output()
            .expect("running scripts/servers.sh");
        assert!(
            out.status.success(),
            "servers.sh {cmd}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops RabbitMQ (SIGTERM, as an operator or a node drain would).
    pub fn stop_rabbitmq(&self) {
        self.script("stop-rabbitmq");
    }

    /// Stops the S3 server.
    pub fn stop_s3(&self) {
        self.script("stop-s3");
    }

    /// Starts whatever is stopped, on the same ports and data, and waits until ready.
    pub fn start_stopped(&self) {
        self.script("up");
    }
}

impl Drop for PrivateServers {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/servers.sh"))
            .arg("down")
            .arg(self.dir.path())
            .output();
    }
}

/// Writes one scenario's counts to `target/reliability/<scenario>.json`, which
/// `make reliability` turns into RELIABILITY.md.
pub fn record_reliability(scenario: &str, row: serde_json::Value) {
    let dir = repo_root().join("target/reliability");
    std::fs::create_dir_all(&dir).unwrap();
    let mut row = row;
    row["scenario"] = serde_json::Value::String(scenario.to_string());
    std::fs::write(
        dir.join(format!("{scenario}.json")),
        serde_json::to_vec_pretty(&row).unwrap(),
    )
    .unwrap();
}

impl Servers {
    /// The S3 secret key, broker password and dashboard token of these servers, to grep
    /// outputs for.
    pub fn secrets(&self) -> [String; 3] {
        [
            self.var("AERIAL__S3__SECRET_KEY").to_string(),
            self.var("AERIAL_AMQP_PASS").to_string(),
            self.var("AERIAL__DASHBOARD__TOKEN").to_string(),
        ]
    }

    fn var(&self, k: &str) -> &str {
        self.vars
            .get(k)
            .unwrap_or_else(|| panic!("{k} missing from test env"))
    }

    /// A fresh vhost and bucket for one test.
    pub async fn isolated(&self, name: &str) -> Isolated {
        let id = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        // the administrator creates the vhost; the services' user gets the same narrow rights
        // on it as on the real `aerial` vhost
        let user = self.var("AERIAL_AMQP_ADMIN_USER").to_string();
        let pass = self.var("AERIAL_AMQP_ADMIN_PASS").to_string();
        let service_user = self.var("AERIAL_AMQP_USER").to_string();
        let perms: serde_json::Value =
            serde_json::from_str(self.var("AERIAL_AMQP_PERMISSIONS")).expect("permissions json");
        let mgmt = self.var("AERIAL_RABBITMQ_MANAGEMENT").to_string();
        let http = reqwest::Client::new();
        http.put(format!("{mgmt}/api/vhosts/{id}"))
            .basic_auth(&user, Some(&pass))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("creating test vhost");
        http.put(format!("{mgmt}/api/permissions/{id}/{service_user}"))
            .basic_auth(&user, Some(&pass))
            .json(&perms)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("granting vhost permissions");
        let base_uri = self.var("AERIAL__AMQP__URI");
        let uri = format!(
            "{}/{id}",
            base_uri.rsplit_once('/').expect("uri has a vhost").0
        );
        let mut env: Vec<(String, String)> = self
            .vars
            .iter()
            .filter(|(k, _)| k.starts_with("AERIAL__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.retain(|(k, _)| k != "AERIAL__AMQP__URI");
        env.push(("AERIAL__AMQP__URI".into(), uri));
        env.push(("AERIAL__S3__BUCKET".into(), id.clone()));
        env.push(("AERIAL__TELEMETRY__LOG_FORMAT".into(), "json".into()));
        env.push(("AERIAL__WORKER__BATCH_WAIT_MS".into(), "100".into()));
        // well under the test broker's 60 s consumer timeout: long jobs go on in segments
        env.push(("AERIAL__WORKER__SEGMENT_SECS".into(), "20".into()));
        let settings = settings_from(&env);
        let store = Store::connect(&settings.s3).await;
        store.ensure_bucket().await.expect("creating test bucket");
        Isolated {
            id,
            env,
            settings,
            store,
            mgmt,
            user,
            pass,
        }
    }
}

fn settings_from(env: &[(String, String)]) -> Settings {
    let map = env.iter().cloned().collect();
    let mut s = Settings::load_from(None, Some(map)).expect("test settings");
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    s.amqp.uri = SecretString::from(get("AERIAL__AMQP__URI").expect("uri"));
    s.s3.endpoint = get("AERIAL__S3__ENDPOINT");
    s.s3.access_key = get("AERIAL__S3__ACCESS_KEY");
    s.s3.secret_key = get("AERIAL__S3__SECRET_KEY").map(SecretString::from);
    s.s3.bucket = get("AERIAL__S3__BUCKET").expect("bucket");
    s
}

/// One test's vhost, bucket, settings and env for child processes.
pub struct Isolated {
    /// vhost = bucket name.
    pub id: String,
    /// `AERIAL__*` variables for spawned binaries.
    pub env: Vec<(String, String)>,
    /// The same as typed settings.
    pub settings: Settings,
    /// Store on the test bucket.
    pub store: Store,
    mgmt: String,
    user: String,
    pass: String,
}

/// Path of a workspace binary built by `cargo build`.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = dir.join("debug").join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// Where spawned processes write their logs.
pub fn log_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-logs");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running service binary; killed when dropped.
pub struct Proc {
    child: Option<Child>,
    /// Its log file.
    pub log: PathBuf,
}

impl Proc {
    /// Resident set size in MiB, from /proc (None once it exited).
    pub fn rss_mib(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }

    /// Sends SIGTERM and waits (up to 30 s) for the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Some(st) = child.try_wait().ok().flatten() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        None
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits until the log contains `needle` (e.g. `"consuming"`: topology declared and bound).
    pub async fn wait_log(&self, needle: &str, timeout: Duration) {
        let t = Instant::now();
        while !self.log_text().contains(needle) {
            assert!(
                t.elapsed() < timeout,
                "{} never logged {needle:?}:\n{}",
                self.log.display(),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Messages a service received a second time: the worker's "handling redelivered messages"
/// log lines (JSON logs), summed.
pub fn redelivered_in(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "handling redelivered messages")
        .filter_map(|v| v["redelivered"].as_u64())
        .sum()
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Isolated {
    /// Every prediction row in a score job's raw batch objects: (rows, distinct tile ids). A
    /// tile scored twice into two objects counts twice here, whatever the assembled table
    /// shows.
    pub async fn raw_predictions(&self, job: &str) -> (usize, std::collections::BTreeSet<String>) {
        let mut rows = 0;
        let mut ids = std::collections::BTreeSet::new();
        for o in self
            .store
            .list(&aerial_shared::keys::predictions_prefix(job))
            .await
            .unwrap()
        {
            let b: aerial_shared::predictions::PredictionBatch =
                self.store.get_json(&o.key).await.unwrap();
            rows += b.rows.len();
            ids.extend(b.rows.into_iter().map(|r| r.tile_id));
        }
        (rows, ids)
    }
    /// Starts a service binary against this test's vhost and bucket.
    pub fn spawn(&self, name: &str, extra: &[(&str, &str)]) -> Proc {
        let log = log_dir().join(format!(
            "{}-{name}-{}.log",
            self.id,
            uuid::Uuid::new_v4().simple()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin(name));
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AERIAL__TELEMETRY__HTTP_ADDR", "127.0.0.1:0")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc {
            child: Some(child),
            log,
        }
    }

    /// Publishes raw bytes to a work queue, confirmed and routed.
    pub async fn publish_raw(&self, queue: &str, body: &[u8]) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        let opts = lapin::options::BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirm = ch
            .basic_publish(
                aerial_shared::topology::WORK_EXCHANGE.into(),
                queue.into(),
                opts,
                body,
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            confirm,
            lapin::Confirmation::Ack(None),
            "publish to {queue} was not routed"
        );
        let _ = conn.close(200, "bye".into()).await;
    }

    /// The address of a spawned service's `/metrics` server, from its log.
    pub fn http_addr(&self, proc: &Proc) -> String {
        proc.log_text()
            .lines()
            .find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["message"] == "http server listening")
                    .then(|| v["addr"].as_str().map(str::to_string))
                    .flatten()
            })
            .expect("the service logged its http address")
    }

    /// Runs the `aerial` CLI to completion; returns (success, stdout + stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(bin("aerial"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // `aerial evaluate` runs models locally; the default is relative to the cwd
            .env("AERIAL__MODELS__DIR", shared_data().join("../models"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running aerial");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// `aerial ingest scene SCENE --dataset DATASET`, which must succeed; its output.
    pub fn ingest_scene(&self, scene: &std::path::Path, dataset: &str) -> String {
        let (ok, out) = self.cli(&[
            "ingest",
            "scene",
            scene.to_str().expect("utf-8 path"),
            "--dataset",
            dataset,
        ]);
        assert!(ok, "{out}");
        out
    }

    /// A connection to this test's vhost.
    pub async fn connect(&self) -> lapin::Connection {
        use secrecy::ExposeSecret;
        lapin::Connection::connect(
            self.settings.amqp.uri.expose_secret(),
            lapin::ConnectionProperties::default(),
        )
        .await
        .expect("connecting to test vhost")
    }

    /// Messages ready in a queue (passive declare: exact, not the management API's sample).
    pub async fn ready(&self, queue: &str) -> u32 {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("queue {queue}: {e}"));
        let _ = conn.close(200, "bye".into()).await;
        q.message_count()
    }

    /// Takes every message from a queue: (body, headers).
    pub async fn drain(&self, queue: &str) -> Vec<(Vec<u8>, lapin::types::FieldTable)> {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            let d = m.delivery;
            out.push((
                d.data.clone(),
                d.properties.headers().clone().unwrap_or_default(),
            ));
        }
        let _ = conn.close(200, "bye".into()).await;
        out
    }

    /// (queue, ready, unacked) of every queue of this vhost, from the management API.
    pub async fn queue_counts(&self) -> Vec<(String, i64, i64)> {
        let vh: String = self.id.clone();
        let qs: Vec<serde_json::Value> = reqwest::Client::new()
            .get(format!("{}/api/queues/{vh}", self.mgmt))
            .basic_auth(&self.user, Some(&self.pass))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("management api")
            .json()
            .await
            .expect("queue list json");
        qs.iter()
            .map(|q| {
                (
                    q["name"].as_str().unwrap_or_default().to_string(),
                    q["messages_ready"].as_i64().unwrap_or(0),
                    q["messages_unacknowledged"].as_i64().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Deletes the vhost (and so its queues).
    pub async fn cleanup(&self) {
        let _ = reqwest::Client::new()
            .delete(format!("{}/api/vhosts/{}", self.mgmt, self.id))
            .basic_auth(&self.user, Some(&self.pass))
            .send()
            .await;
    }
}

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            t.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Text of a header value, if it is a string.
pub fn header_str(h: &lapin::types::FieldTable, key: &str) -> Option<String> {
    match h.inner().get(key)? {
        lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
        lapin::types::AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Value of an integer header, if it is one.
pub fn header_u64(h: &lapin::types::FieldTable, key: &str) -> Option<u64> {
    use lapin::types::AMQPValue as V;
    match h.inner().get(key)? {
        V::LongUInt(n) => Some(u64::from(*n)),
        V::LongLongInt(n) => u64::try_from(*n).ok(),
        V::LongInt(n) => u64::try_from(*n).ok(),
        V::ShortUInt(n) => Some(u64::from(*n)),
        _ => None,
    }
}

/// Path of the read-only data folder beside the checkout.
pub fn shared_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

/// Copies the first `per_split` images (by name) of each `class` and split from rsscn7 into
/// `dest/<split>/<class>/`, making a small real labelled folder.
pub fn rsscn7_sample(dest: &std::path::Path, classes: &[&str], per_split: &[(&str, usize)]) {
    for class in classes {
        for (split, take) in per_split {
            let src = shared_data().join("rsscn7").join(split).join(class);
            let mut files: Vec<_> = std::fs::read_dir(&src)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            let out = dest.join(split).join(class);
            std::fs::create_dir_all(&out).unwrap();
            for f in files.iter().take(*take) {
                std::fs::copy(f, out.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
}

/// The seven rsscn7 labels.
pub const RSSCN7_CLASSES: [&str; 7] = [
    "field",
    "forest",
    "grass",
    "industry",
    "parking",
    "resident",
    "river_lake",
];

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every PromQL expression of the shipped Grafana dashboard (which must be valid JSON).
pub fn grafana_exprs() -> Vec<String> {
    let path = repo_root().join("deploy/grafana/dashboards/aerial.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    assert_eq!(dash["uid"], "aerial");
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().expect("target has expr").to_string());
        }
    }
    assert!(out.len() >= 10, "{out:?}");
    out
}

/// The `aerial_*` metric names a PromQL text uses.
pub fn metric_names(promql: &str) -> Vec<String> {
    let mut names: Vec<String> = promql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("aerial_"))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The sample names (histogram `_bucket`/`_sum`/`_count` included) of a `/metrics` page.
pub fn exposed_names(text: &str) -> std::collections::HashSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}
