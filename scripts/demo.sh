#!/usr/bin/env bash
# The demo pipeline on the sample data, run by `make demo` after `make up`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
set -a; . .state/servers/env; set +a
DATA=${AERIAL_DATA:-$ROOT/../shared/data}
AERIAL=./target/debug/aerial

echo "== servers (make down stops them)"
bash scripts/servers.sh status .state/servers
echo "   rabbitmq: amqp 127.0.0.1:35672, management $AERIAL_RABBITMQ_MANAGEMENT, logs .state/servers/rabbitmq/log/"
echo "   seaweedfs s3: $AERIAL__S3__ENDPOINT, log .state/servers/seaweedfs/weed.log"
echo "   credentials: .state/servers/env (generated for this install)"
echo "== services"
bash scripts/services.sh status
echo "   logs: .state/services/*.log"

echo "== ingest rsscn7 (labelled, 7 classes)"
$AERIAL ingest labelled "$DATA/rsscn7" --dataset rsscn7

echo "== train logistic regression on MobileNetV2 features (waits for featurize to finish)"
$AERIAL train --name demo-logistic --dataset rsscn7 --method logistic
$AERIAL features --dataset rsscn7

echo "== runs"
$AERIAL runs
echo
echo "Run record: s3://aerial/runs/demo-logistic/ (descriptor, model, predictions, metrics)."
echo "Not built yet: scene (GeoTIFF) ingest, fine-tuning, scoring a region, the dashboard."
