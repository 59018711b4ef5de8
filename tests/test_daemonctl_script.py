"""``scripts/daemonctl.sh`` asks the daemon lock, so it agrees with ``trainctl status`` however the
daemon was started, and ``start`` returns only once the daemon holds the lock or has exited."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.daemon.lock import lock_holder
from core.state.layout import BaseDir, init_base_dir

REPO = Path(__file__).resolve().parents[1]
DAEMONCTL = str(REPO / "scripts" / "daemonctl.sh")
TRAINCTL = str(Path(sys.executable).with_name("trainctl"))


@pytest.fixture()
def layout(tmp_path, tiny_config, monkeypatch) -> BaseDir:
    monkeypatch.setenv("TB_AUTO", "0")
    layout = init_base_dir(tmp_path / "base")
    layout.config_file.write_text(json.dumps(tiny_config), encoding="utf-8")
    return layout


def _ctl(command: str, layout: BaseDir) -> subprocess.CompletedProcess:
    env = {**os.environ, "STOP_WAIT": "60"}
    return subprocess.run(["bash", DAEMONCTL, command, str(layout.root)], capture_output=True, text=True,
                          timeout=240, env=env)


def _status_pid(layout: BaseDir) -> int | None:
    shown = subprocess.run([TRAINCTL, "status", "--json", "--base-dir", str(layout.root)], capture_output=True,
                           text=True, timeout=60)
    return json.loads(shown.stdout)["daemon_pid"]


def _wait_for_lock(layout: BaseDir, pid: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while lock_holder(layout.lock_file) != pid:
        assert time.monotonic() < deadline, "the daemon did not take its lock"
        time.sleep(0.2)


def test_daemonctl_agrees_with_trainctl_status_for_a_daemon_started_by_hand(layout):
    daemon = subprocess.Popen([TRAINCTL, "daemon", "--base-dir", str(layout.root)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_lock(layout, daemon.pid)

        status = _ctl("status", layout)
        assert status.returncode == 0 and f"running (pid {daemon.pid})" in status.stdout
        assert _status_pid(layout) == daemon.pid

        again = _ctl("start", layout)
        assert again.returncode == 0 and f"already running (pid {daemon.pid})" in again.stdout
        assert lock_holder(layout.lock_file) == daemon.pid

        stop = _ctl("stop", layout)
        assert stop.returncode == 0 and "stopped" in stop.stdout
        assert daemon.wait(timeout=30) == 0
    finally:
        daemon.kill()

    after = _ctl("status", layout)
    assert after.returncode == 1 and "not running" in after.stdout
    assert _status_pid(layout) is None


def test_start_returns_once_the_lock_is_taken_and_stop_releases_it(layout):
    start = _ctl("start", layout)

    assert start.returncode == 0, start.stderr
    pid = int(re.search(r"started pid (\d+)", start.stdout).group(1))
    try:
        assert lock_holder(layout.lock_file) == pid  # already held when start returned
        assert f"running (pid {pid})" in _ctl("status", layout).stdout
    finally:
        stop = _ctl("stop", layout)
    assert stop.returncode == 0
    assert lock_holder(layout.lock_file) is None


def test_start_reports_why_the_daemon_exited(layout):
    # A process that holds the lock but wrote no pid: not a daemon daemonctl can see, yet the new
    # daemon cannot take the base dir and exits 3.
    layout.lock_file.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(300)"), str(layout.lock_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"

        start = _ctl("start", layout)

        assert start.returncode == 1
        assert "exited with code 3 (another daemon holds the base dir)" in start.stderr
    finally:
        holder.kill()
