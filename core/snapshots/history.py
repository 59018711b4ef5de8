"""``status/promotions.json``: the stack of promoted snapshots that ``rollback previous`` walks back.

Promoting a snapshot pushes its id; rolling back to a snapshot on the stack pops everything above
it (rolling back to one that is not on it pushes it). So ``previous`` is always the snapshot that
was current before the current one, and repeating ``rollback previous`` walks further back.
Every change holds ``status/promotions.lock``, which also serializes the ``current_model`` swap of
the daemon and of a ``trainctl rollback`` run beside it.
"""

from __future__ import annotations

import json
import logging
from contextlib import AbstractContextManager
from pathlib import Path

from core.base.atomic import atomic_write_json
from core.base.locking import exclusive_lock

logger = logging.getLogger(__name__)


class PromotionStack:
    """Read and change the promotion stack.

    Args:
        path: ``status/promotions.json``; created on the first push.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def lock(self) -> AbstractContextManager[None]:
        """Hold for the whole read-swap-write of a promotion."""
        return exclusive_lock(self.path.with_suffix(".lock"))

    def ids(self) -> list[str]:
        """Promoted snapshot ids, oldest first; the last one is the current snapshot.

        An unreadable file counts as empty (and is replaced on the next push): only ``previous``
        depends on it, and losing it must not block promotions.
        """
        if not self.path.exists():
            return []
        try:
            stack = json.loads(self.path.read_text(encoding="utf-8"))["stack"]
            return [str(snapshot_id) for snapshot_id in stack]
        except (ValueError, KeyError, TypeError):
            logger.warning("%s is unreadable; starting a new promotion stack", self.path)
            return []

    def push(self, snapshot_id: str) -> None:
        """Record a promotion (a repeat of the top entry is not recorded twice)."""
        stack = self.ids()
        if stack[-1:] != [snapshot_id]:
            self._write(stack + [snapshot_id])

    def pop_to(self, snapshot_id: str) -> None:
        """Record a rollback: drop the entries above the latest ``snapshot_id``, or push it."""
        stack = self.ids()
        if snapshot_id not in stack:
            self._write(stack + [snapshot_id])
            return
        self._write(stack[: len(stack) - stack[::-1].index(snapshot_id)])

    def _write(self, stack: list[str]) -> None:
        atomic_write_json(self.path, {"stack": stack})
