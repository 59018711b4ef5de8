"""What the daemon adds around training: latency to the first step (cold and warm child), snapshot,
promotion, rollback.

    .venv/bin/python benchmarks/daemon_overhead.py --data benchmarks/data/chat_mixed.jsonl \\
        --model models/SmolLM2-135M-Instruct --rounds 2 --out benchmarks/results/daemon-overhead.json

**First step.** Each round drops the same file into a fresh base dir (``stable_seconds=0``) and runs
one ``TrainingDaemon.run_once()`` with the real training child: once with a cold child
(``daemon.warm_child: false``: a new ``python -m core.child.worker``) and once with a warm one (a
standby child started and warmed up before the file is dropped, as the daemon keeps one while it
waits). Cold and warm rounds alternate, so both see the same machine load. The time from the file
being stable to the first optimizer step is split into:

* ``daemon``: claim, SHA-256, duplicate check, validation (to the ``training_started`` event);
* ``start``: the child's start-up until its first log line: Python and the imports for a cold child,
  the hand-over for a warm one;
* ``run_setup``: the run folder and the replay draw (to the ``precision:`` log line);
* ``model_load``: model and tokenizer (to the ``LoRA adapter`` log line);
* ``data``: tokenization (or the tokenized-file cache) and the held-out split;
* ``trainer_setup``: ``Trainer`` init and the gate's "before" measurement, to the loop's start
  (step 0 in ``status/training_status.json``);
* ``first_step``: the first optimizer step itself (to step 1 in the status file).

``beyond_model_load`` is the total less ``model_load``. The child's log lines carry millisecond time
stamps; the status file is polled every 20 ms.

**Snapshots.** Costs are then timed directly on ``SnapshotStore``: create + promote of a LoRA adapter
and of a full model (a copy of ``--model``), and rollback of each. Snapshot bytes on disk are counted
before and after a rollback to show that it copies no weights (it only swaps the link).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import Any

from core.daemon.loop import TrainingDaemon
from core.snapshots.manifest import read_manifest
from core.snapshots.store import SnapshotStore
from core.state.layout import BaseDir, init_base_dir
from trainer.config import load_config
from trainer.model.loading import load_model

PIECES = ("daemon", "start", "run_setup", "model_load", "data", "trainer_setup", "first_step")
# The child's log lines that end each piece after "start" (see the module docstring).
CHILD_MARKS = {
    "first_line": r"INFO ",
    "precision": r"INFO core\.train: precision:",
    "model_loaded": r"INFO trainer\.model\.loading: (new LoRA adapter|continuing adapter)",
    "data_ready": r"INFO core\.train: gradient checkpointing:",
}
LOG_STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _events(path: Path) -> dict[str, float]:
    """First time of each event type in the events log."""
    first: dict[str, float] = {}
    for line in path.read_text().splitlines():
        event = json.loads(line)
        first.setdefault(event["type"], _epoch(event["ts"]))
    return first


def _child_marks(log_file: Path) -> dict[str, float]:
    """The time of the first line matching each of :data:`CHILD_MARKS` in the child's log (local time)."""
    found: dict[str, float] = {}
    for line in log_file.read_text(errors="replace").replace("\r", "\n").splitlines():
        stamp = LOG_STAMP.search(line)
        if stamp is None:
            continue
        for name, pattern in CHILD_MARKS.items():
            if name not in found and re.search(pattern, line[stamp.start():]):
                found[name] = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return found


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
    parser.add_argument("--rounds", type=int, default=1, help="cold and warm rounds, alternating")
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def fresh_base_dir(model: Path, warm: bool) -> BaseDir:
    """A base dir on ``model``: 2 steps, batch 4, max_length 512, a file is stable at once."""
    layout = init_base_dir(Path(tempfile.mkdtemp(prefix="bench-daemon-")))
    raw = json.loads(layout.config_file.read_text())
    raw["base_model"] = str(model.resolve())
    raw["hyperparams"].update({"max_steps": 2, "max_length": 512})
    raw["checkpoint"].update({"log_steps": 1})
    raw["daemon"].update({"stable_seconds": 0.0, "warm_child": warm})
    raw["http"] = {"enabled": False}
    layout.config_file.write_text(json.dumps(raw, indent=2))
    return layout


