#!/usr/bin/env bash
# Makes the Debian base image every aerial image starts from, without any image registry:
# debootstrap a minimal bookworm from the Debian mirror apt already uses and import it.
#   deploy/docker/base.sh            -> prints the tag, e.g. aerial/bookworm:base-3f2c9a1d0e
# The tag carries a hash of this script and the mirror, so a change to either makes a new
# image and an unchanged one is reused (the image is also tagged aerial/bookworm:base).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DOCKER=${DOCKER:-docker}
SUITE=bookworm
MIRROR=${AERIAL_DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
hash=$(cat "$HERE/base.sh" <(echo "$SUITE $MIRROR") | sha256sum | cut -c1-10)
tag=aerial/$SUITE:base-$hash

if $DOCKER image inspect "$tag" >/dev/null 2>&1; then
  echo "[base] $tag present" >&2
else
  command -v debootstrap >/dev/null || { echo "[base] debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  echo "[base] debootstrap $SUITE from $MIRROR (about a minute)" >&2
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  # what a container does not need: the downloaded packages and the package lists (a build
  # that installs more runs apt-get update first)
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*
  # the mirror apt used here, so RUN apt-get in the images reaches the same one
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s-security %s-security main\n' \
    "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" >"$rootfs/etc/apt/sources.list"
  tar -C "$rootfs" -c . | $DOCKER import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    -c 'CMD ["/bin/bash"]' - "$tag" >/dev/null
  echo "[base] $tag imported" >&2
fi
$DOCKER tag "$tag" "aerial/$SUITE:base"
echo "$tag"
