#!/usr/bin/env bash
# Classic classifiers against scikit-learn on the same feature vectors, one machine, one run:
# our logistic regression and random forest, linfa-logistic's fit (what train used before),
# and scikit-learn's, all single-threaded, on rsscn7's MobileNetV2 features of the running
# `make up` stack (after `make demo`). Writes bench/results/classifiers.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[ -f .state/servers/env ] || { echo "[bench] classifiers: no local stack; run make demo first" >&2; exit 1; }
set -a; . .state/servers/env; set +a
DIR=$(mktemp -d /tmp/aerial-classic-XXXXXX); trap 'rm -rf "$DIR"' EXIT
echo "[bench] classifiers: our fits and linfa-logistic's (minutes), then scikit-learn's"
CLASSIC_BENCH_LINFA=${CLASSIC_BENCH_LINFA:-1} ./target/debug/classic_bench rsscn7 mobilenet_v2 "$DIR" > "$DIR/ours.jsonl"
.venv/bin/python bench/classic_sklearn.py "$DIR" > "$DIR/sklearn.jsonl"
CPU=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/,"",$2); print $2}')
.venv/bin/python bench/classic_table.py "$DIR" "$CPU" > bench/results/classifiers.md
cat bench/results/classifiers.md
