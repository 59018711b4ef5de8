"""Side-by-side training throughput: this project vs HF ``Trainer`` and TRL ``SFTTrainer``, each as
shipped ("defaults") and tuned.

    .venv/bin/python -m benchmarks.throughput --data benchmarks/data/chat_mixed.jsonl \\
        --model models/SmolLM2-135M-Instruct --repeats 3 --out benchmarks/results.json

On a CUDA GPU (the exact command; a Qwen2-0.5B-shaped model with random weights is built from its
config, the embedded model's tokenizer and the benchmark data are the defaults; about 2 minutes on an
H200, printing the table with tokens/s, MFU against the given peak and peak GPU memory of ours with
and without gradient checkpointing, and of hf_tuned):

    .venv/bin/python -m benchmarks.throughput --device cuda --peak-tflops 790 --out throughput-h200.json

One invocation runs the machine's matmul rate and then each contender (see
``benchmarks/contenders.py``) in its own process, so peak memory is per contender and no trainer
inherits another's allocator or thread state. All train the same LoRA adapter on the same examples
in the same order for the same steps. Reported per contender:

* real tokens/s: non-padding tokens of steps 2..N over their wall time (step 1 is warm-up);
* loss after the same tokens: the loss logged at the last step, and the mean over all steps;
* peak RSS of the contender's process, setup and tokenization seconds (outside the timed window);
* estimated MFU: real tokens/s x ``4 * params`` FLOPs per token (forward 2N, backward through the
  frozen weights 2N; LoRA's own FLOPs and attention are left out) over the measured matmul rate
  of the faster of bf16 and fp32 (bf16 where the device runs it natively; a CPU without
  AVX512-BF16 or AMX emulates it and runs fp32 faster, as ours and the tuned peers then do), or
  over ``--peak-tflops`` when given (a GPU's datasheet bf16 peak);
* peak GPU memory (on a GPU), so ``ours`` against ``ours_gc`` shows what checkpointing saves;
* ratios ours / peer of real tokens/s, and ours / the fastest tuned peer.

``--shape`` builds a model with random weights from a named config (``qwen2-0.5b``, or ``tiny`` for
a quick check) with the tokenizer of ``--tokenizer``, instead of ``--model``: speed and memory need
no trained weights. ``--device cuda`` defaults to ``--shape qwen2-0.5b`` and the GPU-sized
``--batch-size 16 --steps 30``; ``--device cpu`` hides any GPU from the contenders.

With ``--repeats N`` all contenders run N times, interleaved, and the fastest round of each is
reported (with every round's figure in the JSON): on a machine shared with other work, other
processes only ever slow a run down. ``--wait-idle S`` also waits (up to S seconds) before each
contender until other processes leave the CPU idle (under 10% busy over a second).

The TRL contenders need TRL (``pip install -e '.[bench]'``); without it they are skipped with that
advice. The default contenders on CPU take about 6 minutes a round on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONTENDERS = ("ours", "hf_tuned", "trl_tuned", "hf", "trl", "ours_gc", "ours_budget", "ours_all_logits")
DEFAULT_CONTENDERS = {"cpu": ("ours", "hf_tuned", "trl_tuned", "hf", "trl"), "cuda": ("ours", "ours_gc", "hf_tuned")}
TUNED_PEERS = ("hf_tuned", "trl_tuned")
TRL_CONTENDERS = ("trl", "trl_tuned")
MATMUL = "matmul"
FLOPS_PER_PARAM_TOKEN = 4
DEFAULT_DATA = REPO / "benchmarks" / "data" / "chat_mixed.jsonl"
DEFAULT_TOKENIZER = REPO / "models" / "SmolLM2-135M-Instruct"
SHAPES: dict[str, dict[str, Any]] = {
    # Qwen/Qwen2-0.5B's config.json: 494 M parameters with the embedding tied to lm_head.
    "qwen2-0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
                   "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
                   "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 0, "max_position_embeddings": 2048, "tie_word_embeddings": True},
}
"""Model shapes ``--shape`` builds (Qwen2 architecture); vocab_size 0 takes the tokenizer's."""
GPU_DEFAULTS = {"batch_size": 16, "steps": 30}
CPU_DEFAULTS = {"batch_size": 4, "steps": 10}


