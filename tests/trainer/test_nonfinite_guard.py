"""The NaN/Inf guard stops a training run before a non-finite gradient reaches the weights, using the
gradient norm ``Trainer`` already computed (no second pass over the gradients)."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    DataCollatorWithFlattening,
    TrainerCallback,
    TrainingArguments,
)

from core.train import FineTuneTrainer
from trainer.callbacks import NonFiniteGuard


class RecordingGuard(NonFiniteGuard):
    """The guard, noting whether each step's norm was handed over by the Trainer."""

    def __init__(self, label: str):
        super().__init__(label)
        self.handed: list[bool] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.handed.append(self.grad_norm is not None)
        return super().on_pre_optimizer_step(args, state, control, model=model, **kwargs)


class KeepLoraWeights(TrainerCallback):
    """A copy of the trainable weights after every optimizer step."""

    def __init__(self):
        self.after_step: dict[int, dict[str, torch.Tensor]] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.after_step[state.global_step] = {
            n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
        }


def _trainer(model_dir, tmp_path, callbacks, steps=3):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    rows = [{"input_ids": list(range(3 + i, 40 + i)), "labels": list(range(3 + i, 40 + i))} for i in range(8)]
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=2, learning_rate=1e-3,
        report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, logging_steps=1,
    )
    return FineTuneTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows),
        data_collator=DataCollatorWithFlattening(return_position_ids=True, separator_id=-100), callbacks=callbacks,
    )


def test_a_nan_gradient_stops_the_run_before_the_optimizer_writes_it(tiny_model_dir, tmp_path):
    guard, weights = RecordingGuard("x.jsonl"), KeepLoraWeights()
    trainer = _trainer(tiny_model_dir, tmp_path, [guard, weights])
    lora_a = next(p for n, p in trainer.model.named_parameters() if "lora_A" in n)
    backward_passes = []

    def poison_second_step(grad):
        backward_passes.append(1)
        return grad * float("nan") if len(backward_passes) == 2 else grad

    lora_a.register_hook(poison_second_step)

    with pytest.raises(FloatingPointError, match="x.jsonl: the gradients are NaN or Inf at step 2"):
        trainer.train()

    assert guard.handed == [True, True]  # the Trainer's norm, both steps: no pass of the guard's own
    assert list(weights.after_step) == [1]
    for name, param in trainer.model.named_parameters():
        if param.requires_grad:
            assert torch.isfinite(param).all(), name
            assert torch.equal(param, weights.after_step[1][name]), f"{name} changed by the NaN step"


def test_finite_gradients_train_every_step_with_the_handed_norm(tiny_model_dir, tmp_path):
    guard = RecordingGuard("x.jsonl")
    trainer = _trainer(tiny_model_dir, tmp_path, [guard])

    trainer.train()

    assert trainer.state.global_step == 3
    assert guard.handed == [True, True, True]


def test_a_handed_norm_is_checked_without_touching_the_model():
    state = type("State", (), {"global_step": 6})()
    guard = NonFiniteGuard("y.jsonl")
    guard.grad_norm = torch.tensor(float("inf"))

    with pytest.raises(FloatingPointError, match="y.jsonl: the gradients are NaN or Inf at step 7"):
        guard.on_pre_optimizer_step(None, state, None, model=None)
    assert guard.grad_norm is None  # read once: the next step hands over its own
