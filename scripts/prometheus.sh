#!/usr/bin/env bash
# Local Prometheus for `make up` (only when the `prometheus` binary is installed; `make install`
# installs the Debian package): renders deploy/prometheus/prometheus.yml's jobs for the local
# processes into .state/prometheus/ and serves on 127.0.0.1:39090.
#   prometheus.sh up [SCORE_REPLICAS]   |   prometheus.sh down
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=$ROOT/.state/prometheus
PORT=${AERIAL_PROMETHEUS_PORT:-39090}
say() { printf '[prometheus] %s\n' "$*"; }
case "${1:-}" in
  up)
    command -v prometheus >/dev/null || { say "not installed; skipping"; exit 0; }
    mkdir -p "$STATE/data"
    replicas=${2:-2}
    targets='"127.0.0.1:9100", "127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"'
    for i in $(seq 1 "$replicas"); do targets="$targets, \"127.0.0.1:$((9103 + i))\""; done
    rmq=$(awk -F= '/^AERIAL_RABBITMQ_PROMETHEUS=/ {print $2}' "$ROOT/.state/servers/env" | sed 's|http://||')
    cp "$ROOT/deploy/prometheus/alerts.yml" "$STATE/alerts.yml"
    cat > "$STATE/prometheus.yml" <<YML
global: {scrape_interval: 5s, evaluation_interval: 15s}
rule_files: [alerts.yml]
scrape_configs:
  - job_name: aerial
    static_configs: [{targets: [$targets]}]
  - job_name: rabbitmq
    static_configs: [{targets: ["$rmq"]}]
YML
    if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
      kill -HUP "$(cat "$STATE/pid")"; say "reloaded: http://127.0.0.1:$PORT/targets"; exit 0
    fi
    setsid nohup prometheus --config.file="$STATE/prometheus.yml" --storage.tsdb.path="$STATE/data" \
      --web.listen-address="127.0.0.1:$PORT" > "$STATE/prometheus.log" 2>&1 &
    echo $! > "$STATE/pid"
    say "started: http://127.0.0.1:$PORT/targets, log $STATE/prometheus.log"
    ;;
  down)
    if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
      kill "$(cat "$STATE/pid")"; say "stopped"
    fi
    rm -f "$STATE/pid"
    ;;
  *) echo "usage: prometheus.sh up [SCORE_REPLICAS] | down" >&2; exit 2 ;;
esac