def cpu_busy_fraction(seconds: float = 1.0) -> float:
    """Share of all CPU time spent busy over ``seconds`` (from ``/proc/stat``; 0 where absent)."""
    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)

    if not Path("/proc/stat").exists():
        return 0.0
    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0)


def wait_until_idle(limit_s: float, busy_below: float = 0.1) -> float:
    """Wait up to ``limit_s`` for the CPU to be idle (other processes' work); return the last share."""
    deadline = time.monotonic() + limit_s
    busy = cpu_busy_fraction()
    while busy >= busy_below and time.monotonic() < deadline:
        busy = cpu_busy_fraction()
    return busy


def _run(name: str, spec_file: Path, idle_wait_s: float = 0.0, device: str = "cpu") -> dict[str, Any]:
    """Run one contender (or the matmul rate, :data:`MATMUL`) in its own process; read its JSON.

    With ``idle_wait_s``, first wait up to that long for other processes to leave the CPU idle.
    On ``device="cpu"`` the process sees no GPU.
    """
    out = spec_file.parent / f"{name}.json"
    busy_before = round(wait_until_idle(idle_wait_s), 3) if idle_wait_s else None
    module = ["benchmarks.matmul_rate"] if name == MATMUL else ["benchmarks.contenders", name, str(spec_file)]
    load_before = round(os.getloadavg()[0], 2)
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {})}
    subprocess.run([sys.executable, "-m", *module, str(out)], cwd=REPO, check=True, env=env)
    return {**json.loads(out.read_text()), "load_before": load_before, "cpu_busy_before": busy_before}


def best_of(rounds: list[dict[str, dict[str, Any]]], name: str, key: str) -> dict[str, Any]:
    """The round where ``name`` scored the highest ``key``, with every round's score attached.

    Other processes on a shared machine only ever slow a run down, so the fastest of interleaved
    rounds is the closest to what each trainer does on its own.
    """
    records = [r[name] for r in rounds]
    best = dict(max(records, key=lambda record: record.get(key) or 0.0))
    best[f"{key}_rounds"] = [record.get(key) for record in records]
    return best


def _param_count(model: str) -> int:
    """Parameters stored in the model dir's safetensors files (tied embeddings counted once)."""
    from safetensors import safe_open

    total = 0
    for path in Path(model).glob("*.safetensors"):
        with safe_open(str(path), "pt") as handle:
            for key in handle.keys():
                shape = handle.get_slice(key).get_shape()
                total += math.prod(shape)
    return total


def _machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    ) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def add_ratios(results: dict[str, dict[str, Any]], peak_gflops: float, params: int) -> dict[str, Any]:
    """Add MFU (against ``peak_gflops``), ratios and loss differences against ``ours``, in place.

    Returns ``ours`` against the fastest tuned peer that ran: its name, the speed ratio, and the
    relative difference of the final loss from ``hf_tuned``'s (empty without ``ours`` or a tuned peer).
    """
    flops_per_token = FLOPS_PER_PARAM_TOKEN * params
    ours = results.get("ours")
    for record in results.values():
        tok_s = record.get("real_tok_s") or 0.0
        record["mfu"] = round(tok_s * flops_per_token / (peak_gflops * 1e9), 4)
        if ours and record is not ours and tok_s:
            record["ours_speedup"] = round((ours["real_tok_s"] or 0.0) / tok_s, 2)
            record["ours_final_loss_diff"] = _relative(ours["final_loss"], record["final_loss"])
            record["ours_mean_loss_diff"] = _relative(ours["mean_loss"], record["mean_loss"])
            record["ours_peak_rss_ratio"] = round(ours["peak_rss_mb"] / record["peak_rss_mb"], 2)
    tuned = [results[name] for name in TUNED_PEERS if results.get(name, {}).get("real_tok_s")]
    if not ours or not tuned:
        return {}
    best = max(tuned, key=lambda record: record["real_tok_s"])
    return {
        "best_tuned_peer": best["name"], "ours_speedup": best["ours_speedup"],
        "ours_final_loss_diff_vs_hf_tuned": results.get("hf_tuned", {}).get("ours_final_loss_diff"),
    }


