"""``UltimateTrainer``: one training job on one data file, read top to bottom like a recipe.

``setup()`` assembles a Hugging Face ``Trainer`` from config, data and profile; ``train()`` runs it;
``save()`` writes a valid model dir. It does not validate inbox files, move files or write status:
those are other steps of the flow, which hand in callbacks to observe progress.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from datasets import Dataset, concatenate_datasets
from transformers import TrainerCallback

from core.base.errors import UserError
from profiles import get_profile
from trainer.builders import build_collator, build_training_arguments
from trainer.callbacks import GradNormHandoff
from trainer.config import TrainConfig, config_to_dict
from trainer.data.dataset import CACHE_DIRNAME, build_train_data, token_count
from trainer.data.eval_sets import tokenize_set
from trainer.data.token_budget import TokenBudgetSteps
from trainer.evaluation import (
    OomTolerantTrainer,
    build_early_stopping,
    build_eval_split,
    monitoring_arguments,
)
from trainer.model.devices import device_arguments
from trainer.model.hardware import qlora_problem, select_attention, select_gradient_checkpointing, select_precision
from trainer.model.label_logits import LabelledLogitsMixin
from trainer.model.loading import load_model, load_model_config
from trainer.model.lora_fold import fold_lora_for_training
from trainer.schedule import FirstStepLearnsMixin
from trainer.set_losses import SetLoss, eval_collator, measure_loss

logger = logging.getLogger(__name__)

Replay = Sequence[dict] | Callable[[int], Sequence[dict]]
"""Replay examples, or a function of the file's training rows that draws them."""

TRAINING_INFO_FILENAME = "trainctl_training.json"


class FineTuneTrainer(GradNormHandoff, FirstStepLearnsMixin, LabelledLogitsMixin, OomTolerantTrainer):
    """HF ``Trainer`` with logits only at labelled positions, OOM-tolerant evaluation, no step
    at learning rate 0 (``trainer.schedule``), and its gradient norm handed to the NaN guard."""

__all__ = ["TRAINING_INFO_FILENAME", "TrainResult", "UltimateTrainer"]


@dataclass
class TrainResult:
    """What one training job did, for manifests, reports and the CLI."""

    steps: int
    first_loss: float | None
    last_loss: float | None
    eval_loss: float | None
    examples: int
    tokens: int
    attention: str
    precision: str
    mean_loss: float | None = None
    """Mean training loss over every step of the run (HF's ``training_loss``): steadier than one step's."""


