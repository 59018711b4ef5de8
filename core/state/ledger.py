"""``status/ledger.json``: which file contents were already trained or failed, keyed by SHA-256.

The daemon looks a claimed file's digest up before training it, so the same content dropped twice
(or re-claimed after a crash) is trained exactly once. The ledger is rewritten atomically on every
record, so it survives restarts and a crash leaves the previous version.

A ``Ledger`` keeps the parsed file in memory and parses it again only when the file changed on
disk (size, modification time or inode differ), so the daemon's lookup of each file is a dict
lookup, not a parse of every entry ever recorded.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from core.base.atomic import atomic_write_json
from core.base.clock import utc_now_iso

logger = logging.getLogger(__name__)

class LedgerError(ValueError):
    """``ledger.json`` exists but cannot be read."""


class Ledger:
    """The exactly-once record of trained and failed file contents.

    Entries are plain dicts, by convention with ``file`` (name), ``outcome`` (``"trained"`` or
    ``"failed"``), ``snapshot`` (id, for trained files) and ``recorded_at`` (set by ``record``).

    Args:
        path: The ledger file; created on the first ``record``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._signature: tuple[int, int, int] | None = None
        self._entries: dict[str, dict] = {}

    def lookup(self, digest: str) -> dict | None:
        """The entry recorded for ``digest``, or ``None`` if that content was never recorded."""
        entry = self._load().get(digest)
        return dict(entry) if entry is not None else None

    def record(self, digest: str, **entry) -> dict:
        """Record (or replace) the entry for ``digest`` and persist the ledger; returns the entry.

        Only the daemon loop records, one file at a time, so no lock is taken.
        """
        entries = self._load()
        stored = {**entry, "recorded_at": utc_now_iso()}
        entries[digest] = stored
        try:
            atomic_write_json(self.path, entries)
        except BaseException:
            self._signature = None  # not written (a full disk): read the file again next time
            raise
        self._signature = self._stat()
        logger.debug("ledger %s: %s -> %s", self.path, digest[:12], stored)
        return stored

    def entries(self) -> dict[str, dict]:
        """Every entry, by digest."""
        return {digest: dict(entry) for digest, entry in self._load().items()}

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return info.st_size, info.st_mtime_ns, info.st_ino

    def _load(self) -> dict[str, dict]:
        """The entries, parsed again only when the file changed since it was last read or written."""
        signature = self._stat()
        if signature != self._signature or signature is None:
            self._entries = self._parse() if signature is not None else {}
            self._signature = signature
        return self._entries

    def _parse(self) -> dict[str, dict]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LedgerError(
                f"{self.path} is not valid JSON ({exc.msg}, line {exc.lineno}); restore it from a "
                "backup or delete it (files already trained may then be trained again)"
            ) from None
        if not isinstance(entries, dict):
            raise LedgerError(f"{self.path} must hold a JSON object of digest -> entry; delete it")
        return entries
