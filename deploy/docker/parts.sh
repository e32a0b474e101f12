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
missing=$(ldd "$@" | grep "not found" || true)
if [ -n "$missing" ]; then
  echo "$missing" >&2
  echo "[parts] a library the binaries need was not found" >&2
  exit 1
fi
# a CUDA build: libtorch_cuda and cuDNN load more of torch's libraries with dlopen than ldd
# shows, so the whole of torch's lib folder and the nvidia packages' libraries go in
if [ -n "${PARTS_ALL_TORCH_LIBS:-}" ]; then
  cp -L "$PARTS_ALL_TORCH_LIBS"/lib/*.so* "$out/lib/"
  for d in "$PARTS_ALL_TORCH_LIBS"/../nvidia/*/lib "$PARTS_ALL_TORCH_LIBS"/../nvidia/lib; do
    [ -d "$d" ] && cp -L "$d"/*.so* "$out/lib/" 2>/dev/null || true
  done
fi
cp -rL "$models"/. "$out/models/"
echo "[parts] $(ls "$out/bin" | wc -l) binaries, $(ls "$out/lib" | wc -l) libraries ($(du -sh "$out/lib" | cut -f1)), models $(du -sh "$out/models" | cut -f1)" >&2
