"""FSDP through the daemon on one GPU: does a ~0.7B model train, promote, stop and resume, and how much memory.

    .venv/bin/python benchmarks/gpu_fsdp.py --out /tmp/gpu_fsdp          # on a CUDA machine (H200)
    .venv/bin/python benchmarks/gpu_fsdp.py --out /tmp/gpu_fsdp --dry-run  # on CPU: same steps, tiny model

What it runs (each scenario on a fresh base dir under ``--work``, default a temp dir):

1. builds a Llama-shaped model with random weights from ``LlamaConfig`` (24 layers, hidden 1536,
   MLP 4096, 16 heads / 4 KV heads, tied embeddings: about 0.67B parameters, saved in bf16) with
   the tokenizer of ``models/SmolLM2-135M-Instruct`` (offline), and a generated chat JSONL file;
2. ``full_fsdp_1``: full fine-tune, ``distributed: {nproc_per_node: 1, strategy: fsdp}``: drops the
   file in the inbox, runs ``trainctl daemon --once``;
3. ``full_fsdp_stop_resume``: the same, but ``trainctl daemon`` (not ``--once``) gets SIGTERM once
   the first checkpoint is announced, then ``trainctl daemon --once`` resumes from the (sharded)
   checkpoint and promotes;
4. ``lora_fsdp_auto``: as 2 with ``method: lora`` and ``nproc_per_node: "auto"``.

The promotion gate and the HTTP server are off (random weights; the point is the mechanics). A thread samples
``nvidia-smi`` every 0.25 s: the peak memory used per GPU and per process (``--query-compute-apps``)
of each scenario. ``--dry-run`` runs the same scenarios on CPU with a tiny model of the same shape
family, ``strategy: ddp`` and 2 processes (gloo), so that the script is exercised without a GPU.

It prints, and writes to ``OUT/results.json``: per scenario whether it trained, promoted and (4)
stopped mid-run and resumed, the steps, the checkpoint's files, the peak memory, the wall time of
each daemon command; the log of this script is ``OUT/gpu_fsdp.log`` and each scenario's daemon log
and events are copied to ``OUT/<scenario>/``. Everything runs within ``--budget-seconds`` (default
225: under 4 minutes with the shutdown grace): each daemon command gets the time left, a scenario
with under 30 s left is skipped and recorded so. Not yet run on a GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from core.state.layout import BaseDir, init_base_dir

logger = logging.getLogger("gpu_fsdp")

REPO = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = REPO / "models" / "SmolLM2-135M-Instruct"
TRAINCTL = str(Path(sys.executable).with_name("trainctl"))
SAMPLE_SECONDS = 0.25
SHAPES = {  # LlamaConfig keyword arguments
    "gpu": {"hidden_size": 1536, "intermediate_size": 4096, "num_hidden_layers": 24,
            "num_attention_heads": 16, "num_key_value_heads": 4},
    "dry": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2},
}


@dataclass(frozen=True)
class Scenario:
    name: str
    method: str
    nproc: int | str
    stop_and_resume: bool = False


SCENARIOS = [  # the most telling first: a short budget skips the last
    Scenario("full_fsdp_1", "full", 1),
    Scenario("full_fsdp_stop_resume", "full", 1, stop_and_resume=True),
    Scenario("lora_fsdp_auto", "lora", "auto"),
]


class GpuMemorySampler(threading.Thread):
    """Peak ``memory.used`` per GPU and per process (MiB) from ``nvidia-smi``, sampled in a thread."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.per_gpu: dict[str, int] = {}
        self.per_pid: dict[str, int] = {}
        self.available = shutil.which("nvidia-smi") is not None
        self._done = threading.Event()

    def _query(self, what: str) -> list[list[str]]:
        done = subprocess.run(["nvidia-smi", f"--query-{what}", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=10)
        return [[cell.strip() for cell in line.split(",")] for line in done.stdout.splitlines() if line.strip()]

    def run(self) -> None:
        while self.available and not self._done.wait(SAMPLE_SECONDS):
            for index, used in self._query("gpu=index,memory.used"):
                self.per_gpu[index] = max(self.per_gpu.get(index, 0), int(used))
            for pid, used in self._query("compute-apps=pid,used_memory"):
                if used.isdigit():
                    self.per_pid[pid] = max(self.per_pid.get(pid, 0), int(used))

    def stop(self) -> dict[str, Any]:
        self._done.set()
        self.join(timeout=15)
        if not self.available:
            return {"nvidia_smi": "not found"}
        return {"peak_mib_per_gpu": self.per_gpu, "peak_mib_per_process": self.per_pid}


def build_model(target: Path, shape: dict[str, int]) -> dict[str, Any]:
    """A Llama-shaped model with random weights and SmolLM2's tokenizer, saved in bf16 to ``target``."""
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **shape,
    )
    model = LlamaForCausalLM(config)  # on CPU: no CUDA context in this process to blur nvidia-smi's figures
    model.to(torch.bfloat16).save_pretrained(target)
    tokenizer.save_pretrained(target)
    parameters = sum(p.numel() for p in model.parameters())
    return {"parameters": parameters, "shape": shape, "seconds": round(time.monotonic() - started, 1)}


