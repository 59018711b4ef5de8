"""Training one claimed file in a child process, from the daemon's side: start it, hand it its lock, wait.

The child is the standby child the daemon keeps warm (``core.child.standby``) when there is one, else
a fresh process. The child's side is ``core.child.worker``; what the two agree on is
``core.child.protocol``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from core.base.locking import hand_over, lock_for_child, lock_holder, wait_for_lock
from core.child.launcher import launch_training, worker_args
from core.child.protocol import CHILD_LOCK_FILENAME
from core.child.standby import Standby
from core.child.supervisor import POLL_SECONDS, StopRequest, wait_for_child
from core.child.torchrun import GroupLaunch, group_exit_code
from core.daemon.work_queue import WorkItem
from core.state.layout import BaseDir
from trainer.config import TrainConfig

logger = logging.getLogger(__name__)

LOG_TAIL_CHARS = 4000


def run_child(
    layout: BaseDir, item: WorkItem, config: TrainConfig, model_source: str, resume: Path | None,
    log_file: Path, stop: StopRequest, *, on_tick: Callable[[], None], on_stop: Callable[[], None],
    standby: Standby | None = None,
) -> int:
    """Train ``item`` in a child process and return its exit code (see ``core.child.protocol``).

    The work folder's lock is taken here, before the child starts or ``standby``'s child gets the
    file, and handed to it, so that no moment of the child's life is unguarded against a second daemon.
    """
    group = GroupLaunch.from_config(config)
    if group is not None:
        logger.info("%s: training under torchrun with %d processes", item.path.name, group.processes)
    warm = standby.take(config) if standby is not None and group is None else None
    lock = lock_for_child(item.work_dir / CHILD_LOCK_FILENAME)  # held until the child exits
    try:
        config_file = item.write_config(config)
        child = warm.hand(worker_args(layout.root, item.path, item.work_dir, config_file=config_file,
                                      model_source=model_source, resume=resume), lock, log_file) if warm else None
        if child is None:
            child = launch_training(
                layout.root, item.path, item.work_dir, config_file=config_file,
                model_source=model_source, resume=resume, log_file=log_file, pass_fds=(lock,), group=group,
            )
    except BaseException:
        os.close(lock)
        if warm is not None and warm.alive():
            warm.kill()
        raise
    hand_over(lock, child.pid)
    code = wait_for_child(child, stop, config.daemon.stop_timeout_seconds, on_tick=on_tick, on_stop=on_stop)
    return group_exit_code(code, item.read_result()) if group else code


def wait_for_orphan(item: WorkItem, config: TrainConfig, stop: StopRequest, watchdog: Callable[[], None]) -> bool:
    """Wait for a training child that a daemon which died left on this file.

    It got SIGTERM when its daemon died, so it ends its step, checkpoints and exits; a second
    child now would train beside it. After ``daemon.stop_timeout_seconds`` it is killed.

    Returns:
        False if a stop was requested while waiting.
    """
    lock = item.work_dir / CHILD_LOCK_FILENAME
    pid = lock_holder(lock)
    if pid is None:
        return True
    timeout = config.daemon.stop_timeout_seconds
    logger.warning("%s: training child %d of an earlier daemon still runs; waiting up to %g s for it "
                   "to checkpoint and exit", item.path.name, pid, timeout)

    def tick() -> bool:
        watchdog()
        return not stop.requested

    if wait_for_lock(lock, timeout, tick) or stop.requested:
        return not stop.requested
    logger.warning("%s: killing training child %d, it did not exit within %g s", item.path.name, pid, timeout)
    if pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    wait_for_lock(lock, POLL_SECONDS * 20, tick)
    return not stop.requested


def log_tail(path: Path) -> str | None:
    """The end of a child's log, for a failed file's report."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return None
