"""``trainctl daemon`` with ``distributed.nproc_per_node: 2`` on this CPU (torchrun, gloo, 2 processes).

Marked ``distributed``: each attempt starts a process group (about 15 s on 2 cores). A stop fault
(``core.base.faults``) freezes rank 0 just before it marks checkpoint-2 complete, so that a signal or
a kill lands at a known step however fast the tiny model trains.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.base.faults import FAULT_ENV
from core.base.locking import lock_holder, wait_for_lock
from core.child.protocol import CHILD_LOCK_FILENAME
from core.snapshots.store import SnapshotStore, read_manifest
from core.state.events import EventLog
from core.state.layout import BaseDir, init_base_dir
from tests.conftest import chat_rows, write_jsonl
from tests.reliability.harness import process_state
from trainer.checkpoints.markers import checkpoint_problem

pytestmark = pytest.mark.distributed

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))
MAX_STEPS = 6
STOP_TIMEOUT = 20
FREEZE_AT_CHECKPOINT_2 = "checkpoint-2/trainctl_checkpoint.json:1:stop"


@pytest.fixture(scope="module")
def config(tiny_model_dir) -> dict:
    return {
        "base_model": str(tiny_model_dir),
        "method": "lora",
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "hyperparams": {
            "fp_precision": "fp32", "max_length": 128, "batch_size": 1, "learning_rate": 5e-3,
            "max_steps": MAX_STEPS, "warmup_ratio": 0.0, "lr_scheduler": "constant",
            "use_gradient_checkpointing": False, "seed": 0,
        },
        "checkpoint": {"save_steps": 2, "log_steps": 1},
        "daemon": {"stable_seconds": 0.0, "rescan_seconds": 1.0, "stop_timeout_seconds": STOP_TIMEOUT},
        "distributed": {"nproc_per_node": 2},
        "gate": {"min_answer_dependence": 0.0},  # the tiny random model learns no question-answer pairing: the answer-dependence rule would reject it
    }


def _layout(root: Path, config: dict) -> BaseDir:
    layout = init_base_dir(root)
    layout.config_file.write_text(json.dumps(config), encoding="utf-8")
    write_jsonl(layout.inbox / "a.jsonl", chat_rows(16))
    return layout


def _daemon(layout: BaseDir, *extra: str, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TB_AUTO": "0"}
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.Popen(
        [TRAINCTL, "daemon", "--base-dir", str(layout.root), *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _workers(layout: BaseDir) -> dict[int, int]:
    """Training processes of this base dir under torchrun: rank -> pid."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = dict(
                item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0") if b"=" in item
            )
        except (OSError, ValueError):
            continue
        if b"core.child.worker" in cmdline and str(layout.root).encode() in cmdline and b"RANK" in environ:
            found[int(environ[b"RANK"])] = int(proc.name)
    return found


def _frozen_rank_0(layout: BaseDir, timeout: float = 240.0) -> dict[int, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = _workers(layout)
        if 0 in workers and process_state(workers[0]) == "T":
            return workers
        time.sleep(0.2)
    raise AssertionError(f"rank 0 did not freeze at checkpoint-2 in {timeout} s")


def _adapter(layout: BaseDir) -> dict[str, torch.Tensor]:
    [snapshot] = SnapshotStore(layout).list()
    return load_file(snapshot.path / "adapter_model.safetensors")


def _events(layout: BaseDir, kind: str) -> list[dict]:
    return [event for event in EventLog(layout.events_file).read() if event["type"] == kind]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, config) -> BaseDir:
    layout = _layout(tmp_path_factory.mktemp("uninterrupted") / "base", config)
    daemon = _daemon(layout, "--once")
    _, stderr = daemon.communicate(timeout=300)
    assert daemon.returncode == 0, stderr[-4000:]
    return layout


def test_an_inbox_file_is_trained_by_two_processes_snapshotted_and_promoted(uninterrupted):
    layout = uninterrupted
    assert (layout.done / "a.jsonl").exists()
    [snapshot] = SnapshotStore(layout).list()
    assert read_manifest(snapshot.path)["steps"] == MAX_STEPS
    assert SnapshotStore(layout).current().id == snapshot.id
    # One writer: each checkpoint announced once (not once per rank), one run folder, one TensorBoard file.
    assert [e["step"] for e in _events(layout, "checkpoint_saved")] == [2, 4, 6]
    [run] = [p for p in layout.runs.iterdir() if not p.is_symlink()]
    record = json.loads((run / "run.json").read_text())
    assert (record["launcher"], record["processes"], record["status"]) == ("torchrun", 2, "completed")
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert "training under torchrun with 2 processes" in (layout.logs / "daemon.log").read_text()


