"""The HTTP API through FastAPI's test client: every endpoint, the token, uploads, pause."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from torch.utils.tensorboard import SummaryWriter

from core.daemon.loop import Outcome, TrainingDaemon
from core.runs.run import RunStatus, start_run
from core.snapshots.store import SnapshotStore, build_manifest
from core.state.events import EventLog, EventType
from core.state.status import DaemonState, StatusFile
from tests.conftest import chat_rows
from tests.core.http.conftest import make_client
from trainer.config import TrainConfig


def _jsonl(rows: list) -> bytes:
    return ("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n").encode()


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def _snapshot(layout, model_dir: Path, stem: str, tmp_path: Path, last_loss: float) -> str:
    manifest = build_manifest(
        source_file=f"{stem}.jsonl", sha256="0" * 64, rows=8, steps=2, first_loss=2.0, last_loss=last_loss,
        eval_loss=None, config=TrainConfig(), base_model="tiny", profile="default", parent_snapshot=None,
        evaluation={"verdict": "promoted", "rule": None, "sets": []},
    )
    store = SnapshotStore(layout)
    snapshot = store.create(Path(shutil.copytree(model_dir, tmp_path / "models" / stem)), manifest, stem)
    store.promote(snapshot.id)
    return snapshot.id


def test_read_endpoints_answer_on_loopback_without_a_token(client, layout):
    StatusFile(layout.status_file).update(state=DaemonState.TRAINING, current_file="a.jsonl", current_step=3,
                                          total_steps=10)
    assert client.get("/api/status").json()["current_step"] == 3
    assert set(client.get("/api/queue").json()) == {"inbox", "processing", "done", "failed", "rejected"}
    assert client.get("/api/snapshots").json() == {"current": None, "pinned": [], "snapshots": []}
    assert client.get("/api/runs").json() == {"runs": []}
    assert client.get("/api/events").json() == {"events": [], "last_id": 0}
    assert "trainctl_daemon_up" in client.get("/metrics").text
    page = client.get("/")
    assert page.status_code == 200 and "progress-bar" in page.text and "cdn" not in page.text.lower()
    assert client.get("/static/app.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/files", "/api/rollback", "/api/events/stream", "/api/runs/{run_id}"} <= set(paths)


CHANGES = [
    ("/api/pause", None), ("/api/resume", None), ("/api/rollback", {"snapshot": "previous"}),
    ("/api/snapshots/0001/pin", None), ("/api/snapshots/0001/unpin", None),
]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
def test_every_change_without_the_right_token_is_401_and_changes_nothing(client, layout, headers):
    layout.pause_file.write_text("{}")  # so that a resume would remove it
    before = _tree(layout.root)
    for path, body in CHANGES:
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 401, path
        assert "trainctl http-token" in response.json()["detail"]
    upload = client.post("/api/files?name=a.jsonl", content=_jsonl(chat_rows(4)), headers=headers)
    assert upload.status_code == 401
    assert _tree(layout.root) == before


def test_a_server_on_a_non_loopback_address_wants_the_token_for_reads_too(layout, auth):
    client = make_client(layout, host="0.0.0.0")
    for path in ("/api/status", "/api/queue", "/api/snapshots", "/api/events", "/metrics"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=auth).status_code == 200, path


def test_a_read_only_server_refuses_changes_with_403(layout, auth):
    client = make_client(layout, read_only=True)
    assert client.get("/api/status").json()["read_only"] is True
    response = client.post("/api/pause", headers=auth)
    assert response.status_code == 403 and "trainctl daemon" in response.json()["detail"]
    assert not layout.pause_file.exists()


def test_an_uploaded_good_file_lands_in_the_inbox_with_its_validation_summary(client, layout, auth):
    response = client.post("/api/files?name=good.jsonl&priority=high", content=_jsonl(chat_rows(8)), headers=auth)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["path"] == "inbox/high/good.jsonl"
    assert (body["validation"]["good_rows"], body["validation"]["usable"]) == (8, True)
    assert (layout.inbox_high / "good.jsonl").read_bytes() == _jsonl(chat_rows(8))
    assert _tree(layout.uploads) == set()
    queued = client.get("/api/queue").json()["inbox"]
    assert [(f["path"], f["priority"]) for f in queued] == [("high/good.jsonl", "high")]
    again = client.post("/api/files?name=good.jsonl&priority=high", content=_jsonl(chat_rows(3)), headers=auth)
    assert again.json()["file"] == "good-1.jsonl"  # never overwrites a waiting file


def test_an_invalid_upload_is_refused_with_its_line_numbers_and_nothing_is_kept(client, layout, auth):
    rows = chat_rows(2) + ["{not json", {"messages": []}] + chat_rows(1)
    config = json.loads(layout.config_file.read_text())
    config["data"] = {"on_bad_row": "reject"}
    layout.config_file.write_text(json.dumps(config))

    response = client.post("/api/files?name=bad.jsonl", content=_jsonl(rows), headers=auth)

    assert response.status_code == 422
    body = response.json()
    assert [row["line"] for row in body["validation"]["bad_lines"]] == [3, 4]
    assert body["detail"]
    assert _tree(layout.inbox) == {"high", "low"} and _tree(layout.uploads) == set()


def test_an_oversize_upload_is_413_and_leaves_nothing_on_disk(layout, auth):
    client = make_client(layout, max_upload_bytes=1000)
    body = _jsonl(chat_rows(40))
    assert len(body) > 1000

    declared = client.post("/api/files?name=big.jsonl", content=body, headers=auth)
    streamed = client.post("/api/files?name=big.jsonl", content=iter([body[:600], body[600:]]), headers=auth)

    assert declared.status_code == 413 and streamed.status_code == 413
    assert "http.max_upload_mb" in streamed.json()["detail"]
    assert _tree(layout.inbox) == {"high", "low"} and _tree(layout.uploads) == set()


@pytest.mark.parametrize("name", ["../evil.jsonl", "high/../../evil.jsonl", "a/b.jsonl", ".hidden.jsonl",
                                  "notes.txt", "x.jsonl.part", ".."])
def test_an_upload_name_that_is_not_a_plain_jsonl_name_is_refused(client, layout, auth, name):
    response = client.post("/api/files", params={"name": name}, content=_jsonl(chat_rows(2)), headers=auth)

    assert response.status_code == 400, response.text
    assert _tree(layout.inbox) == {"high", "low"}
    assert not (layout.root / "evil.jsonl").exists() and not (layout.root.parent / "evil.jsonl").exists()


def test_pause_stops_the_daemon_claiming_and_resume_lets_it_go_on(client, layout, auth):
    (layout.inbox / "bad.jsonl").write_text("not json\n")
    daemon = TrainingDaemon(layout.root)

    assert client.post("/api/pause", headers=auth).json()["claiming_paused"]["reason"] == "paused over HTTP"
    assert daemon.run_once() is Outcome.IDLE
    assert (layout.inbox / "bad.jsonl").exists()
    assert client.get("/api/status").json()["claiming_paused"] is not None

    assert client.post("/api/resume", headers=auth).json()["was_paused"] is True
    assert daemon.run_once() is Outcome.INVALID
    assert client.get("/api/status").json()["claiming_paused"] is None


def test_snapshots_are_listed_pinned_and_rolled_back(client, layout, auth, tiny_model_dir, tmp_path):
    first = _snapshot(layout, tiny_model_dir, "a", tmp_path, last_loss=1.5)
    second = _snapshot(layout, tiny_model_dir, "b", tmp_path, last_loss=1.2)

    listed = client.get("/api/snapshots").json()
    assert listed["current"] == second
    assert [(s["id"], s["last_loss"], s["current"]) for s in listed["snapshots"]] == [
        (second, 1.2, True), (first, 1.5, False)]
    assert "files" not in listed["snapshots"][0]["manifest"]
    assert listed["snapshots"][0]["gate"]["verdict"] == "promoted"

    assert client.post(f"/api/snapshots/{first}/pin", headers=auth).json()["pinned"] is True
    assert client.get("/api/snapshots").json()["pinned"] == [first]
    assert client.post(f"/api/snapshots/{first}/unpin", headers=auth).json()["pinned"] is False

    rolled = client.post("/api/rollback", json={"snapshot": "previous"}, headers=auth).json()
    assert rolled == {"from": second, "to": first}
    assert SnapshotStore(layout).current().id == first
    assert [e["to"] for e in EventLog(layout.events_file).read() if e["type"] == "rollback"] == [first]
    assert client.post("/api/rollback", json={"snapshot": first}, headers=auth).status_code == 409
    assert client.post("/api/snapshots/9999/pin", headers=auth).status_code == 404


def test_events_after_an_id_and_the_live_stream(client, layout):
    log = EventLog(layout.events_file)
    for name in ("a", "b", "c"):
        log.emit(EventType.FILE_DETECTED, file=f"{name}.jsonl")

    after = client.get("/api/events?after=1").json()
    assert ([e["id"] for e in after["events"]], after["last_id"]) == ([2, 3], 3)
    assert [e["file"] for e in client.get("/api/events?limit=1").json()["events"]] == ["c.jsonl"]

    StatusFile(layout.status_file).update(state=DaemonState.TRAINING, current_step=4)
    seen, kinds = [], []
    with client.stream("GET", "/api/events/stream?after=1") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kinds.append(line.removeprefix("event: "))
            if line.startswith("data: "):
                seen.append(json.loads(line.removeprefix("data: ")))
            if len(seen) == 3:
                client.app.state.context.stopping.set()
    assert [e.get("id") for e in seen[:2]] == [2, 3]
    assert kinds == ["status"] and seen[2]["current_step"] == 4


def test_a_run_is_served_with_its_loss_curve_from_tensorboard(client, layout):
    run = start_run(layout.runs, phase="daemon", config=TrainConfig())
    writer = SummaryWriter(log_dir=str(run.tensorboard))
    for step, loss in ((1, 2.0), (2, 1.5), (3, 1.1)):
        writer.add_scalar("train/loss", loss, step)
    writer.add_scalar("eval/loss", 1.3, 3)
    writer.close()
    run.finish(RunStatus.COMPLETED, final_loss=1.1)

    for ref in (run.id, "latest"):
        body = client.get(f"/api/runs/{ref}").json()
        assert body["run"]["final_loss"] == 1.1
        assert [[s, round(v, 3)] for s, v in body["loss_curve"]["train"]] == [[1, 2.0], [2, 1.5], [3, 1.1]]
        assert [[s, round(v, 3)] for s, v in body["loss_curve"]["eval"]] == [[3, 1.3]]
    assert [r["id"] for r in client.get("/api/runs").json()["runs"]] == [run.id]
    assert client.get("/api/runs/nope").status_code == 404
    assert client.get("/api/runs/..%2F..").status_code == 404


def _metrics(client) -> dict:
    found = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_count_outcomes_and_show_progress_queue_and_disk(client, layout):
    log = EventLog(layout.events_file)
    (layout.inbox / "next.jsonl").write_text("{}\n")
    StatusFile(layout.status_file).update(state=DaemonState.TRAINING, current_step=5, total_steps=20, loss=1.25,
                                          tokens_per_second=300.0)
    before = _metrics(client)
    log.emit(EventType.SNAPSHOT_PROMOTED, file="a.jsonl", snapshot="0001")
    log.emit(EventType.FILE_FAILED, file="b.jsonl", error="boom")
    log.emit(EventType.VALIDATION_FAILED, file="c.jsonl", problems=[], bad_rows=1)
    log.emit(EventType.FILE_DUPLICATE, file="d.jsonl")
    log.emit(EventType.PROMOTION_REJECTED, file="e.jsonl")
    after = _metrics(client)

    for outcome in ("trained", "failed", "invalid", "rejected", "duplicate"):
        key = ("trainctl_files_total", (("outcome", outcome),))
        assert (before[key], after[key]) == (0.0, 1.0), outcome
    assert after[("trainctl_state", (("state", "training"),))] == 1.0
    assert after[("trainctl_state", (("state", "idle"),))] == 0.0
    assert after[("trainctl_queue_length", ())] == 1.0
    assert (after[("trainctl_current_step", ())], after[("trainctl_total_steps", ())]) == (5.0, 20.0)
    assert (after[("trainctl_last_loss", ())], after[("trainctl_tokens_per_second", ())]) == (1.25, 300.0)
    assert 0 <= after[("trainctl_seconds_since_last_promotion", ())] < 60
    assert after[("trainctl_disk_free_bytes", ())] > 0
    assert after[("trainctl_daemon_up", ())] == 0.0
