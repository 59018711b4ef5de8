"""What every contender of the throughput benchmark measures, the same way for each.

* :class:`CountingCollator` wraps whatever collator a trainer built and counts the real
  (non-padding) and total tokens of every batch, in the order the trainer takes them.
* :class:`StepClock` times the optimizer steps after the first (warm-up: allocator, oneDNN kernel
  selection, lazy inits) and keeps the loss the trainer logs at every step.
* :func:`peak_rss_mb` reads the peak resident memory of this process, which is clean because each
  contender runs in its own process.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from transformers import TrainerCallback

WARMUP_STEPS = 1
"""Steps left out of the timed window."""


class CountingCollator:
    """A collator that delegates to ``collator`` and records the tokens of each batch.

    Real tokens are the attention-mask ones when the batch has a mask (padded batches), else every
    position (padding-free batches have no padding).
    """

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]]):
        self.collator = collator
        self.real: list[int] = []
        self.total: list[int] = []

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(features)
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        self.real.append(int(mask.sum()) if mask is not None else ids.numel())
        self.total.append(ids.numel())
        return batch


@dataclass
class StepClock(TrainerCallback):
    """Wall time of the steps after :data:`WARMUP_STEPS`, and the loss logged at every step."""

    started: float | None = None
    ended: float | None = None
    losses: list[float] = field(default_factory=list)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == WARMUP_STEPS:
            self.started = time.perf_counter()
        self.ended = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    @property
    def seconds(self) -> float:
        """Wall seconds of the timed window (0 when fewer than two steps ran)."""
        if self.started is None or self.ended is None:
            return 0.0
        return self.ended - self.started


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summarize(
    name: str, clock: StepClock, counter: CountingCollator, steps: int, **details: Any
) -> dict[str, Any]:
    """The result record of one contender: throughput over the timed steps, losses, memory.

    Batches are counted in the order they were collated; with gradient accumulation 1 and no
    dataloader workers, batch ``i`` is step ``i``, so the timed steps are batches 2..``steps``.
    """
    timed = slice(WARMUP_STEPS, steps)
    real, total = sum(counter.real[timed]), sum(counter.total[timed])
    seconds = clock.seconds
    return {
        "name": name,
        "steps": steps,
        "timed_steps": steps - WARMUP_STEPS,
        "wall_s": round(seconds, 2),
        "real_tokens": real,
        "padded_tokens": total,
        "real_tok_s": round(real / seconds, 1) if seconds else None,
        "padded_tok_s": round(total / seconds, 1) if seconds else None,
        "real_tokens_all_steps": sum(counter.real[:steps]),
        "losses": clock.losses,
        "final_loss": clock.losses[-1] if clock.losses else None,
        "mean_loss": sum(clock.losses) / len(clock.losses) if clock.losses else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **details,
    }
