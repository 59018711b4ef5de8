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


def test_ts_and_id_are_reserved(tmp_path):
    with pytest.raises(ValueError, match="ts"):
        EventLog(tmp_path / "e.jsonl").emit(EventType.ROLLBACK, ts="yesterday")
    with pytest.raises(ValueError, match="id"):
        EventLog(tmp_path / "e.jsonl").emit(EventType.ROLLBACK, id=3)


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


def test_ids_count_from_one_and_continue_across_rotations(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", max_bytes=600, keep=2)
    for i in range(30):
        log.emit(EventType.FILE_DETECTED, file=f"{i}.jsonl")
    assert [p.name for p in log.files()] == ["events.jsonl", "events.1.jsonl", "events.2.jsonl"]
    assert not (tmp_path / "events.3.jsonl").exists()  # the oldest beyond keep is deleted
    assert all(p.stat().st_size <= 600 for p in log.files())
    kept = [e["id"] for p in reversed(log.files()) for e in EventLog(p).read()]
    assert kept == list(range(kept[0], 31)) and kept[0] > 1
    assert log.last_id() == 30
    assert [e["file"] for e in log.tail(3)] == ["27.jsonl", "28.jsonl", "29.jsonl"]
    assert [e["id"] for e in log.after(kept[0] + 1, 4)] == [kept[0] + 2 + i for i in range(4)]
    assert log.after(30, 5) == []


def test_lines_written_before_ids_are_numbered_by_position(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"ts": "t", "type": "daemon_started"}\n{"ts": "t", "type": "file_claimed"}\n')
    log = EventLog(path)
    assert log.last_id() == 2
    assert log.emit(EventType.DAEMON_STOPPED)["id"] == 3
    assert [(e["id"], e["type"]) for e in log.after(1, 10)] == [(2, "file_claimed"), (3, "daemon_stopped")]
    assert [e["id"] for e in log.tail(10)] == [1, 2, 3]


def test_a_follower_reads_every_event_once_across_a_rotation(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", max_bytes=400, keep=3)
    log.emit(EventType.DAEMON_STARTED, pid=1)
    tail = log.follow(0)
    seen = [i for i, _ in tail.read_new()]
    for i in range(12):  # several rotations between two reads
        log.emit(EventType.FILE_DETECTED, file=f"{i}.jsonl")
        if i % 5 == 4:
            seen += [event_id for event_id, _ in tail.read_new()]
    seen += [event_id for event_id, _ in tail.read_new()]
    tail.close()
    assert seen == list(range(1, 14))
    current = [e["id"] for e in log.read()]
    assert current[-1] == 13 and current[0] > 1
    assert [i for i, _ in log.follow(11).read_new()] == [i for i in current if i > 11]  # this file only
    assert [e["id"] for e in log.after(11, 10)] == [12, 13]  # across files


def test_a_follower_of_a_rewritten_log_starts_again(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    log.emit(EventType.DAEMON_STARTED, pid=1)
    tail = log.follow(0)
    assert [i for i, _ in tail.read_new()] == [1]
    log.path.unlink()
    log.emit(EventType.DAEMON_STARTED, pid=2)
    assert [(i, e["pid"]) for i, e in tail.read_new()] == [(1, 2)]


def _emit_rotating(path: str, writer: int, count: int) -> None:
    log = EventLog(path, max_bytes=20_000, keep=50)
    for i in range(count):
        log.emit(EventType.CHECKPOINT_SAVED, writer=writer, i=i, pad="x" * 200)


def test_concurrent_writers_rotating_lose_no_event_and_share_one_sequence(tmp_path):
    path = str(tmp_path / "events.jsonl")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_emit_rotating, args=(path, w, 150)) for w in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    log = EventLog(path, keep=50)
    events = [e for p in reversed(log.files()) for e in EventLog(p).read()]
    assert len(log.files()) > 2
    assert [e["id"] for e in events] == list(range(1, 301))
    for writer in range(2):
        assert [e["i"] for e in events if e["writer"] == writer] == list(range(150))
