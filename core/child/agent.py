"""The few lines in front of torchrun's agent: die with the daemon, then become torchrun.

The daemon starts ``python -m core.child.agent TORCHRUN-ARGS`` (see ``core.child.torchrun``). This
process asks for SIGTERM when its parent, the daemon, dies (``PR_SET_PDEATHSIG``), then execs
``python -m torch.distributed.run`` in its place: the same pid keeps the death signal, the work
folder's lock the daemon handed over, and the process group the daemon stops. torchrun's agent
forwards SIGTERM to its workers and waits ``--shutdown-timeout`` for their checkpoint. The workers
ask for SIGKILL when the agent dies (:func:`parent_death_signal`): an agent that dies before them
was killed outright, and no worker may train on without the lock.

It imports nothing heavy: torchrun and its workers import torch soon enough.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from core.child.protocol import PARENT_PID_ENV

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
TORCHRUN_MODULE = "torch.distributed.run"
AGENT_MODULE = "core.child.agent"
TORCHRUN_ENV = "TORCHELASTIC_RUN_ID"  # set by torchrun in every worker


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
    os.execv(sys.executable, [sys.executable, "-m", TORCHRUN_MODULE, *argv])


if __name__ == "__main__":
    main()
