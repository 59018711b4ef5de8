"""``POST /api/files``: upload a JSONL file into the inbox, checked as the daemon would check it.

The body is the file itself (``curl --data-binary @data.jsonl``), streamed into a fresh folder
under ``queue/uploads/`` (the daemon never reads there) and cut off with 413 past
``http.max_upload_mb``. The name is checked like an inbox entry, the content with the validation
``trainctl validate`` runs (the current model's tokenizer). Only a usable file is renamed into
``inbox/`` (or ``inbox/high/``, ``inbox/low/``) in one step; anything refused leaves nothing behind.
"""

from __future__ import annotations

import logging
import shutil
import stat
import tempfile
from enum import Enum
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from core.base.atomic import fsync_dir
from core.base.errors import UserError, is_disk_full
from core.daemon.inbox import free_name, ignore_reason
from core.http.access import HttpContext, require_token
from core.state.layout import BaseDir
from trainer.config import load_config
from trainer.data.validation import ValidationReport, validate_path

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["files"])


class Priority(str, Enum):
    """Which inbox folder an upload goes to."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


def inbox_folder(layout: BaseDir, priority: Priority) -> Path:
    return {Priority.HIGH: layout.inbox_high, Priority.NORMAL: layout.inbox, Priority.LOW: layout.inbox_low}[
        priority
    ]


def check_upload_name(name: str) -> None:
    """Refuse a name that is not a plain ``*.jsonl`` file name the inbox would take.

    Raises:
        HTTPException: 400 with the reason.
    """
    if not name or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise HTTPException(400, detail=f"{name!r} is not a file name; give a plain name such as data.jsonl")
    if (reason := ignore_reason(name, stat.S_IFREG)) is not None:
        raise HTTPException(400, detail=f"{name!r} would be ignored by the inbox: {reason}")


async def receive(request: Request, target: Path, limit: int) -> int:
    """Stream the request body into ``target``; returns its size.

    Raises:
        HTTPException: 413 when the body is larger than ``limit`` bytes.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, detail=_too_large(limit))
    size = 0
    with open(target, "wb") as handle:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, detail=_too_large(limit))
            handle.write(chunk)
    return size


def _too_large(limit: int) -> str:
    return f"the file is larger than http.max_upload_mb ({limit / 2**20:g} MiB); split it or raise the limit"


def validate_upload(layout: BaseDir, path: Path) -> ValidationReport:
    """``trainctl validate`` on the uploaded file, with config.json and the current model's tokenizer."""
    config = load_config(layout.config_file)
    return validate_path(path, config, layout.model_source(config))


def move_into_inbox(path: Path, folder: Path) -> Path:
    """Rename the checked upload into an inbox folder (``-1``, ``-2``... if the name is taken)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = free_name(folder, path.name)
    path.rename(target)
    fsync_dir(folder)
    return target


@router.post(
    "/files", status_code=201,
    summary="Upload a JSONL file (the request body) into the inbox after validating it",
    responses={400: {"description": "bad name"}, 413: {"description": "too large"},
               422: {"description": "validation refused the file; the report lists the bad lines"}},
)
async def post_file(
    request: Request,
    name: str = Query(..., description="File name in the inbox, ending in .jsonl"),
    priority: Priority = Query(Priority.NORMAL, description="inbox/high, inbox/ or inbox/low"),
    ctx: HttpContext = Depends(require_token),
):
    check_upload_name(name)
    ctx.layout.uploads.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="upload-", dir=ctx.layout.uploads))
    try:
        size = await receive(request, staging / name, ctx.max_upload_bytes)
        report = await run_in_threadpool(validate_upload, ctx.layout, staging / name)
        summary = report.model_dump(mode="json")
        if not report.usable:
            logger.info("upload %s refused: %s", name, "; ".join(report.problems))
            return JSONResponse(status_code=422, content={"detail": "; ".join(report.problems), "validation": summary})
        target = move_into_inbox(staging / name, inbox_folder(ctx.layout, priority))
    except UserError as exc:
        raise HTTPException(409, detail=str(exc)) from None
    except OSError as exc:
        if is_disk_full(exc, ctx.layout.root):
            raise HTTPException(507, detail=f"disk full while receiving {name}; free space in {ctx.layout.root}")
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if ctx.wake is not None:
        ctx.wake.set()
    logger.info("upload %s (%d bytes) -> %s", name, size, target)
    return {"file": target.name, "path": str(target.relative_to(ctx.layout.root)), "bytes": size,
            "validation": summary}
