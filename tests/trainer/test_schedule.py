"""``trainer.schedule``: no optimizer step at learning rate 0, for every schedule with warm-up."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainingArguments

from trainer.schedule import FirstStepLearnsMixin


class _Trainer(FirstStepLearnsMixin):
    def __init__(self, args: TrainingArguments) -> None:
        self.args = args
        self.optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=args.learning_rate)
        self.lr_scheduler = None


def _learning_rates(tmp_path, scheduler: str, warmup: float, steps: int) -> list[float]:
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, lr_scheduler_type=scheduler,
                             warmup_steps=warmup, report_to=[])
    trainer = _Trainer(args)
    schedule = trainer.create_scheduler(steps)
    rates = []
    for _ in range(steps):
        rates.append(trainer.optimizer.param_groups[0]["lr"])  # the rate the next optimizer step uses
        trainer.optimizer.step()
        schedule.step()
    return rates


@pytest.mark.parametrize("scheduler", ["cosine", "linear", "constant_with_warmup", "polynomial"])
@pytest.mark.parametrize("steps", [1, 3, 40])
def test_every_step_learns(tmp_path, scheduler, steps):
    rates = _learning_rates(tmp_path, scheduler, 0.1, steps)

    assert all(rate > 0 for rate in rates), rates
    assert max(rates) == pytest.approx(1e-3)


def test_warm_up_still_rises_to_the_peak(tmp_path):
    rates = _learning_rates(tmp_path, "cosine", 4, 20)

    assert rates[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert rates[4:] == sorted(rates[4:], reverse=True)
