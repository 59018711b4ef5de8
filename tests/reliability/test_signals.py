"""Signals: a SIGTERM during training checkpoints and exits 0 in time; a second one stops at once;
each next start resumes from the last complete checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import time

from core.state.status import DaemonState, StatusFile
from tests.conftest import write_jsonl
from tests.reliability.harness import (
    alive,
    daemon_config,
    events,
    make_base_dir,
    start_daemon,
    stopped_child,
    wait_until,
)
from tests.reliability.soak import inbox_files
from trainer.checkpoints.markers import MARKER_NAME, latest_checkpoint

STOP_TIMEOUT = 20
MAX_STEPS = 40
SAVE_STEPS = 5
START_TIMEOUT = 300


def test_sigterm_checkpoints_and_exits_in_time_a_second_stops_at_once_and_both_resume(
    tiny_model_dir, fork_server, tmp_path
):
    config = daemon_config(
        tiny_model_dir, hyperparams={"max_steps": MAX_STEPS}, checkpoint={"save_steps": SAVE_STEPS},
        daemon={"stop_timeout_seconds": STOP_TIMEOUT},
    )
    layout = make_base_dir(tmp_path / "base", config)
    write_jsonl(layout.inbox / "alpha.jsonl", inbox_files()["alpha.jsonl"])
    checkpoints = layout.processing / "alpha.jsonl.work" / "checkpoints"

    # One SIGTERM while the child is busy (frozen as it completes checkpoint-5, so that the tiny
    # model cannot finish first): it saves a checkpoint at the end of its next step, both exit 0.
    daemon = start_daemon(layout, once=False, fault=f"checkpoint-5/{MARKER_NAME}:1:stop", server=fork_server)
    child = wait_until(lambda: stopped_child(daemon.pid), START_TIMEOUT, "the child to stop at checkpoint-5")
    sent = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    wait_until(lambda: StatusFile(layout.status_file).read().state is DaemonState.STOPPING, 30, "stopping")
    os.kill(child, signal.SIGCONT)
    assert daemon.wait(timeout=STOP_TIMEOUT + 30) == 0
    assert time.monotonic() - sent < STOP_TIMEOUT
    stopped_at = events(layout, "checkpoint_saved")[-1]["step"]
    assert 5 <= stopped_at < MAX_STEPS
    assert latest_checkpoint(checkpoints, unfinished=True) == checkpoints / f"checkpoint-{stopped_at}"
    assert json.loads((checkpoints.parent / "state.json").read_text())["attempts"] == 0
    assert json.loads((checkpoints.parent / "result.json").read_text())["outcome"] == "interrupted"

    # Restart: it resumes there. The child is stuck (frozen as it completes a later checkpoint), so
    # the first SIGTERM cannot end it; the second kills it at once.
    later = (stopped_at // SAVE_STEPS + 2) * SAVE_STEPS
    daemon = start_daemon(layout, once=False, fault=f"checkpoint-{later}/{MARKER_NAME}:1:stop", server=fork_server)
    child = wait_until(lambda: stopped_child(daemon.pid), START_TIMEOUT, f"the child to stop at checkpoint-{later}")
    assert events(layout, "training_started")[-1]["resume_from"].endswith(f"checkpoint-{stopped_at}")
    daemon.send_signal(signal.SIGTERM)
    wait_until(lambda: StatusFile(layout.status_file).read().state is DaemonState.STOPPING, 30, "stopping")
    sent = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    assert time.monotonic() - sent < 5  # no checkpoint is waited for
    wait_until(lambda: not alive(child), 10, "the training child to be gone")
    assert events(layout, "daemon_stopped")[-1]["forced"] is True
    last_complete = latest_checkpoint(checkpoints, unfinished=True)
    assert last_complete is not None and last_complete.name != f"checkpoint-{later}"

    # The next start resumes from the last complete checkpoint (it is stopped as it hands the
    # config to the new child; test_kill_loop.py shows such resumed runs finish exactly).
    daemon = start_daemon(layout, fault="config.json:1", server=fork_server)
    assert daemon.wait(timeout=START_TIMEOUT) == -signal.SIGKILL
    started = events(layout, "training_started")[-1]
    assert started["resume_from"] == str(last_complete)
    assert started["attempt"] == 1  # neither stop counted as a failed attempt
