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

echo "== job status"
$AERIAL status
echo
echo "Stages still to come in this build: featurize, train, score and the metrics dashboard"
echo "consume their queues but dead-letter their messages with a 'not implemented' reason."
echo "Tiles: s3://aerial/tiles/, manifest: s3://aerial/datasets/rsscn7/manifest/"
