#!/usr/bin/env bash
# Starts / stops the aerial service binaries as background processes against the servers
# of `scripts/servers.sh up .state/servers`. PIDs and logs live in .state/services/.
#   services.sh up [SCORE_REPLICAS]   |   services.sh down   |   services.sh status
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=$ROOT/.state/services
ENV_FILE=$ROOT/.state/servers/env
BIN=${AERIAL_BIN_DIR:-$ROOT/target/debug}
say() { printf '[services] %s\n' "$*"; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() { # name port [instance]
  local name=$1 port=$2 inst=${3:-$1}
  local pidf=$STATE/$inst.pid
  if alive "$pidf"; then say "$inst already running (pid $(cat "$pidf"))"; return; fi
  ( set -a; . "$ENV_FILE"; set +a
    export AERIAL__TELEMETRY__HTTP_ADDR=127.0.0.1:$port AERIAL__TELEMETRY__LOG_FORMAT=json
    export AERIAL__MODELS__DIR=${AERIAL__MODELS__DIR:-$(realpath -m "$ROOT/../shared/models")}
    # replicas share the machine: one inference thread each unless told otherwise
    if [ "$name" = score ]; then export AERIAL__WORKER__THREADS=${AERIAL_SCORE_THREADS:-1}; fi
    setsid nohup "$BIN/aerial-$name" > "$STATE/$inst.log" 2>&1 &
    echo $! > "$pidf" )
  say "$inst started: http://127.0.0.1:$port/metrics, log $STATE/$inst.log"
}

case "${1:-}" in
  up)
    [ -f "$ENV_FILE" ] || { say "servers not running: run 'make up'"; exit 1; }
    mkdir -p "$STATE"
    replicas=${2:-2}
    # queues of an earlier version (classic) become quorum queues before any service runs;
    # a no-op when they already are. Only while none of ours runs: they would consume meanwhile.
    running=0; for p in "$STATE"/*.pid; do if alive "$p"; then running=1; fi; done
    if [ $running = 0 ]; then
      # lapin logs the broker's expected refusal of an old queue at ERROR: not for users
      out=$( ( set -a; . "$ENV_FILE"; set +a; RUST_LOG=warn,lapin=off "$BIN/aerial" migrate-queues ) 2>&1 ) || { say "queue migration failed: $out"; exit 1; }
      printf '%s\n' "$out" | grep -v "up to date$" | sed 's/^/[services] queue /' || true
    fi
    start metrics 9100
    start ingest 9101
    start featurize 9102
    start train 9103
    for i in $(seq 1 "$replicas"); do start score $((9103 + i)) "score-$i"; done
    ;;
  down)
    shopt -s nullglob
    for pidf in "$STATE"/*.pid; do
      pid=$(cat "$pidf")
      if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        say "$(basename "$pidf" .pid) stopped"
      fi
      rm -f "$pidf"
    done
    ;;
  status)
    shopt -s nullglob
    for pidf in "$STATE"/*.pid; do
      if alive "$pidf"; then echo "running  $(basename "$pidf" .pid) (pid $(cat "$pidf"))"; else echo "stopped  $(basename "$pidf" .pid)"; fi
    done
    ;;
  *) echo "usage: services.sh up [SCORE_REPLICAS] | down | status" >&2; exit 2 ;;
esac
