"""The child's view of its progress: a stop flag set by SIGTERM, and the callback that reports steps.

:class:`ProgressCallback` writes progress to the status file, emits ``checkpoint_saved`` and turns
a stop request into "save a checkpoint and stop" at the next step boundary (the same boundary on
every rank of a torchrun group: they agree on it with one all-reduce of the flag).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from core.state.events import EventLog, EventType
from core.state.status import DaemonState, StatusFile
from trainer.distributed import agree_on_stop

logger = logging.getLogger(__name__)


class StopFlag:
    """Set by the SIGTERM handler, read by the training callback."""

    def __init__(self) -> None:
        self.requested = False

    def request(self, signum: int, frame: Any = None) -> None:
        self.requested = True


class ProgressCallback(TrainerCallback):
    """Writes progress to the status file, emits ``checkpoint_saved``, and stops on request.

    Args:
        status: The shared status file.
        events: The event log.
        file_name: The file being trained, for events.
        stop: Checked at every step boundary.
        min_interval: Status writes between log events are at most this often (seconds).
        clock: Monotonic clock; tests inject a fake one.
    """

    def __init__(
        self,
        status: StatusFile,
        events: EventLog,
        file_name: str,
        stop: StopFlag,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.status = status
        self.events = events
        self.file_name = file_name
        self.stop = stop
        self.min_interval = min_interval
        self.clock = clock
        self._start = (0.0, 0, 0)
        self._last_write = float("-inf")

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = (self.clock(), state.global_step, state.num_input_tokens_seen)
        self._write(state, force=True)

    def on_step_end(self, args, state, control, **kwargs):
        # Under torchrun a stop reaches the ranks at different moments: they agree here, so all stop
        # after the same step and its checkpoint is complete.
        self.stop.requested = agree_on_stop(self.stop.requested, args.device)
        if self.stop.requested:
            logger.info("%s: stop requested, saving a checkpoint at step %d", self.file_name, state.global_step)
            control.should_save = True
            control.should_training_stop = True
        self._write(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        fields = {"loss": logs.get("loss"), "learning_rate": logs.get("learning_rate")}
        if "eval_loss" in logs:
            fields["eval_loss"] = logs["eval_loss"]
        self._write(state, force=True, **{k: v for k, v in fields.items() if v is not None})

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.events.emit(
            EventType.CHECKPOINT_SAVED, file=self.file_name, step=state.global_step, path=str(checkpoint)
        )

    def _write(self, state, force: bool = False, **fields) -> None:
        now = self.clock()
        if not state.is_world_process_zero:
            return  # rank 0 reports for the group
        if not force and now - self._last_write < self.min_interval:
            return
        self._last_write = now
        started, first_step, first_tokens = self._start
        elapsed, done = now - started, state.global_step - first_step
        per_step = elapsed / done if done > 0 and elapsed > 0 else None
        # Counted by HF only with include_num_input_tokens_seen; 0 otherwise.
        tokens = state.num_input_tokens_seen - first_tokens
        self.status.update(
            state=DaemonState.TRAINING,
            current_file=self.file_name,
            current_step=state.global_step,
            total_steps=state.max_steps or None,
            epoch=state.epoch,
            tokens_per_second=tokens / elapsed if tokens > 0 and elapsed > 0 else None,
            eta_seconds=per_step * max(0, state.max_steps - state.global_step) if per_step else None,
            **fields,
        )
