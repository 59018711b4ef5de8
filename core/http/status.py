"""``GET /api/status`` and ``POST /api/pause|resume``: what the daemon is doing, and stopping it claiming."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse, Response

from core.http.access import HttpContext, read_access, require_token
from core.state import pause
from core.state.status import StatusFile, StatusFileError, TrainingStatus

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["status"])


def status_json(ctx: HttpContext) -> bytes:
    """``training_status.json`` (defaults when the daemon has not written it) and the pause flag
    (``claiming_paused``: what ``status/paused`` holds, None when the daemon claims files), as
    JSON on one line; encoded once per change of either file.

    Raises:
        HTTPException: 500 when the status file is not a valid status.
    """
    return _cached_status(ctx)[1]


def _cached_status(ctx: HttpContext) -> tuple[tuple, bytes]:
    """Both files are read again only when one of them changed (inode, mtime or size; every write
    replaces the file), so fifty dashboards polling cost fifty ``stat`` pairs, not fifty parses."""
    key = (file_signature(ctx.layout.status_file), file_signature(ctx.layout.pause_file), ctx.read_only)
    cached = _payloads.get(ctx.layout.root)
    if cached is not None and cached[0] == key:
        return cached
    try:
        current = StatusFile(ctx.layout.status_file).read() or TrainingStatus()
    except StatusFileError as exc:
        raise HTTPException(500, detail=str(exc)) from None
    payload = {**current.model_dump(mode="json"), "claiming_paused": pause.pause_info(ctx.layout.pause_file),
               "read_only": ctx.read_only}
    cached = _payloads[ctx.layout.root] = (key, json.dumps(payload, default=str).encode())
    return cached


_payloads: dict[Path, tuple[tuple, bytes]] = {}  # base dir -> (file signatures, JSON); replaced whole


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """Inode, mtime and size of ``path`` (None if absent): changes with every write or replacement."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


@router.get("/status", summary="The daemon's status (training_status.json) and the pause flag",
            response_class=JSONResponse)
async def get_status(ctx: HttpContext = Depends(read_access)) -> Response:
    # On the event loop (two stat calls, no thread hand-off), the cached bytes: nothing encoded per request.
    return Response(status_json(ctx), media_type="application/json")


@router.post("/pause", summary="Stop claiming new inbox files (the file training now finishes)")
def post_pause(ctx: HttpContext = Depends(require_token)) -> dict:
    info = pause.pause(ctx.layout.pause_file, reason="paused over HTTP")
    logger.info("claiming paused over HTTP (%s)", ctx.layout.pause_file)
    return {"claiming_paused": info}


@router.post("/resume", summary="Claim inbox files again")
def post_resume(ctx: HttpContext = Depends(require_token)) -> dict:
    was_paused = pause.resume(ctx.layout.pause_file)
    if ctx.wake is not None:
        ctx.wake.set()
    logger.info("claiming resumed over HTTP")
    return {"claiming_paused": None, "was_paused": was_paused}
