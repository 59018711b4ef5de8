"""An exclusive ``fcntl.flock`` on a lock file, for read-modify-writes shared between processes.

The daemon and its training child both update the status file; the daemon and a ``trainctl
rollback`` run beside it can both promote. Each such update holds the lock of its file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
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
