"""``GET /api/events`` and ``GET /api/events/stream``: the event log as JSON, and live as
Server-Sent Events.

An event's ``id`` is the number ``core.state.events`` gave it (they count from 1 across the log's
rotations), so ``?after=N`` and the stream's ``Last-Event-ID`` continue where a client left off.
Both read the log back from its end, so they cost what they return, not the log's length; a stream
resumed from an id older than the current log file starts at that file's first event. The stream
also sends the status (``event: status``) whenever ``training_status.json`` changes, so a page
follows a run without polling.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from core.http.access import HttpContext, read_access, stream_access
from core.http.status import file_signature, status_payload
from core.state.events import EventLog

router = APIRouter(prefix="/api", tags=["events"])

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0


@router.get("/events", summary="Events after id N (or the last `limit` events), oldest first")
def get_events(
    after: int | None = Query(None, ge=0, description="Only events with a larger id"),
    limit: int = Query(200, ge=1, le=10000),
    ctx: HttpContext = Depends(read_access),
) -> dict:
    log = EventLog(ctx.layout.events_file)
    last_id = log.last_id()
    chosen = log.after(after, limit) if after is not None else log.tail(limit)
    return {"events": chosen, "last_id": last_id}


def _sse(data: dict, event: str | None = None, event_id: int | None = None) -> str:
    head = (f"id: {event_id}\n" if event_id is not None else "") + (f"event: {event}\n" if event else "")
    return f"{head}data: {json.dumps(data, default=str)}\n\n"


async def event_stream(request: Request, ctx: HttpContext, after: int) -> AsyncIterator[str]:
    """New events (default SSE type) and status changes (``status``) until the client or server goes."""
    tail = EventLog(ctx.layout.events_file).follow(after)
    seen_status: tuple[int, int, int] | None = (-1, -1, -1)
    beat = time.monotonic()
    try:
        while not ctx.stopping.is_set() and not await request.is_disconnected():
            for event_id, event in tail.read_new():
                if event_id > after:
                    yield _sse({**event, "id": event_id}, event_id=event_id)
            if (signature := file_signature(ctx.layout.status_file)) != seen_status:
                seen_status = signature
                try:
                    yield _sse(status_payload(ctx), event="status")
                except HTTPException as exc:  # an invalid status file: say so, keep streaming events
                    yield _sse({"error": exc.detail}, event="status_error")
            if time.monotonic() - beat > HEARTBEAT_SECONDS:
                beat = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_SECONDS)
    finally:
        tail.close()


@router.get("/events/stream", summary="Server-Sent Events: new events, and the status when it changes")
async def get_event_stream(
    request: Request,
    after: int | None = Query(None, ge=0, description="Send events with a larger id first (default: only new)"),
    last_event_id: int | None = Header(None, description="Set by a reconnecting EventSource"),
    ctx: HttpContext = Depends(stream_access),
) -> StreamingResponse:
    if last_event_id is not None:
        after = last_event_id
    if after is None:
        after = EventLog(ctx.layout.events_file).last_id()
    return StreamingResponse(
        event_stream(request, ctx, after), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
