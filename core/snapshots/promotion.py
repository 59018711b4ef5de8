"""The snapshot step: a finished run is judged, snapshotted, and promoted or rejected, exactly once.

Order matters for crash safety: the gate's verdict is computed from the losses the training child
measured and written into the snapshot's manifest as the snapshot is created (complete or absent).
A promoted snapshot is then verified and made current, the file is remembered (memory set, replay
buffer), old snapshots are pruned, and only then is the file's SHA-256 recorded in the ledger; a
rejected one is only pruned around and recorded. A crash before the ledger record leaves the file
in ``queue/processing/``; :func:`recover_promotion` then finds the snapshot by the digest in its
manifest and finishes the job by its recorded verdict, instead of training or judging the file again.
"""

from __future__ import annotations

import logging

from core.base.hashing import sha256_file
from core.daemon.work_queue import WorkItem, WorkState
from core.memory.promoted import remember_promoted
from core.snapshots.gate import Decision, Verdict, evaluation_record, judge
from core.snapshots.hooks import on_promoted
from core.snapshots.measure import gate_snapshot
from core.snapshots.store import SnapshotError, SnapshotInfo, SnapshotStore, build_manifest, read_manifest
from core.state.layout import BaseDir
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
    """Judge the model the training child saved, snapshot it, promote it if it passed, and record the file.

    Args:
        store: The snapshots of the base dir.
        ledger: The exactly-once ledger.
        item: The claimed file; its ``model_dir`` holds the trained model (moved into the snapshot).
        config: The config the run trained with (recorded in the manifest; its ``gate`` judges).
        state: The file's work state (digest, model source, parent snapshot).
        result: The training child's ``result.json`` (its ``gate`` section holds the losses).

    Returns:
        The snapshot; its ``verdict`` says whether it was promoted or rejected.

    Raises:
        SnapshotError: the snapshot fails verification; it is not promoted.
    """
    decision = judge((result.get("gate") or {}).get("sets", []), config.gate)
    manifest = build_manifest(
        source_file=item.path.name,
        sha256=state.sha256,
        rows=result["examples"],
        steps=result["steps"],
        first_loss=result["first_loss"],
        last_loss=result["last_loss"],
        eval_loss=result["eval_loss"],
        mean_loss=result.get("mean_loss"),
        config=config,
        base_model=state.model_source,
        profile=config.profile,
        parent_snapshot=state.parent_snapshot,
        evaluation=evaluation_record(result.get("gate"), decision),
    )
    created = store.create(item.model_dir, manifest, item.path.stem)
    if decision.verdict is Verdict.REJECTED:
        logger.warning("%s: the gate rejected snapshot %s: %s", item.path.name, created.id, decision.rule)
        _prune(store, config, item.path.name)
        ledger.record(state.sha256, file=item.path.name, outcome="rejected", snapshot=created.id)
        return created
    promoted = store.promote(created.id)
    remember_promoted(store.layout, promoted.path, item.path, item.path.name, state.sha256, config)
    _prune(store, config, item.path.name)
    ledger.record(state.sha256, file=item.path.name, outcome="trained", snapshot=promoted.id)
    on_promoted(store.layout, promoted, config.daemon)  # tells servers; never raises, time-limited
    return promoted


def recover_promotion(
    store: SnapshotStore, ledger: Ledger, item: WorkItem, digest: str, config: TrainConfig
) -> SnapshotInfo | None:
    """Finish a promotion cut short by a crash, if a snapshot of this content already exists.

    A rejected snapshot stays rejected. Another is promoted only if nothing else happened since: it
    is not current and its parent is the current snapshot. Either way the ledger gets its entry, so
    the file is neither trained nor judged again.

    Returns:
        The snapshot made from ``digest`` (its ``verdict`` says which way it went), or None if there is none.
    """
    name = item.path.name
    snapshot = next((s for s in store.list() if _manifest_digest(s) == digest), None)
    if snapshot is None:
        return None
    if snapshot.verdict == Verdict.REJECTED.value:
        ledger.record(digest, file=name, outcome="rejected", snapshot=snapshot.id)
        return snapshot
    current = store.current()
    if not snapshot.is_current and snapshot.parent == (current.id if current else None):
        logger.warning("%s: snapshot %s was created but not promoted; promoting it now", name, snapshot.id)
        snapshot = store.promote(snapshot.id)
    if snapshot.is_current:
        remember_promoted(store.layout, snapshot.path, item.path, name, digest, config)
    ledger.record(digest, file=name, outcome="trained", snapshot=snapshot.id)
    return snapshot


def promote_kept(layout: BaseDir, config: TrainConfig, ref: str, force: bool) -> tuple[SnapshotInfo, Decision | None]:
    """``trainctl snapshots promote``: judge a kept snapshot against the current model, then promote it.

    With ``force`` the gate is skipped. A promoted snapshot's file is remembered (memory set, and
    the replay buffer when the file is still in queue/rejected or queue/done) and recorded in the
    ledger as trained, so dropping it again is a duplicate.

    Returns:
        The snapshot (promoted unless the decision rejected it) and the gate's decision (None when forced).

    Raises:
        SnapshotError: the snapshot is unknown, already current, or fails verification.
    """
    store = SnapshotStore(layout)
    info = store.resolve(ref)
    if info.is_current:
        raise SnapshotError(f"{info.id} is already current; pick another snapshot")
    decision = None
    if not force:
        decision, _problems = gate_snapshot(layout, config, info, layout.model_source(config))
        if decision.verdict is Verdict.REJECTED:
            return info, decision
    promoted = store.promote(info.id)
    manifest = read_manifest(promoted.path)
    name, digest = manifest["source_file"], manifest["sha256"]
    source = next((p for p in (layout.rejected / name, layout.done / name) if p.is_file() and sha256_file(p) == digest),
                  None)
    remember_promoted(layout, promoted.path, source, name, digest, config)
    on_promoted(layout, promoted, config.daemon)
    Ledger(layout.ledger_file).record(digest, file=name, outcome="trained", snapshot=promoted.id, forced=force)
    return promoted, decision


def _prune(store: SnapshotStore, config: TrainConfig, name: str) -> None:
    pruned = store.prune(config.daemon.keep_snapshots)
    if pruned:
        logger.info("%s: pruned %d old snapshot(s)", name, len(pruned))


def _manifest_digest(snapshot: SnapshotInfo) -> str | None:
    try:
        return read_manifest(snapshot.path).get("sha256")
    except SnapshotError:
        return None
