"""The standby training child, from the daemon's side: started ahead, warmed up, handed the next file.

A fresh ``python -m core.child.worker`` spends seconds importing torch, transformers and PEFT, and its
first step is slow (docs/performance.md, "Warm training child"). With ``daemon.warm_child`` the daemon
keeps one child started ahead (:class:`Standby`): it imports and warms up while the daemon waits
(``core.child.warmup``), then gets the next file over a socket with the work folder's lock and the
file's log (``core.child.protocol.send_file``). From there it is the child a cold start would have
been: the same arguments and code, its own process group, the parent-death signal, the exit codes.
It trains that one file and exits; the next file gets a new standby, so nothing of one file's run
reaches the next. Several processes (torchrun) always start cold.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from core.child.launcher import launch_standby
from core.child.protocol import READY, send_file
from trainer.config import TrainConfig
from trainer.distributed import needs_torchrun

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 600.0


class StandbyChild:
    """One started standby child: its process, the daemon's end of its socket, the environment it got."""

    def __init__(self, process: subprocess.Popen, sock: socket.socket, env: dict[str, str]) -> None:
        self.process, self.sock, self.env = process, sock, env
        self._ready = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        """Whether it still runs (a standby that died is reaped here)."""
        return self.process.poll() is None

    def ready(self) -> bool:
        """Whether it said it is warm (never blocks)."""
        if not self._ready:
            with contextlib.suppress(BlockingIOError, OSError):
                self._ready = self.sock.recv(len(READY), socket.MSG_DONTWAIT) == READY
        return self._ready

    def hand(self, args: list[str], lock_fd: int, log_file: Path) -> subprocess.Popen | None:
        """Give it the worker's ``args``, the lock behind ``lock_fd`` and ``log_file`` (appended to).

        Returns:
            The training child, or None when it died before taking the file (it is reaped then; the
            lock stays with the caller).
        """
        log_fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            send_file(self.sock, args, lock_fd, log_fd)
        except OSError as exc:
            logger.warning("standby training child %d is gone (%s); starting a cold one", self.pid, exc)
            self.kill()
            return None
        finally:
            os.close(log_fd)
        self.sock.close()
        return self.process

    def kill(self) -> None:
        """End it (it holds no file yet, so nothing is lost) and reap it."""
        if self.process.poll() is None:  # not reaped, so its pid (and group) cannot be another's yet
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.sock.close()


class Standby:
    """Keeps one standby child ready for the daemon while ``daemon.warm_child`` is on.

    The daemon's loop calls :meth:`start` once, :meth:`keep_ready` whenever it waits and :meth:`close`
    at the end; :meth:`take` hands out the standby for the next file. Until :meth:`start` (a daemon
    driven through ``run_once()`` alone, as tests do) :meth:`take` returns None: children start cold.
    A standby that dies unused is replaced at once the first time, then after a back-off that
    doubles up to :data:`MAX_BACKOFF_SECONDS`, until one gets warm again.

    Args:
        base_dir: The base directory its children train in.
        clock: Monotonic clock (the back-off); tests inject a fake one.
    """

    def __init__(self, base_dir: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.base_dir, self.clock = Path(base_dir), clock
        self.child: StandbyChild | None = None
        self.active = False
        self._failures = 0
        self._next_start = 0.0

    def start(self) -> None:
        """From now on until :meth:`close`, files go to standby children where the config allows."""
        self.active = True

    def keep_ready(self, config: TrainConfig | None) -> None:
        """Have a standby child starting or warm if ``config`` wants one; end it if not."""
        if not self.active or config is None:
            return
        if not wanted(config):
            self._discard()
            return
        self._check()
        if self.child is None and self.clock() >= self._next_start:
            self.child = self._launch()

    def take(self, config: TrainConfig) -> StandbyChild | None:
        """The standby child for the next file (started now if none is alive), or None: start cold."""
        if not (self.active and wanted(config)):
            return None
        self._check()
        child, self.child = self.child, None
        if child is not None and child.env != dict(os.environ):
            changed = {name for name, _ in set(child.env.items()) ^ set(os.environ.items())}
            logger.info("replacing standby training child %d: the environment changed since it started (%s)",
                        child.pid, ", ".join(sorted(changed)))
            child.kill()
            child = None
        child = child or self._launch()
        if child is not None:
            logger.info("training in standby child %d (%s)", child.pid, "warm" if child.ready() else "not warm yet")
        return child

    def close(self) -> None:
        """End the standby child, if any; later files start cold."""
        self.active = False
        self._discard()

    def _check(self) -> None:
        if self.child is None:
            return
        if self.child.alive():
            if self.child.ready():
                self._failures = 0
            return
        self._failures += 1
        delay = 0.0 if self._failures == 1 else min(MAX_BACKOFF_SECONDS, 5.0 * 2 ** (self._failures - 1))
        logger.warning("standby training child %d exited with code %s before it got a file; another starts "
                       "in %g s (its output went to the daemon's stderr)", self.child.pid, self.child.process.returncode,
                       delay)
        self.child.sock.close()
        self.child = None
        self._next_start = self.clock() + delay

    def _discard(self) -> None:
        if self.child is not None:
            self.child.kill()
            self.child = None

    def _launch(self) -> StandbyChild | None:
        env = dict(os.environ)
        try:
            process, sock = launch_standby(self.base_dir)
        except OSError as exc:
            logger.warning("cannot start a standby training child (%s); training children start cold until one does", exc)
            return None
        return StandbyChild(process, sock, env)


def wanted(config: TrainConfig) -> bool:
    """Whether ``config`` trains in a standby child: ``daemon.warm_child`` and one process (no torchrun)."""
    return config.daemon.warm_child and not needs_torchrun(config.distributed)