class LossRecorder(TrainerCallback):
    """Keeps the logged training losses; ``logging_first_step`` logs step 1, this logs the last step."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.eval_loss: float | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.losses.append(float(logs["loss"]))
        if "eval_loss" in logs:
            self.eval_loss = float(logs["eval_loss"])


class UltimateTrainer:
    """Fine-tune one model on one JSONL file with Hugging Face ``Trainer``.

    Args:
        config: the validated config.json.
        train_file: the JSONL file to train on.
        base_dir: the base directory (for resolving relative paths).
        model_source: model dir, adapter dir or hub id to continue from
            (see ``trainer.model.source.resolve_model_source``).
        output_dir: where ``Trainer`` writes its step checkpoints.
        callbacks: extra ``TrainerCallback`` objects (status reporting, checkpoint bookkeeping).
        device: ``auto``, ``cpu``, ``cuda`` or ``mps`` (see ``trainer.model.devices``).
        replay: examples of earlier files mixed into the training rows (never into the eval set), or
            a function of the number of training rows that returns them, called once the file's
            dataset is built (so the file is not read again to count its rows).
    """

    def __init__(
        self,
        config: TrainConfig,
        train_file: Path,
        *,
        base_dir: Path,
        model_source: str | Path,
        output_dir: Path,
        callbacks: Sequence[TrainerCallback] = (),
        device: str = "auto",
        replay: Replay = (),
    ):
        self.config = config
        self.train_file = Path(train_file)
        self.base_dir = Path(base_dir)
        self.model_source = str(model_source)
        self.output_dir = Path(output_dir)
        self.callbacks = list(callbacks)
        self.device = device
        self.replay = replay if callable(replay) else list(replay)
        self.heldout_loss: SetLoss | None = None
        self.profile = get_profile(config.profile)
        self.losses = LossRecorder()

    def setup(self) -> None:
        """Pick precision and attention, load model and data, assemble the ``Trainer``."""
        hp = self.config.hyperparams
        if problem := qlora_problem(self.config.method):
            raise UserError(problem)
        self.precision = select_precision(hp.fp_precision)
        model_config = load_model_config(self.model_source, self.config, self.base_dir)
        self.attention = select_attention(hp.attn_implementation, self.precision.value, hp.padding_free, model_config)
        logger.info("precision: %s (%s)", self.precision.value, self.precision.reason)
        logger.info("attention: %s (%s)", self.attention.value, self.attention.reason)
        self.model, self.tokenizer = load_model(
            self.model_source, self.config, self.base_dir, self.attention.value, self.precision.value
        )
        fold_lora_for_training(self.model)  # lora.dropout 0 only (trainer/model/lora_fold.py)
        self._check_max_length()
        dataset = self._build_dataset()
        self.file_examples = len(dataset)
        self.train_dataset, self.eval_dataset = build_eval_split(
            self.config, self.base_dir, dataset, self.tokenizer, self.profile
        )
        replay = self.replay(len(self.train_dataset)) if callable(self.replay) else self.replay
        replayed = tokenize_set("replay", "replay", replay, self.tokenizer, self.profile, self.config)
        if replayed.features:
            self.train_dataset = concatenate_datasets([self.train_dataset, Dataset.from_list(replayed.features)])
            logger.info("%s: %d replay rows mixed into %d training rows", self.train_file.name,
                        replayed.rows, self.file_examples - len(self.eval_dataset or []))
        # Without eval_steps, HF would evaluate once at the end; the held-out loss is measured after
        # training instead (measure_loss), token-weighted like the promotion gate's numbers.
        has_eval = self.eval_dataset is not None and self.config.eval.eval_steps is not None
        self.checkpointing = select_gradient_checkpointing(
            hp.use_gradient_checkpointing, self.model.config,
            hp.max_tokens_per_batch or hp.batch_size * hp.max_length,
        )
        logger.info("gradient checkpointing: %s (%s)", self.checkpointing.value, self.checkpointing.reason)
        if self.checkpointing.value == "on" and self.config.adapter:
            self.model.enable_input_require_grads()
        self.trainer = FineTuneTrainer(
            model=self.model,
            args=build_training_arguments(
                self.config, self.output_dir, self.precision.value, self.checkpointing.value == "on",
                **monitoring_arguments(self.config, has_eval), **device_arguments(self.device),
            ),
            train_dataset=(
                TokenBudgetSteps(self.train_dataset, hp.max_tokens_per_batch)
                if hp.max_tokens_per_batch else self.train_dataset
            ),
            eval_dataset=self.eval_dataset,
            data_collator=build_collator(self.config, self.tokenizer, self.attention.value),
            processing_class=self.tokenizer,
            callbacks=[self.losses, *self.callbacks, *build_early_stopping(self.config, has_eval)],
        )
        args = self.trainer.args
        logger.info("device: %s (%s), %d process(es)", args.device,
                    torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "no GPU in use",
                    args.world_size)

    def _check_max_length(self) -> None:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and self.config.hyperparams.max_length > limit:
            raise UserError(
                f"hyperparams.max_length is {self.config.hyperparams.max_length} but the model has "
                f"{limit} positions; lower hyperparams.max_length in config.json"
            )

    def _build_dataset(self) -> Dataset:
        cache_dir = self.base_dir / CACHE_DIRNAME if self.config.data.cache_tokenized else None
        data = build_train_data(self.train_file, self.tokenizer, self.profile, self.config, cache_dir)
        self.dataset_seconds = data.seconds
        self.data_stats = data.stats
        return data.dataset

    def train(self, resume_from_checkpoint: str | None = None) -> TrainResult:
        """Run training (optionally resuming a step checkpoint); return what happened."""
        output = self.trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        losses = self.losses.losses
        if losses and not math.isfinite(losses[-1]):
            raise FloatingPointError(f"{self.train_file.name}: training loss became {losses[-1]}")
        if self.eval_dataset is not None and self.config.eval.eval_steps is None:  # HF did not evaluate
            self.heldout_loss = self.measure(self.eval_dataset)
            self.losses.eval_loss = self.heldout_loss.loss
        return TrainResult(
            steps=output.global_step,
            first_loss=losses[0] if losses else None,
            last_loss=losses[-1] if losses else None,
            eval_loss=self.losses.eval_loss,
            mean_loss=output.training_loss if math.isfinite(output.training_loss) else None,
            examples=len(self.train_dataset),
            tokens=round(token_count(self.train_dataset) * self.config.hyperparams.epochs),
            attention=self.attention.value,
            precision=self.precision.value,
        )

    def measure(self, features) -> SetLoss:
        """The model's loss on tokenized ``features``, counted as training counts it."""
        collator = eval_collator(self.config, self.tokenizer, self.attention.value)
        return measure_loss(self.trainer.model, features, collator, self.precision.value)

    def save(self, model_dir: Path, result: TrainResult | None = None) -> Path:
        """Write the trained model (adapter dir for LoRA, full safetensors dir for full) + tokenizer.

        The profile and the resolved config are recorded in ``trainctl_training.json``. Under
        several processes every rank calls this (FSDP gathers the shards); rank 0 writes.
        """
        model_dir = Path(model_dir)
        gathered = {}
        if self.trainer.is_fsdp_enabled:
            gathered["state_dict"] = self.trainer.accelerator.get_state_dict(self.trainer.model_wrapped)
        if not self.trainer.is_world_process_zero():
            return model_dir
        self.trainer.model.save_pretrained(model_dir, safe_serialization=True, **gathered)
        self.tokenizer.save_pretrained(model_dir)
        info = {
            "profile": self.profile.name,
            "method": self.config.method,
            "model_source": self.model_source,
            "train_file": self.train_file.name,
            "config": config_to_dict(self.config),
            "result": asdict(result) if result else None,
        }
        (model_dir / TRAINING_INFO_FILENAME).write_text(json.dumps(info, indent=2) + "\n")
        logger.info("saved %s model to %s", self.config.method, model_dir)
        return model_dir
