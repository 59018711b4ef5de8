"""``status/events.jsonl``: an append-only log of what happened to each file and snapshot.

Each event is one JSON line ``{"id": N, "ts": ..., "type": ..., **fields}``, written with a single
``write()`` on a descriptor opened with ``O_APPEND`` while holding an ``flock`` on ``<log>.lock``, so lines
from the daemon and its training child never interleave, and fsynced before ``emit`` returns. A
crash can still leave a torn last line: readers skip it, and the next ``emit`` starts a fresh line
so the torn one does not swallow it.

``id`` counts events from 1 and never restarts: ``emit`` reads the last line (seeking from the end)
and adds one. Lines written before events carried an id are numbered by their position.

The log is rotated so that reading it stays cheap however long the daemon runs: an ``emit`` that
would take ``events.jsonl`` past ``MAX_BYTES`` (16 MiB, about 100,000 events) first renames it to
``events.1.jsonl`` (``events.1`` to ``events.2``, ...; the oldest beyond ``KEEP`` = 4 is deleted).
Readers of recent events (``tail``, ``after``, ``last_id``, :class:`EventTail`) read from the end,
so their cost follows what they return, not the length of the log.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

from core.base.clock import utc_now_iso

logger = logging.getLogger(__name__)

MAX_BYTES = 16 * 2**20
KEEP = 4
_BLOCK = 1 << 16


class EventType(str, Enum):
    """Kinds of event; serialized as the plain name."""

    FILE_DETECTED = "file_detected"
    FILE_CLAIMED = "file_claimed"
    ENTRY_IGNORED = "entry_ignored"
    VALIDATION_FAILED = "validation_failed"
    TRAINING_STARTED = "training_started"
    CHECKPOINT_SAVED = "checkpoint_saved"
    TRAINING_COMPLETED = "training_completed"
    SNAPSHOT_PROMOTED = "snapshot_promoted"
    PROMOTION_REJECTED = "promotion_rejected"
    EVAL_SET_INVALID = "eval_set_invalid"
    ROLLBACK = "rollback"
    PROMOTION_HOOK = "promotion_hook"
    FILE_FAILED = "file_failed"
    FILE_DUPLICATE = "file_duplicate"
    DISK_FULL = "disk_full"
    CONFIG_REJECTED = "config_rejected"
    ENVIRONMENT_FAULT = "environment_fault"
    ENVIRONMENT_RESOLVED = "environment_resolved"
    DAEMON_STARTED = "daemon_started"
    DAEMON_STOPPED = "daemon_stopped"


def _ends_torn(fd: int) -> bool:
    """True when the file behind ``fd`` is non-empty and does not end with a newline."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _parse(raw: bytes) -> dict | None:
    """The event on one line, or None for a blank, torn or unparsable line."""
    if not raw.strip():
        return None
    try:
        event = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return event if isinstance(event, dict) else None


