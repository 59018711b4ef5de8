"""Kill -9 the daemon ~23 times while it works through an inbox: nothing lost, nothing trained twice.

The round, the kills and the checks are ``tests/reliability/soak.py``'s (``scripts/soak.sh`` runs
the same loop with random kills for as long as asked). Meanwhile a reader parses the status file as
fast as it can: it must never see half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal

from tests.conftest import write_jsonl
from tests.reliability.harness import (
    StatusReader,
    children,
    daemon_config,
    events,
    make_base_dir,
    start_daemon,
    stopped_child,
    wait_until,
)
from tests.reliability.soak import MAX_WEIGHT_DIFFERENCE, KillLoop, ci_plan, inbox_files
from trainer.checkpoints.markers import MARKER_NAME

SEED = 20240611


def test_after_20_kills_every_file_is_done_once_and_the_model_equals_an_uninterrupted_run(
    tiny_model_dir, reference, fork_server, tmp_path
):
    root = tmp_path / "base"
    loop = KillLoop(tiny_model_dir, reference, fork_server, log=print)  # shown when the test fails

    with StatusReader(root / "status" / "training_status.json") as reader:
        result = loop.run_round(root, iter(ci_plan(SEED)))

    assert result.problems == []  # checked after every kill, with nothing running
    assert len(result.kills) >= 18, result.kills  # a timed kill may let bravo.jsonl finish early
    assert any("write trainctl_checkpoint.json" in kill for kill in result.kills)
    assert any("write manifest.json" in kill for kill in result.kills)
    assert any("write promotions.json" in kill for kill in result.kills)
    assert any("write eval/*.json" in kill for kill in result.kills)  # the gate measuring
    assert any("write heldout.json" in kill for kill in result.kills)  # right after the verdict
    assert any("daemon only" in kill for kill in result.kills)
    assert result.lost == [] and result.duplicated == []
    assert result.max_difference <= MAX_WEIGHT_DIFFERENCE
    assert reader.bad == [] and reader.reads >= 1000


def test_a_restarted_daemon_waits_for_the_child_its_killed_predecessor_left_behind(
    tiny_model_dir, fork_server, tmp_path
):
    # A big model's step or checkpoint can outlast the restart (systemd: RestartSec=10), so the
    # orphan is frozen here, as it completes its second checkpoint: the new daemon must not start a
    # second child on the file.
    config = daemon_config(tiny_model_dir, hyperparams={"max_steps": 24}, checkpoint={"save_steps": 2})
    layout = make_base_dir(tmp_path / "base", config)
    write_jsonl(layout.inbox / "alpha.jsonl", inbox_files()["alpha.jsonl"])
    first = start_daemon(layout, once=False, fault=f"checkpoint-4/{MARKER_NAME}:1:stop", server=fork_server)
    orphan = wait_until(lambda: stopped_child(first.pid), 300, "the child to stop at checkpoint-4")
    os.kill(first.pid, signal.SIGKILL)  # the orphan gets SIGTERM (PR_SET_PDEATHSIG), handled once it runs
    first.wait(timeout=30)

    second = start_daemon(layout, server=fork_server)
    try:
        noticed = "of an earlier daemon still runs"
        wait_until(lambda: noticed in (layout.logs / "daemon.log").read_text() or children(second.pid),
                   300, "the second daemon to notice the orphan, or to start a child beside it")
        assert children(second.pid) == [], "a second training child runs beside the orphan"
        assert len(events(layout, "training_started")) == 1
        os.kill(orphan, signal.SIGCONT)  # the orphan checkpoints at the end of its step and exits
        assert second.wait(timeout=300) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGCONT)
    log = events(layout)
    restart = max(i for i, e in enumerate(log) if e["type"] == "training_started")
    orphan_saved = [e["step"] for e in log[:restart] if e["type"] == "checkpoint_saved"]
    assert log[restart]["resume_from"].endswith(f"checkpoint-{orphan_saved[-1]}")  # the orphan's last one
    assert json.loads((layout.done / "alpha.jsonl.report.json").read_text())["training"]["steps"] == 24
