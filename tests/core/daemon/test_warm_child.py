"""The warm training child through the real ``trainctl daemon``: it trains a file as a cold child would,
to the same weights; a stop checkpoints and a restart resumes; a killed standby is replaced; the
standby dies with its daemon."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.child.protocol import RESULT_FILENAME, STANDBY_OPTION
from core.state.events import EventLog
from core.state.layout import BaseDir, init_base_dir
from core.state.status import DaemonState, StatusFile
from tests.conftest import chat_rows, write_jsonl
from tests.reliability.harness import alive, children, load_weights, max_difference, wait_until

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))
TIMEOUT = 300  # seconds; the shared 2-core machine can be slow, a fast one makes the test fast


@pytest.fixture()
def make_layout(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setenv("TB_AUTO", "0")

    def make(name: str, **daemon) -> BaseDir:
        layout = init_base_dir(tmp_path / name)
        config = {
            **tiny_config,
            "hyperparams": {**tiny_config["hyperparams"], "batch_size": 1, "max_steps": 30},
            "checkpoint": {"save_steps": 2, "log_steps": 1},
            "daemon": {"stable_seconds": 0.0, "rescan_seconds": 0.5, "stop_timeout_seconds": 60, **daemon},
            "http": {"enabled": False},
        }
        layout.config_file.write_text(json.dumps(config), encoding="utf-8")
        return layout

    return make


def _daemon(layout: BaseDir, *extra: str) -> subprocess.Popen:
    output = open(layout.logs / "daemon-output.log", "ab")  # the standby's own output goes here too
    with output:
        return subprocess.Popen([TRAINCTL, "daemon", "--base-dir", str(layout.root), *extra],
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def _standby(daemon: subprocess.Popen, other_than: int | None = None) -> int | None:
    """The daemon's standby child (``core.child.worker --standby``) not yet handed a file, if any."""
    for pid in children(daemon.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if STANDBY_OPTION.encode() in command and pid != other_than:
            return pid
    return None


def _events(layout: BaseDir, kind: str) -> list[dict]:
    return [event for event in EventLog(layout.events_file).read() if event["type"] == kind]


def _daemon_log(layout: BaseDir) -> str:
    return (layout.logs / "daemon.log").read_text(encoding="utf-8")


def test_a_warm_child_trains_a_file_to_the_same_weights_as_a_cold_one(make_layout):
    warm, cold = make_layout("warm"), make_layout("cold", warm_child=False)
    for layout in (warm, cold):
        write_jsonl(layout.inbox / "a.jsonl", chat_rows(8))
        write_jsonl(layout.inbox / "b.jsonl", chat_rows(8, seed=1))
        done = subprocess.run([TRAINCTL, "daemon", "--base-dir", str(layout.root), "--once"],
                              capture_output=True, text=True, timeout=2 * TIMEOUT)
        assert done.returncode == 0, done.stderr[-4000:]
        assert done.stdout.strip().splitlines()[-1] == "trained 2, duplicate 0, invalid 0, failed 0"

    assert _daemon_log(warm).count("training in standby child") == 2
    assert "starting training of" not in _daemon_log(warm)
    assert "standby" not in _daemon_log(cold)
    for name in ("a", "b"):  # each file's log holds its child's own lines, as a cold child's does
        assert f"{name}.jsonl.work: trained (exit 0)" in (warm.logs / f"train-{name}.log").read_text()
    for name in ("a.jsonl", "b.jsonl"):
        assert json.loads((warm.done / f"{name}.report.json").read_text())["outcome"] == "trained"
    assert max_difference(load_weights(warm.current_model), load_weights(cold.current_model)) == 0.0
    assert _processes_of(warm) == []  # no standby outlives a --once daemon


def _processes_of(layout: BaseDir) -> list[int]:
    """Live training or standby children working in ``layout``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if entry.name.isdigit() and b"core.child.worker" in command and str(layout.root).encode() in command:
            found.append(int(entry.name))
    return [pid for pid in found if alive(pid)]


def test_a_stop_during_warm_training_checkpoints_and_a_restart_resumes_there(make_layout):
    layout = make_layout("base")
    daemon = _daemon(layout)
    try:
        standby = wait_until(lambda: _standby(daemon), TIMEOUT, "a standby child")
        write_jsonl(layout.inbox / "a.jsonl", chat_rows(8))
        wait_until(lambda: (StatusFile(layout.status_file).read().current_step or 0) >= 2, TIMEOUT, "step 2")
        assert f"training in standby child {standby}" in _daemon_log(layout)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=90) == 0
    finally:
        daemon.kill()
    assert not alive(standby)
    result = json.loads((layout.processing / "a.jsonl.work" / RESULT_FILENAME).read_text())
    assert (result["outcome"], result["exit_code"]) == ("interrupted", 75)
    stopped_at = _events(layout, "checkpoint_saved")[-1]["step"]
    assert 2 <= stopped_at < 30
    assert StatusFile(layout.status_file).read().state is DaemonState.IDLE

    restarted = subprocess.run([TRAINCTL, "daemon", "--base-dir", str(layout.root), "--once"],
                               capture_output=True, text=True, timeout=TIMEOUT)

    assert restarted.returncode == 0, restarted.stderr[-4000:]
    assert _events(layout, "training_started")[-1]["resume_from"].endswith(f"checkpoint-{stopped_at}")
    report = json.loads((layout.done / "a.jsonl.report.json").read_text())
    assert report["training"]["steps"] == 30 and report["training"]["resumed_from"].endswith(f"checkpoint-{stopped_at}")
    assert _daemon_log(layout).count("training in standby child") == 2


def test_a_killed_standby_is_replaced_and_the_file_still_trains(make_layout):
    layout = make_layout("base")
    daemon = _daemon(layout)
    try:
        first = wait_until(lambda: _standby(daemon), TIMEOUT, "a standby child")
        subprocess.run(["kill", "-KILL", str(first)], check=True)
        second = wait_until(lambda: _standby(daemon, other_than=first), TIMEOUT, "a second standby child")
        write_jsonl(layout.inbox / "a.jsonl", chat_rows(8))
        wait_until(lambda: (layout.done / "a.jsonl.report.json").exists(), TIMEOUT, "a.jsonl to be trained")
        assert f"training in standby child {second}" in _daemon_log(layout)
        assert f"standby training child {first} exited with code -9" in _daemon_log(layout)
        wait_until(lambda: _standby(daemon, other_than=second), TIMEOUT, "a fresh standby for the next file")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=90) == 0
    finally:
        daemon.kill()
    assert json.loads((layout.done / "a.jsonl.report.json").read_text())["outcome"] == "trained"
    assert _events(layout, "training_started")[-1]["attempt"] == 1


def test_the_standby_dies_with_its_daemon(make_layout):
    layout = make_layout("base")
    daemon = _daemon(layout)
    try:
        standby = wait_until(lambda: _standby(daemon), TIMEOUT, "a standby child")
        wait_until(lambda: "ready in" in (layout.logs / "daemon-output.log").read_text(), TIMEOUT, "the warm-up")
        daemon.kill()  # SIGKILL: the daemon cannot end it itself
        daemon.wait(timeout=30)
        wait_until(lambda: not alive(standby), 30, "the standby to die with its daemon")
    finally:
        daemon.kill()
