"""The append-only event log."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from core.state.events import EventLog, EventType


def test_emit_appends_one_line_per_event(tmp_path):
    log = EventLog(tmp_path / "status" / "events.jsonl")
    first = log.emit(EventType.FILE_DETECTED, file="a.jsonl")
    log.emit(EventType.ROLLBACK, **{"from": "0002-x", "to": "0001-y"})
    lines = log.path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["file_detected", "rollback"]
    assert json.loads(lines[0]) == first
    assert first["ts"].endswith("Z") and first["file"] == "a.jsonl"
    assert log.read()[1]["from"] == "0002-x"


def test_read_skips_a_torn_last_line(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    log.emit(EventType.DAEMON_STARTED, pid=1)
    log.emit(EventType.FILE_CLAIMED, file="b.jsonl")
    with open(log.path, "ab") as handle:
        handle.write(b'{"ts": "2025-01-01T00:00:00Z", "type": "train')
    assert [e["type"] for e in log.read()] == ["daemon_started", "file_claimed"]
    log.emit(EventType.DAEMON_STOPPED)
    # The next event starts on a fresh line instead of being glued to the torn one.
    assert [e["type"] for e in log.read()] == ["daemon_started", "file_claimed", "daemon_stopped"]


def test_missing_log_reads_empty(tmp_path):
    assert EventLog(tmp_path / "none.jsonl").read() == []


def test_ts_is_reserved(tmp_path):
    with pytest.raises(ValueError, match="ts"):
        EventLog(tmp_path / "e.jsonl").emit(EventType.ROLLBACK, ts="yesterday")


def _emit_many(path: str, writer: int, count: int) -> None:
    log = EventLog(path)
    for i in range(count):
        log.emit(EventType.CHECKPOINT_SAVED, writer=writer, i=i, pad="x" * 2000)


def test_concurrent_writers_do_not_interleave(tmp_path):
    path = str(tmp_path / "events.jsonl")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_emit_many, args=(path, w, 100)) for w in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    lines = (tmp_path / "events.jsonl").read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]  # raises if any line is interleaved
    assert len(events) == 200
    for writer in range(2):
        assert [e["i"] for e in events if e["writer"] == writer] == list(range(100))