def _lines_backward(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` of each line of ``path``, last first, read in blocks from the end."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    with handle:
        pos = os.fstat(handle.fileno()).st_size
        rest = b""
        while pos > 0:
            size = min(_BLOCK, pos)
            pos -= size
            handle.seek(pos)
            lines = (handle.read(size) + rest).split(b"\n")
            end = pos + len(lines[0]) + sum(len(line) + 1 for line in lines[1:])
            for line in reversed(lines[1:]):
                end -= len(line)
                yield end, line
                end -= 1
            rest = lines[0]
        if rest:
            yield 0, rest


def _numbered(path: Path) -> list[tuple[int, int, dict]]:
    """``(offset, id, event)`` of every event in ``path``, oldest first; lines without an id (written
    before events had one) are numbered by position, which is what their id was."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    found, last, offset = [], 0, 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        event = _parse(raw)
        if event is not None:
            last = event["id"] if isinstance(event.get("id"), int) else last + 1
            found.append((offset, last, event))
        elif raw.strip():
            logger.warning("skipped unreadable line %d of %s", number, path)
        offset += len(raw) + 1
    return found


class EventLog:
    """Append to and read one ``events.jsonl`` and its rotated predecessors.

    Args:
        path: The log file; it and its folder are created on the first ``emit``.
        max_bytes: Size past which ``emit`` rotates the log.
        keep: Rotated files kept (``events.1.jsonl`` is the newest).
    """

    def __init__(self, path: str | Path, max_bytes: int = MAX_BYTES, keep: int = KEEP):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep

    def emit(self, type: EventType, **fields) -> dict:
        """Append one event and return it as written.

        Args:
            type: What happened.
            **fields: JSON-serializable details (file name, snapshot id, reason, ...).
                ``id`` and ``ts`` are reserved.

        Raises:
            ValueError: ``fields`` contains ``id`` or ``ts``.
        """
        if "ts" in fields or "id" in fields:
            raise ValueError("'id' and 'ts' are set by EventLog.emit; pass the value under another name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._writer_lock():
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                event = {"id": self.last_id() + 1, "ts": utc_now_iso(), "type": EventType(type).value, **fields}
                line = (json.dumps(event, default=str, ensure_ascii=False) + "\n").encode("utf-8")
                if 0 < os.fstat(fd).st_size and os.fstat(fd).st_size + len(line) > self.max_bytes:
                    os.close(fd)
                    self._rotate()
                    fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
                if _ends_torn(fd):
                    line = b"\n" + line
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return event

    @contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """Every writer's lock, on ``<log>.lock`` beside the log (never rotated): reading the last id,
        rotating, the torn-line check and the write are one step for all processes. (A lock on the log
        itself would let a writer that arrives while another rotates number its event from the old file.)"""
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def rotated(self, number: int) -> Path:
        """``events.<number>.jsonl``, the ``number``-th newest rotated log."""
        return self.path.with_name(f"{self.path.stem}.{number}{self.path.suffix}")

    def _rotate(self) -> None:
        self.rotated(self.keep).unlink(missing_ok=True)
        for number in range(self.keep - 1, 0, -1):
            if self.rotated(number).exists():
                os.replace(self.rotated(number), self.rotated(number + 1))
        os.replace(self.path, self.rotated(1))
        logger.info("rotated %s to %s (keeping %d)", self.path, self.rotated(1).name, self.keep)

    def files(self) -> list[Path]:
        """The log and its rotated files that exist, newest first."""
        return [p for p in [self.path, *(self.rotated(n) for n in range(1, self.keep + 1))] if p.exists()]

    def read(self) -> list[dict]:
        """Every complete event of the current file (not the rotated ones), oldest first. A torn or
        unparsable line is skipped with a warning. Reads the whole file: for recent events use ``tail``."""
        return [event for _, _, event in _numbered(self.path)]

    def backward(self) -> Iterator[tuple[int, dict]]:
        """``(id, event)`` newest first, through the rotated files, reading only as far as asked."""
        for path in self.files():
            seen_id = None
            for _, raw in _lines_backward(path):
                event = _parse(raw)
                if event is None:
                    continue
                if not isinstance(event.get("id"), int):  # older lines: number the file from its start
                    yield from ((i, e) for _, i, e in reversed(_numbered(path)) if seen_id is None or i < seen_id)
                    break
                seen_id = event["id"]
                yield seen_id, event

    def last_id(self) -> int:
        """The id of the newest event; 0 when there is none."""
        return next((event_id for event_id, _ in self.backward()), 0)

    def tail(self, limit: int) -> list[dict]:
        """The newest ``limit`` events, oldest first, each with its ``id``."""
        newest = []
        for event_id, event in self.backward():
            if len(newest) == limit:
                break
            newest.append({**event, "id": event_id})
        return newest[::-1]

    def after(self, event_id: int, limit: int) -> list[dict]:
        """The first ``limit`` events with a larger id than ``event_id``, oldest first.

        Reads back from the end to ``event_id``, keeping only ``limit`` events in memory.
        """
        oldest: deque[dict] = deque(maxlen=limit)
        for found_id, event in self.backward():
            if found_id <= event_id:
                break
            oldest.append({**event, "id": found_id})
        return list(reversed(oldest))

    def follow(self, event_id: int) -> EventTail:
        """An :class:`EventTail` whose first ``read_new`` returns the current file's events with a
        larger id than ``event_id`` (found by reading back from the end), then each new one."""
        offset = self.path.stat().st_size if self.path.exists() else 0
        for line_offset, raw in _lines_backward(self.path):
            event = _parse(raw)
            if event is None:
                continue
            if not isinstance(event.get("id"), int):
                later = [(o, i) for o, i, _ in _numbered(self.path) if i > event_id]
                return EventTail(self.path, *later[0]) if later else EventTail(self.path, offset)
            if event["id"] <= event_id:
                break
            offset = line_offset
        return EventTail(self.path, offset)


class EventTail:
    """Reads the events appended to an event log since the last call, across rotations.

    Only complete lines are consumed. When the log is rotated, the rest of the old file is read
    before the new one; a log that shrank or was replaced otherwise is read again from the start.

    Args:
        path: The log.
        offset: Where to start in the current file (see ``EventLog.follow``); 0 reads it all.
        first_id: The id of the event at ``offset``, for a file of lines without ids.
    """

    def __init__(self, path: Path, offset: int = 0, first_id: int = 1) -> None:
        self.path = Path(path)
        self.offset = offset
        self.count = first_id - 1
        self._handle = None

    def read_new(self) -> list[tuple[int, dict]]:
        """``(id, event)`` for each complete event line written since the previous call."""
        if self._handle is None and not self._open():
            return []
        replaced = self._replaced()
        found = self._drain()
        if replaced:
            self._handle.close()
            self._handle = None
            self.offset, self.count = 0, 0
            if self._open():
                found += self._drain()
        return found

    def close(self) -> None:
        """Release the open file."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _open(self) -> bool:
        try:
            self._handle = open(self.path, "rb")
        except FileNotFoundError:
            return False
        if os.fstat(self._handle.fileno()).st_size < self.offset:
            self.offset = 0
        return True

    def _replaced(self) -> bool:
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return True
        return now.st_ino != os.fstat(self._handle.fileno()).st_ino

    def _drain(self) -> list[tuple[int, dict]]:
        if os.fstat(self._handle.fileno()).st_size < self.offset:
            self.offset, self.count = 0, 0
        self._handle.seek(self.offset)
        data = self._handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        found = []
        for raw in complete.split(b"\n"):
            event = _parse(raw)  # a torn line is skipped, as EventLog skips it
            if event is not None:
                self.count = event["id"] if isinstance(event.get("id"), int) else self.count + 1
                found.append((self.count, event))
        return found
