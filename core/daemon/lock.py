"""One daemon per base dir: an ``fcntl.flock`` on ``status/daemon.lock`` that holds the owner's pid.

The kernel releases the lock when the process dies, however it dies, so a crash never leaves a stale
lock; the pid in the file tells a second daemon whom it collided with, and :func:`lock_holder`
(``python -m core.daemon.lock LOCK_FILE``, used by ``scripts/daemonctl.sh``) who runs now.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sys
from pathlib import Path

from core.base.locking import pid_alive

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


def lock_holder(path: Path) -> int | None:
    """The pid of the live daemon holding the lock at ``path``, or None when no daemon holds it.

    The pid in the file counts only while that process is alive and, where ``/proc/locks`` can be
    read (Linux), while the file is flock-ed: a crashed daemon's pid, or a reused one, never counts.
    Nothing here takes the lock, so asking never gets in the way of a daemon that is starting.
    """
    pid = read_lock_pid(path)
    if pid is None or not pid_alive(pid):
        return None
    return pid if _flocked(Path(path)) in (True, None) else None


def _flocked(path: Path) -> bool | None:
    """Whether some process holds an flock on ``path`` (None: cannot tell on this system)."""
    try:
        stat = os.stat(path)
        table = Path("/proc/locks").read_text(encoding="ascii")
    except OSError:
        return None
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; waiters have "->" after the number.
    return any(f[1] == "FLOCK" and f[5] == inode for f in (line.split() for line in table.splitlines()) if len(f) > 5)


def main(argv: list[str] | None = None) -> int:
    """``python -m core.daemon.lock LOCK_FILE``: print the holder's pid (exit 0), or exit 1 if none."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m core.daemon.lock LOCK_FILE", file=sys.stderr)
        return 2
    pid = lock_holder(Path(args[0]))
    if pid is None:
        return 1
    print(pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
