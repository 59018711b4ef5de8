#!/usr/bin/env bash
# Warm training child on a GPU machine: time from a file being stable to its first optimizer step,
# cold child against warm child, on the embedded SmolLM2-135M (docs/performance.md, "Warm training
# child"). On CUDA the standby warms up on the GPU (one layer of the configured model: the CUDA
# context, cuBLAS, the attention kernel, the fused optimizer), so while it waits it holds the CUDA
# context's memory (nvidia-smi at the end shows how much); until the tenth session it warmed up on
# the CPU only and the file's first step paid for all of that.
#
# Runs: benchmarks/daemon_overhead.py --rounds 2 (two cold and two warm rounds, alternating, each a
# 2-step run of a 16-row file), then prints nvidia-smi's view. Not timed on a GPU yet: give it 10 minutes.
# Prints one JSON line per round (pieces in seconds), then the medians, and writes
# $OUT/daemon-overhead-gpu.json (or ./daemon-overhead-gpu.json without $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}/daemon-overhead-gpu.json"
uptime
.venv/bin/python benchmarks/daemon_overhead.py --data benchmarks/data/chat_mixed.jsonl \
    --model models/SmolLM2-135M-Instruct --rounds 2 --out "$out"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv || true
