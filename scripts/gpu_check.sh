#!/usr/bin/env bash
# make gpu-check: the models on a CUDA device (featurize and score throughput at batch 128 and
# 256, one fine-tune epoch fp32 vs bf16), written to bench/results/gpu.md, which BENCHMARKS.md
# includes. Uses the project venv's torch when it sees CUDA, else the machine's python3 (a GPU
# image usually ships one). Runs in a few minutes; nothing is downloaded.
#   GPU_CHECK_MODELS / GPU_CHECK_IMAGES override where the model files and rsscn7 are
#   (default: the models dir of the settings and ../shared/data/rsscn7).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
MODELS=${GPU_CHECK_MODELS:-$(realpath -m "${AERIAL__MODELS__DIR:-$ROOT/../shared/models}")/mobilenet_v2}
IMAGES=${GPU_CHECK_IMAGES:-$(realpath -m "${AERIAL_DATA:-$ROOT/../shared/data}")/rsscn7}
PY=python3
for cand in "$ROOT/.venv/bin/python" python3; do
  if "$cand" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    PY=$cand; break
  fi
done
mkdir -p bench/results
OUT=${GPU_CHECK_OUT:-bench/results/gpu.md}
"$PY" scripts/gpu_check.py --models "$MODELS" --images "$IMAGES" --out "$OUT" "$@"
# BENCHMARKS.md keeps its other sections; the GPU one is replaced
if [ "$OUT" = bench/results/gpu.md ]; then
  python3 - <<'PY'
import re
b = open("BENCHMARKS.md").read()
g = open("bench/results/gpu.md").read()
start = b.find("## GPU")
b = (b[:start].rstrip() + "\n\n") if start >= 0 else b.rstrip() + "\n\n"
open("BENCHMARKS.md", "w").write(b + "## GPU\n\n" + g)
PY
fi
