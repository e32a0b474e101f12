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

echo "== ingest the region: 10 dates of one NAIP scene, cut into 224 m tiles"
$AERIAL ingest scene "$DATA"/region/naip_nd_m_4709963_se/*.tif --dataset region --tile-meters 224

echo "== train logistic regression on MobileNetV2 features (waits for featurize to finish)"
$AERIAL train --name demo-logistic --dataset rsscn7 --method logistic
$AERIAL features --dataset rsscn7

echo "== runs"
$AERIAL runs
echo
echo "Run record: s3://aerial/runs/demo-logistic/ (descriptor, model, predictions, metrics)."
echo "Region tiles and manifest: s3://aerial/datasets/region/manifest/ (3,200 tiles, 10 dates)."
echo "Not built yet: fine-tuning, scoring the region into a map, the dashboard."
