"""The promotion hook: ``daemon.on_promote``, run after each promotion and rollback to tell servers.

The command runs through the shell in the base dir, in its own process group, with::

    TRAINCTL_EVENT          promote | rollback
    TRAINCTL_SNAPSHOT_ID    the snapshot now in current_model
    TRAINCTL_SNAPSHOT_PATH  its folder (absolute)
    TRAINCTL_PREVIOUS_ID    the snapshot current before (empty if none)
    TRAINCTL_BASE_DIR       the base dir

Its output (stdout and stderr) goes to the daemon log line by line, and its exit status, duration
and the tail of its output to a ``promotion_hook`` event. It may run ``daemon.hook_timeout_seconds``;
then its whole process group is killed. A hook that fails, hangs or cannot start is reported and
nothing else happens: the promotion stands and the daemon goes on with the next file.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

from core.base.errors import UserError
from core.snapshots.store import SnapshotInfo, SnapshotStore
from core.state.events import EventLog, EventType
from core.state.layout import BaseDir
from trainer.config import load_config
from trainer.config.schema import DaemonSettings

logger = logging.getLogger(__name__)

PROMOTE = "promote"
ROLLBACK = "rollback"
_OUTPUT_TAIL = 2000
_DRAIN_SECONDS = 5.0  # after the kill, how long to wait for the pipe of a child that escaped the group


def on_promoted(layout: BaseDir, snapshot: SnapshotInfo, settings: DaemonSettings) -> dict | None:
    """Run the hook for a promotion by the daemon; the previous snapshot comes from the promotion stack."""
    if not settings.on_promote:
        return None
    stack = SnapshotStore(layout).promotions.ids()
    previous = stack[-2] if len(stack) >= 2 and stack[-1] == snapshot.id else None
    return run_hook(layout, settings, PROMOTE, snapshot, previous)


def on_rolled_back(layout: BaseDir, before: SnapshotInfo | None, after: SnapshotInfo) -> dict | None:
    """Run the hook for a rollback, with the base dir's ``config.json`` (skipped if it is invalid)."""
    try:
        settings = load_config(layout.config_file).daemon
    except UserError as exc:
        logger.warning("daemon.on_promote not run after the rollback to %s: %s", after.id, exc)
        return None
    return run_hook(layout, settings, ROLLBACK, after, before.id if before else None)


def run_hook(layout: BaseDir, settings: DaemonSettings, event: str, snapshot: SnapshotInfo,
             previous: str | None) -> dict | None:
    """Run ``settings.on_promote`` for ``snapshot`` and record how it went.

    Returns:
        The ``promotion_hook`` event, or None when no hook is configured.
    """
    if not settings.on_promote:
        return None
    env = {
        **os.environ,
        "TRAINCTL_EVENT": event,
        "TRAINCTL_SNAPSHOT_ID": snapshot.id,
        "TRAINCTL_SNAPSHOT_PATH": str(snapshot.path.resolve()),
        "TRAINCTL_PREVIOUS_ID": previous or "",
        "TRAINCTL_BASE_DIR": str(layout.root),
    }
    logger.info("running daemon.on_promote for %s of %s", event, snapshot.id)
    started = time.monotonic()
    exit_code, timed_out, output = _run(settings.on_promote, layout, env, settings.hook_timeout_seconds)
    seconds = round(time.monotonic() - started, 3)
    for line in output.splitlines():
        logger.info("on_promote [%s]: %s", snapshot.id, line)
    if timed_out:
        logger.warning("daemon.on_promote for %s was killed after %.0f s (daemon.hook_timeout_seconds); "
                       "training goes on", snapshot.id, settings.hook_timeout_seconds)
    elif exit_code != 0:
        logger.warning("daemon.on_promote for %s failed with exit status %s; training goes on", snapshot.id, exit_code)
    record = {"event": event, "snapshot": snapshot.id, "previous": previous, "command": settings.on_promote,
              "exit_code": exit_code, "timed_out": timed_out, "seconds": seconds, "output_tail": output[-_OUTPUT_TAIL:]}
    try:
        return EventLog(layout.events_file).emit(EventType.PROMOTION_HOOK, **record)
    except OSError as exc:  # the promotion is done; a full disk is reported by the daemon's next write
        logger.error("could not record the on_promote result in %s: %s", layout.events_file, exc)
        return record


def _run(command: str, layout: BaseDir, env: dict[str, str], timeout: float) -> tuple[int | None, bool, str]:
    """Run ``command``; returns its exit status (None if it could not start or was killed), whether it
    timed out, and its output."""
    try:
        process = subprocess.Popen(
            command, shell=True, cwd=layout.root, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
    except OSError as exc:
        return None, False, f"could not start: {exc}"
    try:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, False, output.decode("utf-8", errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        try:
            output, _ = process.communicate(timeout=_DRAIN_SECONDS)
        except subprocess.TimeoutExpired:  # a grandchild left the group and still holds the pipe
            process.stdout.close()
            process.wait()
            output = b""
        return None, True, output.decode("utf-8", errors="replace")
