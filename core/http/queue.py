"""``GET /api/queue``: the inbox in the order the daemon takes it, the file in progress, and the
files filed away (done, failed, rejected) with their reports, newest first."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastapi import APIRouter, Depends, Query

from core.daemon.inbox import Inbox
from core.daemon.work_queue import REPORT_SUFFIX, STATE_FILENAME, WorkItem, leftover_files, report_path
from core.http.access import HttpContext, read_access
from core.state.layout import BaseDir

router = APIRouter(prefix="/api", tags=["queue"])

PRIORITIES = ("high", "normal", "low")


def finished_folders(layout: BaseDir) -> dict[str, Path]:
    """Where finished files are filed, by outcome (``rejected``: refused by the promotion gate)."""
    return {"done": layout.done, "failed": layout.failed, "rejected": layout.rejected}


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def inbox_order(layout: BaseDir) -> list[dict]:
    """The inbox candidates, first to be trained first (the daemon's own scan)."""
    return [
        {"file": c.path.name, "path": str(c.path.relative_to(layout.inbox)), "priority": PRIORITIES[c.priority],
         "bytes": c.size}
        for c in Inbox(layout).scan().candidates
    ]


def processing(layout: BaseDir) -> list[dict]:
    """Files in ``queue/processing/`` with what their work folder remembers (attempts)."""
    items = []
    for path in leftover_files(layout.processing):
        state = _read_json(WorkItem(path).work_dir / STATE_FILENAME) or {}
        items.append({"file": path.name, "attempts": state.get("attempts", 0)})
    return items


def finished(folder: Path, limit: int) -> list[dict]:
    """The newest ``limit`` files filed in ``folder``, each with its report."""
    try:
        entries = [e for e in os.scandir(folder) if e.is_file() and not e.name.endswith(REPORT_SUFFIX)]
    except FileNotFoundError:
        return []
    entries.sort(key=lambda e: e.stat().st_mtime_ns, reverse=True)
    return [{"file": e.name, "report": _read_json(report_path(Path(e.path)))} for e in entries[:limit]]


@router.get("/queue", summary="Inbox order, the file in progress, and finished files with reports")
def get_queue(
    limit: int = Query(50, ge=1, le=1000, description="Finished files listed per folder, newest first"),
    ctx: HttpContext = Depends(read_access),
) -> dict:
    return {
        "inbox": inbox_order(ctx.layout),
        "processing": processing(ctx.layout),
        **{name: finished(folder, limit) for name, folder in finished_folders(ctx.layout).items()},
    }
