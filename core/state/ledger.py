"""``status/ledger.json``: which file contents were already trained or failed, keyed by SHA-256.

The daemon looks a claimed file's digest up before training it, so the same content dropped twice
(or re-claimed after a crash) is trained exactly once. The ledger is rewritten atomically on every
record, so it survives restarts and a crash leaves the previous version.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from core.base.atomic import atomic_write_json
from core.base.clock import utc_now_iso

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20


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

    def lookup(self, digest: str) -> dict | None:
        """The entry recorded for ``digest``, or ``None`` if that content was never recorded."""
        return self._load().get(digest)

    def record(self, digest: str, **entry) -> dict:
        """Record (or replace) the entry for ``digest`` and persist the ledger; returns the entry.

        Only the daemon loop records, one file at a time, so no lock is taken.
        """
        entries = self._load()
        stored = {**entry, "recorded_at": utc_now_iso()}
        entries[digest] = stored
        atomic_write_json(self.path, entries)
        logger.debug("ledger %s: %s -> %s", self.path, digest[:12], stored)
        return stored

    def entries(self) -> dict[str, dict]:
        """Every entry, by digest."""
        return self._load()

    def _load(self) -> dict[str, dict]:
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
