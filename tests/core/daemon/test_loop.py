"""``TrainingDaemon.run_once()`` on the tiny model: where each file ends, what status and events say."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.base.hashing import sha256_file
from core.daemon.loop import Outcome, TrainingDaemon
from core.snapshots.store import SnapshotStore, read_manifest
from core.state.events import EventLog
from core.state.layout import BaseDir, init_base_dir
from core.state.ledger import Ledger
from core.state.status import DaemonState, StatusFile
from tests.conftest import chat_rows, write_jsonl


@pytest.fixture()
def layout(tmp_path, tiny_config, monkeypatch) -> BaseDir:
    monkeypatch.setenv("TB_AUTO", "0")  # TensorBoard logs are written, but no server is started
    layout = init_base_dir(tmp_path / "base")
    layout.config_file.write_text(json.dumps(tiny_config), encoding="utf-8")
    return layout


def _drop(path, rows, mtime: int):
    write_jsonl(path, rows)
    os.utime(path, (mtime, mtime))
    return path


def _events(layout, kind: str) -> list[dict]:
    return [event for event in EventLog(layout.events_file).read() if event["type"] == kind]


def _report(folder, name: str) -> dict:
    return json.loads((folder / f"{name}.report.json").read_text(encoding="utf-8"))


def _files(folder) -> set[str]:
    return {path.name for path in folder.iterdir()}


def test_every_file_ends_in_done_or_failed_and_training_follows_a_rollback(layout, tmp_path):
    first = _drop(layout.inbox_high / "a.jsonl", chat_rows(8), mtime=300)
    rows = chat_rows(6, seed=1)
    _drop(layout.inbox / "b.jsonl", rows[:3] + ["{oops", {"messages": []}] + rows[3:], mtime=100)
    _drop(layout.inbox / "c.jsonl", ["nope", "[1, 2]"], mtime=200)
    shutil.copy(first, layout.inbox_low / "a-again.jsonl")
    (layout.inbox / "x.jsonl").mkdir()
    (layout.inbox / "link.jsonl").symlink_to(write_jsonl(tmp_path / "outside.jsonl", chat_rows(4)))
    digest_a, digest_b = sha256_file(first), sha256_file(layout.inbox / "b.jsonl")
    daemon = TrainingDaemon(layout.root)

    outcomes = [daemon.run_once() for _ in range(5)]

    assert outcomes == [Outcome.TRAINED, Outcome.TRAINED, Outcome.INVALID, Outcome.DUPLICATE, Outcome.IDLE]
    assert _files(layout.done) == {
        "a.jsonl", "a.jsonl.report.json", "b.jsonl", "b.jsonl.report.json",
        "a-again.jsonl", "a-again.jsonl.report.json",
    }
    assert _files(layout.failed) == {"c.jsonl", "c.jsonl.report.json"}
    assert _files(layout.inbox) == {"high", "low", "x.jsonl", "link.jsonl"}
    assert _files(layout.processing) == set()
    # b trained on its good rows; its report lists the bad ones.
    b_report = _report(layout.done, "b.jsonl")
    assert b_report["outcome"] == "trained" and b_report["training"]["examples"] == 5  # 6 good rows, 1 held out
    assert [row["line"] for row in b_report["validation"]["bad_lines"]] == [4, 5]
    c_report = _report(layout.failed, "c.jsonl")
    assert c_report["outcome"] == "invalid" and c_report["validation"]["good_rows"] == 0
    duplicate = _report(layout.done, "a-again.jsonl")
    assert (duplicate["outcome"], duplicate["duplicate_of"]) == ("duplicate", "a.jsonl")
    # Snapshots chain: b continued from a; the ledger holds each trained content once.
    store = SnapshotStore(layout)
    snap_a, snap_b = store.list()
    assert (snap_a.source_file, snap_b.source_file, snap_b.parent) == ("a.jsonl", "b.jsonl", snap_a.id)
    assert Ledger(layout.ledger_file).lookup(digest_a)["snapshot"] == snap_a.id
    assert Ledger(layout.ledger_file).lookup(digest_b)["snapshot"] == snap_b.id
    status = StatusFile(layout.status_file).read()
    assert status.state is DaemonState.IDLE and status.current_file is None
    assert (status.last_completed_file, status.current_snapshot) == ("b.jsonl", snap_b.id)
    assert status.queued_files == [] and status.model_display_name == "tiny-test"
    ignored = {event["path"]: event["reason"] for event in _events(layout, "entry_ignored")}
    assert len(_events(layout, "entry_ignored")) == 2
    assert "folder" in ignored["x.jsonl"] and "symbolic link" in ignored["link.jsonl"]
    assert [e["file"] for e in _events(layout, "snapshot_promoted")] == ["a.jsonl", "b.jsonl"]
    assert [e["file"] for e in _events(layout, "validation_failed")] == ["c.jsonl"]
    assert [e["file"] for e in _events(layout, "file_duplicate")] == ["a-again.jsonl"]
    runs = [json.loads(p.read_text()) for p in sorted(layout.runs.glob("20*/run.json"))]
    assert [(r["phase"], r["status"], Path(r["data_files"][0]["path"]).name) for r in runs] == [
        ("daemon", "completed", "a.jsonl"), ("daemon", "completed", "b.jsonl"),
    ]
    assert runs[0]["data_files"][0]["sha256"] == digest_a and runs[0]["steps"] == 2
    assert all(list((layout.runs / r["id"] / "tensorboard").glob("**/events.out.tfevents.*")) for r in runs)

    store.rollback("previous")
    write_jsonl(layout.inbox / "d.jsonl", chat_rows(4, seed=5))

    assert daemon.run_once() is Outcome.TRAINED
    snap_d = store.current()
    assert read_manifest(snap_d.path)["parent_snapshot"] == snap_a.id
    assert _events(layout, "training_started")[-1]["model_source"] == str(snap_a.path.resolve())
    assert StatusFile(layout.status_file).read().current_snapshot == snap_d.id


def test_a_file_still_changing_waits_in_the_inbox_and_is_listed_as_queued(layout, tiny_config):
    layout.config_file.write_text(json.dumps({**tiny_config, "daemon": {"stable_seconds": 5}}))
    now = [100.0]
    daemon = TrainingDaemon(layout.root, clock=lambda: now[0])
    path = write_jsonl(layout.inbox_low / "a.jsonl", chat_rows(2))

    assert daemon.run_once() is Outcome.WAITING
    now[0] += 4.0
    write_jsonl(path, chat_rows(3))  # still growing: the 5 s start again
    now[0] += 4.0
    assert daemon.run_once() is Outcome.WAITING

    assert _files(layout.inbox_low) == {"a.jsonl"} and _files(layout.processing) == set()
    assert StatusFile(layout.status_file).read().queued_files == ["low/a.jsonl"]
    assert [e["path"] for e in _events(layout, "file_detected")] == ["low/a.jsonl"]
    assert _events(layout, "file_claimed") == []


def test_a_refused_config_edit_keeps_the_last_good_config(layout, tiny_config):
    daemon = TrainingDaemon(layout.root)
    assert daemon.run_once() is Outcome.IDLE  # reads the good config
    layout.config_file.write_text('{"method": "lora", "hyperparams": {"batch_sise": 2}}', encoding="utf-8")
    write_jsonl(layout.inbox / "a.jsonl", chat_rows(4))

    assert daemon.run_once() is Outcome.TRAINED
    assert daemon.run_once() is Outcome.IDLE

    rejected = _events(layout, "config_rejected")
    assert len(rejected) == 1  # once per edit, not once per loop
    assert "hyperparams.batch_sise: unknown key; did you mean 'batch_size'?" in rejected[0]["problems"]
    assert _report(layout.done, "a.jsonl")["training"]["steps"] == 1  # batch_size 4 from the good config
    assert "batch_sise" in StatusFile(layout.status_file).read().last_error

    # A valid config that cannot continue the current adapter (another LoRA rank) is refused too.
    layout.config_file.write_text(json.dumps({**tiny_config, "lora": {**tiny_config["lora"], "r": 8}}))
    assert daemon.run_once() is Outcome.IDLE
    last_error = StatusFile(layout.status_file).read().last_error
    assert "lora.r 4 -> 8" in last_error and "move current_model and snapshots/ aside" in last_error
    assert len(_events(layout, "config_rejected")) == 2
    assert daemon.guard.config.lora.r == 4


def _crashing_child(base_dir, train_file, output_dir, *, log_file, **kwargs):
    """Stands in for the training child: dies the way a crash (e.g. out of memory) would."""
    script = "import sys; print('Traceback (most recent call last):\\nMemoryError: boom', file=sys.stderr); sys.exit(1)"
    with open(log_file, "ab") as log:
        return subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT)


def test_failed_attempts_count_across_restarts_then_the_file_fails_with_its_log(layout, tiny_config, monkeypatch):
    monkeypatch.setattr("core.daemon.child_run.launch_training", _crashing_child)
    layout.config_file.write_text(json.dumps({**tiny_config, "daemon": {"stable_seconds": 0, "max_attempts": 2}}))
    write_jsonl(layout.inbox / "a.jsonl", chat_rows(4))

    assert TrainingDaemon(layout.root).run_once() is Outcome.RETRY
    assert _files(layout.processing) == {"a.jsonl", "a.jsonl.work"}
    assert "attempt 1 failed" in StatusFile(layout.status_file).read().last_error

    assert TrainingDaemon(layout.root).run_once() is Outcome.FAILED  # a restarted daemon counts on

    assert _files(layout.processing) == set()
    report = _report(layout.failed, "a.jsonl")
    assert report["outcome"] == "failed" and report["attempts"] == 2
    assert "exited with code 1" in report["error"]
    assert "MemoryError: boom" in report["traceback"]
    assert [e["attempt"] for e in _events(layout, "training_started")] == [1, 2]
    assert [e["file"] for e in _events(layout, "file_failed")] == ["a.jsonl"]
    assert SnapshotStore(layout).list() == []
