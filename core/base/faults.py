"""Test-only fault injection at state writes. Inert unless ``TRAINCTL_FAULT`` is set.

Every state file goes through ``core.base.atomic``, which calls :func:`before_replace` after the temp
file is written and fsynced, just before it replaces the target (the append-only ledger,
``core.state.ledger``, calls it just before it appends a line). A crash anywhere between two state
writes leaves the same files on disk as a crash at the second one, so crashing "at the N-th write of
``manifest.json``" reaches each on-disk state of the flow deterministically (tests/reliability)::

    TRAINCTL_FAULT=PATTERN:N[:ACTION]

* ``PATTERN``: ``fnmatch`` pattern on the target's file name (``trainctl_checkpoint.json``,
  ``manifest.json``, ``*``), or with a ``/`` on its last path parts
  (``checkpoint-3/trainctl_checkpoint.json``); writes that do not match are not counted.
* ``N``: act at the N-th matching write of this process (1-based). The daemon and its training
  child inherit the same setting and count their own writes.
* ``ACTION``: ``kill`` (default) SIGKILLs this process, and the daemon too when this is its training
  child, as a power cut would; ``enospc`` raises ``OSError(ENOSPC)`` at the N-th matching write and
  every later one, as a full disk would; ``stop`` sends this process SIGSTOP, so a test can act
  while it is frozen at a known point and then SIGCONT it.

A kill is for daemons running as their own process: the training child's kill takes its parent
along, which for a daemon run inside a test process is the test.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import signal
from pathlib import Path

logger = logging.getLogger(__name__)

FAULT_ENV = "TRAINCTL_FAULT"
# Set by the daemon on its training child (core.child.protocol): a kill fault takes the daemon along.
PARENT_PID_ENV = "TRAINCTL_DAEMON_PID"

_matched: dict[str, int] = {}


def before_replace(target: Path) -> None:
    """Count this write of ``target`` and act if ``TRAINCTL_FAULT`` says so (see the module docstring)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        _matched.clear()  # a later setting counts from zero, even if it is the same one again
        return
    pattern, _, rest = spec.partition(":")
    count, _, action = rest.partition(":")
    parts = pattern.count("/") + 1
    if not fnmatch.fnmatchcase("/".join(target.parts[-parts:]), pattern):
        return
    _matched[spec] = seen = _matched.get(spec, 0) + 1
    at = int(count or 1)
    if seen >= at and action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device ({FAULT_ENV}={spec})", str(target))
    if seen != at:
        return
    if action == "stop":
        logger.warning("%s=%s: stopping pid %d before writing %s", FAULT_ENV, spec, os.getpid(), target)
        os.kill(os.getpid(), signal.SIGSTOP)
    else:
        _crash(spec, target)


def _crash(spec: str, target: Path) -> None:
    logger.warning("%s=%s: killing pid %d before writing %s", FAULT_ENV, spec, os.getpid(), target)
    daemon = os.environ.get(PARENT_PID_ENV)
    if daemon and os.getppid() == int(daemon):
        os.kill(int(daemon), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
