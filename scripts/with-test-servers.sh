#!/usr/bin/env bash
# Runs a command with a private RabbitMQ + SeaweedFS pair on free loopback ports, exported to
# it as AERIAL_TEST_ENV, and stops both afterwards, on failure or interrupt too.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=$(mktemp -d "${TMPDIR:-/tmp}/aerial-test-XXXXXX")
cleanup() { "$ROOT/scripts/servers.sh" down "$STATE" >/dev/null 2>&1 || true; rm -rf "$STATE"; }
trap cleanup EXIT INT TERM
"$ROOT/scripts/servers.sh" up "$STATE" free
export AERIAL_TEST_ENV=$STATE/env
"$@"
