//! Test harness: a private RabbitMQ and SeaweedFS pair, started once per `make test` run by
//! `scripts/with-test-servers.sh` (which exports `AERIAL_TEST_ENV`), shared by every test;
//! each test gets its own vhost and bucket, and can spawn the real service binaries.

use aerial_shared::{Settings, Store};
use secrecy::SecretString;
use std::collections::HashMap;
use std::path::PathBuf;
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
        let text = std::fs::read_to_string(&path).expect("reading AERIAL_TEST_ENV file");
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Servers { vars }
    })
}

impl Servers {
    fn var(&self, k: &str) -> &str {
        self.vars
            .get(k)
            .unwrap_or_else(|| panic!("{k} missing from test env"))
    }

    /// A fresh vhost and bucket for one test.
    pub async fn isolated(&self, name: &str) -> Isolated {
        let id = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let user = self.var("AERIAL_AMQP_USER").to_string();
        let pass = self.var("AERIAL_AMQP_PASS").to_string();
        let mgmt = self.var("AERIAL_RABBITMQ_MANAGEMENT").to_string();
        let http = reqwest::Client::new();
        http.put(format!("{mgmt}/api/vhosts/{id}"))
            .basic_auth(&user, Some(&pass))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("creating test vhost");
        http.put(format!("{mgmt}/api/permissions/{id}/{user}"))
            .basic_auth(&user, Some(&pass))
            .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
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
    let mut s = Settings::load(None).expect("default settings");
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

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Isolated {
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
