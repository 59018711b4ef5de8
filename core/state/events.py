"""``status/events.jsonl``: an append-only log of what happened to each file and snapshot.

Each event is one JSON line ``{"ts": ..., "type": ..., **fields}``, written with a single ``write()``
on a descriptor opened with ``O_APPEND`` while holding an ``flock`` on the log, so lines from the
daemon and its training child never interleave, and fsynced before ``emit`` returns. A crash can
still leave a torn last line: ``read`` skips it, and the next ``emit`` starts a fresh line so the
torn one does not swallow it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from enum import Enum
from pathlib import Path

from core.base.clock import utc_now_iso

logger = logging.getLogger(__name__)


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


class EventLog:
    """Append to and read one ``events.jsonl``.

    Args:
        path: The log file; it and its folder are created on the first ``emit``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def emit(self, type: EventType, **fields) -> dict:
        """Append one event and return it as written.

        Args:
            type: What happened.
            **fields: JSON-serializable details (file name, snapshot id, reason, ...).
                ``ts`` is reserved.

        Raises:
            ValueError: ``fields`` contains ``ts``.
        """
        if "ts" in fields:
            raise ValueError("'ts' is set by EventLog.emit; pass the time under another name")
        event = {"ts": utc_now_iso(), "type": EventType(type).value, **fields}
        line = (json.dumps(event, default=str, ensure_ascii=False) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # The lock makes the torn-line check and the write one step: without it, a line that
            # another process is still writing looks torn (the size grows page by page).
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _ends_torn(fd):
                line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return event

    def read(self) -> list[dict]:
        """Every complete event, oldest first. A torn or unparsable line is skipped with a warning."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        events = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                event = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                event = None
            if isinstance(event, dict):
                events.append(event)
            else:
                logger.warning("skipped unreadable line %d of %s", number, self.path)
        return events
