#!/usr/bin/env bash
# Set up (see setup.sh), then let the daemon train the embedded model on every sample file:
# samples/*.jsonl -> demo/inbox/ -> one snapshot per file -> demo/current_model.
# Running it again shows exactly-once training: the same files are filed as duplicates.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
trainctl=.venv/bin/trainctl

# The default base_model names the embedded model that setup.sh prepared in the models home, shared
# by every base dir: demo/ needs no copy of its own.
"$trainctl" init demo
cp samples/*.jsonl demo/inbox/
failed_before=$(find demo/queue/failed -name '*.jsonl' | wc -l)

# --once ends with a count line (trained, duplicate, invalid, failed) and exits 1 if a file failed.
"$trainctl" daemon --base-dir demo --once || true

echo
echo "current model: $(readlink -f demo/current_model)"
echo "trained files: demo/queue/done/ (each with NAME.report.json)"
echo "failed files:  demo/queue/failed/ ($(find demo/queue/failed -name '*.jsonl' | wc -l) files)"
echo
"$trainctl" snapshots list --base-dir demo
echo
"$trainctl" status --base-dir demo

failed=$(( $(find demo/queue/failed -name '*.jsonl' | wc -l) - failed_before ))
if (( failed > 0 )); then
    echo "demo: $failed sample file(s) failed; see demo/queue/failed/*.report.json and demo/logs/" >&2
    exit 1
fi
