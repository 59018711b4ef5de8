"""One TensorBoard server for ``runs/``, started when the first run writes logs, stopped at exit.

Environment:
    TB_AUTO: ``0`` disables the server (logs are still written). Default: on.
    TB_HOST: address to listen on. Default ``127.0.0.1`` (this machine only).
    TB_PORT: preferred port. Default 6006; when it is busy a free port is picked instead.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from trainer.callbacks import tensorboard_installed

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6006
SERVER_LOG = ".tensorboard.log"

_server: "TensorBoardServer | None" = None
_warned_missing = False


def port_is_free(host: str, port: int) -> bool:
    """Whether ``port`` on ``host`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def pick_port(host: str, preferred: int) -> int:
    """``preferred`` when it is free, else a port the OS hands out as free."""
    if port_is_free(host, preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    logger.info("TensorBoard port %d on %s is busy; using %d", preferred, host, port)
    return port


class TensorBoardServer:
    """A ``tensorboard`` child process serving ``logdir``; a context manager that stops it."""

    def __init__(self, logdir: Path, host: str, port: int):
        self.logdir = Path(logdir)
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}/"
        self.logdir.mkdir(parents=True, exist_ok=True)
        with (self.logdir / SERVER_LOG).open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tensorboard.main", "--logdir", str(self.logdir),
                 "--host", host, "--port", str(port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        logger.info("TensorBoard for %s at %s (pid %d)", self.logdir, self.url, self.process.pid)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until the server accepts connections; False if it exited or the time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Terminate the server (kill it if it does not exit within 5 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            logger.info("TensorBoard at %s stopped", self.url)

    def __enter__(self) -> "TensorBoardServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_tensorboard(logdir: Path, env: Mapping[str, str] | None = None) -> TensorBoardServer | None:
    """Start a TensorBoard server for ``logdir`` as the environment says; None when it is off.

    The caller owns the returned server and stops it (it is a context manager).
    """
    global _warned_missing
    env = os.environ if env is None else env
    if env.get("TB_AUTO", "1") == "0":
        return None
    if not tensorboard_installed():
        if not _warned_missing:
            logger.warning("tensorboard is not installed, so no server is started; pip install tensorboard")
            _warned_missing = True
        return None
    host = env.get("TB_HOST") or DEFAULT_HOST
    try:
        preferred = int(env.get("TB_PORT") or DEFAULT_PORT)
    except ValueError:
        logger.warning("TB_PORT=%r is not a port number; using %d", env.get("TB_PORT"), DEFAULT_PORT)
        preferred = DEFAULT_PORT
    return TensorBoardServer(logdir, host, pick_port(host, preferred))


def ensure_tensorboard(logdir: Path) -> str | None:
    """Start the process-wide server for ``logdir`` once; return its URL (None when off).

    Later calls return the running server's URL. The server is stopped when the process exits.
    """
    global _server
    if _server is not None and _server.process.poll() is None:
        return _server.url
    _server = start_tensorboard(logdir)
    if _server is None:
        return None
    atexit.register(_server.stop)
    return _server.url
