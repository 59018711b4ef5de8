"""One poller feeds every open event stream: each subscriber gets every event once and in order,
a subscriber that leaves is forgotten, and a stalled one is dropped without holding up the rest."""

from __future__ import annotations

import asyncio

import pytest

from core.http import feed as feed_module
from core.http.access import HttpContext
from core.http.feed import EventFeed
from core.state.events import EventLog, EventTail, EventType


@pytest.fixture()
def feed(layout, monkeypatch) -> EventFeed:
    monkeypatch.setattr(feed_module, "POLL_SECONDS", 0.01)
    return EventFeed(HttpContext(layout, token="t"))


def _event_ids(messages: list[bytes]) -> list[int]:
    return [int(line[4:]) for message in messages for line in message.split(b"\n") if line.startswith(b"id: ")]


async def _read(feed: EventFeed, after: int, until_id: int, into: list[bytes]) -> None:
    async for message in feed.stream(after):
        into.append(message)
        if until_id in _event_ids([message]):
            return


async def _drain(feed: EventFeed, backlog: list[bytes], subscriber, until_id: int, into: list[bytes]) -> None:
    """What ``EventFeed.stream`` yields, for a subscription made beforehand."""
    try:
        into.extend(backlog)
        while until_id not in _event_ids(into):
            into.append(await subscriber.queue.get())
    finally:
        feed.unsubscribe(subscriber)


async def _until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def _feed_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "trainctl-event-feed" and not t.done()]


def test_twenty_subscribers_get_every_event_once_in_order_from_one_poller(feed, layout, monkeypatch):
    log = EventLog(layout.events_file)
    for n in range(3):
        log.emit(EventType.FILE_DETECTED, file=f"old-{n}.jsonl")
    reads = []
    real_read_new = EventTail.read_new
    monkeypatch.setattr(EventTail, "read_new", lambda self: reads.append(1) or real_read_new(self))

    async def scenario():
        received = [[] for _ in range(20)]
        readers = [asyncio.create_task(_read(feed, 0, 13, received[0]))]
        await _until(lambda: feed.subscribers)
        log.emit(EventType.FILE_CLAIMED, file="old-0.jsonl")  # after the poller's start, before its next
        for into in received[1:]:  # poll: in the others' backlog and in the poller's next read
            readers.append(asyncio.create_task(_drain(feed, *feed.subscribe(0), 13, into)))
        assert len(feed.subscribers) == 20 and len(_feed_tasks()) == 1
        reads.clear()
        polls_before = feed.polls
        for n in range(9):  # written while the streams are open, some between two polls
            log.emit(EventType.CHECKPOINT_SAVED, file="new.jsonl", step=n)
            if n % 3 == 0:
                await asyncio.sleep(0.02)
        await asyncio.wait_for(asyncio.gather(*readers), 10)
        return received, feed.polls - polls_before

    received, polls = asyncio.run(scenario())
    for messages in received:
        assert _event_ids(messages) == list(range(1, 14))
        assert sum(message.startswith(b"event: status") for message in messages) == 1  # unchanged status
    assert len(reads) <= polls + 1  # one read of the log per poll for all 20, not one per stream
    assert not feed.subscribers and not feed.running


def test_a_stream_resumes_after_the_id_it_gives(feed, layout):
    log = EventLog(layout.events_file)
    for n in range(5):
        log.emit(EventType.FILE_DETECTED, file=f"{n}.jsonl")

    async def scenario():
        received = []
        reader = asyncio.create_task(_read(feed, 3, 6, received))
        await _until(lambda: feed.subscribers)
        log.emit(EventType.FILE_CLAIMED, file="5.jsonl")
        await asyncio.wait_for(reader, 5)
        return received

    assert _event_ids(asyncio.run(scenario())) == [4, 5, 6]


def test_a_subscriber_that_disconnects_is_removed_and_the_last_one_stops_the_poller(feed):
    async def scenario():
        first, second = (asyncio.create_task(_read(feed, 0, 10**9, [])) for _ in range(2))
        await _until(lambda: len(feed.subscribers) == 2)
        first.cancel()  # what the server does to a stream whose client went away
        await _until(lambda: len(feed.subscribers) == 1)
        assert feed.running
        second.cancel()
        await _until(lambda: not feed.subscribers)
        await asyncio.sleep(0.05)
        return feed.running, _feed_tasks()

    running, tasks = asyncio.run(scenario())
    assert not running and tasks == []


def test_a_stalled_subscriber_is_dropped_and_does_not_hold_up_the_others(feed, layout, monkeypatch):
    monkeypatch.setattr(feed_module, "QUEUE_SIZE", 4)
    log = EventLog(layout.events_file)

    async def scenario():
        received = []
        reader = asyncio.create_task(_read(feed, 0, 12, received))
        await _until(lambda: feed.subscribers)
        _, stalled = feed.subscribe(0)  # subscribed, never reads its queue
        for n in range(12):
            log.emit(EventType.CHECKPOINT_SAVED, file="a.jsonl", step=n)
            await asyncio.sleep(0.03)  # a poll or more apart: the reader keeps up, the stalled one cannot
        await asyncio.wait_for(reader, 5)
        return received, stalled

    received, stalled = asyncio.run(scenario())
    assert _event_ids(received) == list(range(1, 13))
    assert stalled not in feed.subscribers
    assert stalled.queue.qsize() == 1 and stalled.queue.get_nowait() is None  # its stream ends
