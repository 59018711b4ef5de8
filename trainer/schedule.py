"""The learning-rate schedule, one step on, so that no optimizer step runs at learning rate 0.

transformers' warm-up schedules give step ``t`` the factor ``t / warmup_steps``, so the first
optimizer step of every run with warm-up has learning rate 0 and changes nothing. On a small file
of 3 steps that is a third of its training. :class:`FirstStepLearnsMixin` builds transformers' own
schedule over one more step and runs step ``t`` at that schedule's step ``t + 1``: warm-up reaches
its peak one step earlier, and neither the first nor the last step runs at 0.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_scheduler


def one_step_on(schedule: torch.optim.lr_scheduler.LRScheduler) -> torch.optim.lr_scheduler.LRScheduler:
    """``schedule`` evaluated one step later; schedules that are not a ``LambdaLR`` are returned as they are."""
    if not isinstance(schedule, LambdaLR):
        return schedule
    return LambdaLR(schedule.optimizer, [partial(_next_step, factor) for factor in schedule.lr_lambdas])


def _next_step(factor: Callable[[int], float], step: int) -> float:
    return factor(step + 1)


class FirstStepLearnsMixin:
    """``Trainer.create_scheduler`` with the schedule one step on (see the module docstring)."""

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None:
            schedule = get_scheduler(
                self.args.lr_scheduler_type,
                optimizer=optimizer or self.optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps + 1,
                scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
            )
            self.lr_scheduler = one_step_on(schedule)
            self._created_lr_scheduler = True
        return self.lr_scheduler