def _relative(ours: float | None, peer: float | None) -> float | None:
    return round((ours - peer) / peer, 4) if ours is not None and peer else None


def settings(record: dict[str, Any]) -> str:
    """What a contender ran with, as the table states it."""
    kind = "tuned" if record["name"] in TUNED_PEERS else "defaults" if record["name"] in ("hf", "trl") else "ours"
    return (f"{kind}: {record['precision']}, {record['attention']}, {record['batching']}, "
            f"grad ckpt {'on' if record['gradient_checkpointing'] else 'off'}")


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A fixed-width table of the headline numbers, one row per contender."""
    header = (f"{'trainer':<15} {'real tok/s':>10} {'ours/x':>7} {'wall s':>7} {'final loss':>10} "
              f"{'mean loss':>9} {'peak RSS MB':>11} {'peak GPU MB':>11} {'MFU':>6}  settings")
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        speed = f"{r['ours_speedup']:.2f}" if "ours_speedup" in r else "-"
        gpu = f"{r['peak_gpu_mb']:.0f}" if r.get("peak_gpu_mb") else "-"
        lines.append(
            f"{name:<15} {r['real_tok_s'] or 0:>10.1f} {speed:>7} {r['wall_s']:>7.1f} "
            f"{r['final_loss'] or float('nan'):>10.4f} {r['mean_loss'] or float('nan'):>9.4f} "
            f"{r['peak_rss_mb']:>11.0f} {gpu:>11} {r['mfu']:>6.1%}  {settings(r)}"
        )
    return "\n".join(lines)


def build_model_dir(shape: str, tokenizer_dir: Path, out: Path, seed: int = 0) -> Path:
    """Save a Qwen2 model of ``shape`` (see :data:`SHAPES`) with random bf16 weights and the tokenizer
    of ``tokenizer_dir`` into ``out``."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    dims = dict(SHAPES[shape])
    dims["vocab_size"] = max(dims["vocab_size"], len(tokenizer))
    torch.manual_seed(seed)
    config = Qwen2Config(**dims, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # a GPU initialises 0.5 B weights in a blink
        Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the contenders, not this process, should hold the GPU's memory
    tokenizer.save_pretrained(out)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring), with the device's defaults filled in."""
    parser = argparse.ArgumentParser(description="Throughput of this trainer vs HF Trainer and TRL.")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="chat JSONL (system/user/assistant rows)")
    parser.add_argument("--model", type=Path, help="model directory (default on cpu: the embedded model)")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="build a random-weight model of this shape instead")
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="tokenizer of a --shape model")
    parser.add_argument("--steps", type=int, help="optimizer steps per contender, step 1 untimed (cpu 10, cuda 30)")
    parser.add_argument("--batch-size", type=int, help="examples per step (cpu 4, cuda 16)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lora-dropout", type=float, help="lora.dropout for every contender (default: config's)")
    parser.add_argument("--token-budget", type=int, default=2048, help="max_tokens_per_batch of ours_budget")
    parser.add_argument("--only", nargs="+", choices=CONTENDERS,
                        help="contenders to run (cpu: ours hf_tuned trl_tuned hf trl; cuda: ours ours_gc hf_tuned)")
    parser.add_argument("--peak-tflops", type=float, help="bf16 peak of the device for the MFU (else the measured rate)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of all contenders, interleaved; the fastest round of each is reported")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each contender, wait up to this long for the CPU to be idle")
    parser.add_argument("--out", type=Path, help="write the full results as JSON here")
    args = parser.parse_args(argv)
    defaults = GPU_DEFAULTS if args.device == "cuda" else CPU_DEFAULTS
    args.steps = args.steps or defaults["steps"]
    args.batch_size = args.batch_size or defaults["batch_size"]
    args.only = args.only or list(DEFAULT_CONTENDERS[args.device])
    if args.model is None and args.shape is None:
        if args.device == "cuda":
            args.shape = "qwen2-0.5b"
        else:
            args.model = DEFAULT_TOKENIZER
    if args.model is not None and args.shape is not None:
        parser.error("give --model or --shape, not both")
    return args


