"""``trainctl train`` under torchrun on this CPU: 2 processes, gloo, ``OMP_NUM_THREADS=1``.

Each run starts a real process group (about 15 s of start-up on 2 idle cores), so the tests are
marked ``distributed``; ``pytest -m "not distributed"`` leaves them out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.state.layout import BaseDir, init_base_dir
from tests.conftest import chat_rows, write_jsonl

pytestmark = pytest.mark.distributed

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))
ADAPTER = "adapter_model.safetensors"
STEPS = 3


def _train(tmp_path: Path, name: str, tiny_config: dict, batch_size: int, nproc: int) -> tuple[Path, str]:
    """``trainctl train`` on the same rows in a new base dir; returns the run folder and stdout."""
    layout = init_base_dir(tmp_path / name)
    config = {
        **tiny_config,
        "hyperparams": {**tiny_config["hyperparams"], "batch_size": batch_size, "max_steps": STEPS},
        "checkpoint": {"save_steps": STEPS, "log_steps": 1},
        "distributed": {"nproc_per_node": nproc},
    }
    layout.config_file.write_text(json.dumps(config), encoding="utf-8")
    data = write_jsonl(tmp_path / f"{name}.jsonl", chat_rows(4 * STEPS + 4))  # no uneven last batch in 3 steps
    done = subprocess.run(
        [TRAINCTL, "train", str(data), "--base-dir", str(layout.root)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "TB_AUTO": "0"}, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [run] = [p for p in BaseDir.at(layout.root).runs.iterdir() if not p.is_symlink()]
    return run, done.stdout


def assert_trained_alike(one: Path, two: Path) -> None:
    """Runs ``one`` and ``two`` logged the same losses at every step and saved the same adapter."""
    assert len(_losses(two)) == STEPS
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-4)
    adapter_one, adapter_two = load_file(one / "model" / ADAPTER), load_file(two / "model" / ADAPTER)
    assert adapter_one.keys() == adapter_two.keys()
    for name, weight in adapter_one.items():
        torch.testing.assert_close(adapter_two[name], weight, rtol=1e-4, atol=1e-6, msg=name)


def _losses(run: Path) -> list[float]:
    state = json.loads((run / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def test_two_processes_of_batch_b_train_as_one_process_of_batch_2b_and_rank_0_alone_records(tmp_path, tiny_config):
    one, _ = _train(tmp_path, "single", tiny_config, batch_size=4, nproc=1)
    two, printed = _train(tmp_path, "group", tiny_config, batch_size=2, nproc=2)

    assert_trained_alike(one, two)

    # One run folder (asserted by _train), recorded, logged and printed by rank 0 only; every rank
    # wrote its RNG state into the checkpoint before rank 0 marked it complete.
    record = json.loads((two / "run.json").read_text())
    assert (record["status"], record["launcher"], record["processes"], record["steps"]) == (
        "completed", "torchrun", 2, STEPS
    )
    assert printed.count(f"trained {STEPS} steps") == 1
    assert len(list((two / "tensorboard").glob("events.out.tfevents.*"))) == 1
    checkpoint = two / "checkpoints" / f"checkpoint-{STEPS}"
    assert {p.name for p in checkpoint.glob("rng_state*")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert "rng_state_1.pth" in json.loads((checkpoint / "trainctl_checkpoint.json").read_text())["files"]
