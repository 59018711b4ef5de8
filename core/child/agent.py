"""The few lines in front of torchrun's agent: die with the daemon, then become torchrun.

The daemon starts ``python -m core.child.agent TORCHRUN-ARGS`` (see ``core.child.torchrun``). This
process asks for SIGTERM when its parent, the daemon, dies (``PR_SET_PDEATHSIG``), then runs
``torch.distributed.run`` as ``python -m`` would, in this same process: the same pid keeps the
death signal, the work folder's lock the daemon handed over, and the process group the daemon
stops. torchrun's agent forwards SIGTERM to its workers and waits ``--shutdown-timeout`` for their
checkpoint. The workers ask for SIGKILL when the agent dies (:func:`parent_death_signal`): an agent
that dies before them was killed outright, and no worker may train on without the lock.

A daemon killed outright sends the death signal more than once: Linux sends it again each time
the agent is handed to another of the dying daemon's threads. torchrun's handler raises on every
signal, so a second SIGTERM used to break its shutdown wait and the agent died mid-checkpoint, its
workers with it (seen in about 1 of 4 runs of
``tests/core/daemon/test_daemon_torchrun.py::test_when_the_daemon_dies_the_group_checkpoints_and_exits_and_frees_the_lock``).
So the agent acts on the first SIGTERM or SIGINT only (:func:`first_signal_only`); a forced stop is
SIGKILL to the whole group, never a second SIGTERM.

The module imports nothing heavy (the daemon imports it); torch is imported when the agent runs.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import runpy
import signal
import sys
from collections.abc import Callable
from types import FrameType

from core.child.protocol import PARENT_PID_ENV

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
TORCHRUN_MODULE = "torch.distributed.run"
AGENT_MODULE = "core.child.agent"
TORCHRUN_ENV = "TORCHELASTIC_RUN_ID"  # set by torchrun in every worker
ELASTIC_API = "torch.distributed.elastic.multiprocessing.api"  # installs torchrun's signal handler


def set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent exits; False where unsupported."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum)) == 0
    except (OSError, AttributeError):
        return False


def parent_death_signal() -> signal.Signals:
    """The signal a training process wants when its parent dies.

    A plain child's parent is the daemon: SIGTERM, so it checkpoints and stops. A torchrun worker's
    parent is the agent, which forwards a stop to its workers and waits for them; an agent that dies
    first was killed outright, and its workers must not train on without the work folder's lock.
    """
    return signal.SIGKILL if TORCHRUN_ENV in os.environ else signal.SIGTERM


def main(argv: list[str] | None = None) -> None:
    """``python -m core.child.agent TORCHRUN-ARGS``: die with the daemon, then become torchrun."""
    argv = sys.argv[1:] if argv is None else argv
    set_parent_death_signal(signal.SIGTERM)
    expected = os.environ.get(PARENT_PID_ENV)
    if expected and os.getppid() != int(expected):
        sys.exit(f"the daemon (pid {expected}) exited before training started")
    # From now on the workers' parent is this pid, torchrun's agent: stop_with_parent checks it.
    os.environ[PARENT_PID_ENV] = str(os.getpid())
    elastic = importlib.import_module(ELASTIC_API)
    elastic._terminate_process_handler = first_signal_only(elastic._terminate_process_handler)
    sys.argv = [TORCHRUN_MODULE, *argv]
    runpy.run_module(TORCHRUN_MODULE, run_name="__main__", alter_sys=True)


def first_signal_only(handler: Callable[[int, FrameType | None], None]) -> Callable[[int, FrameType | None], None]:
    """``handler`` for the first signal; later ones are ignored (see the module doc)."""
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            handler(signum, frame)

    return handle


if __name__ == "__main__":
    main()
