"""The test-only fault hook: which writes it counts, and what each action does."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.base import faults
from core.base.faults import FAULT_ENV
from tests.reliability.harness import process_state


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch):
    """Counts start at zero in each test and none leak into later ones."""
    monkeypatch.setattr(faults, "_matched", {})


def _write(name: str) -> None:
    faults.before_replace(Path("/base/queue/processing/a.jsonl.work/checkpoints") / name)


def test_unset_is_inert(monkeypatch):
    monkeypatch.delenv(FAULT_ENV, raising=False)
    for _ in range(3):
        _write("checkpoint-1/trainctl_checkpoint.json")


def test_enospc_hits_the_nth_matching_write_and_every_later_one(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "trainctl_checkpoint.json:2:enospc")
    _write("checkpoint-1/trainer_state.json")  # another name: not counted
    _write("checkpoint-1/trainctl_checkpoint.json")
    for step in (2, 3):
        with pytest.raises(OSError) as failed:
            _write(f"checkpoint-{step}/trainctl_checkpoint.json")
        assert failed.value.errno == errno.ENOSPC
    monkeypatch.delenv(FAULT_ENV)
    _write("checkpoint-4/trainctl_checkpoint.json")  # space is back


def test_a_pattern_with_a_slash_matches_the_last_path_parts(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "checkpoint-3/trainctl_checkpoint.json:1:enospc")
    _write("checkpoint-1/trainctl_checkpoint.json")
    _write("checkpoint-2/trainctl_checkpoint.json")
    _write("checkpoint-3/trainctl_config.json")
    with pytest.raises(OSError):
        _write("checkpoint-3/trainctl_checkpoint.json")


def test_stop_freezes_the_process_at_the_nth_write_and_it_goes_on_after_sigcont(tmp_path):
    code = (
        "from pathlib import Path\nfrom core.base.atomic import atomic_write_text\n"
        f"for n in range(3): atomic_write_text(Path({str(tmp_path)!r}) / 'state.json', str(n))\n"
    )
    env = {**os.environ, FAULT_ENV: "state.json:2:stop", "PYTHONPATH": str(Path(__file__).parents[3])}
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 60
        while process_state(process.pid) != "T":
            assert time.monotonic() < deadline, "the process never stopped"
            assert process.poll() is None, "the process ended without stopping"
            time.sleep(0.05)
        assert (tmp_path / "state.json").read_text() == "0"  # frozen before the second write lands
        os.kill(process.pid, signal.SIGCONT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert (tmp_path / "state.json").read_text() == "2"

