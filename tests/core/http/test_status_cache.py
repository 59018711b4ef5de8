"""``/api/status`` and a run's loss curve are parsed once per change of their files, and never served stale."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from core.http import status as status_module
from core.runs.run import start_run
from core.state.status import DaemonState, StatusFile
from trainer.config import TrainConfig


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


def test_a_runs_loss_curve_is_parsed_again_only_when_its_events_change(client, layout, monkeypatch):
    run = start_run(layout.runs, phase="daemon", config=TrainConfig())
    writer = SummaryWriter(log_dir=str(run.tensorboard))
    writer.add_scalar("train/loss", 2.0, 1)
    writer.flush()
    assert client.get("/api/runs/latest").json()["loss_curve"]["train"] == [[1, 2.0]]

    parses = []
    real_reload = EventAccumulator.Reload
    monkeypatch.setattr(EventAccumulator, "Reload", lambda self: parses.append(1) or real_reload(self))
    for _ in range(5):
        assert client.get("/api/runs/latest").json()["loss_curve"]["train"] == [[1, 2.0]]
    assert parses == []
    writer.add_scalar("train/loss", 1.5, 2)
    writer.flush()
    assert client.get("/api/runs/latest").json()["loss_curve"]["train"] == [[1, 2.0], [2, 1.5]]
    assert parses == [1]
    writer.close()
