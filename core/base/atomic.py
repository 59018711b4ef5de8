"""Atomic file writes and deletes: a reader sees the old content or the new, never half of either.

Every state file (status JSON, ledger, manifests, run.json) goes through here: write a temp
file in the same folder, flush + fsync, ``os.replace`` over the target, fsync the folder. Tests can
make a process crash (or hit a full disk) just before the replace: see ``core.base.faults``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from core.base import faults


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory entry to disk so a rename inside it survives a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces ``path`` atomically when the block ends without an
    error (temp file + fsync + rename + dir fsync); on an error the temp file goes and ``path`` is
    left as it was. For content written piece by piece, such as a file too large to hold."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)  # mkstemp's 0600 would hide state files from other users
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        faults.before_replace(target)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_writer(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Replace ``path`` with ``obj`` serialized as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """fsync every file and folder under ``root`` (``save_pretrained`` and HF checkpoints do not)."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(folder)


def remove_tree(path: str | os.PathLike[str], tombstone: str | os.PathLike[str]) -> None:
    """Delete a folder so that a crash midway leaves ``tombstone`` (a name no reader lists), never a
    half-deleted folder under its real name. A tombstone left by an earlier crash is removed first."""
    path, tombstone = Path(path), Path(tombstone)
    if tombstone.exists():
        shutil.rmtree(tombstone)
    os.rename(path, tombstone)
    fsync_dir(path.parent)
    shutil.rmtree(tombstone)
