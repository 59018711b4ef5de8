"""The real ``trainctl daemon`` process: SIGTERM mid-training, restart, resume; one daemon per base dir."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.base.hashing import sha256_file
from core.daemon.lock import DaemonLock
from core.daemon.service import EXIT_LOCKED
from core.snapshots.store import SnapshotStore, read_manifest
from core.state.events import EventLog
from core.state.layout import BaseDir, init_base_dir
from core.state.ledger import Ledger
from core.state.status import DaemonState, StatusFile
from tests.conftest import chat_rows, write_jsonl

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))
STOP_TIMEOUT = 30
MAX_STEPS = 40


@pytest.fixture()
def layout(tmp_path, tiny_config, monkeypatch) -> BaseDir:
    monkeypatch.setenv("TB_AUTO", "0")  # TensorBoard logs are written, but no server is started
    layout = init_base_dir(tmp_path / "base")
    config = {
        **tiny_config,
        "hyperparams": {**tiny_config["hyperparams"], "batch_size": 1, "max_steps": MAX_STEPS},
        "checkpoint": {"save_steps": 2, "log_steps": 1},
        "daemon": {"stable_seconds": 0.0, "rescan_seconds": 1.0, "stop_timeout_seconds": STOP_TIMEOUT},
    }
    layout.config_file.write_text(json.dumps(config), encoding="utf-8")
    return layout


def _daemon(layout: BaseDir, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [TRAINCTL, "daemon", "--base-dir", str(layout.root), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_step(layout: BaseDir, step: int, timeout: float = 180.0) -> int:
    status = StatusFile(layout.status_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = status.read()
        if current and current.state is DaemonState.TRAINING and (current.current_step or 0) >= step:
            return current.current_step
        time.sleep(0.1)
    raise AssertionError(f"training did not reach step {step} in {timeout} s: {status.read()}")


def _events(layout: BaseDir, kind: str) -> list[dict]:
    return [event for event in EventLog(layout.events_file).read() if event["type"] == kind]


def test_sigterm_checkpoints_and_a_restart_finishes_the_file_from_there_exactly_once(layout):
    data = write_jsonl(layout.inbox / "a.jsonl", chat_rows(8))
    digest = sha256_file(data)
    daemon = _daemon(layout)
    try:
        _wait_for_step(layout, 2)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=STOP_TIMEOUT + 15) == 0, daemon.stderr.read()
    finally:
        daemon.kill()

    # Stopped cleanly: the file waits in processing with a checkpoint; nothing was promoted.
    stopped_at = _events(layout, "checkpoint_saved")[-1]["step"]
    assert 2 <= stopped_at < MAX_STEPS
    assert {p.name for p in layout.processing.iterdir()} == {"a.jsonl", "a.jsonl.work"}
    assert SnapshotStore(layout).list() == [] and Ledger(layout.ledger_file).lookup(digest) is None
    status = StatusFile(layout.status_file).read()
    assert status.state is DaemonState.IDLE and status.daemon_pid is None
    assert re.fullmatch(rf"a\.jsonl: paused at step \d+ of {MAX_STEPS}, resumes on next start", status.paused)
    state = json.loads((layout.processing / "a.jsonl.work" / "state.json").read_text())
    assert state["attempts"] == 0  # a requested stop is not a failed attempt

    restarted = subprocess.run(
        [TRAINCTL, "daemon", "--base-dir", str(layout.root), "--once"], capture_output=True, text=True, timeout=300
    )

    assert restarted.returncode == 0, restarted.stderr
    assert StatusFile(layout.status_file).read().paused is None
    events = EventLog(layout.events_file).read()
    starts = [i for i, event in enumerate(events) if event["type"] == "training_started"]
    assert [Path(events[i]["resume_from"] or "").name for i in starts] == ["", f"checkpoint-{stopped_at}"]
    later_saves = [e["step"] for e in events[starts[-1]:] if e["type"] == "checkpoint_saved"]
    assert later_saves and min(later_saves) > stopped_at  # continued from the checkpoint, not step 0
    report = json.loads((layout.done / "a.jsonl.report.json").read_text())
    assert report["training"]["steps"] == MAX_STEPS
    assert report["training"]["resumed_from"].endswith(f"checkpoint-{stopped_at}")
    [snapshot] = SnapshotStore(layout).list()
    assert read_manifest(snapshot.path)["steps"] == MAX_STEPS
    assert Ledger(layout.ledger_file).entries() == {digest: Ledger(layout.ledger_file).lookup(digest)}
    assert Ledger(layout.ledger_file).lookup(digest)["snapshot"] == snapshot.id
    assert [e["type"] for e in events].count("daemon_stopped") == 2
    runs = [json.loads(p.read_text()) for p in layout.runs.glob("20*/run.json")]
    assert len(runs) == 1, "the resumed attempt must continue the file's run, not start another"
    assert runs[0]["status"] == "completed" and runs[0]["steps"] == MAX_STEPS
    assert [Path(r["from_checkpoint"]).name for r in runs[0]["resumes"]] == [f"checkpoint-{stopped_at}"]


def test_a_second_daemon_on_the_same_base_dir_exits_naming_the_holder(layout):
    with DaemonLock(layout.lock_file):
        second = subprocess.run(
            [TRAINCTL, "daemon", "--base-dir", str(layout.root), "--once"], capture_output=True, text=True, timeout=120
        )

    assert second.returncode == EXIT_LOCKED
    assert "already running on this base dir" in second.stderr and f"pid {os.getpid()}" in second.stderr
    assert _events(layout, "daemon_started") == []
