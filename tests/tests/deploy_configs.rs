//! The shipped Prometheus configuration and alert rules pass `promtool` (Debian package
//! `prometheus`, installed by make), a broken copy of each fails, and the alert rules only
//! use metrics our services export.

use std::path::PathBuf;
use std::process::Command;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (Debian package prometheus, installed by make) runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn prometheus_config_and_rules_are_valid_and_broken_copies_fail() {
    let cfg = deploy().join("prometheus.yml");
    let rules = deploy().join("alerts.yml");
    let (ok, out) = promtool(&["check", "config", cfg.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap()]);
    assert!(ok, "{out}");

    let tmp = tempfile::tempdir().unwrap();
    let bad_cfg = tmp.path().join("prometheus.yml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &bad_cfg,
        text.replace("scrape_interval: 15s", "scrape_interval: fast"),
    )
    .unwrap();
    std::fs::copy(&rules, tmp.path().join("alerts.yml")).unwrap();
    let (ok, _) = promtool(&["check", "config", bad_cfg.to_str().unwrap()]);
    assert!(!ok, "a wrong duration must fail the check");
    let bad_rules = tmp.path().join("bad.yml");
    let text = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(&bad_rules, text.replacen("expr: ", "expr: sum(", 1)).unwrap();
    let (ok, _) = promtool(&["check", "rules", bad_rules.to_str().unwrap()]);
    assert!(!ok, "an unbalanced expression must fail the check");
}

#[test]
fn alert_rules_use_only_exported_metrics() {
    let text = std::fs::read_to_string(deploy().join("alerts.yml")).unwrap();
    // every aerial_* name the services register (shared telemetry + metrics service)
    let src = [
        "../shared/src/telemetry.rs",
        "../services/metrics/src/events.rs",
        "../services/metrics/src/queues.rs",
    ]
    .iter()
    .map(|p| std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)).unwrap())
    .collect::<String>();
    let used: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("aerial_"))
        .collect();
    assert!(!used.is_empty());
    for name in used {
        let bare = name.trim_start_matches("aerial_");
        assert!(
            src.contains(&format!("\"{bare}\"")),
            "{name} is not exported by any service"
        );
    }
}
