#!/usr/bin/env bash
# The GPU checks, run in one go on a lent accelerator machine (an H200 here) that has CUDA PyTorch
# but not this project's other dependencies, nor a network. What each step records lands in $OUT
# (default: ./device-out). Run from the repo root:
#
#     bash benchmarks/device_check.sh                       # every step, about 9 minutes on an H200
#     bash benchmarks/device_check.sh daemon fsdp speed     # only these steps
#
# Needs, beside the checkout: .whl/ (wheels of the pure-Python dependencies, for Python 3.12) and
# .devmodel/ (config.json and tokenizer files of SmolLM2-135M-Instruct, no weights: the weights are
# random here, which is all a speed or memory figure needs; quality figures are never taken here).
#
# Steps, each with its own time limit so that one failure leaves the others' results:
#   1. env      - GPU, driver, torch and library versions
#   2. daemon   - `trainctl daemon --once` on the default config (LoRA, bf16 auto, SDPA): the
#                 product's everyday path on a GPU, end to end
#   4. fsdp     - benchmarks/gpu_fsdp.py: FSDP full fine-tune and LoRA through the daemon, stop + resume
#   3. speed    - benchmarks/throughput.py --device cuda: tokens/s, MFU and peak memory of a ~0.5B
#                 model, with and without gradient checkpointing
#   5. warm     - benchmarks/daemon_overhead.py: file stable -> first optimizer step, cold vs warm child
#   6. http     - benchmarks/http_load.py: 50 readers of the HTTP API while a file trains
set -uo pipefail

OUT=${OUT:-$PWD/device-out}  # only results.tar.gz and summary.log are written there (few files come back)
export RES=/tmp/device-results
mkdir -p "$OUT" "$RES"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=$(command -v python3)

WANTED=" ${*:-env daemon fsdp speed warm http} "

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $RES/NAME.log, never stop the script
    local name=$1 limit=$2; shift 2
    [[ $WANTED == *" $name "* ]] || return 0
    echo "=== $name (limit ${limit}s) $(date -u +%T)"
    local t0=$SECONDS
    timeout --signal=TERM --kill-after=15 "$limit" "$@" >"$RES/$name.log" 2>&1
    local rc=$?
    echo "=== $name rc=$rc in $((SECONDS - t0))s"
    tail -n 25 "$RES/$name.log"
    { echo "=== $name rc=$rc in $((SECONDS - t0))s"; tail -n 60 "$RES/$name.log"; } >>"$OUT/summary.log"
    tar czf "$OUT/results.tar.gz" -C "$RES" .  # after every step: a later time-out keeps what is done
}

# Dependencies: the wheels into a private folder, this checkout on the path.
if [[ -d .whl && ! -d /tmp/site ]]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed"; exit 1; }
fi
[[ -d /tmp/site ]] && export PYTHONPATH=/tmp/site:$PWD

# A .venv/bin that the scripts and the daemon find (they call .venv/bin/python and .../trainctl), and a
# trainctl beside the interpreter (the benchmarks look for it there). Never over a real environment.
if [[ ! -e .venv/bin/python ]]; then
    mkdir -p .venv/bin
    printf '#!/bin/sh\nexec %s "$@"\n' "$PY" >.venv/bin/python
    for dir in .venv/bin "$(dirname "$("$PY" -c 'import sys; print(sys.executable)')")"; do
        printf '#!/bin/sh\nexec %s -m core.cli "$@"\n' "$PY" >"$dir/trainctl"
        chmod +x .venv/bin/python "$dir/trainctl"
    done
fi

# The embedded model's architecture with random weights, where the default base_model looks.
[[ -e models/SmolLM2-135M-Instruct/model.safetensors ]] || "$PY" - <<'PYEOF' || { echo "model build failed"; exit 1; }
import shutil, torch
from pathlib import Path
from transformers import AutoConfig, AutoModelForCausalLM
src, dst = Path(".devmodel"), Path("models/SmolLM2-135M-Instruct")
dst.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src), dtype=torch.bfloat16)
model.save_pretrained(dst)
for f in src.iterdir():
    if f.name != "config.json":
        shutil.copy(f, dst / f.name)
print("random-weight model at", dst)
PYEOF

step env 30 bash -c 'nvidia-smi; python3 -c "
import torch, transformers, peft, accelerate, datasets, pydantic
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name(0))
for m in (transformers, peft, accelerate, datasets, pydantic): print(m.__name__, m.__version__)
try:
    import flash_attn; print(\"flash_attn\", flash_attn.__version__)
except ImportError: print(\"flash_attn not installed\")
"'

step daemon 75 bash -c '
    set -e; B=/tmp/gpu-daemon; rm -rf $B; .venv/bin/trainctl init $B
    cp samples/*.jsonl $B/inbox/
    .venv/bin/trainctl daemon --base-dir $B --once || echo "daemon --once exit $?"
    .venv/bin/trainctl snapshots list --base-dir $B
    .venv/bin/trainctl status --base-dir $B
    cp $B/queue/done/*.report.json $RES/ 2>/dev/null || true
    grep -h -i -E "bf16|flash|sdpa|attention|device|cuda|precision" $B/logs/*.log | head -20
    python3 -c "import torch; print(\"child sees cuda:\", torch.cuda.is_available())"'

step speed 130 .venv/bin/python -m benchmarks.throughput --device cuda --peak-tflops 790 --steps 20 \
    --only ours ours_gc hf_tuned --out "$RES/throughput-h200.json"

step fsdp 190 .venv/bin/python benchmarks/gpu_fsdp.py --out "$RES/fsdp" --budget-seconds 165

step warm 100 .venv/bin/python benchmarks/daemon_overhead.py --data benchmarks/data/chat_mixed.jsonl \
    --model models/SmolLM2-135M-Instruct --rounds 2 --out "$RES/daemon-overhead-h200.json"

step http 90 .venv/bin/python -m benchmarks.http_load --model models/SmolLM2-135M-Instruct \
    --data benchmarks/data/chat_mixed.jsonl --rows 240 --steps 60 --batch-size 4 --max-length 256 \
    --kinds plain,loaded --rounds 2 --out "$RES/http_load-h200.json"

echo "done $(date -u +%T)"