def chat_rows(count: int) -> list[dict]:
    """Generated chats of about 150 tokens each (arithmetic questions with worked answers)."""
    rows = []
    for i in range(count):
        a, b = 17 + i, 3 + i % 11
        answer = " ".join(f"Step {k}: {a} plus {b * k} is {a + b * k}." for k in range(1, 6))
        rows.append({"messages": [
            {"role": "user", "content": f"Question {i}: add {b} to {a} five times and show each step."},
            {"role": "assistant", "content": f"{answer} The result is {a + 5 * b}."},
        ]})
    return rows


def scenario_config(model_dir: Path, scenario: Scenario, dry_run: bool) -> dict[str, Any]:
    """config.json of a scenario: FSDP on the GPU, DDP on 2 CPU processes for ``--dry-run``."""
    return {
        "base_model": str(model_dir),
        "method": scenario.method,
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "hyperparams": {
            "max_length": 512, "batch_size": 4, "learning_rate": 1e-4 if scenario.method == "full" else 2e-4,
            "max_steps": 40 if scenario.stop_and_resume else 20, "warmup_ratio": 0.0,
            "lr_scheduler": "constant", "seed": 0, **({"fp_precision": "fp32"} if dry_run else {}),
        },
        "checkpoint": {"save_steps": 10, "keep_last": 2, "log_steps": 5},
        "daemon": {"stable_seconds": 0.0, "rescan_seconds": 1.0, "stop_timeout_seconds": 120.0},
        "gate": {"enabled": False},
        "http": {"enabled": False},
        "distributed": {"nproc_per_node": 2 if dry_run else scenario.nproc, "strategy": "ddp" if dry_run else "fsdp"},
    }


def events(layout: BaseDir) -> list[dict]:
    if not layout.events_file.exists():
        return []
    return [json.loads(line) for line in layout.events_file.read_text().splitlines() if line.strip()]


