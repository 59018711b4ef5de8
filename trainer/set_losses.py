"""The loss of a model on an evaluation set: the number the promotion gate compares.

The loss is the mean cross-entropy over every trained token of the set, exactly as training counts
it: the same features (assistant-only labels, end-of-turn tokens included), the same collator
(padding-free batches, or padding where the model cannot attend per example), logits only where a
label is trained, and the run's precision. Examples are batched up to a token budget, so a set of
a few hundred chats takes a few forward passes. Dropout is off while measuring.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.builders import build_collator
from trainer.config import TrainConfig
from trainer.model.hardware import select_attention, select_precision
from trainer.model.label_logits import IGNORE_INDEX, keep_labelled_positions, takes_logits_to_keep
from trainer.model.loading import load_model, load_model_config

logger = logging.getLogger(__name__)

DEFAULT_BATCH_TOKENS = 4096


@dataclass(frozen=True)
class SetLoss:
    """A model's loss on one set."""

    loss: float | None
    """Mean cross-entropy per trained token; None when the set has no trained token, ``inf`` when
    the model's outputs are not finite."""
    rows: int
    tokens: int
    """Trained (labelled) tokens the mean is over."""
    seconds: float


def eval_collator(config: TrainConfig, tokenizer: Any, attention: str) -> Any:
    """The training collator for single examples (token-budget groups are a training-time matter)."""
    hp = config.hyperparams.model_copy(update={"max_tokens_per_batch": None})
    return build_collator(config.model_copy(update={"hyperparams": hp}), tokenizer, attention)


def token_batches(features: Sequence[dict], max_tokens: int) -> Iterator[list[dict]]:
    """Consecutive examples, each batch up to ``max_tokens`` tokens (an example longer than that alone)."""
    batch: list[dict] = []
    size = 0
    for feature in features:
        length = len(feature["input_ids"])
        if batch and size + length > max_tokens:
            yield batch
            batch, size = [], 0
        batch.append({"input_ids": feature["input_ids"], "labels": feature["labels"]})
        size += length
    if batch:
        yield batch


def measure_loss(
    model: nn.Module,
    features: Sequence[dict],
    collator: Any,
    precision: str = "fp32",
    max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> SetLoss:
    """The mean loss per trained token of ``model`` on ``features`` (``input_ids`` and ``labels``).

    Args:
        model: a causal LM (PEFT or not); put in eval mode while measuring, then restored.
        features: tokenized examples, as training sees them.
        collator: the training collator (see :func:`eval_collator`).
        precision: ``bf16``/``fp16`` run under autocast, as in training.
        max_batch_tokens: tokens per forward pass.
    """
    started = time.perf_counter()
    device = next(model.parameters()).device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    use_kept = takes_logits_to_keep(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.inference_mode(), autocast:
            for batch in token_batches(features, max_batch_tokens):
                summed, tokens = _batch_loss(model, collator(batch), device, use_kept)
                total += summed
                count += tokens
    finally:
        model.train(was_training)
    loss = total / count if count else None
    if loss is not None and not math.isfinite(loss):
        # inf, not NaN: a candidate that overflows fails every rule, a current model that does passes none
        logger.warning("the loss on %d rows is not finite (%s): the model's activations overflow", len(features), loss)
        loss = math.inf
    return SetLoss(loss, len(features), count, time.perf_counter() - started)


def _batch_loss(model: nn.Module, batch: dict, device: torch.device, use_kept: bool) -> tuple[float, int]:
    """Summed cross-entropy and trained-token count of one collated batch."""
    batch = {key: value.to(device) for key, value in batch.items() if isinstance(value, torch.Tensor)}
    kept = keep_labelled_positions(batch) if use_kept else None
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    if kept is not None:
        logits = model(**inputs, logits_to_keep=kept["logits_to_keep"], use_cache=False).logits
        targets = kept["shift_labels"]
    else:
        logits = model(**inputs, use_cache=False).logits
        targets = nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)
    summed = nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )
    return float(summed), int((targets != IGNORE_INDEX).sum())


class LossMeter:
    """A model loaded for measuring only: ``trainctl eval`` and ``trainctl snapshots promote``.

    Args:
        source: a model or adapter directory (a snapshot) or a hub id.
        config: the config (method, precision, attention, max_length).
        base_dir: relative paths start here.
    """

    def __init__(self, source: str | Path, config: TrainConfig, base_dir: Path) -> None:
        hp = config.hyperparams
        self.precision = select_precision(hp.fp_precision).value
        model_config = load_model_config(str(source), config, base_dir)
        self.attention = select_attention(hp.attn_implementation, self.precision, hp.padding_free, model_config).value
        self.model, self.tokenizer = load_model(str(source), config, base_dir, self.attention, self.precision)
        self.collator = eval_collator(config, self.tokenizer, self.attention)

    def measure(self, features: Sequence[dict]) -> SetLoss:
        """The loss of this model on ``features``."""
        return measure_loss(self.model, features, self.collator, self.precision)
