"""What the daemon adds around training: latency to the first step, snapshot, promotion, rollback.

    .venv/bin/python benchmarks/daemon_overhead.py --data benchmarks/data/chat_mixed.jsonl \\
        --model models/SmolLM2-135M-Instruct --out benchmarks/daemon_overhead.json

On a fresh base dir (``stable_seconds=0``) one file goes through ``TrainingDaemon.run_once()`` with
the real training child. A thread polls ``status/status.json`` to see when the first optimizer step
is done (and when the loop began, step 0); the events log gives claim, training start/end and promotion times. The model load is
timed separately in this process (which also warms the page cache for the child) and subtracted
from the time to the start of the training loop, so what remains is the daemon's own overhead:
claim, hashing, validation, child start-up (Python + imports), tokenization. The first step itself
(a warm-up step) is reported apart.

Snapshot costs are then timed directly on ``SnapshotStore``: create + promote of a LoRA adapter and
of a full model (a copy of ``--model``), and rollback of each. Snapshot bytes on disk are counted
before and after a rollback to show that it copies no weights (it only swaps the link).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from core.daemon.loop import TrainingDaemon
from core.snapshots.manifest import read_manifest
from core.snapshots.store import SnapshotStore
from core.state.layout import init_base_dir
from trainer.config import load_config
from trainer.model.loading import load_model


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _events(path: Path) -> dict[str, float]:
    """First time of each event type in the events log."""
    first: dict[str, float] = {}
    for line in path.read_text().splitlines():
        event = json.loads(line)
        first.setdefault(event["type"], _epoch(event["ts"]))
    return first


class FirstStepWatch(threading.Thread):
    """Polls the status file; keeps when the training loop began (step 0) and finished step 1."""

    def __init__(self, status_file: Path, interval: float = 0.02):
        super().__init__(daemon=True)
        self.status_file, self.interval = status_file, interval
        self.loop_began_at: float | None = None
        self.first_step_at: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set() and self.first_step_at is None:
            try:
                status = json.loads(self.status_file.read_text())
            except (OSError, ValueError):
                status = {}
            step = status.get("current_step")
            if step is not None and self.loop_began_at is None:
                self.loop_began_at = time.time()
            if (step or 0) >= 1:
                self.first_step_at = time.time()
            time.sleep(self.interval)


def _bytes_under(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _timed(action) -> tuple[Any, float]:
    started = time.perf_counter()
    value = action()
    return value, round(time.perf_counter() - started, 3)


def snapshot_costs(store: SnapshotStore, model_dir: Path, manifest: dict, stem: str) -> dict[str, Any]:
    """Create + promote a copy of ``model_dir``, then roll back to the snapshot before it."""
    staging = Path(tempfile.mkdtemp(prefix="bench-model-"))
    copy, copy_s = _timed(lambda: Path(shutil.copytree(
        model_dir, staging / "model", ignore=shutil.ignore_patterns("manifest.json"))))
    info, create_s = _timed(lambda: store.create(copy, manifest, stem))
    _, promote_s = _timed(lambda: store.promote(info.id))
    before = _bytes_under(store.layout.snapshots)
    _, rollback_s = _timed(lambda: store.rollback("previous"))
    shutil.rmtree(staging, ignore_errors=True)
    return {
        "weights_bytes": _bytes_under(info.path), "create_s": create_s, "promote_s": promote_s,
        "rollback_s": rollback_s, "snapshot_bytes_added_by_rollback": _bytes_under(store.layout.snapshots) - before,
        "copy_s_not_counted": copy_s,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Daemon overhead: first step latency, snapshots, rollback.")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=16, help="rows of --data dropped into the inbox")
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the measurements, print and optionally write them."""
    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    layout = init_base_dir(base)
    raw = json.loads(layout.config_file.read_text())
    raw["base_model"] = str(args.model.resolve())
    raw["hyperparams"].update({"max_steps": 2, "max_length": 512})
    raw["checkpoint"].update({"log_steps": 1})
    raw["daemon"].update({"stable_seconds": 0.0})
    layout.config_file.write_text(json.dumps(raw, indent=2))
    config = load_config(layout.config_file)

    _, model_load_s = _timed(lambda: load_model(str(args.model.resolve()), config, base, "sdpa", "bf16"))
    rows = args.data.read_text().splitlines()[: args.rows]
    (layout.inbox / "bench.jsonl").write_text("\n".join(rows) + "\n")

    daemon = TrainingDaemon(base)
    watch = FirstStepWatch(layout.status_file)
    watch.start()
    stable_at = time.time()
    outcome = daemon.run_once()
    finished_at = time.time()
    watch.done.set()
    events = _events(layout.events_file)

    store = SnapshotStore(layout)
    lora = store.current()
    manifest = {k: v for k, v in read_manifest(lora.path).items() if k != "id"}
    full_manifest = {**manifest, "config": {**manifest["config"], "method": "full"}}
    report = {
        "outcome": str(outcome.value if hasattr(outcome, "value") else outcome),
        "model_load_s": model_load_s,
        "stable_to_loop_start_s": round(watch.loop_began_at - stable_at, 2) if watch.loop_began_at else None,
        "stable_to_first_step_s": round(watch.first_step_at - stable_at, 2) if watch.first_step_at else None,
        "claim_to_training_started_s": round(events["training_started"] - events["file_claimed"], 3),
        "training_completed_to_promoted_s": round(events["snapshot_promoted"] - events["training_completed"], 3)
        if "snapshot_promoted" in events else None,
        "run_once_total_s": round(finished_at - stable_at, 2),
        "lora": snapshot_costs(store, lora.path, manifest, "bench-lora"),
        "full": snapshot_costs(store, args.model.resolve(), full_manifest, "bench-full"),
        "base_dir": str(base),
    }
    if report["stable_to_loop_start_s"] is not None:
        report["overhead_before_first_step_s"] = round(report["stable_to_loop_start_s"] - model_load_s, 2)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(base, ignore_errors=True)
    return report


if __name__ == "__main__":
    main()
