//! The dashboard in a real browser (headless Chromium from Debian): after a small pipeline
//! run (ingest, featurize, a logistic and a fine-tune run, a scored two-date region), the
//! runs table lists both runs with their accuracies, a run page shows the confusion matrix
//! and the epoch curves, the job page shows the map image (decoded by the browser), a label
//! made of HTML renders as text, and the JSON API answers. Screenshots go to
//! `target/test-output/dashboard/`.

use aerial_shared::runs::{self, RunSummary};
use aerial_tests::{eventually, rsscn7_sample, servers, shared_data};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A label folder whose name is HTML: it must come out as text.
const EVIL: &str = "<img src=x onerror=alert(1)>";

fn chromium(args: &[&str]) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .args(args)
        .output()
        .expect("chromium (Debian package, installed by make) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn dom(url: &str) -> String {
    chromium(&["--dump-dom", url])
}

fn screenshot(url: &str, to: &Path) {
    chromium(&[
        &format!("--screenshot={}", to.display()),
        "--window-size=1280,1600",
        url,
    ]);
    let img = image::open(to).unwrap_or_else(|e| panic!("{to:?}: {e}"));
    assert_eq!((img.width(), img.height()), (1280, 1600), "{to:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_runs_confusion_curves_and_maps() {
    let iso = servers().isolated("dashboard").await;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
    let models = models.to_str().unwrap();
    let m = [("AERIAL__MODELS__DIR", models)];
    let procs = [
        iso.spawn("aerial-ingest", &[]),
        iso.spawn("aerial-featurize", &m),
        iso.spawn("aerial-train", &m),
        iso.spawn("aerial-score", &m),
        iso.spawn(
            "aerial-metrics",
            &[("AERIAL__TELEMETRY__HTTP_ADDR", "127.0.0.1:0")],
        ),
    ];
    for p in &procs {
        p.wait_log("consuming", Duration::from_secs(60)).await;
    }
    let metrics_log = procs[4].log_text();
    let base = metrics_log
        .lines()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["dashboard"]
                .as_str()
                .map(|s| s.trim_end_matches('/').to_string())
        })
        .expect("metrics logs its dashboard address");

    let dir = tempfile::tempdir().unwrap();
    rsscn7_sample(
        dir.path(),
        &["field", "forest"],
        &[("train", 6), ("val", 3)],
    );
    // a third class whose name is HTML
    for (split, n) in [("train", 6), ("val", 3)] {
        let src = shared_data().join("rsscn7").join(split).join("river_lake");
        let dst = dir.path().join(split).join(EVIL);
        std::fs::create_dir_all(&dst).unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(src)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.iter().take(n) {
            std::fs::copy(f, dst.join(f.file_name().unwrap())).unwrap();
        }
    }
    let d = dir.path().to_str().unwrap();
    let (ok, out) = iso.cli(&["ingest", "labelled", d, "--dataset", "tiny"]);
    assert!(ok, "{out}");
    let (ok, out) = iso.cli(&[
        "train",
        "--name",
        "lr",
        "--dataset",
        "tiny",
        "--method",
        "logistic",
    ]);
    assert!(ok, "{out}");
    // a run whose name is a script tag: allowed, stored under an encoded key, shown as text
    let (ok, out) = iso.cli(&[
        "train",
        "--name",
        "<script>alert(1)</script>",
        "--dataset",
        "tiny",
        "--method",
        "logistic",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = iso.cli(&[
        "train",
        "--name",
        "ft",
        "--dataset",
        "tiny",
        "--method",
        "finetune",
        "--epochs",
        "3",
        "--batch",
        "6",
    ]);
    assert!(ok, "{out}");
    let region = shared_data().join("region/naip_nd_m_4709963_se");
    let (ok, out) = iso.cli(&[
        "ingest",
        "scene",
        region
            .join("m_4709963_se_14_1_20090818.tif")
            .to_str()
            .unwrap(),
        region
            .join("m_4709963_se_14_1_20200831.tif")
            .to_str()
            .unwrap(),
        "--dataset",
        "region",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = iso.cli(&[
        "score",
        "--run",
        "lr",
        "--dataset",
        "region",
        "--name",
        "map",
    ]);
    assert!(ok, "{out}");

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-output/dashboard");
    std::fs::create_dir_all(&shots).unwrap();

    // runs table: both runs with their accuracies
    let lr: RunSummary = iso
        .store
        .get_json(&runs::key("lr", runs::SUMMARY))
        .await
        .unwrap();
    let ft: RunSummary = iso
        .store
        .get_json(&runs::key("ft", runs::SUMMARY))
        .await
        .unwrap();
    let home = dom(&format!("{base}/"));
    assert!(home.contains("id=\"runs\""), "{home}");
    for r in [&lr, &ft] {
        assert!(home.contains(&format!(">{}</a>", r.run)), "{home}");
        assert!(
            home.contains(&format!("{:.2} %", r.accuracy * 100.0)),
            "{} {home}",
            r.run
        );
    }
    assert!(home.contains(">map</a>"), "job listed: {home}");
    assert!(
        home.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the run name renders as text: {home}"
    );
    assert!(!home.contains("<script>alert(1)</script>"), "{home}");
    let evil_page = dom(&format!(
        "{base}/runs/{}",
        aerial_shared::keys::encode_name("<script>alert(1)</script>")
    ));
    assert!(evil_page.contains("id=\"confusion\""), "{evil_page}");
    assert!(
        !evil_page.contains("<script>alert(1)</script>"),
        "{evil_page}"
    );
    screenshot(&format!("{base}/"), &shots.join("runs.png"));

    // a run page: confusion matrix, per-class table, epoch curves (one point per epoch)
    let page = dom(&format!("{base}/runs/ft"));
    assert!(page.contains("id=\"confusion\""), "{page}");
    assert!(page.contains("id=\"per-class\""), "{page}");
    assert_eq!(
        page.matches("<polyline").count(),
        3,
        "train error, val error, loss"
    );
    assert_eq!(page.matches("<circle").count(), 9, "3 epochs × 3 series");
    // the HTML label is text, not markup
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{page}"
    );
    assert!(
        !page.contains("<img src=\"x\""),
        "label injected markup: {page}"
    );
    screenshot(&format!("{base}/runs/ft"), &shots.join("run-ft.png"));

    // the job page: the browser loaded and decoded the map image
    let job = dom(&format!("{base}/jobs/map"));
    let loaded = job
        .split("data-loaded=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|w| w.parse::<u32>().ok());
    assert!(loaded.is_some_and(|w| w > 100), "map not decoded: {job}");
    assert!(job.contains("id=\"change\""), "{job}");
    screenshot(&format!("{base}/jobs/map"), &shots.join("job-map.png"));
    // the map viewer and the labelling page put the HTML label on the page as text too
    for page in ["/jobs/map/view", "/jobs/map/label?mode=correct"] {
        let d = dom(&format!("{base}{page}"));
        assert!(
            d.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{page} shows the label: {d}"
        );
        assert!(!d.contains("<img src=\"x\""), "{page} injected markup: {d}");
    }
    screenshot(
        &format!("{base}/compare?runs=lr,ft"),
        &shots.join("compare.png"),
    );

    // the JSON API
    let http = reqwest::Client::new();
    let api: serde_json::Value = http
        .get(format!("{base}/api/runs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api.as_array().unwrap().len(), 3);
    let cmp: serde_json::Value = http
        .get(format!("{base}/api/compare?runs=lr,ft"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cmp["runs"][1]["history"].as_array().unwrap().len(), 3);
    let job: serde_json::Value = http
        .get(format!("{base}/api/jobs/map"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["summary"]["total"], 640);
    let missing = http
        .get(format!("{base}/api/runs/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let post = http.post(format!("{base}/api/runs")).send().await.unwrap();
    assert_eq!(post.status(), 405, "the dashboard is read-only");

    // pipeline metrics from events
    // 3 labels × (6 train + 3 val) tiles featurized
    let text = eventually(
        Duration::from_secs(30),
        "featurized metric = 27",
        || async {
            let t = http
                .get(format!("{base}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            t.lines()
                .any(|l| {
                    l.starts_with("aerial_pipeline_tiles_featurized_total{")
                        && l.contains("dataset=\"tiny\"")
                        && l.ends_with(" 27")
                })
                .then_some(t)
        },
    )
    .await;
    assert!(text.contains("aerial_run_accuracy_ratio"), "{text}");
    // counted from the store: 27 labelled tiles, all with features; 640 region tiles
    let gauge = |t: &str, name: &str, ds: &str| {
        t.lines()
            .find(|l| l.starts_with(name) && l.contains(&format!("dataset=\"{ds}\"")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let text = eventually(Duration::from_secs(60), "store inventory", || async {
        let t = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (gauge(&t, "aerial_pipeline_dataset_tiles{", "region") == Some(640.0)).then_some(t)
    })
    .await;
    assert_eq!(
        gauge(&text, "aerial_pipeline_dataset_tiles{", "tiny"),
        Some(27.0)
    );
    assert_eq!(
        gauge(&text, "aerial_pipeline_dataset_featurized_tiles{", "tiny"),
        Some(27.0)
    );
    assert!(text.contains("aerial_job_progress_ratio"), "{text}");

    // every metric the alert rules and the Grafana dashboard use is on some live /metrics page,
    // after bad messages have been refused (so the dead-letter and error series exist)
    iso.publish_raw(aerial_shared::topology::FEATURIZE_TILES, b"{not json")
        .await;
    iso.publish_raw(aerial_shared::topology::SCORE_TILES, b"{not json")
        .await;
    let scrape_all = || async {
        let mut names = std::collections::HashSet::new();
        for p in &procs {
            let addr = iso.http_addr(p);
            let t = http
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            names.extend(aerial_tests::exposed_names(&t));
        }
        Some(names)
    };
    let alerts =
        std::fs::read_to_string(aerial_tests::repo_root().join("deploy/prometheus/alerts.yml"))
            .unwrap();
    let mut wanted = aerial_tests::metric_names(&alerts);
    wanted.extend(aerial_tests::metric_names(
        &aerial_tests::grafana_exprs().join("\n"),
    ));
    wanted.sort();
    wanted.dedup();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let names = scrape_all().await.unwrap_or_default();
        let missing: Vec<&String> = wanted.iter().filter(|w| !names.contains(*w)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "used by alerts/dashboard but on no live /metrics page: {missing:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // no secret in any service log, /metrics page, dashboard page or API answer
    let mut seen = String::new();
    for p in &procs {
        seen.push_str(&p.log_text());
        let addr = iso.http_addr(p);
        seen.push_str(
            &http
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    for page in ["/", "/runs/ft", "/jobs/map", "/api/runs", "/api/jobs"] {
        seen.push_str(
            &http
                .get(format!("{base}{page}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    assert!(seen.len() > 10_000);
    for secret in servers().secrets() {
        assert!(secret.len() >= 16);
        assert!(
            !seen.contains(&secret),
            "a secret leaked into logs, metrics or pages"
        );
    }
}
