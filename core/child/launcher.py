"""Start the training child process. The one place that knows the command line of a training run.

Training runs in a child so a crash, an out-of-memory kill or a stuck CUDA kernel costs one attempt,
not the daemon. The child gets its own process group: a Ctrl-C in the daemon's terminal reaches the
daemon only, which forwards a clean SIGTERM, and a forced stop can kill the whole group. Under
torchrun the group's leader is torchrun's agent, which forwards the SIGTERM to its workers; they die
with it on a forced stop (``core.child.agent``). A standby child (:func:`launch_standby`) is the same
worker started before its file is known; ``core.child.standby`` hands it the file.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from core.child.protocol import PARENT_PID_ENV, STANDBY_OPTION, WORKER_MODULE
from core.child.torchrun import GroupLaunch

logger = logging.getLogger(__name__)


def worker_args(
    base_dir: Path, train_file: Path, output_dir: Path, *, config_file: Path | None = None,
    model_source: str | None = None, resume: Path | None = None,
) -> list[str]:
    """The worker's arguments for one file (see :func:`launch_training` for their meaning)."""
    args = ["--base-dir", str(base_dir), "--file", str(train_file), "--output", str(output_dir)]
    if config_file is not None:
        args += ["--config", str(config_file)]
    if model_source is not None:
        args += ["--model-source", model_source]
    if resume is not None:
        args += ["--resume", str(resume)]
    return args


def launch_training(
    base_dir: Path,
    train_file: Path,
    output_dir: Path,
    *,
    config_file: Path | None = None,
    model_source: str | None = None,
    resume: Path | None = None,
    log_file: Path | None = None,
    pass_fds: tuple[int, ...] = (),
    group: GroupLaunch | None = None,
) -> subprocess.Popen:
    """Start ``python -m core.child.worker`` on one file and return without waiting.

    Args:
        base_dir: The base directory (the child reads ``config.json`` and writes status from it).
        train_file: The claimed JSONL file.
        output_dir: The run's work folder: checkpoints, ``result.json`` and the saved model go here.
        config_file: The config the run uses (the daemon's last accepted one); None: config.json.
        model_source: The model or adapter to start from; None lets the child resolve it.
        resume: A checkpoint folder to resume from, or None to start fresh.
        log_file: Where the child's stdout and stderr go (appended); None inherits the daemon's.
        pass_fds: Descriptors the child inherits (its work folder's lock).
        group: Several processes: the worker runs under torchrun (``core.child.torchrun``); None: one.

    Returns:
        The running child. It is the leader of its own process group (``pgid == pid``).
    """
    args = worker_args(base_dir, train_file, output_dir, config_file=config_file, model_source=model_source,
                       resume=resume)
    command = group.command(WORKER_MODULE, args) if group else [sys.executable, "-m", WORKER_MODULE, *args]
    logger.info("starting training of %s: %s", train_file.name, " ".join(command))
    stdout = open(log_file, "ab") if log_file is not None else None
    try:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout else None,
            start_new_session=True,
            pass_fds=pass_fds,
            env={**os.environ, PARENT_PID_ENV: str(os.getpid())},
        )
    finally:
        if stdout is not None:
            stdout.close()


def launch_standby(base_dir: Path) -> tuple[subprocess.Popen, socket.socket]:
    """Start a standby child: ``python -m core.child.worker --base-dir D --standby FD``.

    It imports and warms up, then waits for its file on the returned socket (``core.child.protocol``).
    Until then its output goes where the daemon's goes; it leads its own process group, as a training
    child does, and has :data:`PARENT_PID_ENV` set to this process.

    Returns:
        The child and the daemon's end of the socket pair.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    command = [sys.executable, "-m", WORKER_MODULE, "--base-dir", str(base_dir), STANDBY_OPTION, str(theirs.fileno())]
    try:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, start_new_session=True, pass_fds=(theirs.fileno(),),
            env={**os.environ, PARENT_PID_ENV: str(os.getpid())},
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    logger.info("started standby training child %d", child.pid)
    return child, ours