def runnable(names: list[str], device: str) -> list[str]:
    """``names`` less the TRL contenders when TRL is not installed (saying so).

    Raises:
        SystemExit: ``device`` is cuda and there is no CUDA GPU.
    """
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA GPU is visible to torch; run on a GPU machine or use --device cpu")
    if importlib.util.find_spec("trl") is None and any(name in TRL_CONTENDERS for name in names):
        print("TRL is not installed, so trl and trl_tuned are skipped: pip install -e '.[bench]'", flush=True)
        return [name for name in names if name not in TRL_CONTENDERS]
    return names


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write the JSON; return the report."""
    args = parse_args(argv)
    names = runnable(args.only, args.device)
    machine = _machine()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        tmp_path = Path(tmp)
        model = args.model or build_model_dir(args.shape, args.tokenizer, tmp_path / f"model-{args.shape}")
        spec = {
            "data": str(args.data.resolve()), "model": str(Path(model).resolve()), "steps": args.steps,
            "batch_size": args.batch_size, "max_length": args.max_length, "seed": args.seed,
            "token_budget": args.token_budget, "device": args.device, "shape": args.shape,
            "lora_dropout": args.lora_dropout,
        }
        spec_file = tmp_path / "spec.json"
        spec_file.write_text(json.dumps(spec))
        rounds = [
            {name: _run(name, spec_file, args.wait_idle, args.device) for name in [MATMUL, *names]}
            for _ in range(args.repeats)
        ]
        params = _param_count(spec["model"])
    rates = best_of(rounds, MATMUL, "bf16_gflops")
    ceiling = "datasheet" if args.peak_tflops else max(("bf16", "fp32"), key=lambda p: rates[f"{p}_gflops"])
    peak_gflops = args.peak_tflops * 1000 if args.peak_tflops else rates[f"{ceiling}_gflops"]
    results = {name: best_of(rounds, name, "real_tok_s") for name in names}
    headline = add_ratios(results, peak_gflops, params)
    report = {
        "spec": spec, "machine": {**machine, "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "matmul": rates, "peak_gflops_for_mfu": peak_gflops, "mfu_against": ceiling, "params": params,
        "flops_per_token": FLOPS_PER_PARAM_TOKEN * params,
        "ceiling_tok_s": round(peak_gflops * 1e9 / (FLOPS_PER_PARAM_TOKEN * params), 1),
        "against_tuned_peers": headline, "results": results,
    }
    print(f"\n{rates['device']}; {machine['cpu']}, {machine['cores']} cores, load average {machine['load_average']} "
          f"at start, {report['machine']['load_average_end']} at end")
    print(f"model {args.shape or spec['model']}: {params} parameters; batch {args.batch_size}, {args.steps} steps, "
          f"max_length {args.max_length}, best of {args.repeats} round(s)")
    print(f"matmul bf16 {rates['bf16_gflops']} GFLOP/s, fp32 {rates['fp32_gflops']} GFLOP/s; MFU against "
          f"{peak_gflops:.0f} GFLOP/s ({ceiling}): ceiling {report['ceiling_tok_s']} tok/s at "
          f"{FLOPS_PER_PARAM_TOKEN} x {params} FLOPs/token\n")
    print(format_table(results))
    if headline:
        print(f"\nours / fastest tuned peer ({headline['best_tuned_peer']}): {headline['ours_speedup']:.2f}x; "
              f"final loss vs hf_tuned: {headline['ours_final_loss_diff_vs_hf_tuned']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
