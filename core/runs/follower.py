"""The run folder as seen by a training process that is not rank 0: it writes nothing there.

Under torchrun every process runs the same entry point, but only global rank 0 owns the run folder
(run.json, train.log, TensorBoard events). The others get a :class:`FollowerRun`, which has the
shape of ``core.runs.run.Run`` where ``start_job``/``finish_job`` use it and records nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from core.runs.run import CHECKPOINTS_DIRNAME, MODEL_DIRNAME, RunStatus

logger = logging.getLogger(__name__)


class FollowerRun:
    """A run that rank 0 records; this process only trains in it.

    Args:
        path: the run folder rank 0 writes, when this process needs its checkpoint and model folders
            (``trainctl train``); None when they are given elsewhere (the daemon's work folder).
    """

    tensorboard = None  # no TensorBoard writer: only rank 0 writes events

    def __init__(self, path: Path | None = None) -> None:
        self.path = path

    @property
    def id(self) -> str:
        return self.path.name if self.path else "follower"

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIRNAME

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIRNAME

    def update(self, **fields: Any) -> None:
        """Nothing to record: rank 0 writes run.json."""

    def finish(self, status: RunStatus, **results: Any) -> None:
        """Nothing to record: rank 0 writes how the run ended."""
        logger.debug("rank process done: %s", status.value)

    def __enter__(self) -> FollowerRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        return None
