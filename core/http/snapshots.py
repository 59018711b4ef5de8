"""``GET /api/snapshots``, ``POST /api/rollback`` and ``POST /api/snapshots/{id}/pin|unpin``."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Body, Depends, HTTPException

from core.http.access import HttpContext, read_access, require_token
from core.snapshots.rollback import rollback_recorded
from core.snapshots.store import SnapshotError, SnapshotInfo, SnapshotStore, read_manifest

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["snapshots"])


def snapshot_payload(info: SnapshotInfo) -> dict:
    """One snapshot as listed, with its manifest (less the per-file digests)."""
    try:
        manifest = {k: v for k, v in read_manifest(info.path).items() if k != "files"}
    except SnapshotError as exc:
        manifest = {"error": str(exc)}
    return {
        "id": info.id, "created_at": info.created_at, "source_file": info.source_file, "steps": info.steps,
        "first_loss": info.first_loss, "last_loss": info.last_loss, "eval_loss": info.eval_loss,
        "parent": info.parent, "current": info.is_current, "pinned": info.pinned,
        "gate": manifest.get("evaluation"), "manifest": manifest,
    }


@router.get("/snapshots", summary="Every snapshot, newest first, with its manifest; the current one")
def get_snapshots(ctx: HttpContext = Depends(read_access)) -> dict:
    snapshots = SnapshotStore(ctx.layout).list()
    current = next((s.id for s in snapshots if s.is_current), None)
    return {
        "current": current,
        "pinned": [s.id for s in snapshots if s.pinned],
        "snapshots": [snapshot_payload(s) for s in reversed(snapshots)],
    }


def _snapshot_error(exc: SnapshotError) -> HTTPException:
    status = 404 if str(exc).startswith("no snapshot") else 409
    return HTTPException(status, detail=str(exc))


@router.post("/rollback", summary="Point current_model at an earlier snapshot (id, prefix or 'previous')")
def post_rollback(
    snapshot: str = Body("previous", embed=True), ctx: HttpContext = Depends(require_token)
) -> dict:
    try:
        before, after = rollback_recorded(ctx.layout, snapshot)
    except SnapshotError as exc:
        raise _snapshot_error(exc) from None
    logger.info("rolled back over HTTP: current_model -> %s", after.id)
    return {"from": before.id if before else None, "to": after.id}


@router.post("/snapshots/{ref}/pin", summary="Keep a snapshot when old ones are pruned")
def post_pin(ref: str, ctx: HttpContext = Depends(require_token)) -> dict:
    try:
        return snapshot_payload(SnapshotStore(ctx.layout).pin(ref))
    except SnapshotError as exc:
        raise _snapshot_error(exc) from None


@router.post("/snapshots/{ref}/unpin", summary="Let a snapshot be pruned again")
def post_unpin(ref: str, ctx: HttpContext = Depends(require_token)) -> dict:
    try:
        return snapshot_payload(SnapshotStore(ctx.layout).unpin(ref))
    except SnapshotError as exc:
        raise _snapshot_error(exc) from None
