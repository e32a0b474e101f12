#!/usr/bin/env bash
# make reliability: every fault, load and bad-input test against real servers (the slow ones
# included: the 60,800-tile load test takes about half an hour here), then RELIABILITY.md
# from the counts they recorded in target/reliability/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=target/reliability
rm -rf "$OUT"
set +e
bash scripts/with-test-servers.sh cargo test -p aerial-tests \
  --test faults --test bad_input --test score_service --test finetune_resume \
  -- --include-ignored --test-threads=1 2>&1 | tee target/reliability.log
rc=${PIPESTATUS[0]}
set -e
python3 scripts/reliability_report.py "$OUT" "$rc" > RELIABILITY.md
echo "RELIABILITY.md rewritten from $(ls "$OUT" | wc -l) scenarios (tests exit code $rc)"
exit "$rc"
