"""A full disk while checkpointing or snapshotting: reported, nothing good deleted, retried later.

The first two tests make the N-th write of one state file fail with ENOSPC (``TRAINCTL_FAULT``,
see ``core.base.faults``) on a daemon run in this process. The last one fills a real tmpfs (root only).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import pytest

from core.base.faults import FAULT_ENV
from core.daemon.loop import Outcome, TrainingDaemon
from core.snapshots.store import SnapshotStore, verify_snapshot
from core.state.layout import BaseDir
from core.state.status import DaemonState, StatusFile
from tests.conftest import write_jsonl
from tests.reliability.harness import (
    daemon_config,
    events,
    load_weights,
    make_base_dir,
    max_difference,
    start_daemon,
    stopped_child,
    update_config,
    wait_until,
)
from tests.reliability.soak import MAX_WEIGHT_DIFFERENCE, inbox_files
from trainer.checkpoints.markers import MARKER_NAME, checkpoint_problem, latest_checkpoint


@pytest.fixture()
def empty_layout(tmp_path, tiny_model_dir, monkeypatch) -> BaseDir:
    """A base dir with the kill loop's config; one attempt per file, so a counted failure shows."""
    monkeypatch.setenv("TB_AUTO", "0")
    return make_base_dir(tmp_path / "base", daemon_config(tiny_model_dir, daemon={"max_attempts": 1}))


def _drop(layout: BaseDir, name: str):
    return write_jsonl(layout.inbox / name, inbox_files()[name])


def _processing(layout: BaseDir) -> set[str]:
    return {p.name for p in layout.processing.iterdir()}


def _attempts(layout: BaseDir, name: str) -> int:
    return json.loads((layout.processing / f"{name}.work" / "state.json").read_text())["attempts"]


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint_and_retries_without_using_an_attempt(
    empty_layout, reference, monkeypatch
):
    layout = empty_layout
    _drop(layout, "alpha.jsonl")
    daemon = TrainingDaemon(layout.root)
    monkeypatch.setenv(FAULT_ENV, f"{MARKER_NAME}:3:enospc")  # the training child inherits it

    assert daemon.run_once() is Outcome.DISK_FULL

    # The file waits in processing with its attempt given back; checkpoint-2 is intact.
    assert _processing(layout) == {"alpha.jsonl", "alpha.jsonl.work"}
    assert _attempts(layout, "alpha.jsonl") == 0
    checkpoints = layout.processing / "alpha.jsonl.work" / "checkpoints"
    assert latest_checkpoint(checkpoints) == checkpoints / "checkpoint-2"
    assert not (checkpoints / "checkpoint-3").exists()  # the half-written one gave its space back
    status = StatusFile(layout.status_file).read()
    assert status.state is DaemonState.ERROR
    assert "alpha.jsonl: disk full" in status.last_error and "No space left on device" in status.last_error
    [event] = events(layout, "disk_full")
    assert event["file"] == "alpha.jsonl" and "No space left on device" in event["error"]
    assert list(layout.failed.iterdir()) == [] and events(layout, "file_failed") == []

    monkeypatch.delenv(FAULT_ENV)  # space is back
    assert daemon.run_once() is Outcome.TRAINED

    assert events(layout, "training_started")[-1]["resume_from"].endswith("checkpoint-2")
    current = load_weights(SnapshotStore(layout).current().path)
    assert max_difference(current, reference.weights["alpha.jsonl"]) <= MAX_WEIGHT_DIFFERENCE
    assert StatusFile(layout.status_file).read().state is DaemonState.IDLE


