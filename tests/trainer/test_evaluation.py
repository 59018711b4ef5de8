"""Eval: the best checkpoint by eval_loss is kept and loaded, early stopping, OOM during eval skipped."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import set_seed

from core.base.errors import UserError
from core.train import UltimateTrainer
from tests.conftest import chat_rows, write_jsonl
from trainer.callbacks import build_run_callbacks
from trainer.checkpoints.markers import complete_checkpoints
from trainer.config import parse_config
from trainer.evaluation import monitoring_arguments, split_for_eval


def _config(tiny_config: dict, **sections):
    raw = json.loads(json.dumps(tiny_config))
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values} if isinstance(values, dict) else values
    return parse_config(raw, Path("config.json"))


def _job(config, tmp_path: Path, rows: int = 48) -> UltimateTrainer:
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(rows))
    callbacks = build_run_callbacks(config, "{}", label="test", tensorboard_dir=tmp_path / "tb")
    job = UltimateTrainer(
        config, data, base_dir=tmp_path, model_source=config.base_model,
        output_dir=tmp_path / "checkpoints", callbacks=callbacks, device="cpu",
    )
    set_seed(0)
    job.setup()
    return job


def test_best_checkpoint_is_kept_and_loaded_and_early_stopping_ends_training(tiny_config, tmp_path):
    # A full fine-tune at learning rate 1.0 diverges: eval loss rises after the first evaluation.
    config = _config(
        tiny_config,
        method="full",
        hyperparams={"learning_rate": 1.0, "max_steps": 12},
        eval={"split_ratio": 0.25, "eval_steps": 2, "early_stopping_patience": 1},
        checkpoint={"save_steps": 2, "keep_last": 1},
    )
    job = _job(config, tmp_path)
    result = job.train()
    state = job.trainer.state

    evals = {h["step"]: h["eval_loss"] for h in state.log_history if "eval_loss" in h}
    best_step = min(evals, key=evals.get)
    assert result.steps < 12, f"early stopping never triggered: {evals}"
    assert Path(state.best_model_checkpoint).name == f"checkpoint-{best_step}"
    kept = {p.name for p in complete_checkpoints(tmp_path / "checkpoints")}
    assert kept == {f"checkpoint-{best_step}", f"checkpoint-{result.steps}"}  # keep_last=1 + best
    best_weights = load_file(Path(state.best_model_checkpoint) / "model.safetensors")
    in_memory = job.trainer.model.state_dict()
    for name, tensor in best_weights.items():
        assert torch.equal(in_memory[name], tensor), f"{name}: the best checkpoint was not loaded at the end"
    assert list((tmp_path / "tb").glob("events.out.tfevents.*")), "no TensorBoard events written"


def test_out_of_memory_in_eval_is_skipped_and_training_finishes(tiny_config, tmp_path, caplog):
    config = _config(
        tiny_config,
        hyperparams={"max_steps": 4},
        eval={"split_ratio": 0.25, "eval_steps": 2},
        checkpoint={"save_steps": 2},
    )
    job = _job(config, tmp_path)

    def out_of_memory_in_eval(module, args, kwargs):
        if not module.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    job.model.register_forward_pre_hook(out_of_memory_in_eval, with_kwargs=True)
    with caplog.at_level(logging.WARNING, logger="trainer.evaluation"):
        result = job.train()

    assert result.steps == 4
    assert caplog.text.count("ran out of memory and was skipped") == 2
    assert result.eval_loss is None and job.trainer.state.best_model_checkpoint is None
    assert [p.name for p in complete_checkpoints(tmp_path / "checkpoints")] == ["checkpoint-2", "checkpoint-4"]


def test_save_steps_must_be_a_multiple_of_eval_steps(tiny_config):
    config = _config(tiny_config, eval={"split_ratio": 0.2, "eval_steps": 3}, checkpoint={"save_steps": 10})
    with pytest.raises(UserError, match=r"save_steps \(10\) must be a multiple of eval.eval_steps \(3\)"):
        monitoring_arguments(config, has_eval=True)


def test_eval_split_is_seeded_and_sized(tiny_config):
    dataset = Dataset.from_list([{"input_ids": [i], "labels": [i]} for i in range(20)])
    config = _config(tiny_config, eval={"split_ratio": 0.1, "min_examples": 3, "seed": 7})
    train, held_out = split_for_eval(dataset, config)
    again_train, again = split_for_eval(dataset, config)
    assert (len(train), len(held_out)) == (17, 3)
    assert held_out["input_ids"] == again["input_ids"]
    assert not set(map(tuple, train["input_ids"])) & set(map(tuple, held_out["input_ids"]))
    tiny = Dataset.from_list([{"input_ids": [0], "labels": [0]}] * 3)
    assert split_for_eval(tiny, config)[1] is None  # too small to hold out 3 and still train
