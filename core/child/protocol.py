"""The wire between the daemon and its training child: file names, exit codes, environment.

Both sides import these; nothing else in the flow may spell them out.
"""

from core.base.faults import PARENT_PID_ENV

__all__ = [
    "CHECKPOINTS_DIRNAME", "CHILD_LOCK_FILENAME", "EXIT_DISK_FULL", "EXIT_FAILED", "EXIT_INTERRUPTED",
    "EXIT_TRAINED", "MODEL_DIRNAME", "PARENT_PID_ENV", "RESULT_FILENAME", "RUN_POINTER", "WORKER_MODULE",
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