def test_sigterm_leaves_one_complete_checkpoint_and_the_resumed_run_equals_an_uninterrupted_one(
    tmp_path, config, uninterrupted
):
    layout = _layout(tmp_path / "base", config)
    daemon = _daemon(layout, fault=FREEZE_AT_CHECKPOINT_2)
    try:
        workers = _frozen_rank_0(layout)
        daemon.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # the agent forwards the stop to both ranks while rank 0 is frozen
        os.kill(workers[0], signal.SIGCONT)
        assert daemon.wait(timeout=STOP_TIMEOUT + 30) == 0, daemon.stderr.read()[-4000:]
    finally:
        daemon.kill()
    assert _workers(layout) == {}

    checkpoints = sorted((layout.processing / "a.jsonl.work" / "checkpoints").glob("checkpoint-*"))
    assert [checkpoint_problem(c) for c in checkpoints] == [None] * len(checkpoints)
    stopped_at = _events(layout, "checkpoint_saved")[-1]["step"]
    assert checkpoints[-1].name == f"checkpoint-{stopped_at}" and 2 <= stopped_at < MAX_STEPS
    assert SnapshotStore(layout).list() == []

    restarted = _daemon(layout, "--once")
    _, stderr = restarted.communicate(timeout=300)
    assert restarted.returncode == 0, stderr[-4000:]
    [started, resumed] = _events(layout, "training_started")
    assert started["resume_from"] is None and Path(resumed["resume_from"]).name == f"checkpoint-{stopped_at}"
    expected = _adapter(uninterrupted)
    for name, weight in _adapter(layout).items():
        torch.testing.assert_close(weight, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_worker_killed_with_sigkill_fails_the_attempt_and_the_file_is_retried(tmp_path, config):
    layout = _layout(tmp_path / "base", config)
    daemon = _daemon(layout, "--once", fault=FREEZE_AT_CHECKPOINT_2)
    try:
        workers = _frozen_rank_0(layout)
        os.kill(workers[1], signal.SIGKILL)
        os.kill(workers[0], signal.SIGCONT)
        _, stderr = daemon.communicate(timeout=300)
        assert daemon.returncode == 0, stderr[-4000:]
    finally:
        daemon.kill()

    assert "attempt 1 of 3 failed" in (layout.logs / "daemon.log").read_text()
    assert len(_events(layout, "training_started")) == 2
    report = json.loads((layout.done / "a.jsonl.report.json").read_text())
    assert report["attempts"] == 2 and report["training"]["steps"] == MAX_STEPS
    assert len(SnapshotStore(layout).list()) == 1


def test_when_the_daemon_dies_the_group_checkpoints_and_exits_and_frees_the_lock(tmp_path, config):
    layout = _layout(tmp_path / "base", config)
    daemon = _daemon(layout, fault=FREEZE_AT_CHECKPOINT_2)
    try:
        workers = _frozen_rank_0(layout)
        lock = layout.processing / "a.jsonl.work" / CHILD_LOCK_FILENAME
        agent = lock_holder(lock)
        daemon.kill()  # no stop forwarded: only the parent-death signal tells the agent
        daemon.wait(timeout=30)
        os.kill(workers[0], signal.SIGCONT)
        assert wait_for_lock(lock, STOP_TIMEOUT + 30), "the group kept the work folder's lock"
    finally:
        daemon.kill()
    assert _workers(layout) == {} and process_state(agent) in (None, "Z")
    checkpoints = sorted((layout.processing / "a.jsonl.work" / "checkpoints").glob("checkpoint-*"))
    assert checkpoints and [checkpoint_problem(c) for c in checkpoints] == [None] * len(checkpoints)
    result = json.loads((layout.processing / "a.jsonl.work" / "result.json").read_text())
    assert result["outcome"] == "interrupted" and result["steps"] < MAX_STEPS
