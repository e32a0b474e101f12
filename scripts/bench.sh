#!/usr/bin/env bash
# Benchmarks; each stage appends its table to BENCHMARKS.md. None exist yet in this build.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Benchmarks"
  echo
  echo "Machine: $(nproc) CPU cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -m)."
  echo
  echo "| benchmark | result |"
  echo "|---|---|"
} > BENCHMARKS.md
echo "wrote BENCHMARKS.md (no benchmarks yet: featurize and score land in later issues)"
