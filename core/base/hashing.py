"""SHA-256 of a file's bytes: the identity of inbox files, data files, snapshots and checkpoints."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

BLOCK = 1 << 20


def sha256_file(path: str | Path, *, fsync: bool = False) -> str:
    """SHA-256 of a file's bytes, hex; with ``fsync`` the file is also flushed to disk in the same pass."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
        if fsync:
            os.fsync(handle.fileno())
    return digest.hexdigest()
