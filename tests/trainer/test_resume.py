"""A run stopped at step 5 and resumed to step 10 equals an uninterrupted 10-step run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from core.train import UltimateTrainer
from tests.conftest import chat_rows, write_jsonl
from trainer.callbacks import build_run_callbacks
from trainer.checkpoints.markers import latest_checkpoint
from trainer.config import parse_config


class StopAt(TrainerCallback):
    """Stops training after ``step`` the way a clean SIGTERM does: the step's checkpoint is saved."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True


def _job(raw: dict, data: Path, out: Path, extra=()) -> tuple[UltimateTrainer, list[torch.Tensor]]:
    """A set-up job and the list its training forward passes append their input_ids to."""
    config = parse_config(raw, Path("config.json"))
    callbacks = build_run_callbacks(config, json.dumps(raw), label="test", tensorboard_dir=None)
    job = UltimateTrainer(
        config, data, base_dir=out.parent, model_source=config.base_model, output_dir=out,
        callbacks=[*callbacks, *extra], device="cpu",
    )
    job.setup()
    seen: list[torch.Tensor] = []

    def record(module, args, kwargs):
        if module.training:
            seen.append(kwargs["input_ids"].detach().clone())

    job.model.register_forward_pre_hook(record, with_kwargs=True)
    return job, seen


def _trainable(job: UltimateTrainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in job.trainer.model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """An uninterrupted 10-step run, and one stopped at step 5 then resumed in a new process-like job."""
    tmp = tmp_path_factory.mktemp("resume")
    data = write_jsonl(tmp / "chat.jsonl", chat_rows(64))
    raw = {
        "base_model": str(tiny_model_dir),
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "hyperparams": {
            "fp_precision": "fp32", "max_length": 128, "batch_size": 4, "learning_rate": 5e-3,
            "max_steps": 10, "warmup_ratio": 0.0, "lr_scheduler": "cosine",
            "use_gradient_checkpointing": False, "seed": 0,
        },
        "checkpoint": {"save_steps": 5, "log_steps": 1},
    }
    full, full_seen = _job(raw, data, tmp / "full")
    full_result = full.train()

    first, _ = _job(raw, data, tmp / "split", extra=[StopAt(5)])
    first.train()
    checkpoint = latest_checkpoint(tmp / "split")
    second, second_seen = _job(raw, data, tmp / "split")
    resumed_result = second.train(resume_from_checkpoint=str(checkpoint))
    return {
        "checkpoint": checkpoint, "full": full, "full_result": full_result, "full_seen": full_seen,
        "resumed": second, "resumed_result": resumed_result, "resumed_seen": second_seen,
    }


def test_resume_continues_from_step_5_to_step_10(runs):
    assert runs["checkpoint"].name == "checkpoint-5"
    assert runs["resumed_result"].steps == runs["full_result"].steps == 10
    assert runs["resumed"].trainer.state.global_step == 10


def test_resumed_weights_equal_uninterrupted_run(runs):
    full, resumed = _trainable(runs["full"]), _trainable(runs["resumed"])
    assert full.keys() == resumed.keys() and full
    assert any(torch.count_nonzero(t) for name, t in full.items() if "lora_B" in name), "LoRA B never moved"
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], rtol=1e-5, atol=1e-6, msg=name)


def test_examples_after_resume_are_those_of_the_uninterrupted_run(runs):
    full_seen, resumed_seen = runs["full_seen"], runs["resumed_seen"]
    assert len(full_seen) == 10 and len(resumed_seen) == 5
    for step, (expected, got) in enumerate(zip(full_seen[5:], resumed_seen), start=6):
        assert torch.equal(expected, got), f"step {step} trained on different examples after resume"
