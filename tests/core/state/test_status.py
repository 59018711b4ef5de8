"""``training_status.json``: atomic writes, locked updates, and ``trainctl status``."""

from __future__ import annotations

import json
import multiprocessing
import threading
from datetime import datetime, timedelta, timezone

import pytest

from core.cli import main
from core.state.layout import init_base_dir
from core.state.status import (
    DaemonState,
    StatusFile,
    StatusFileError,
    TrainingStatus,
    format_duration,
    format_status,
)


def test_read_absent_is_none(tmp_path):
    assert StatusFile(tmp_path / "status.json").read() is None


def test_update_keeps_other_fields_and_stamps_time(tmp_path):
    status = StatusFile(tmp_path / "status" / "training_status.json")
    status.update(state=DaemonState.TRAINING, current_file="a.jsonl", total_steps=10)
    after = status.update(current_step=3, loss=1.5)
    assert after == status.read()
    assert (after.state, after.current_file, after.total_steps) == ("training", "a.jsonl", 10)
    assert (after.current_step, after.loss) == (3, 1.5)
    assert after.updated_at.endswith("Z")
    assert json.loads(status.path.read_text())["state"] == "training"


def test_update_rejects_unknown_field_and_bad_value(tmp_path):
    status = StatusFile(tmp_path / "s.json")
    with pytest.raises(StatusFileError, match="stat"):
        status.update(stat="idle")
    with pytest.raises(StatusFileError):
        status.update(state="sleeping")
    assert status.read() is None


def test_reader_never_sees_partial_json(tmp_path):
    status = StatusFile(tmp_path / "training_status.json")
    status.write(TrainingStatus())
    stop = threading.Event()
    seen, failures = [], []

    def reader():
        while not stop.is_set():
            try:
                seen.append(status.read().current_step)
            except Exception as exc:  # record, so the assertion below reports it
                failures.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    for step in range(500):
        status.update(current_step=step, queued_files=[f"file-{i}.jsonl" for i in range(step % 20)])
    stop.set()
    thread.join()
    assert failures == []
    assert len(seen) > 0
    assert status.read().current_step == 499


def _bump(path: str, field: str, count: int) -> None:
    status = StatusFile(path)
    for i in range(1, count + 1):
        status.update(**{field: i})


def test_updates_from_two_processes_lose_no_field(tmp_path):
    path = str(tmp_path / "training_status.json")
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_bump, args=(path, "current_step", 400)),
        ctx.Process(target=_bump, args=(path, "daemon_pid", 400)),
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    final = StatusFile(path).read()
    assert (final.current_step, final.daemon_pid) == (400, 400)


def test_format_status_summarizes_progress():
    now = datetime(2025, 1, 1, 12, 0, 30, tzinfo=timezone.utc)
    status = TrainingStatus(
        state=DaemonState.TRAINING,
        current_file="a.jsonl",
        current_step=25,
        total_steps=100,
        loss=0.123456,
        eta_seconds=3725,
        queued_files=["b.jsonl", "c.jsonl"],
        updated_at=(now - timedelta(seconds=30)).isoformat(),
    )
    text = format_status(status, now=now)
    assert "25/100 (25.0%)" in text
    assert "0.1235" in text
    assert "1:02:05" in text
    assert "b.jsonl, c.jsonl" in text
    assert "0:00:30 ago" in text


def test_format_duration():
    assert format_duration(0) == "0:00:00"
    assert format_duration(59.6) == "0:01:00"
    assert format_duration(36000) == "10:00:00"


def test_cli_status_json_prints_the_file(tmp_path, capsys):
    base = init_base_dir(tmp_path)
    StatusFile(base.status_file).update(state=DaemonState.IDLE, last_completed_file="a.jsonl")
    capsys.readouterr()
    assert main(["status", "--json", "--base-dir", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["state"] == "idle" and printed["last_completed_file"] == "a.jsonl"
    assert main(["status", "--base-dir", str(tmp_path)]) == 0
    assert "a.jsonl" in capsys.readouterr().out


def test_cli_status_without_status_says_so(tmp_path, capsys):
    init_base_dir(tmp_path)
    assert main(["status", "--base-dir", str(tmp_path)]) == 1
    assert "no status yet" in capsys.readouterr().err
