"""``daemon.on_promote``: run after each promotion and rollback with the documented variables; a hook
that fails or hangs is reported (and killed after its limit) while training goes on."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest

from core.cli import main
from core.daemon.loop import Outcome, TrainingDaemon
from core.snapshots.hooks import PROMOTE, run_hook
from core.snapshots.store import SnapshotStore
from core.state.events import EventLog
from core.state.layout import BaseDir, init_base_dir
from tests.conftest import chat_rows, write_jsonl
from trainer.config.schema import DaemonSettings

# Records its variables and prints a line; then hangs the first time it runs and fails every time after.
HOOK = (
    'echo "$TRAINCTL_EVENT $TRAINCTL_SNAPSHOT_ID $TRAINCTL_SNAPSHOT_PATH prev=$TRAINCTL_PREVIOUS_ID" >> hook.log; '
    'echo "reloaded $TRAINCTL_SNAPSHOT_ID"; '
    "if [ -e called ]; then echo broken >&2; exit 3; else touch called; sleep 60; fi"
)


@pytest.fixture()
def layout(tmp_path, tiny_config, monkeypatch) -> BaseDir:
    monkeypatch.setenv("TB_AUTO", "0")
    layout = init_base_dir(tmp_path / "base")
    config = {**tiny_config, "daemon": {**tiny_config["daemon"], "on_promote": HOOK, "hook_timeout_seconds": 1.0}}
    layout.config_file.write_text(json.dumps(config), encoding="utf-8")
    return layout


def _drop(layout: BaseDir, name: str, seed: int, mtime: int) -> None:
    path = write_jsonl(layout.inbox / name, chat_rows(6, seed=seed))
    os.utime(path, (mtime, mtime))


def _hook_events(layout: BaseDir) -> list[dict]:
    return [e for e in EventLog(layout.events_file).read() if e["type"] == "promotion_hook"]


def test_hook_runs_after_promotion_and_rollback_and_a_hanging_or_failing_one_blocks_nothing(layout, caplog):
    caplog.set_level(logging.INFO, logger="core.snapshots.hooks")
    _drop(layout, "a.jsonl", seed=0, mtime=100)
    _drop(layout, "b.jsonl", seed=1, mtime=200)
    daemon = TrainingDaemon(layout.root)

    assert [daemon.run_once(), daemon.run_once()] == [Outcome.TRAINED, Outcome.TRAINED]
    first, second = [s.id for s in SnapshotStore(layout).list()]
    assert main(["rollback", "previous", "--base-dir", str(layout.root)]) == 0

    snapshots = layout.snapshots.resolve()
    assert (layout.root / "hook.log").read_text().splitlines() == [
        f"promote {first} {snapshots / first} prev=",
        f"promote {second} {snapshots / second} prev={first}",
        f"rollback {first} {snapshots / first} prev={second}",
    ]
    hung, failed, rolled_back = _hook_events(layout)
    assert [(e["event"], e["snapshot"], e["previous"]) for e in (hung, failed, rolled_back)] == [
        ("promote", first, None), ("promote", second, first), ("rollback", first, second)]
    assert (hung["exit_code"], hung["timed_out"]) == (None, True) and hung["seconds"] < 10  # the 60 s sleep was cut at the 1 s limit
    assert (failed["exit_code"], failed["timed_out"]) == (3, False)
    assert failed["output_tail"] == f"reloaded {second}\nbroken\n"
    assert f"on_promote [{first}]: reloaded {first}" in caplog.text  # output of a killed hook is kept too


def test_the_whole_process_group_is_killed_at_the_limit(layout, tmp_path):
    snapshot = type("Snapshot", (), {"id": "0001-x", "path": tmp_path})()
    settings = DaemonSettings(on_promote="sleep 60 & sleep 60; echo never", hook_timeout_seconds=0.5)
    started = time.monotonic()
    event = run_hook(layout, settings, PROMOTE, snapshot, None)
    assert event["timed_out"] and "never" not in event["output_tail"]
    assert time.monotonic() - started < 8


def test_no_hook_configured_runs_nothing(layout, tmp_path):
    snapshot = type("Snapshot", (), {"id": "0001-x", "path": tmp_path})()
    assert run_hook(layout, DaemonSettings(), PROMOTE, snapshot, None) is None
    assert _hook_events(layout) == []
