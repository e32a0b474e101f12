#!/usr/bin/env bash
# Gathers what the runtime image holds into OUT: the given binaries (debug info stripped),
# every shared library they load from outside the system's own folders (libtorch's CPU
# libraries, torch's libgomp and the few CUDA runtime stubs libtorch_cpu links, as ldd
# resolves them: nothing the binaries do not load), and the backbones folder.
#   deploy/docker/parts.sh OUT MODELS_DIR BINARY...
# Used by the in-image build (Dockerfile, stage parts-compiled) and by `make compose-test`,
# which packs the binaries `make build` already made (stage parts-prebuilt).
set -euo pipefail
out=$1 models=$2
shift 2
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/models"
for b in "$@"; do
  # --strip-debug keeps the symbols a backtrace names
  objcopy --strip-debug "$b" "$out/bin/$(basename "$b")"
done
# system libraries come from the image's own packages (libgdal32 and its dependencies)
ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | while read -r lib; do
  case "$lib" in
    /lib/* | /usr/lib/* | /lib64/*) ;;
    *) cp -L "$lib" "$out/lib/$(basename "$lib")" ;;
  esac
done
if ldd "$@" | grep -q "not found"; then
  ldd "$@" | grep "not found" >&2
  echo "[parts] a library the binaries need was not found" >&2
  exit 1
fi
cp -rL "$models"/. "$out/models/"
echo "[parts] $(ls "$out/bin" | wc -l) binaries, $(ls "$out/lib" | wc -l) libraries ($(du -sh "$out/lib" | cut -f1)), models $(du -sh "$out/models" | cut -f1)" >&2
