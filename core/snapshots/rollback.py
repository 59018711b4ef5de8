"""Rolling ``current_model`` back, recorded: the one implementation behind ``trainctl rollback`` and
``POST /api/rollback``."""

from __future__ import annotations

from core.snapshots.hooks import on_rolled_back
from core.snapshots.store import SnapshotInfo, SnapshotStore
from core.state.events import EventLog, EventType
from core.state.layout import BaseDir


def rollback_recorded(layout: BaseDir, ref: str, *, deep: bool = False) -> tuple[SnapshotInfo | None, SnapshotInfo]:
    """Make the snapshot ``ref`` (id, unique prefix or ``previous``) current and emit a ``rollback`` event.

    The snapshot's files are checked against the size, times and inode its manifest recorded; only a
    file whose record differs is hashed again. ``deep`` reads and hashes every file.

    Returns:
        The snapshot that was current before (None if none was) and the one current now.

    Raises:
        SnapshotError: ``ref`` cannot be resolved, is already current, or fails verification.
    """
    store = SnapshotStore(layout)
    before = store.current()
    after = store.rollback(ref, deep=deep)
    EventLog(layout.events_file).emit(EventType.ROLLBACK, **{"from": before and before.id, "to": after.id})
    on_rolled_back(layout, before, after)
    return before, after
