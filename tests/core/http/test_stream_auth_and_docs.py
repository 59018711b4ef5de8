"""The event stream takes the token as ``?token=`` off loopback (EventSource sends no headers), and
no other endpoint does; ``/docs`` is Swagger UI from local files, no CDN."""

from __future__ import annotations

import re

from core.state.events import EventLog, EventType
from tests.core.http.conftest import make_client


def _first_event(client, url: str) -> dict | int:
    """The first streamed event's data, or the status code of a refused stream."""
    with client.stream("GET", url) as stream:
        if stream.status_code != 200:
            return stream.status_code
        for line in stream.iter_lines():
            if line.startswith("data: "):
                client.app.state.context.stopping.set()
                return {"data": line}
    raise AssertionError("the stream ended without an event")


def test_off_loopback_the_stream_takes_the_token_as_a_query_parameter(layout, token):
    EventLog(layout.events_file).emit(EventType.FILE_DETECTED, file="a.jsonl")
    client = make_client(layout, host="0.0.0.0")

    assert _first_event(client, "/api/events/stream?after=0") == 401
    assert _first_event(client, "/api/events/stream?after=0&token=wrong") == 401
    streamed = _first_event(client, f"/api/events/stream?after=0&token={token}")
    assert isinstance(streamed, dict) and "a.jsonl" in streamed["data"]


def test_no_other_endpoint_accepts_the_token_in_the_url(layout, token):
    client = make_client(layout, host="0.0.0.0")
    for path in ("/api/status", "/api/events", "/api/queue", "/metrics"):
        assert client.get(f"{path}?token={token}").status_code == 401, path
    assert client.post(f"/api/pause?token={token}").status_code == 401
    assert not layout.pause_file.exists()


def test_the_api_docs_page_loads_swagger_ui_from_this_server(client):
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/docs-assets/") for s in sources), sources
    for source in sources:
        assert client.get(source).status_code == 200, source
    assert "cdn" not in page.text.lower()
    assert client.get("/openapi.json").json()["openapi"].startswith("3.")
