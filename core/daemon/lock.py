"""One daemon per base dir: an ``fcntl.flock`` on ``status/daemon.lock`` that holds the owner's pid.

The kernel releases the lock when the process dies, however it dies, so a crash never leaves a stale
lock; the pid in the file is only there to tell a second daemon whom it collided with.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class DaemonLockedError(RuntimeError):
    """Another daemon holds the lock; ``pid`` is its process id (None if it could not be read)."""

    def __init__(self, path: Path, pid: int | None):
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "another process"
        super().__init__(
            f"another trainctl daemon ({holder}) is already running on this base dir (lock {path}); "
            "stop it first (scripts/daemonctl.sh stop, or kill -TERM the pid), or use another --base-dir"
        )


class DaemonLock:
    """Hold the daemon lock for a ``with`` block (or between ``acquire`` and ``release``).

    Args:
        path: The lock file; created if missing, never deleted.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting and write this process's pid into the file.

        Raises:
            DaemonLockedError: another process holds it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise DaemonLockedError(self.path, read_lock_pid(self.path)) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        logger.info("took the daemon lock %s (pid %d)", self.path, os.getpid())

    def release(self) -> None:
        """Empty the pid and drop the lock."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "DaemonLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def read_lock_pid(path: Path) -> int | None:
    """The pid written in the lock file, or None if it is empty or unreadable."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
