#!/usr/bin/env bash
# Set up (see setup.sh), then fine-tune the embedded model on samples/chat.jsonl in the base dir demo/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

mkdir -p demo
[[ -f demo/config.json ]] || cp config.json config.schema.json demo/
# base_model "models/..." resolves against demo/; share the model prepared in the repo root.
[[ -e demo/models ]] || ln -s ../models demo/models
cp samples/chat.jsonl demo/chat.jsonl

.venv/bin/trainctl train demo/chat.jsonl --base-dir demo
