"""The crowd of ``benchmarks/http_load.py``: dashboard readers, and a minimal server to point them at.

Each reader holds ``GET /api/events/stream`` open and polls ``GET /api/status`` every ``interval``
seconds on a second keep-alive connection. Two clients do the same thing:

- ``raw``: plain asyncio streams speaking HTTP/1.1 (a request line, read the head, read the body by
  its ``content-length``); a few tens of microseconds per request, so the benchmark weighs the
  server and not an HTTP client library;
- ``httpx``: ``httpx.AsyncClient``, as a Python script reading the API would; several times the
  client's CPU per request.

``run_decoy`` is the server stand-in: the same two paths over raw asyncio streams, the status file's
bytes (read again when its inode, mtime or size change, checked every 0.5 s like the daemon's
feed) and a status event on each stream per change. Pointing the readers at it instead of the
daemon keeps the client's whole cost and replaces the daemon's server with about the least a server
can do; the difference between the two is the daemon's server.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx

STREAM_PATH = "/api/events/stream"
STATUS_PATH = "/api/status"


def _request(host: str, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n".encode()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status code and headers (lower-case names) of one response."""
    code = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return code, headers


async def _raw_reader(host: str, port: int, interval: float, stop, counts: dict, connected: list) -> None:
    stream_in, stream_out = await asyncio.open_connection(host, port)
    stream_out.write(_request(host, STREAM_PATH))
    await _read_head(stream_in)
    connected.append(1)

    async def consume():
        while line := await stream_in.readline():  # chunk-size lines interleave; data lines stay whole
            counts["stream_messages"] += line.startswith(b"data: ")

    task = asyncio.create_task(consume())
    status_in, status_out = await asyncio.open_connection(host, port)
    try:
        while not stop.is_set():
            status_out.write(_request(host, STATUS_PATH))
            code, headers = await _read_head(status_in)
            await status_in.readexactly(int(headers["content-length"]))
            counts["status_requests" if code == 200 else "errors"] += 1
            await asyncio.sleep(interval)
    except (OSError, asyncio.IncompleteReadError, IndexError, KeyError, ValueError):
        counts["errors"] += 0 if stop.is_set() else 1  # the daemon stops after the trial
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    for writer in (stream_out, status_out):
        writer.close()


async def _httpx_reader(url: str, interval: float, stop, counts: dict, connected: list) -> None:
    base = url.rstrip("/")
    async with httpx.AsyncClient(timeout=60) as client, client.stream("GET", base + STREAM_PATH) as stream:
        connected.append(1)

        async def consume():
            try:
                async for line in stream.aiter_lines():
                    counts["stream_messages"] += line.startswith("data: ")
            except httpx.HTTPError:
                counts["errors"] += 0 if stop.is_set() else 1

        task = asyncio.create_task(consume())
        while not stop.is_set():
            try:
                response = await client.get(base + STATUS_PATH)
                counts["status_requests" if response.status_code == 200 else "errors"] += 1
            except httpx.HTTPError:
                counts["errors"] += 0 if stop.is_set() else 1
            await asyncio.sleep(interval)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def set_priority(priority: str) -> None:
    """``idle``: SCHED_IDLE (runs only on a core nothing else wants, as a browser on another machine
    would never compete); ``nice``: nice 19; ``normal``: as training."""
    if priority == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    elif priority == "nice":
        os.nice(19)


def run_readers(url: str, readers: int, interval: float, client: str, priority: str, ready, stop, results) -> None:
    """The readers' process: ``readers`` clients until ``stop``; sets ``ready`` once every stream is
    open, then puts its counts and its own CPU seconds on ``results``."""
    set_priority(priority)
    counts = {"status_requests": 0, "stream_messages": 0, "errors": 0}
    connected: list = []
    host, port = url.split("//", 1)[1].rstrip("/").rsplit(":", 1)

    def one_reader():
        if client == "raw":
            return _raw_reader(host, int(port), interval, stop, counts, connected)
        return _httpx_reader(url, interval, stop, counts, connected)

    async def main():
        async def signal_ready():
            while len(connected) < readers:
                await asyncio.sleep(0.05)
            ready.set()
        await asyncio.gather(signal_ready(), *(one_reader() for _ in range(readers)))

    asyncio.run(main())
    results.put({**counts, "client_cpu_s": round(sum(os.times()[:2]), 2)})


def run_decoy(status_file: Path, port_queue) -> None:
    """The minimal server: serves ``status_file`` on both paths until killed; puts its port on
    ``port_queue`` once listening."""
    state = {"key": None, "body": b"{}"}
    streams: set[asyncio.StreamWriter] = set()

    def refresh() -> None:
        try:
            info = os.stat(status_file)
            key = (info.st_ino, info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            return
        if key != state["key"]:
            state["key"], state["body"] = key, status_file.read_bytes().replace(b"\n", b"")
            message = b"event: status\ndata: " + state["body"] + b"\n\n"
            chunk = b"%x\r\n%s\r\n" % (len(message), message)
            for writer in list(streams):
                writer.write(chunk)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                path = line.split()[1].decode()
                while await reader.readline() not in (b"\r\n", b""):
                    pass
                if path == STREAM_PATH:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                 b"transfer-encoding: chunked\r\n\r\n")
                    streams.add(writer)
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(state["body"]), state["body"]))
        except (OSError, IndexError):
            pass
        streams.discard(writer)
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_queue.put(server.sockets[0].getsockname()[1])
        while True:
            refresh()
            await asyncio.sleep(0.5)

    asyncio.run(main())
