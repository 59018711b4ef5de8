"""The shared event feed through a real server: streams over HTTP are fed by the one poller, each
gets every event in order, and a client that hangs up is removed (the feed itself:
``test_event_feed.py``)."""

from __future__ import annotations

import threading
import time

import httpx

from core.http.server import HttpServer
from core.state.events import EventLog, EventType
from trainer.config.http import HttpSettings


def test_streams_over_http_share_the_poller_and_a_closed_one_is_removed(layout):
    server = HttpServer.open(layout, HttpSettings())
    server.start()
    feed = server.server.config.app.state.feed
    log = EventLog(layout.events_file)
    results: dict[int, list[int]] = {}

    def reader(number: int, count: int) -> None:
        with httpx.stream("GET", server.url + "api/events/stream?after=0", timeout=30) as stream:
            ids = results.setdefault(number, [])
            for line in stream.iter_lines():
                if line.startswith("id: "):
                    ids.append(int(line.removeprefix("id: ")))
                if len(ids) == count:
                    return

    try:
        threads = [threading.Thread(target=reader, args=(n, 3 if n < 5 else 6)) for n in range(10)]
        for thread in threads:
            thread.start()
        _until(lambda: len(feed.subscribers) == 10)
        for number in range(3):
            log.emit(EventType.FILE_DETECTED, file=f"{number}.jsonl")
        _until(lambda: len(feed.subscribers) == 5)  # the five that wanted three events hung up
        for number in range(3, 6):
            log.emit(EventType.FILE_DETECTED, file=f"{number}.jsonl")
        for thread in threads:
            thread.join(30)
        _until(lambda: not feed.subscribers and not feed.running)
    finally:
        server.stop()
    assert [results[n] for n in range(10)] == [[1, 2, 3]] * 5 + [[1, 2, 3, 4, 5, 6]] * 5


def _until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
