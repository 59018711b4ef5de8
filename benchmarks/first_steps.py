"""Step times of the daemon child's real job in one process: how much of the first step is first-call cost.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/first_steps.py VARIANT ROWS STEPS

Runs what ``core.child.worker`` runs for one file (run folder, the gate's replay draw, ``start_job``,
the gate's "before" measurement, ``Trainer.train``) on the first ROWS rows of
``benchmarks/data/chat_mixed.jsonl`` with the ``benchmarks/daemon_overhead.py`` config and STEPS
steps, and prints one JSON line per job: seconds of each setup piece and of each optimizer step.
VARIANT: ``none`` (a fresh process), ``tiny`` (after ``core.child.warmup.warm_up`` without a base dir:
the standby's warm-up before this session), ``shapes`` (after ``warm_up`` of a base dir with the same
model: the standby's warm-up now, one layer of the configured model), ``twice`` (the same job twice in one process: the second job's first step is what any
warm-up could at best reach). Run it under the exclusive CPU lock and note the load average.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import core.child.worker  # noqa: F401  (the training child's imports, before anything is timed)
from benchmarks.daemon_overhead import fresh_base_dir
from core.child.gate_run import GateRun
from core.child.warmup import warm_up
from core.runs.job import start_job
from core.runs.run import data_file_record, start_run
from transformers import TrainerCallback
from trainer.config import load_config

MODEL = Path("models/SmolLM2-135M-Instruct")
DATA = Path("benchmarks/data/chat_mixed.jsonl")


class StepTimer(TrainerCallback):
    """Keeps the time of the loop's start and of each optimizer step's end."""

    def __init__(self) -> None:
        self.began: float | None = None
        self.ends: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def one_job(rows: list[str], steps: int) -> dict:
    """One file through the child's job in a fresh base dir; the seconds of each piece."""
    layout = fresh_base_dir(MODEL, warm=False)
    raw = json.loads(layout.config_file.read_text())
    raw["hyperparams"]["max_steps"] = steps
    layout.config_file.write_text(json.dumps(raw))
    data = layout.root / "bench.jsonl"
    data.write_text("\n".join(rows) + "\n")
    config, text, source = load_config(layout.config_file), layout.config_file.read_text(), str(MODEL.resolve())
    timer = StepTimer()
    run = start_run(layout.runs, phase="daemon", config=config, config_text=text,
                    data_files=[data_file_record(data)], base_dir=layout.root, extra={})
    gate = GateRun(layout, config, data, source, measure=True)
    with run:
        started = time.perf_counter()
        job = start_job(run, config, text, data, base_dir=layout.root, model_source=source,
                        output_dir=layout.root / "checkpoints", label="bench", extra_callbacks=[timer],
                        tensorboard_server=False, replay=gate.draw_replay)
        set_up = time.perf_counter()
        gate.measure_before(job)
        measured = time.perf_counter()
        job.trainer.train()
    shutil.rmtree(layout.root, ignore_errors=True)
    marks = [timer.began, *timer.ends]
    return {
        "start_job_s": round(set_up - started, 2), "measure_before_s": round(measured - set_up, 2),
        "train_to_loop_s": round(timer.began - measured, 2),
        "steps_s": [round(b - a, 2) for a, b in zip(marks, marks[1:])],
        "load_average": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    variant, rows, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    lines = DATA.read_text().splitlines()[:rows]
    started = time.perf_counter()
    if variant == "tiny":
        warm_up()
    elif variant == "shapes":
        layout = fresh_base_dir(MODEL, warm=False)
        warm_up(layout.root)
        shutil.rmtree(layout.root, ignore_errors=True)
    warm_up_s = round(time.perf_counter() - started, 2)
    for job in range(2 if variant == "twice" else 1):
        print(json.dumps({"variant": variant, "job": job + 1, "warm_up_s": warm_up_s, **one_job(lines, steps)}))


if __name__ == "__main__":
    main()
