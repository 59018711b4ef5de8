"""``trainctl run`` with ``distributed.nproc_per_node: 2`` on this CPU: the phase trains under torchrun.

The launching process opens the run folder and mixes the data; every process of the group (gloo,
``OMP_NUM_THREADS=1``) trains that phase in it, and rank 0 alone records. Marked ``distributed``
like the other process-group tests (about 20 s of start-up on 2 loaded cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import chat_rows, write_jsonl
from tests.core.child.test_torchrun_training import assert_trained_alike
from trainer.checkpoints.markers import complete_checkpoints
from trainer.model.model_dirs import check_model_dir

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))
STEPS = 3


def _base(tmp_path: Path, name: str, tiny_config: dict, batch_size: int, distributed: dict) -> Path:
    """A base dir with one sft phase config over 16 chat rows (no uneven last batch in 3 steps)."""
    base = tmp_path / name
    write_jsonl(base / "samples" / "chat.jsonl", chat_rows(4 * STEPS + 4))
    training = {
        **tiny_config,
        "hyperparams": {**tiny_config["hyperparams"], "batch_size": batch_size, "max_steps": STEPS},
        "checkpoint": {"save_steps": STEPS, "log_steps": 1},
        "distributed": distributed,
    }
    phase = {"phase": "sft", "data": [{"path": "samples/chat.jsonl"}], "training": training}
    (base / "configs").mkdir()
    (base / "configs" / "sft.json").write_text(json.dumps(phase), encoding="utf-8")
    return base


def _run(base: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TRAINCTL, "run", "--phase", "sft", "--config", "configs/sft.json", "--base-dir", str(base), "--device", "cpu"],
        env={**os.environ, "OMP_NUM_THREADS": "1", "TB_AUTO": "0"}, capture_output=True, text=True, timeout=300,
    )


def _one_run(base: Path) -> Path:
    [run] = [p for p in (base / "runs").iterdir() if not p.is_symlink()]
    return run


@pytest.mark.distributed
def test_run_phase_on_two_processes_equals_one_process_of_twice_the_batch(tmp_path, tiny_config):
    single = _base(tmp_path, "single", tiny_config, batch_size=4, distributed={"nproc_per_node": 1})
    group = _base(tmp_path, "group", tiny_config, batch_size=2, distributed={"nproc_per_node": 2})

    assert (done := _run(single)).returncode == 0, done.stderr[-3000:]
    done = _run(group)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    one, two = _one_run(single), _one_run(group)
    assert_trained_alike(one, two)

    # One run folder (asserted by _one_run), recorded by rank 0; the launcher printed the result once.
    record = json.loads((two / "run.json").read_text())
    assert (record["status"], record["phase"], record["steps"]) == ("completed", "sft", STEPS)
    assert (record["launcher"], record["processes"]) == ("torchrun", 2)
    assert done.stdout.count(f"sft: run {two.name} completed after {STEPS} steps") == 1
    assert check_model_dir(two / "model").ok
    [checkpoint] = complete_checkpoints(two / "checkpoints")
    assert {p.name for p in checkpoint.glob("rng_state*")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert len(list((two / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert f"step {STEPS}/{STEPS} loss" in (two / "train.log").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for a machine without CUDA")
def test_run_refuses_fsdp_without_a_gpu_naming_the_file_and_field_before_any_run(tmp_path, tiny_config):
    base = _base(tmp_path, "fsdp", tiny_config, batch_size=2, distributed={"nproc_per_node": 2, "strategy": "fsdp"})

    done = _run(base)

    assert done.returncode == 2
    assert "configs/sft.json: distributed.strategy is \"fsdp\" but PyTorch sees no CUDA GPU" in done.stderr
    assert not (base / "runs").exists()
