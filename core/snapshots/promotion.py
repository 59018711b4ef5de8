"""The snapshot step: a finished run becomes the current model, and its file is recorded, exactly once.

Order matters for crash safety: the snapshot is created (complete or absent), verified and promoted,
old snapshots are pruned, and only then is the file's SHA-256 recorded in the ledger. A crash before
the ledger record leaves the file in ``queue/processing/``; :func:`recover_promotion` then finds the
snapshot by the digest in its manifest and finishes the job instead of training the file again.
"""

from __future__ import annotations

import logging

from core.daemon.work_queue import WorkItem, WorkState
from core.snapshots.store import SnapshotError, SnapshotInfo, SnapshotStore, build_manifest, read_manifest
from core.state.ledger import Ledger
from trainer.config import TrainConfig

logger = logging.getLogger(__name__)


def promote_run(
    store: SnapshotStore,
    ledger: Ledger,
    item: WorkItem,
    config: TrainConfig,
    state: WorkState,
    result: dict,
) -> SnapshotInfo:
    """Snapshot the model the training child saved, promote it, prune, and record the file.

    Args:
        store: The snapshots of the base dir.
        ledger: The exactly-once ledger.
        item: The claimed file; its ``model_dir`` holds the trained model (moved into the snapshot).
        config: The config the run trained with (recorded in the manifest).
        state: The file's work state (digest, model source, parent snapshot).
        result: The training child's ``result.json``.

    Raises:
        SnapshotError: the snapshot fails verification; it is not promoted.
    """
    manifest = build_manifest(
        source_file=item.path.name,
        sha256=state.sha256,
        rows=result["examples"],
        steps=result["steps"],
        first_loss=result["first_loss"],
        last_loss=result["last_loss"],
        eval_loss=result["eval_loss"],
        config=config,
        base_model=state.model_source,
        profile=config.profile,
        parent_snapshot=state.parent_snapshot,
    )
    created = store.create(item.model_dir, manifest, item.path.stem)
    promoted = store.promote(created.id)
    pruned = store.prune(config.daemon.keep_snapshots)
    if pruned:
        logger.info("%s: pruned %d old snapshot(s)", item.path.name, len(pruned))
    ledger.record(state.sha256, file=item.path.name, outcome="trained", snapshot=promoted.id)
    return promoted


def recover_promotion(store: SnapshotStore, ledger: Ledger, name: str, digest: str) -> SnapshotInfo | None:
    """Finish a promotion cut short by a crash, if a snapshot of this content already exists.

    The snapshot is promoted only if nothing else happened since: it is not current and its parent
    is the current snapshot. Either way the ledger gets its entry, so the file is not trained again.

    Returns:
        The snapshot trained on ``digest``, or None if there is none.
    """
    snapshot = next((s for s in store.list() if _manifest_digest(s) == digest), None)
    if snapshot is None:
        return None
    current = store.current()
    if not snapshot.is_current and snapshot.parent == (current.id if current else None):
        logger.warning("%s: snapshot %s was created but not promoted; promoting it now", name, snapshot.id)
        snapshot = store.promote(snapshot.id)
    ledger.record(digest, file=name, outcome="trained", snapshot=snapshot.id)
    return snapshot


def _manifest_digest(snapshot: SnapshotInfo) -> str | None:
    try:
        return read_manifest(snapshot.path).get("sha256")
    except SnapshotError:
        return None
