#!/usr/bin/env bash
# Copies what scripts/gpu_check.py reads into .gpu/ (git-ignored), small enough to travel to a
# lent GPU machine that cannot see ../shared: the MobileNetV2 files and 60 train + 20 val
# images per rsscn7 class (~38 MB).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(realpath -m "${AERIAL_DATA:-$ROOT/../shared/data}")
MODELS=$(realpath -m "${AERIAL__MODELS__DIR:-$ROOT/../shared/models}")
rm -rf "$ROOT/.gpu" && mkdir -p "$ROOT/.gpu/models"
cp "$MODELS"/mobilenet_v2/{mobilenet_v2_featurizer.pt,mobilenet_v2.safetensors,ref_features.npy,ref_input_chelsea_coffee.npy} "$ROOT/.gpu/models/"
for split_n in train:60 val:20; do
  split=${split_n%%:*} n=${split_n##*:}
  for d in "$DATA/rsscn7/$split"/*/; do
    lab=$(basename "$d"); mkdir -p "$ROOT/.gpu/rsscn7/$split/$lab"
    find "$d" -maxdepth 1 -type f | sort | head -n "$n" | xargs -I{} cp {} "$ROOT/.gpu/rsscn7/$split/$lab/"
  done
done
du -sh "$ROOT/.gpu"
