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

# at the region's ground resolution (its tiles are 45 px of 5 m imagery, 225 m): rsscn7's sharp
# scenes degraded alike, so the classifier learns what score will feed it (README, "Training
# at the mapped imagery's resolution": 29 % -> 68 % agreement with a by-eye sample)
echo "== train logistic regression on MobileNetV2 features of rsscn7 at the region's resolution"
$AERIAL train --name demo-logistic --dataset rsscn7 --method logistic --degrade-for region
$AERIAL features --dataset rsscn7

echo "== runs"
$AERIAL runs

echo "== score the region (10 dates x 320 tiles) with demo-logistic on $(bash scripts/services.sh status | grep -c 'running  score') score replicas"
$AERIAL score --run demo-logistic --dataset region --name demo-region
OUT=.state/demo/demo-region
$AERIAL results demo-region --out "$OUT" > /dev/null
FIRST=$(ls "$OUT"/map_*.png | head -1); LAST=$(ls "$OUT"/map_*.png | tail -1)
echo
echo "== change between the first and last date (3x3 plurality smoothing)"
$AERIAL results demo-region --change "$(basename "$FIRST" .png | cut -c5-)" "$(basename "$LAST" .png | cut -c5-)" --smooth
echo
echo "Outputs (also in s3://aerial/jobs/demo-region/outputs/), downloaded to $OUT/:"
echo "  predictions table  $OUT/predictions.csv"
echo "  tile footprints    $OUT/tiles.geojson"
echo "  map PNG (first)    $FIRST"
echo "  map PNG (last)     $LAST"
echo "  COG (first)        ${FIRST%.png}.tif (class + probability bands; QGIS style ${FIRST%.png}.qml)"
echo "  COG (last)         ${LAST%.png}.tif"
echo "  vector layers      $OUT/layers.gpkg (windows, class regions per date)"
echo "  change report      $OUT/change.json, $OUT/change.csv"
echo "Run record: s3://aerial/runs/demo-logistic/ (descriptor, model, predictions, metrics)."
echo
echo "Dashboard (runs, curves, confusion matrix, maps, change): http://127.0.0.1:9100/"
echo "  the map over its imagery:    http://127.0.0.1:9100/jobs/demo-region/view"
echo "  assess its accuracy / correct it and retrain: http://127.0.0.1:9100/jobs/demo-region/label?mode=assess (or mode=correct)"
echo "  labelling token (AERIAL__DASHBOARD__TOKEN in .state/servers/env): $AERIAL__DASHBOARD__TOKEN"
if [ -f .state/prometheus/pid ]; then echo "Prometheus: http://127.0.0.1:39090/targets"; fi
echo "Fine-tune too: $AERIAL train --name ft-all --dataset rsscn7 --method finetune --retraining all"

# the generated S3 secret and broker password must appear in no log of the run
leaks=0; nlogs=0
while IFS= read -r -d '' f; do
  nlogs=$((nlogs + 1))
  for s in "$AERIAL__S3__SECRET_KEY" "$AERIAL_AMQP_PASS" "$AERIAL__DASHBOARD__TOKEN"; do
    if grep -qF -- "$s" "$f"; then echo "SECRET FOUND IN $f" >&2; leaks=1; fi
  done
done < <(find .state -name '*.log' -print0 2>/dev/null)
if [ "$leaks" = 0 ]; then echo "Secrets: neither the S3 secret, the broker password nor the dashboard token is in any of the $nlogs logs under .state/."; else exit 1; fi
