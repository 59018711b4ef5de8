"""``GET /api/events`` and ``GET /api/events/stream``: the event log as JSON, and live as
Server-Sent Events.

An event's ``id`` is its 1-based position among the readable lines of ``status/events.jsonl``
(``core.state.events``), so ``?after=N`` and the stream's ``Last-Event-ID`` continue where a
client left off. The stream also sends the status (``event: status``) whenever
``training_status.json`` changes, so a page follows a run without polling.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from core.http.access import HttpContext, read_access
from core.http.status import status_payload
from core.state.events import EventLog

router = APIRouter(prefix="/api", tags=["events"])

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0


class EventTail:
    """Reads the events appended to an event log since the last call, numbered like ``EventLog.read``.

    Only complete lines are consumed; a log that shrank or was replaced is read again from the start.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.count = 0
        self._inode: int | None = None

    def read_new(self) -> list[tuple[int, dict]]:
        """``(id, event)`` for each complete event line written since the previous call."""
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return []
        with handle:
            info = os.fstat(handle.fileno())
            if info.st_ino != self._inode or info.st_size < self.offset:
                self.offset, self.count, self._inode = 0, 0, info.st_ino
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        found = []
        for raw in complete.split(b"\n"):
            try:
                event = json.loads(raw) if raw.strip() else None
            except (json.JSONDecodeError, UnicodeDecodeError):
                event = None  # a torn line, skipped as EventLog.read skips it
            if isinstance(event, dict):
                self.count += 1
                found.append((self.count, event))
        return found


@router.get("/events", summary="Events after id N (or the last `limit` events), oldest first")
def get_events(
    after: int | None = Query(None, ge=0, description="Only events with a larger id"),
    limit: int = Query(200, ge=1, le=10000),
    ctx: HttpContext = Depends(read_access),
) -> dict:
    numbered = [{"id": i, **event} for i, event in enumerate(EventLog(ctx.layout.events_file).read(), start=1)]
    last_id = numbered[-1]["id"] if numbered else 0
    chosen = [e for e in numbered if e["id"] > after][:limit] if after is not None else numbered[-limit:]
    return {"events": chosen, "last_id": last_id}


def _sse(data: dict, event: str | None = None, event_id: int | None = None) -> str:
    head = (f"id: {event_id}\n" if event_id is not None else "") + (f"event: {event}\n" if event else "")
    return f"{head}data: {json.dumps(data, default=str)}\n\n"


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_mtime_ns, info.st_size


async def event_stream(request: Request, ctx: HttpContext, after: int) -> AsyncIterator[str]:
    """New events (default SSE type) and status changes (``status``) until the client or server goes."""
    tail = EventTail(ctx.layout.events_file)
    seen_status: tuple[int, int] | None = (-1, -1)
    beat = time.monotonic()
    while not ctx.stopping.is_set() and not await request.is_disconnected():
        for event_id, event in tail.read_new():
            if event_id > after:
                yield _sse({"id": event_id, **event}, event_id=event_id)
        if (signature := _signature(ctx.layout.status_file)) != seen_status:
            seen_status = signature
            try:
                yield _sse(status_payload(ctx), event="status")
            except HTTPException as exc:  # an invalid status file: say so, keep streaming events
                yield _sse({"error": exc.detail}, event="status_error")
        if time.monotonic() - beat > HEARTBEAT_SECONDS:
            beat = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_SECONDS)


@router.get("/events/stream", summary="Server-Sent Events: new events, and the status when it changes")
async def get_event_stream(
    request: Request,
    after: int | None = Query(None, ge=0, description="Send events with a larger id first (default: only new)"),
    last_event_id: int | None = Header(None, description="Set by a reconnecting EventSource"),
    ctx: HttpContext = Depends(read_access),
) -> StreamingResponse:
    if last_event_id is not None:
        after = last_event_id
    if after is None:
        after = len(EventLog(ctx.layout.events_file).read())
    return StreamingResponse(
        event_stream(request, ctx, after), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
