"""Stop requests and waiting for the training child.

Signal handlers only set flags (:class:`StopRequest`); :func:`wait_for_child` acts on them between
polls: the first request forwards SIGTERM to the child's process group so it checkpoints and exits,
and a second request, or the stop timeout running out, kills the group.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5


class StopRequest:
    """Flags set from signal handlers: ``requested`` after the first signal, ``forced`` after the second."""

    def __init__(self) -> None:
        self.requested = False
        self.forced = False

    def handle(self, signum: int = signal.SIGTERM, frame: Any = None) -> None:
        """Signal handler. Sets flags only: logging or locking here could deadlock the main thread."""
        if self.requested:
            self.forced = True
        self.requested = True

    def install(self) -> None:
        """Route SIGTERM and SIGINT here (main thread only)."""
        signal.signal(signal.SIGTERM, self.handle)
        signal.signal(signal.SIGINT, self.handle)


def wait_for_child(
    child: subprocess.Popen,
    stop: StopRequest,
    stop_timeout: float,
    on_tick: Callable[[], None] = lambda: None,
    on_stop: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Wait for ``child`` to exit and return its exit code (negative: killed by that signal).

    Args:
        child: The training child, leader of its own process group.
        stop: Checked every :data:`POLL_SECONDS`.
        stop_timeout: Seconds the child gets to checkpoint after SIGTERM before it is killed.
        on_tick: Called every poll (the systemd watchdog ping).
        on_stop: Called once when the stop request is forwarded (status "stopping").
        clock: Monotonic clock.
    """
    deadline = None
    while True:
        try:
            return child.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            on_tick()
        if stop.forced or (deadline is not None and clock() > deadline):
            logger.warning("killing training child %d (second stop request or stop timeout)", child.pid)
            signal_group(child, signal.SIGKILL)
        elif stop.requested and deadline is None:
            logger.info("stop requested: asking training child %d to checkpoint and exit", child.pid)
            on_stop()
            signal_group(child, signal.SIGTERM)
            deadline = clock() + stop_timeout


def signal_group(child: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to the child's process group (it leads its own, see ``core.child.launcher``)."""
    try:
        os.killpg(child.pid, signum)
    except ProcessLookupError:
        logger.debug("training child %d already exited", child.pid)
