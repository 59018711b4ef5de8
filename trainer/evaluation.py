"""Held-out evaluation: the eval set, when to evaluate, the best checkpoint and early stopping.

The eval set is either a seeded split of the training file (``eval.split_ratio``) or a fixed file
(``eval.file``). Evaluation runs every ``eval.eval_steps`` steps and always at the end. HF Trainer
tracks the best checkpoint by ``eval_loss`` (``state.best_model_checkpoint`` in trainer_state.json,
never pruned) and, when evaluating on steps, loads it at the end (``load_best_model_at_end``), so
the saved model is the best one. An evaluation that runs out of memory is skipped with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from accelerate.utils.memory import should_reduce_batch_size
from datasets import Dataset
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback

from core.base.errors import UserError
from profiles import Profile
from trainer.config import TrainConfig
from trainer.data.eval_sets import heldout_indices
from trainer.data.formats import read_examples
from trainer.data.tokenization import tokenize_examples

logger = logging.getLogger(__name__)

BEST_METRIC = "eval_loss"
# eval_steps that is never reached: with a step eval strategy HF still evaluates at the last step.
END_ONLY_EVAL_STEPS = 10**12


def split_for_eval(dataset: Dataset, config: TrainConfig) -> tuple[Dataset, Dataset | None]:
    """Hold out ``eval.split_ratio`` of ``dataset`` (at least ``eval.min_examples``, at most
    ``eval.max_examples``), seeded; the positions are ``trainer.data.eval_sets.heldout_indices``.

    Returns the dataset unchanged and no eval set when the split is off or leaves nothing to train.
    """
    held = heldout_indices(len(dataset), config)
    if not held:
        if config.eval.split_ratio > 0:
            logger.warning("only %d examples: too few to hold some out for eval; training on all, without eval",
                           len(dataset))
        return dataset, None
    kept = sorted(set(range(len(dataset))) - set(held))
    logger.info("held out %d of %d examples for eval (seed %d)", len(held), len(dataset), config.eval.seed)
    return dataset.select(kept), dataset.select(held)


def load_eval_file(config: TrainConfig, base_dir: Path, tokenizer: Any, profile: Profile) -> Dataset:
    """Read and tokenize ``eval.file`` (relative paths from ``base_dir``) like a training file.

    Raises:
        UserError: the file is missing or holds no usable example.
    """
    path = Path(config.eval.file)
    path = path if path.is_absolute() else Path(base_dir) / path
    if not path.is_file():
        raise UserError(f"eval.file {config.eval.file!r} not found at {path}; fix eval.file in the config")
    parsed = read_examples(path, profile)
    features, _ = tokenize_examples(
        parsed.examples, tokenizer, profile, config.hyperparams.max_length, config.data.on_overlength
    )
    if not features:
        raise UserError(f"eval.file {path} has no usable example; check its format")
    logger.info("eval file %s: %d examples", path.name, len(features))
    return Dataset.from_list(features)


def build_eval_split(
    config: TrainConfig, base_dir: Path, train: Dataset, tokenizer: Any, profile: Profile
) -> tuple[Dataset, Dataset | None]:
    """The training set and the eval set (None when evaluation is off)."""
    if config.eval.file:
        return train, load_eval_file(config, base_dir, tokenizer, profile)
    return split_for_eval(train, config)


def monitoring_arguments(config: TrainConfig, has_eval: bool) -> dict[str, Any]:
    """``TrainingArguments`` for evaluation, best-checkpoint tracking and progress logging.

    Raises:
        UserError: ``checkpoint.save_steps`` is not a multiple of ``eval.eval_steps``, so the best
            checkpoint could fall between two saves.
    """
    arguments: dict[str, Any] = {
        "include_num_input_tokens_seen": "all",  # tokens/s in the progress log
        "save_total_limit": None,  # pruning is CheckpointCallback's, which keeps the resume source
        "restore_callback_states_from_checkpoint": True,  # early-stopping patience survives a resume
    }
    if not has_eval:
        return {**arguments, "eval_strategy": "no"}
    eval_steps = config.eval.eval_steps
    save_steps = config.checkpoint.save_steps
    if eval_steps is not None and save_steps % eval_steps:
        raise UserError(
            f"checkpoint.save_steps ({save_steps}) must be a multiple of eval.eval_steps ({eval_steps}) "
            "so that the best checkpoint is saved; change one of them in the config"
        )
    return {
        **arguments,
        "eval_strategy": "steps",
        "eval_steps": eval_steps or END_ONLY_EVAL_STEPS,
        "per_device_eval_batch_size": config.hyperparams.batch_size,
        "metric_for_best_model": BEST_METRIC,
        "greater_is_better": False,
        "load_best_model_at_end": eval_steps is not None,
    }


def build_early_stopping(config: TrainConfig, has_eval: bool) -> list[TrainerCallback]:
    """HF's ``EarlyStoppingCallback`` when ``eval.early_stopping_patience`` is set and there is eval data."""
    patience = config.eval.early_stopping_patience
    if patience is None:
        return []
    if not has_eval or config.eval.eval_steps is None:
        logger.warning(
            "eval.early_stopping_patience is set but evaluation %s; early stopping is off",
            "runs only at the end" if has_eval else "is off (set eval.split_ratio or eval.file)",
        )
        return []
    return [EarlyStoppingCallback(early_stopping_patience=patience)]


class OomTolerantTrainer(Trainer):
    """``Trainer`` whose evaluation skips (with a warning) instead of crashing when memory runs out.

    A skipped evaluation reports ``eval_loss`` NaN: never a new best, and no ``on_evaluate`` call, so
    early-stopping patience is not used up. Training continues.
    """

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        try:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        except RuntimeError as exc:
            if not (isinstance(exc, torch.OutOfMemoryError) or should_reduce_batch_size(exc)):
                raise
            logger.warning(
                "evaluation at step %d ran out of memory and was skipped; lower "
                "hyperparams.batch_size or the eval set size: %s", self.state.global_step, exc,
            )
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            # on_evaluate, which clears this flag, is not called for a skipped evaluation; left set,
            # HF would evaluate again at the epoch-end check of the same step.
            self.control.should_evaluate = False
            return {f"{metric_key_prefix}_loss": float("nan"), f"{metric_key_prefix}_skipped": 1.0}
