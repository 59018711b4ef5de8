"""``/api/status`` is parsed once per change of the status or pause file, and never served stale."""

from __future__ import annotations

from core.http import status as status_module
from core.state.status import DaemonState, StatusFile


def test_every_change_is_served_at_once_and_an_unchanged_status_is_not_parsed_again(client, layout, auth,
                                                                                       monkeypatch):
    status = StatusFile(layout.status_file)
    seen = []
    for step in range(1, 6):  # writes closer together than any poll
        status.update(state=DaemonState.TRAINING, current_step=step, total_steps=5)
        seen.append(client.get("/api/status").json()["current_step"])
    assert seen == [1, 2, 3, 4, 5]

    assert client.post("/api/pause", headers=auth).status_code == 200
    assert client.get("/api/status").json()["claiming_paused"] is not None
    assert client.post("/api/resume", headers=auth).status_code == 200
    assert client.get("/api/status").json()["claiming_paused"] is None

    parses = []
    real_read = StatusFile.read
    monkeypatch.setattr(StatusFile, "read", lambda self: parses.append(1) or real_read(self))
    for _ in range(20):
        assert client.get("/api/status").json()["current_step"] == 5
    assert len(parses) == 0
    status.update(current_step=6)
    parses.clear()  # update() read the file itself
    assert [client.get("/api/status").json()["current_step"] for _ in range(3)] == [6, 6, 6]
    assert len(parses) == 1
    assert status_module._payloads  # the cache is keyed by base dir
