"""``status/ledger.jsonl``: which file contents were already trained or failed, keyed by SHA-256.

The daemon looks a claimed file's digest up before training it, so the same content dropped twice
(or re-claimed after a crash) is trained exactly once. Each record is one JSON line appended to the
file (``{"sha256": ..., "file": ..., "outcome": ..., "recorded_at": ...}``) and fsynced before
``record`` returns; a later line for the same digest replaces the earlier one. An append costs the
same at 100 entries as at 100,000 (docs/performance.md, "Cost as the work grows: state").

A crash (or a full disk) in the middle of an append can leave a torn last line. Readers skip it, and
the next ``record`` cuts it off under the file's lock before it appends, with a warning: the entries
before it are never lost, and the daemon still starts. An unreadable line anywhere else is an error
that names the line.

A ``Ledger`` keeps the entries in memory and reads only the bytes appended since it last looked (the
whole file again only when it was replaced), so the daemon's lookup of each file is a dict lookup.
An older ``status/ledger.json`` (one JSON object of digest -> entry) is migrated on first use: its
entries are written atomically to the new file, then the old file is removed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path

from core.base import faults
from core.base.atomic import atomic_write_text, fsync_dir
from core.base.clock import utc_now_iso

logger = logging.getLogger(__name__)

LEGACY_SUFFIX = ".json"


class LedgerError(ValueError):
    """The ledger exists but cannot be read."""


class Ledger:
    """The exactly-once record of trained and failed file contents.

    Entries are plain dicts, by convention with ``file`` (name), ``outcome`` (``"trained"``,
    ``"rejected"`` or ``"failed"``), ``snapshot`` (id) and ``recorded_at`` (set by ``record``).

    Args:
        path: The ledger file (``ledger.jsonl``); created on the first ``record``. A
            ``ledger.json`` beside it is the older format, migrated on first use.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.legacy_path = self.path.with_suffix(LEGACY_SUFFIX)
        self._entries: dict[str, dict] = {}
        self._inode: int | None = None
        self._offset = 0  # bytes of whole lines read so far
        self._line = 0
        self._torn_warned: tuple[int | None, int] | None = None

    def lookup(self, digest: str) -> dict | None:
        """The entry recorded for ``digest``, or ``None`` if that content was never recorded."""
        entry = self._load().get(digest)
        return dict(entry) if entry is not None else None

    def record(self, digest: str, **entry) -> dict:
        """Append the entry for ``digest`` (replacing any earlier one) and fsync it; returns the entry.

        Writers hold the file's ``flock`` while they append, so even two processes never interleave.

        Raises:
            OSError: the line could not be written (a full disk); the ledger is as it was.
        """
        self._load()
        stored = {**entry, "recorded_at": utc_now_iso()}
        line = (json.dumps({"sha256": digest, **stored}, default=str) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = _cut_torn_tail(fd, self.path)
            try:
                faults.before_replace(self.path)
                _write_all(fd, line)
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, size)  # no torn line left behind by a full disk
                raise
        finally:
            os.close(fd)  # releases the flock
        if created:
            fsync_dir(self.path.parent)
        self._load()  # takes in this line, and any another process appended before it
        logger.debug("ledger %s: %s -> %s", self.path, digest[:12], stored)
        return stored

    def entries(self) -> dict[str, dict]:
        """Every entry, by digest."""
        return {digest: dict(entry) for digest, entry in self._load().items()}

    def _load(self) -> dict[str, dict]:
        """The entries, after reading what was appended since the last look (all of it if replaced)."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            if not self._migrate():
                self._entries, self._inode, self._offset, self._line = {}, None, 0, 0
                return self._entries
            info = os.stat(self.path)
        if info.st_ino != self._inode or info.st_size < self._offset:
            self._entries, self._inode, self._offset, self._line = {}, info.st_ino, 0, 0
        if info.st_size > self._offset:
            self._read_from_offset()
        return self._entries

    def _read_from_offset(self) -> None:
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        lines = data.split(b"\n")
        whole, tail = lines[:-1], lines[-1]  # tail: bytes after the last newline (a line being written)
        try:  # the usual case, every line whole and readable: one parse at C speed
            entries = json.loads(b"[" + b",".join(whole) + b"]")
            if len(entries) != len(whole):
                raise ValueError("a line holds more than one value")
            self._entries.update((entry.pop("sha256"), entry) for entry in entries)
        except (ValueError, KeyError, AttributeError, TypeError):
            self._read_lines(whole, tail)  # finds the line that is not an entry
            return
        self._offset += sum(map(len, whole)) + len(whole)
        self._line += len(whole)

    def _read_lines(self, whole: list[bytes], tail: bytes) -> None:
        last = self._line + len(whole)
        for number, raw in enumerate(whole, start=self._line + 1):
            try:
                entry = json.loads(raw)
                digest = entry.pop("sha256")
            except (ValueError, KeyError, AttributeError, TypeError):
                if number == last and not tail.strip():
                    if self._torn_warned == (self._inode, self._offset):
                        return
                    self._torn_warned = (self._inode, self._offset)
                    logger.warning("%s: line %d is torn (a crash while it was written); skipped, and cut "
                                   "off by the next record", self.path, number)
                    return
                raise LedgerError(
                    f"{self.path}, line {number}: not a ledger entry; delete that line (that file may then "
                    "be trained again) or restore the file from a backup"
                ) from None
            self._entries[digest] = entry
            self._offset += len(raw) + 1
            self._line = number

    def _migrate(self) -> bool:
        """Write the entries of an older ``ledger.json`` to the new file; returns whether there was one."""
        try:
            fd = os.open(self.legacy_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a second process waits here, then finds the new file
            if self.path.exists():
                return True
            with open(fd, encoding="utf-8", closefd=False) as handle:
                old = _parse_legacy(self.legacy_path, handle.read())
            lines = "".join(json.dumps({"sha256": digest, **entry}, default=str) + "\n" for digest, entry in old.items())
            atomic_write_text(self.path, lines)
            self.legacy_path.unlink()
            fsync_dir(self.path.parent)
            logger.info("ledger: %d entries of %s moved to %s", len(old), self.legacy_path, self.path)
            return True
        finally:
            os.close(fd)


def _parse_legacy(path: Path, text: str) -> dict[str, dict]:
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LedgerError(
            f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}); restore it from a "
            "backup or delete it (files already trained may then be trained again)"
        ) from None
    if not isinstance(entries, dict):
        raise LedgerError(f"{path} must hold a JSON object of digest -> entry; delete it")
    return entries


def _cut_torn_tail(fd: int, path: Path) -> int:
    """Cut a last line that a crash left unfinished (no newline, or unreadable); returns the new size."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0
    start = max(0, size - 65536)
    tail = os.pread(fd, size - start, start)
    body = tail[:-1] if tail.endswith(b"\n") else tail
    cut = body.rfind(b"\n") + 1 if b"\n" in body or start == 0 else None
    if cut is None:
        return size  # a last line over 64 KiB: no ledger writes one
    last = body[cut:]
    try:
        json.loads(last)["sha256"]
        if tail.endswith(b"\n"):
            return size
    except (ValueError, KeyError, TypeError):
        pass
    logger.warning("%s: cut off a torn last line (%d bytes) left by a crash while it was written",
                   path, size - start - cut)
    os.ftruncate(fd, start + cut)
    os.fsync(fd)
    return start + cut


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
