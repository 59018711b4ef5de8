"""Watch and claim the inbox: which JSONL file is trained next, and taking it out of the inbox.

The directory scan is the source of truth. ``inbox/high/`` is taken before ``inbox/``, which is
taken before ``inbox/low/``; inside a folder the oldest file (mtime) goes first, then by name.
Only regular ``*.jsonl`` files with a single name are candidates. Everything else (hidden files,
``*.part``/``*.tmp`` uploads, folders, symlinks, hard links, FIFOs, devices, names with newlines) is
never opened: the scan reports it once so the daemon can log an ``entry_ignored`` event.

A candidate is claimable once its size and mtime stayed unchanged for ``daemon.stable_seconds``
(:class:`StabilityTracker`), then :func:`claim` moves it into ``queue/processing/`` with one
atomic rename. File-system events (:class:`InboxWatcher`) only wake the loop early.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from core.base.atomic import fsync_dir
from core.state.layout import BaseDir

logger = logging.getLogger(__name__)

SUFFIX = ".jsonl"
UPLOAD_SUFFIXES = (".part", ".tmp")
# A hard link can give the inbox a file from anywhere on the file system, one its writer may not be
# allowed to read; the daemon would train on it (and file it away) with its own rights.
HARD_LINK_REASON = "hard link (the file has other names); copy or move the file itself into the inbox"


class ClaimError(OSError):
    """A claimed entry is not a regular file (it was swapped since the scan); the message says why."""


@dataclass(frozen=True)
class InboxFile:
    """A candidate file. ``priority`` is 0 for ``inbox/high``, 1 for ``inbox/``, 2 for ``inbox/low``."""

    path: Path
    priority: int
    size: int
    mtime_ns: int

    @property
    def sort_key(self) -> tuple[int, int, str]:
        return (self.priority, self.mtime_ns, self.path.name)


@dataclass(frozen=True)
class IgnoredEntry:
    """An inbox entry that is not a candidate, with the reason it was left alone."""

    path: Path
    reason: str


@dataclass(frozen=True)
class ScanResult:
    """One scan: candidates in the order they should be trained, and newly seen ignored entries."""

    candidates: list[InboxFile]
    ignored: list[IgnoredEntry]


def ignore_reason(name: str, mode: int, links: int = 1) -> str | None:
    """Why the entry ``name`` with ``lstat`` mode ``mode`` and ``links`` names is not a candidate.

    Returns None if it is one.
    """
    if "\n" in name or "\r" in name:
        return "name contains a line break; rename the file"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8; rename the file"
    if name.startswith("."):
        return "hidden file"
    if name.endswith(UPLOAD_SUFFIXES):
        return "upload in progress (*.part/*.tmp); rename it to *.jsonl when it is complete"
    if stat.S_ISLNK(mode):
        return "symbolic link; copy or move the file itself into the inbox"
    if stat.S_ISDIR(mode):
        return "folder; only files directly in inbox/, inbox/high/ and inbox/low/ are read"
    if not stat.S_ISREG(mode):
        return "not a regular file (FIFO, socket or device)"
    if links > 1:
        return HARD_LINK_REASON
    if not name.endswith(SUFFIX):
        return f"not a {SUFFIX} file; rename it to end in {SUFFIX} to train on it"
    return None


class Inbox:
    """Scans the three inbox folders and remembers which ignored entries were already reported.

    Args:
        layout: The base directory.
    """

    def __init__(self, layout: BaseDir) -> None:
        self.layout = layout
        self.folders = [layout.inbox_high, layout.inbox, layout.inbox_low]
        self._reported: set[tuple[Path, str]] = set()

    def scan(self) -> ScanResult:
        """List candidates (sorted by priority, mtime, name) and ignored entries not reported yet."""
        candidates: list[InboxFile] = []
        ignored: list[IgnoredEntry] = []
        for priority, folder in enumerate(self.folders):
            for entry in self._entries(folder):
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed or renamed since the folder was listed
                reason = ignore_reason(entry.name, info.st_mode, info.st_nlink)
                if reason is None:
                    candidates.append(InboxFile(Path(entry.path), priority, info.st_size, info.st_mtime_ns))
                else:
                    ignored.append(IgnoredEntry(Path(entry.path), reason))
        present = {(item.path, item.reason) for item in ignored}
        # Forget entries that went away, so a new entry with the same name is reported again.
        self._reported &= present
        fresh = [item for item in ignored if (item.path, item.reason) not in self._reported]
        self._reported |= present
        candidates.sort(key=lambda item: item.sort_key)
        return ScanResult(candidates, fresh)

    def _entries(self, folder: Path) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as entries:
                return [e for e in entries if Path(e.path) not in self.folders]
        except FileNotFoundError:
            return []


class StabilityTracker:
    """Tells when a file stopped changing: same size and mtime for ``stable_seconds``.

    Args:
        stable_seconds: How long size and mtime must stay the same.
        clock: Monotonic clock in seconds; tests inject a fake one.
    """

    def __init__(self, stable_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stable_seconds = stable_seconds
        self.clock = clock
        self._seen: dict[Path, tuple[int, int, float]] = {}

    def is_stable(self, item: InboxFile) -> bool:
        """Record this observation of ``item``; True once it has not changed for long enough."""
        now = self.clock()
        size, mtime_ns, since = self._seen.get(item.path, (-1, -1, now))
        if (size, mtime_ns) != (item.size, item.mtime_ns):
            since = now
        self._seen[item.path] = (item.size, item.mtime_ns, since)
        return now - since >= self.stable_seconds

    def seconds_left(self, item: InboxFile) -> float:
        """Seconds until ``item`` can become stable if it stops changing now."""
        _, _, since = self._seen.get(item.path, (0, 0, self.clock()))
        return max(0.0, self.stable_seconds - (self.clock() - since))

    def retain(self, paths: set[Path]) -> None:
        """Forget every file not in ``paths`` (claimed or deleted)."""
        self._seen = {path: seen for path, seen in self._seen.items() if path in paths}


def claim(path: Path, processing_dir: Path) -> Path:
    """Move ``path`` into ``processing_dir`` with one atomic rename.

    The original name is kept; if it is taken, ``-1``, ``-2``... is added before the suffix. Only
    one daemon runs per base dir (the lock file), so nothing else renames into the folder. The
    entry could have been swapped for a symlink or FIFO since the scan, so open the claimed file
    only through :func:`check_regular_file` (``O_NOFOLLOW``) first.

    Returns:
        The claimed file's new path.

    Raises:
        FileNotFoundError: the file disappeared before it could be claimed.
    """
    target = free_name(processing_dir, path.name)
    os.rename(path, target)
    fsync_dir(processing_dir)
    fsync_dir(path.parent)
    logger.info("claimed %s as %s", path.name, target)
    return target


def check_regular_file(path: Path) -> None:
    """Open ``path`` without following links or blocking on FIFOs; raise unless it is a regular file.

    Raises:
        ClaimError: ``path`` is a symlink, FIFO, device, socket, folder or hard link.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise ClaimError(f"{path.name} cannot be opened as a plain file ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ClaimError(f"{path.name} is not a regular file; put a plain .jsonl file in the inbox")
        if info.st_nlink > 1:
            raise ClaimError(f"{path.name} is a {HARD_LINK_REASON}")
    finally:
        os.close(fd)


def free_name(folder: Path, name: str) -> Path:
    """``folder / name``, or ``folder / "stem-N.suffix"`` with the first N not taken."""
    target = folder / name
    stem, suffix = os.path.splitext(name)
    number = 0
    while os.path.lexists(target):
        number += 1
        target = folder / f"{stem}-{number}{suffix}"
    return target


class _WakeHandler(FileSystemEventHandler):
    def __init__(self, wake: threading.Event) -> None:
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("opened", "closed_no_write"):
            self.wake.set()


def _not_the_stop_race(record: logging.LogRecord) -> bool:
    """False for the ERROR watchdog logs when ``stop()`` lands while its thread waits for an event.

    watchdog's inotify emitter closes its handle on stop and then reports, as an error, that the
    read it was blocked in found the handle gone (gorakhargosh/watchdog#963): nothing is wrong.
    """
    return "called when the thread is inactive" not in record.getMessage()


class InboxWatcher:
    """Sets ``wake`` on file-system events under ``inbox/`` so the loop rescans early.

    Events are hints only; a missed event costs at most ``daemon.rescan_seconds`` of delay.

    Args:
        inbox: The inbox folder (watched recursively, which covers high/ and low/).
        wake: The event the daemon loop waits on.
    """

    def __init__(self, inbox: Path, wake: threading.Event) -> None:
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.schedule(_WakeHandler(wake), str(inbox), recursive=True)

    def start(self) -> None:
        """Start the observer thread."""
        self._observer.start()

    def stop(self) -> None:
        """Stop the observer thread and wait for it."""
        inotify_log = logging.getLogger("watchdog.observers.inotify")
        if _not_the_stop_race not in inotify_log.filters:
            inotify_log.addFilter(_not_the_stop_race)
        self._observer.stop()
        self._observer.join(timeout=5)
