"""An exclusive ``fcntl.flock`` on a lock file, for read-modify-writes shared between processes.

The daemon and its training child both update the status file; the daemon and a ``trainctl
rollback`` run beside it can both promote. Each such update holds the lock of its file. A training
child holds its work folder's lock from before it starts to its exit (:func:`lock_for_child`), so a
restarted daemon can wait for a child its predecessor left behind (:func:`wait_for_lock`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def exclusive_lock(lock_path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created if missing) for the ``with`` block.

    Blocks until the lock is free. The kernel drops it if the holder dies, so a crash never
    leaves it stuck.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def lock_for_child(lock_path: str | Path) -> int:
    """Take ``lock_path`` for a child process about to start; returns the descriptor.

    Pass the descriptor to the child (``pass_fds``), then :func:`hand_over` it: the lock lasts as
    long as the child runs, from before its first instruction (a lock the child took itself would
    leave its start-up, seconds of imports, unguarded).
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)  # no earlier child's pid: nobody may be killed by mistake until hand_over
    return fd


def hand_over(fd: int, pid: int) -> None:
    """Record the child ``pid`` holding the lock behind ``fd`` and close this process's copy."""
    os.pwrite(fd, f"{pid}\n".encode(), 0)
    os.close(fd)


def lock_holder(lock_path: str | Path) -> int | None:
    """The pid written by the process holding ``lock_path``, or None when nobody holds it."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
    return None


def wait_for_lock(lock_path: str | Path, timeout: float, on_tick: Callable[[], bool] = lambda: True) -> bool:
    """Wait until nobody holds ``lock_path``; False after ``timeout`` s or once ``on_tick`` says stop."""
    deadline = time.monotonic() + timeout
    while lock_holder(lock_path) is not None:
        if time.monotonic() > deadline or not on_tick():
            return False
        time.sleep(0.2)
    return True


def pid_alive(pid: int | None) -> bool:
    """Whether a process ``pid`` exists (False for None)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
