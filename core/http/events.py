"""``GET /api/events`` and ``GET /api/events/stream``: the event log as JSON, and live as
Server-Sent Events.

An event's ``id`` is the number ``core.state.events`` gave it (they count from 1 across the log's
rotations), so ``?after=N`` and the stream's ``Last-Event-ID`` continue where a client left off.
Both read the log back from its end, so they cost what they return, not the log's length; a stream
resumed from an id older than the current log file starts at that file's first event. The stream
also sends the status (``event: status``) whenever ``training_status.json`` or the pause flag
changes, so a page follows a run without polling. Every open stream is fed by the app's one
:class:`~core.http.feed.EventFeed`, which reads the log and the status once for all of them.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from core.http.access import HttpContext, read_access, stream_access
from core.state.events import EventLog

router = APIRouter(prefix="/api", tags=["events"])


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
        request.app.state.feed.stream(after), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
