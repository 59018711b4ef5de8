"""Callbacks a training run hands to ``UltimateTrainer``: progress log, NaN guard, TensorBoard, checkpoints.

``build_run_callbacks`` returns them in the order that matters: :class:`ProgressLogger` adds its
numbers to HF's ``logs`` dict before the TensorBoard callback writes that dict, so the log line
and TensorBoard show the same values.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from collections import deque
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback

from trainer.checkpoints.callback import CheckpointCallback
from trainer.checkpoints.markers import checkpoint_step
from trainer.config import TrainConfig

logger = logging.getLogger(__name__)


def tensorboard_installed() -> bool:
    """Whether the ``tensorboard`` package can be run."""
    return importlib.util.find_spec("tensorboard") is not None


def format_eta(seconds: float | None) -> str:
    """``1:02:03``-style duration, ``?`` when unknown."""
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class ProgressLogger(TrainerCallback):
    """One log line per HF log event (every ``checkpoint.log_steps`` steps).

    It reads step/total, learning rate and loss from HF's ``logs`` and adds ``loss_avg`` (moving
    average of the last ``window`` logged losses), ``tokens_per_second`` (since the previous log) and
    ``eta_seconds`` to the same dict, so that TensorBoard records them too.

    Args:
        label: what is being trained, shown at the start of each line (e.g. a file or run id).
        window: how many logged losses the moving average spans.
    """

    def __init__(self, label: str, window: int = 10):
        self.label = label
        self.losses: deque[float] = deque(maxlen=window)
        self.eval_loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_time = self.last_time = time.monotonic()
        self.start_step = state.global_step
        self.last_tokens = state.num_input_tokens_seen

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics:
            self.eval_loss = float(metrics["eval_loss"])
            logger.info("%s: step %d eval_loss %.4f", self.label, state.global_step, self.eval_loss)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        now = time.monotonic()
        self.losses.append(float(logs["loss"]))
        loss_avg = sum(self.losses) / len(self.losses)
        done = state.global_step - self.start_step
        eta = (now - self.start_time) / done * (state.max_steps - state.global_step) if done else None
        tokens = state.num_input_tokens_seen - self.last_tokens
        tokens_per_second = tokens / (now - self.last_time) if tokens and now > self.last_time else None
        self.last_time, self.last_tokens = now, state.num_input_tokens_seen
        logs["loss_avg"] = loss_avg
        if eta is not None:
            logs["eta_seconds"] = eta
        if tokens_per_second is not None:
            logs["tokens_per_second"] = tokens_per_second
        eval_text = f"{self.eval_loss:.4f}" if self.eval_loss is not None else "-"
        tps_text = f"{tokens_per_second:.0f}" if tokens_per_second is not None else "-"
        logger.info(
            "%s: step %d/%d loss %.4f (avg %.4f) lr %.3g eval_loss %s tokens/s %s eta %s",
            self.label, state.global_step, state.max_steps, logs["loss"], loss_avg,
            logs.get("learning_rate", float("nan")), eval_text, tps_text, format_eta(eta),
        )


class NonFiniteGuard(TrainerCallback):
    """Stops a run whose gradients turn NaN or Inf, before the optimizer writes them into the weights.

    HF ``Trainer`` logs a non-finite loss as the average of the previous ones
    (``logging_nan_inf_filter``), so without this a diverged run ends "trained" with NaN weights and a
    reported loss of 0. Raising here fails the run with the reason; its last checkpoint still holds
    the last finite weights.

    ``Trainer`` already reduces every gradient to one norm before each optimizer step (for
    clipping, or for the log when clipping is off); :class:`GradNormHandoff` hands that norm to
    the guard, so the guard adds no pass over the gradients. Under a ``Trainer`` without the mixin
    it computes the norm itself.

    Args:
        label: what is being trained, for the error message.
    """

    def __init__(self, label: str):
        self.label = label
        self.grad_norm: torch.Tensor | float | None = None
        """The norm of this step's gradients, set by :class:`GradNormHandoff`; read once."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        norm, self.grad_norm = self.grad_norm, None
        if norm is None:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if not grads:
                return
            norm = torch.nn.utils.get_total_norm(grads)
        if not math.isfinite(float(norm)):
            raise FloatingPointError(
                f"{self.label}: the gradients are NaN or Inf at step {state.global_step + 1} (the loss "
                "diverged); the weights stay those of the last checkpoint. Lower "
                "hyperparams.learning_rate, or check the model and the data"
            )


class GradNormHandoff:
    """``Trainer`` mixin: hands the gradient norm ``Trainer`` computed to every :class:`NonFiniteGuard`.

    ``Trainer._get_grad_norm`` returns the pre-clipping norm right before ``on_pre_optimizer_step``
    (transformers 5's step: clip, norm, ``on_pre_optimizer_step``, ``optimizer.step()``).
    """

    def _get_grad_norm(self, model, grad_norm=None):
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, NonFiniteGuard):
                callback.grad_norm = grad_norm
        return grad_norm


def build_tensorboard_callback(log_dir: Path, resume_step: int | None = None) -> TrainerCallback | None:
    """HF's TensorBoard callback writing to ``log_dir``; None when tensorboard is not installed.

    ``TrainingArguments`` has no ``logging_dir`` in transformers 5, so the writer is made here.
    When resuming at ``resume_step``, events at or after it from the interrupted attempt are
    purged, so the curves do not double back.
    """
    if not tensorboard_installed():
        logger.warning("tensorboard is not installed; no TensorBoard logs for %s", log_dir)
        return None
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir), purge_step=resume_step)
    callback = TensorBoardCallback(tb_writer=writer)
    callback.logging_dir = str(log_dir)  # where a writer reopened after train end goes
    return callback


def build_run_callbacks(
    config: TrainConfig,
    config_text: str,
    *,
    label: str,
    tensorboard_dir: Path | None,
    resume_from: Path | None = None,
) -> list[TrainerCallback]:
    """Progress log, a stop on NaN/Inf gradients, TensorBoard (when ``tensorboard_dir`` is given) and
    checkpoint bookkeeping.

    Args:
        config: the resolved config.
        config_text: the config file's text, copied verbatim into each checkpoint.
        label: shown in the progress lines.
        tensorboard_dir: where TensorBoard events go; None for no TensorBoard.
        resume_from: the checkpoint this run resumes from; it is never pruned.
    """
    callbacks: list[TrainerCallback] = [ProgressLogger(label), NonFiniteGuard(label)]
    if tensorboard_dir is not None:
        resume_step = checkpoint_step(resume_from) if resume_from else None
        if (tensorboard := build_tensorboard_callback(tensorboard_dir, resume_step)) is not None:
            callbacks.append(tensorboard)
    protect = [resume_from] if resume_from else []
    callbacks.append(CheckpointCallback(config_text, config, protect=protect))
    return callbacks
