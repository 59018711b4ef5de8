"""One poller of the event log and the status file, shared by every open event stream.

Each ``GET /api/events/stream`` subscribes to its app's :class:`EventFeed`. The feed's one asyncio
task, started with the first subscriber and stopped with the last, looks at the log and the status
every ``POLL_SECONDS``, encodes each new event and each status change once as a Server-Sent Event,
and puts the same bytes on every subscriber's queue: fifty open dashboards cost one ``stat`` pair
and one read per change, not fifty.

A subscriber first gets its backlog (the events after the id it asked for, then the current
status), read when it joins; the feed sends it only events with a larger id than it already has,
so every event reaches it once and in order. Queues are bounded: a subscriber that falls
``QUEUE_SIZE`` messages behind (a stalled client) is dropped and its stream ends, so it never holds
up the others; the browser's ``EventSource`` reconnects with ``Last-Event-ID`` and misses nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import HTTPException

from core.http.access import HttpContext
from core.http.status import file_signature, status_json
from core.state.events import EventLog, EventTail

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
QUEUE_SIZE = 256
KEEP_ALIVE = b": keep-alive\n\n"


def sse(data: dict, event: str | None = None, event_id: int | None = None) -> bytes:
    """One Server-Sent Event: ``id`` and ``event`` lines when given, the data as JSON."""
    head = (f"id: {event_id}\n" if event_id is not None else "") + (f"event: {event}\n" if event else "")
    return f"{head}data: {json.dumps(data, default=str)}\n\n".encode()


@dataclass(eq=False)
class Subscriber:
    """One open stream: its queue (``None`` ends it) and the newest event id it has been given."""

    last_id: int
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))


class EventFeed:
    """New events and status changes of one base dir, read once and fanned out to every subscriber.

    Args:
        ctx: The server's context: the base dir, and ``stopping``, on which every stream ends.
    """

    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx
        self.subscribers: set[Subscriber] = set()
        self.polls = 0
        self._task: asyncio.Task | None = None
        self._tail: EventTail | None = None
        self._status_key: tuple | None = None
        self._status_message = b""

    @property
    def running(self) -> bool:
        """True while the poller task is alive."""
        return self._task is not None and not self._task.done()

    async def stream(self, after: int) -> AsyncIterator[bytes]:
        """The events with a larger id than ``after`` and the status, then each new one, until the
        client goes (the server cancels this), the subscriber is dropped, or the server stops."""
        backlog, subscriber = self.subscribe(after)
        try:
            for message in backlog:
                yield message
            while (message := await subscriber.queue.get()) is not None:
                yield message
        finally:
            self.unsubscribe(subscriber)

    def subscribe(self, after: int) -> tuple[list[bytes], Subscriber]:
        """A new subscriber and its backlog: the current log file's events after ``after`` (see
        ``EventLog.follow``), then the current status. Its queue gets what comes after them."""
        if not self.running or self._task.get_loop() is not asyncio.get_running_loop():
            self._start()
        self._poll_status()  # a change goes to the others now, as the newcomer's backlog shows it
        subscriber = Subscriber(last_id=after)
        tail = EventLog(self.ctx.layout.events_file).follow(after)
        try:
            events = [(event_id, event) for event_id, event in tail.read_new() if event_id > after]
        finally:
            tail.close()
        backlog = [sse({**event, "id": event_id}, event_id=event_id) for event_id, event in events]
        subscriber.last_id = events[-1][0] if events else after
        backlog.append(self._status_message)
        if self.ctx.stopping.is_set():
            subscriber.queue.put_nowait(None)
        self.subscribers.add(subscriber)
        return backlog, subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget ``subscriber``; the poller stops with the last one."""
        self.subscribers.discard(subscriber)
        if not self.subscribers and self._task is not None:
            self._task.cancel()
            self._stop()

    def _start(self) -> None:
        self._stop()
        self.subscribers.clear()  # any left belong to an event loop that has ended (a test client's)
        log = EventLog(self.ctx.layout.events_file)
        self._tail = log.follow(log.last_id())
        self._status_key = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="trainctl-event-feed")

    def _stop(self) -> None:
        self._task = None
        if self._tail is not None:
            self._tail.close()
            self._tail = None

    async def _run(self) -> None:
        try:
            await self._poll_until_stopped()
        except Exception:  # a broken read must not leave streams open and silent: they reconnect
            logger.exception("the event feed of %s failed; ending its streams", self.ctx.layout.events_file)
        for subscriber in list(self.subscribers):
            self._end(subscriber)

    async def _poll_until_stopped(self) -> None:
        beat = time.monotonic()
        while not self.ctx.stopping.is_set():
            await asyncio.sleep(POLL_SECONDS)
            self.polls += 1
            for event_id, event in self._tail.read_new():
                self._broadcast(sse({**event, "id": event_id}, event_id=event_id), event_id)
            self._poll_status()
            if time.monotonic() - beat > HEARTBEAT_SECONDS:
                beat = time.monotonic()
                self._broadcast(KEEP_ALIVE)

    def _poll_status(self) -> None:
        key = (file_signature(self.ctx.layout.status_file), file_signature(self.ctx.layout.pause_file))
        if key == self._status_key:
            return
        self._status_key = key
        try:
            self._status_message = b"event: status\ndata: " + status_json(self.ctx) + b"\n\n"
        except HTTPException as exc:  # an invalid status file: say so, keep streaming events
            self._status_message = sse({"error": exc.detail}, event="status_error")
        self._broadcast(self._status_message)

    def _broadcast(self, message: bytes, event_id: int | None = None) -> None:
        for subscriber in list(self.subscribers):
            if event_id is not None:
                if event_id <= subscriber.last_id:
                    continue  # already in its backlog
                subscriber.last_id = event_id
            try:
                subscriber.queue.put_nowait(message)
            except asyncio.QueueFull:
                logger.warning("dropped an event stream %d messages behind (%s); its client resumes "
                               "from Last-Event-ID", QUEUE_SIZE, self.ctx.layout.events_file)
                self._end(subscriber)

    def _end(self, subscriber: Subscriber) -> None:
        """End ``subscriber``'s stream now: what it has not taken yet is dropped."""
        self.subscribers.discard(subscriber)
        while not subscriber.queue.empty():
            subscriber.queue.get_nowait()
        subscriber.queue.put_nowait(None)