def test_a_full_disk_while_snapshotting_keeps_current_model_and_the_checkpoints_and_retries(
    layout, reference, monkeypatch
):
    # layout: alpha.jsonl trained, its snapshot current
    update_config(layout, daemon={"keep_snapshots": 1})
    daemon = TrainingDaemon(layout.root)
    before = SnapshotStore(layout).current()
    weights_before = load_weights(before.path)
    _drop(layout, "bravo.jsonl")
    monkeypatch.setenv(FAULT_ENV, "manifest.json:1:enospc")

    assert daemon.run_once() is Outcome.DISK_FULL

    # current_model and its snapshot (the only one, keep_snapshots=1) are untouched.
    assert [s.id for s in SnapshotStore(layout).list()] == [before.id]
    assert SnapshotStore(layout).current().id == before.id
    verify_snapshot(before.path)
    assert max_difference(load_weights(before.path), weights_before) == 0.0
    # bravo waits with every checkpoint of its finished training.
    assert _processing(layout) == {"bravo.jsonl", "bravo.jsonl.work"}
    checkpoints = layout.processing / "bravo.jsonl.work" / "checkpoints"
    assert latest_checkpoint(checkpoints) == checkpoints / "checkpoint-12"
    assert "bravo.jsonl: disk full" in StatusFile(layout.status_file).read().last_error
    assert [e["file"] for e in events(layout, "disk_full")] == ["bravo.jsonl"]

    monkeypatch.delenv(FAULT_ENV)
    assert daemon.run_once() is Outcome.TRAINED

    current = SnapshotStore(layout).current()
    assert current.source_file == "bravo.jsonl"
    assert max_difference(load_weights(current.path), reference.weights["bravo.jsonl"]) <= MAX_WEIGHT_DIFFERENCE
    assert not list(layout.snapshots.glob(".*"))  # the staging folder of the failed snapshot is gone


def _error_status(layout: BaseDir):
    status = StatusFile(layout.status_file).read()
    return status if status and status.state is DaemonState.ERROR else None


def _mount_tmpfs(path, size: str) -> bool:
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def _fill(path, leave: int) -> None:
    """Take all free space of ``path``'s file system but ``leave`` bytes."""
    free = shutil.disk_usage(path.parent).free
    with open(path, "wb") as ballast:
        os.posix_fallocate(ballast.fileno(), 0, max(0, free - leave))


def test_a_really_full_disk_pauses_the_file_until_space_returns(tiny_model_dir, reference, fork_server, tmp_path):
    root = tmp_path / "fs"
    if not _mount_tmpfs(root, "32m"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        # A retry every 3 s: space is back before the second attempt. Every checkpoint is kept, so
        # pruning an old one cannot give back the space the next one needs.
        config = daemon_config(
            tiny_model_dir, checkpoint={"keep_last": 100}, daemon={"max_attempts": 1, "rescan_seconds": 3.0}
        )
        layout = make_base_dir(root / "base", config)
        _drop(layout, "alpha.jsonl")
        checkpoints = layout.processing / "alpha.jsonl.work" / "checkpoints"
        # The child freezes itself as it completes checkpoint-3; the disk is filled but for too little
        # space for another checkpoint, then it goes on.
        fault = f"checkpoint-3/{MARKER_NAME}:1:stop"
        daemon = start_daemon(layout, once=False, fault=fault, log=tmp_path / "daemon.log", server=fork_server)
        try:
            child = wait_until(lambda: stopped_child(daemon.pid), 300, "the child to stop at checkpoint-3")
            _fill(root / "ballast", leave=48 * 1024)
            os.kill(child, signal.SIGCONT)

            status = wait_until(lambda: _error_status(layout), 300, "the status to report the full disk")
            assert "alpha.jsonl: disk full" in status.last_error
            assert events(layout, "disk_full")[0]["file"] == "alpha.jsonl"
            assert latest_checkpoint(checkpoints) is not None
            assert checkpoint_problem(latest_checkpoint(checkpoints)) is None
            assert _processing(layout) == {"alpha.jsonl", "alpha.jsonl.work"}

            (root / "ballast").unlink()
            wait_until(lambda: (layout.done / "alpha.jsonl").exists(), 300, "alpha.jsonl to be trained")
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=120) == 0
        assert list(layout.failed.iterdir()) == []
        current = load_weights(SnapshotStore(layout).current().path)
        assert max_difference(current, reference.weights["alpha.jsonl"]) <= MAX_WEIGHT_DIFFERENCE
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
