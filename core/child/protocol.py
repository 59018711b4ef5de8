"""The wire between the daemon and its training child: file names, exit codes, environment, and the
one message a standby child is handed (:func:`send_file`, :func:`receive_file`).

Both sides import these; nothing else in the flow may spell them out.
"""

from __future__ import annotations

import json
import socket

from core.base.faults import PARENT_PID_ENV

__all__ = [
    "CHECKPOINTS_DIRNAME", "CHILD_LOCK_FILENAME", "EXIT_DISK_FULL", "EXIT_FAILED", "EXIT_INTERRUPTED",
    "EXIT_TRAINED", "MODEL_DIRNAME", "PARENT_PID_ENV", "READY", "RESULT_FILENAME", "RUN_POINTER",
    "STANDBY_OPTION", "WORKER_MODULE", "receive_file", "send_file",
]

# What the child leaves in its work folder, and how it exits.
CHECKPOINTS_DIRNAME = "checkpoints"
MODEL_DIRNAME = "model"
RESULT_FILENAME = "result.json"
CHILD_LOCK_FILENAME = "child.lock"  # held for the training child's life (core.base.locking.lock_for_child)
EXIT_TRAINED = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped on request at a checkpoint; resumable
EXIT_DISK_FULL = 74  # EX_IOERR: a write failed for lack of space; retried later, not counted
RUN_POINTER = "run.txt"  # the work folder's pointer to its run folder under runs/
WORKER_MODULE = "core.child.worker"  # started as ``python -m WORKER_MODULE``

# A standby child (``python -m WORKER_MODULE --base-dir D --standby FD``) holds one end of a
# SOCK_SEQPACKET socket pair as descriptor FD. It sends READY once warm; the daemon sends one message:
# the worker's command-line arguments as JSON, with the work folder's lock and the file's log as
# SCM_RIGHTS descriptors. End of file on the socket means the daemon is gone.
STANDBY_OPTION = "--standby"
READY = b"ready"
_MAX_MESSAGE = 1 << 16


def send_file(sock: socket.socket, args: list[str], lock_fd: int, log_fd: int) -> None:
    """Hand a standby child its file: the worker's arguments, the work folder's lock and the log.

    Raises:
        OSError: the child is gone (its end of the socket is closed).
    """
    payload = json.dumps(args).encode("utf-8")
    if len(payload) > _MAX_MESSAGE:
        raise ValueError(f"training arguments take {len(payload)} bytes, more than {_MAX_MESSAGE}")
    socket.send_fds(sock, [payload], [lock_fd, log_fd])


def receive_file(sock: socket.socket) -> tuple[list[str], int, int] | None:
    """Wait for the daemon's message; returns (arguments, lock fd, log fd), or None at end of file.

    Raises:
        ValueError: the message is not one :func:`send_file` writes.
    """
    payload, fds, _flags, _address = socket.recv_fds(sock, _MAX_MESSAGE, 2)
    if not payload and not fds:
        return None
    if len(fds) != 2:
        for fd in fds:  # nothing may keep a stray lock open
            socket.close(fd)
        raise ValueError(f"a standby child expects its arguments and 2 descriptors, got {len(fds)}")
    return json.loads(payload.decode("utf-8")), fds[0], fds[1]