def first_step_round(model: Path, rows: list[str], warm: bool) -> tuple[dict[str, Any], BaseDir]:
    """One file through ``run_once()``; the pieces of the time from stable to the first step."""
    layout = fresh_base_dir(model, warm)
    daemon = TrainingDaemon(layout.root)
    load_before = os.getloadavg()[0]
    standby_ready_s = None
    if warm:  # what run_forever() does while it waits for a file
        started = time.perf_counter()
        daemon.standby.start()
        daemon.standby.keep_ready(load_config(layout.config_file))
        while not daemon.standby.child.ready():
            time.sleep(0.05)
        standby_ready_s = round(time.perf_counter() - started, 2)
    (layout.inbox / "bench.jsonl").write_text("\n".join(rows) + "\n")
    watch = FirstStepWatch(layout.status_file)
    watch.start()
    stable_at = time.time()
    outcome = daemon.run_once()
    watch.done.set()
    daemon.standby.close()
    events = _events(layout.events_file)
    marks = _child_marks(layout.logs / "train-bench.log")
    ends = [events["training_started"], marks["first_line"], marks["precision"], marks["model_loaded"],
            marks["data_ready"], watch.loop_began_at, watch.first_step_at]
    pieces = dict(zip(PIECES, (round(b - a, 2) for a, b in zip([stable_at, *ends], ends))))
    total = round(watch.first_step_at - stable_at, 2)
    return {
        "child": "warm" if warm else "cold", "outcome": outcome.value, "stable_to_first_step_s": total,
        "beyond_model_load_s": round(total - pieces["model_load"], 2), "pieces_s": pieces,
        "standby_ready_s": standby_ready_s, "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }, layout


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the measurements, print and optionally write them."""
    args = parse_args(argv)
    rows = args.data.read_text().splitlines()[: args.rows]
    probe = fresh_base_dir(args.model, warm=False)
    # Reads the weights once, so that every round finds them in the page cache.
    _, model_load_s = _timed(lambda: load_model(str(args.model.resolve()), load_config(probe.config_file),
                                                probe.root, "sdpa", "bf16"))
    rounds, layouts = [], []
    for _ in range(args.rounds):
        for warm in (False, True):
            measured, layout = first_step_round(args.model, rows, warm)
            print(json.dumps(measured))
            rounds.append(measured)
            layouts.append(layout)

    report = {
        "model_load_in_process_s": model_load_s,
        "rounds": rounds,
        "median": {
            child: {key: median(r[key] for r in rounds if r["child"] == child)
                    for key in ("stable_to_first_step_s", "beyond_model_load_s")}
            | {piece: median(r["pieces_s"][piece] for r in rounds if r["child"] == child) for piece in PIECES}
            for child in ("cold", "warm")
        },
    }
    promoted = [SnapshotStore(each).current() for each in layouts]
    lora = next((snapshot for snapshot in promoted if snapshot is not None), None)
    if lora is None:  # the gate's verdict is the file's, not the daemon's overhead
        report["snapshots"] = "not measured: the gate promoted no round's model (see the rounds' outcome)"
    else:
        store = SnapshotStore(layouts[promoted.index(lora)])
        manifest = {k: v for k, v in read_manifest(lora.path).items() if k != "id"}
        full_manifest = {**manifest, "config": {**manifest["config"], "method": "full"}}
        report["lora"] = snapshot_costs(store, lora.path, manifest, "bench-lora")
        report["full"] = snapshot_costs(store, args.model.resolve(), full_manifest, "bench-full")
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    for each in [probe, *layouts]:
        shutil.rmtree(each.root, ignore_errors=True)
    return report


if __name__ == "__main__":
    main()
