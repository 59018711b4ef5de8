"""Environment faults never consume a file: the daemon waits, says what to fix, and carries on."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.daemon.loop import Outcome, TrainingDaemon
from core.snapshots.store import SnapshotStore
from core.state.events import EventLog
from core.state.layout import BaseDir, init_base_dir
from core.state.status import DaemonState, StatusFile
from tests.conftest import chat_rows, write_jsonl

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))


@pytest.fixture()
def layout(tmp_path, tiny_config, monkeypatch) -> BaseDir:
    monkeypatch.setenv("TB_AUTO", "0")
    layout = init_base_dir(tmp_path / "base")
    config = {**tiny_config, "daemon": {"stable_seconds": 0.0, "rescan_seconds": 0.5}}
    layout.config_file.write_text(json.dumps(config), encoding="utf-8")
    return layout


def _set_base_model(layout: BaseDir, base_model: str) -> None:
    config = json.loads(layout.config_file.read_text(encoding="utf-8"))
    layout.config_file.write_text(json.dumps({**config, "base_model": base_model}), encoding="utf-8")


def _wait(condition, what: str, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _event_types(layout: BaseDir) -> list[str]:
    return [event["type"] for event in EventLog(layout.events_file).read()]


def test_a_missing_base_model_keeps_the_file_in_the_inbox_and_it_trains_by_itself_once_fixed(
    layout, tmp_path, tiny_model_dir
):
    missing = tmp_path / "models" / "not-yet"
    _set_base_model(layout, str(missing))
    write_jsonl(layout.inbox / "a.jsonl", chat_rows(8))
    daemon = subprocess.Popen(
        [TRAINCTL, "daemon", "--base-dir", str(layout.root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        status = _wait(
            lambda: (s := StatusFile(layout.status_file).read()) and s.state is DaemonState.ERROR and s,
            "the daemon to report the missing model",
        )
        assert str(missing) in status.last_error and "point base_model at a model directory" in status.last_error
        assert "stay in the inbox" in status.last_error
        assert (layout.inbox / "a.jsonl").exists()
        assert list(layout.failed.iterdir()) == [] and list(layout.processing.iterdir()) == []
        fault = [e for e in EventLog(layout.events_file).read() if e["type"] == "environment_fault"]
        assert len(fault) == 1 and str(missing) in fault[0]["error"]

        shutil.copytree(tiny_model_dir, missing)  # the fix; nothing else is done

        _wait(lambda: (layout.done / "a.jsonl").exists(), "the file to train after the fix")
        status = StatusFile(layout.status_file).read()
        assert status.last_error is None and status.last_completed_file == "a.jsonl"
        assert "environment_resolved" in _event_types(layout)
        assert _event_types(layout).count("environment_fault") == 1  # reported once, not per rescan
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        finally:
            daemon.kill()


def test_a_current_model_that_no_longer_verifies_blocks_until_rolled_back(layout):
    write_jsonl(layout.inbox / "a.jsonl", chat_rows(8))
    daemon = TrainingDaemon(layout.root)
    assert daemon.run_once() is Outcome.TRAINED
    [snapshot] = SnapshotStore(layout).list()
    weights = snapshot.path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # a changed file
    write_jsonl(layout.inbox / "b.jsonl", chat_rows(8, seed=3))

    assert daemon.run_once() is Outcome.BLOCKED

    status = StatusFile(layout.status_file).read()
    assert status.state is DaemonState.ERROR
    assert "no longer verifies" in status.last_error and "trainctl rollback" in status.last_error
    assert (layout.inbox / "b.jsonl").exists() and not (layout.failed / "b.jsonl").exists()


def test_daemon_once_exits_1_with_the_counts_when_a_file_is_not_trained(layout):
    write_jsonl(layout.inbox / "good.jsonl", chat_rows(8))
    write_jsonl(layout.inbox / "bad.jsonl", ["nope", "[1, 2]"])

    done = subprocess.run(
        [TRAINCTL, "daemon", "--base-dir", str(layout.root), "--once"], capture_output=True, text=True, timeout=300
    )

    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "trained 1, duplicate 0, invalid 1, failed 0"


def test_daemon_once_exits_1_when_the_environment_blocks_it(layout, tmp_path):
    _set_base_model(layout, str(tmp_path / "nothing-here"))
    write_jsonl(layout.inbox / "a.jsonl", chat_rows(4))

    done = subprocess.run(
        [TRAINCTL, "daemon", "--base-dir", str(layout.root), "--once"], capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 1
    assert (layout.inbox / "a.jsonl").exists()
    assert "nothing-here" in StatusFile(layout.status_file).read().last_error


def test_last_error_is_cleared_once_a_later_file_trains(layout):
    write_jsonl(layout.inbox / "a-bad.jsonl", ["nope", "[1, 2]"])
    daemon = TrainingDaemon(layout.root)
    assert daemon.run_once() is Outcome.INVALID
    assert StatusFile(layout.status_file).read().last_error.startswith("a-bad.jsonl: ")
    write_jsonl(layout.inbox / "b.jsonl", chat_rows(8))

    assert daemon.run_once() is Outcome.TRAINED

    status = StatusFile(layout.status_file).read()
    assert status.last_error is None and status.last_completed_file == "b.jsonl"


def test_a_stopped_daemon_leaves_no_tensorboard_url_behind(layout):
    StatusFile(layout.status_file).update(tensorboard_url="http://127.0.0.1:6006/")

    assert TrainingDaemon(layout.root).run_forever(once=True) == 0

    assert StatusFile(layout.status_file).read().tensorboard_url is None
