#!/usr/bin/env bash
# Set up (see setup.sh), then let the daemon train the embedded model on every sample file:
# samples/*.jsonl -> demo/inbox/ -> one snapshot per file -> demo/current_model.
# Running it again shows exactly-once training: the same files are filed as duplicates.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
trainctl=.venv/bin/trainctl

"$trainctl" init demo
# base_model "models/..." resolves against demo/; share the model prepared in the repo root.
[[ -e demo/models ]] || ln -s ../models demo/models
cp samples/*.jsonl demo/inbox/

"$trainctl" daemon --base-dir demo --once

echo
echo "current model: $(readlink -f demo/current_model)"
echo "trained files: demo/queue/done/ (each with NAME.report.json)"
echo "failed files:  demo/queue/failed/ ($(find demo/queue/failed -name '*.jsonl' | wc -l) files)"
echo
"$trainctl" snapshots list --base-dir demo
echo
"$trainctl" status --base-dir demo