def daemon(layout: BaseDir, log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "TB_AUTO": "0", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with log.open("a") as out:
        return subprocess.Popen([TRAINCTL, "daemon", "--base-dir", str(layout.root), *extra],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def wait(process: subprocess.Popen, timeout: float) -> int | str:
    """The daemon's exit code; past ``timeout`` it gets SIGTERM (checkpoint and stop), 20 s later SIGKILL."""
    try:
        return process.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return f"timed out after {timeout:.0f} s"


def stop_after_first_checkpoint(layout: BaseDir, log: Path, timeout: float) -> dict[str, Any]:
    """``trainctl daemon`` until the first checkpoint is announced, then SIGTERM; how it ended."""
    started = time.monotonic()
    process = daemon(layout, log)
    while time.monotonic() - started < timeout and process.poll() is None:
        if any(e["type"] == "checkpoint_saved" for e in events(layout)):
            process.send_signal(signal.SIGTERM)
            break
        time.sleep(0.1)
    code = wait(process, max(1.0, timeout - (time.monotonic() - started)))
    saved = [e.get("step") for e in events(layout) if e["type"] == "checkpoint_saved"]
    return {"exit_code": code, "wall_seconds": round(time.monotonic() - started, 1), "checkpoint_steps": saved,
            "stopped_mid_run": not any(e["type"] == "training_completed" for e in events(layout))}


def checkpoint_files(layout: BaseDir) -> dict[str, list[str]]:
    """Top-level names in each checkpoint left in the work folders (sharded FSDP: ``pytorch_model_fsdp_0``)."""
    return {str(c.relative_to(layout.root)): sorted(p.name for p in c.iterdir())
            for c in sorted(layout.processing.glob("*.work/checkpoints/checkpoint-*"))}


def outcome(layout: BaseDir) -> dict[str, Any]:
    """What the base dir's events and reports say: trained, promoted, resumed, steps."""
    seen = events(layout)
    started = [e for e in seen if e["type"] == "training_started"]
    reports = [json.loads(p.read_text()) for p in layout.done.glob("*.report.json")]
    return {
        "trained": any(e["type"] == "training_completed" for e in seen),
        "promoted": any(e["type"] == "snapshot_promoted" for e in seen),
        "resumed_from": next((e.get("resume_from") for e in started if e.get("resume_from")), None),
        "steps": reports[0].get("training", {}).get("steps") if reports else None,
        "failed": [e for e in seen if e["type"] in ("file_failed", "validation_failed")],
    }


def run_scenario(scenario: Scenario, model_dir: Path, data: list[dict], work: Path, out: Path,
                 dry_run: bool, deadline: float) -> dict[str, Any]:
    """One scenario on a fresh base dir; its daemon commands end by ``deadline`` (``time.monotonic``)."""
    layout = init_base_dir(work / scenario.name)
    layout.config_file.write_text(json.dumps(scenario_config(model_dir, scenario, dry_run), indent=2))
    inbox_file = layout.inbox / "bench.jsonl"
    inbox_file.write_text("".join(json.dumps(row) + "\n" for row in data))
    (out / scenario.name).mkdir(parents=True, exist_ok=True)
    log = out / scenario.name / "daemon.stdout.log"
    sampler = GpuMemorySampler()
    sampler.start()
    started = time.monotonic()
    result: dict[str, Any] = {"config": scenario_config(model_dir, scenario, dry_run)["distributed"],
                              "method": scenario.method}
    if scenario.stop_and_resume:
        result["stop"] = stop_after_first_checkpoint(layout, log, (deadline - time.monotonic()) / 2)
        result["checkpoints_after_stop"] = checkpoint_files(layout)
    once_started = time.monotonic()
    result["daemon_once_exit_code"] = wait(daemon(layout, log, "--once"), deadline - time.monotonic())
    result["daemon_once_wall_seconds"] = round(time.monotonic() - once_started, 1)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    result["gpu_memory"] = sampler.stop()
    result.update(outcome(layout))
    for name in (layout.logs / "daemon.log", layout.events_file):
        if name.exists():
            shutil.copy(name, out / scenario.name / name.name)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json, the log and daemon logs")
    parser.add_argument("--work", type=Path, help="folder for the model and base dirs (default: a temp dir)")
    parser.add_argument("--dry-run", action="store_true", help="CPU: tiny model, strategy ddp, 2 processes (gloo)")
    parser.add_argument("--only", nargs="+", choices=[s.name for s in SCENARIOS], help="run only these scenarios")
    parser.add_argument("--rows", type=int, default=256, help="rows of the generated training file")
    parser.add_argument("--budget-seconds", type=float, default=225.0,
                        help="every daemon command ends by then (SIGTERM, then SIGKILL 20 s later)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "gpu_fsdp.log")])
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: FSDP needs one; use --dry-run to check the script on CPU")
    began = time.monotonic()
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_fsdp-"))
    gpus = GpuMemorySampler()._query("gpu=name,memory.total") if shutil.which("nvidia-smi") else []
    results: dict[str, Any] = {"dry_run": args.dry_run, "torch": torch.__version__, "gpus": gpus,
                               "load_average": os.getloadavg(), "scenarios": {}}
    results["model"] = build_model(work / "model", SHAPES["dry" if args.dry_run else "gpu"])
    logger.info("model: %s", results["model"])
    data = chat_rows(args.rows)
    for scenario in SCENARIOS:
        if args.only and scenario.name not in args.only:
            continue
        if began + args.budget_seconds - time.monotonic() < 30:
            results["scenarios"][scenario.name] = {"skipped": f"under 30 s left of --budget-seconds {args.budget_seconds}"}
            continue
        logger.info("scenario %s", scenario.name)
        results["scenarios"][scenario.name] = run_scenario(
            scenario, work / "model", data, work, args.out, args.dry_run, began + args.budget_seconds)
        logger.info("%s: %s", scenario.name, json.dumps(results["scenarios"][scenario.name]))
    results["total_wall_seconds"] = round(time.monotonic() - began, 1)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    ok = all(r.get("trained") and r.get("promoted") for r in results["scenarios"].values() if "skipped" not in r)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
