"""The loss of a model on an evaluation set: the number the promotion gate compares.

The loss is the mean cross-entropy over every trained token of the set, exactly as training counts
it: the same features (assistant-only labels, end-of-turn tokens included), the same collator
(padding-free batches, or padding where the model cannot attend per example), logits only where a
label is trained, and the run's precision. Examples are batched up to a token budget, so a set of a
few hundred chats takes a few forward passes: shortest first when batches are padded (they then pad
little); padding-free, in the order of their tokens, so that rows that begin alike share a batch
and the tokens they share run once (:mod:`trainer.shared_prefix`). Dropout is off while measuring.

Each row's summed loss and trained tokens are kept too (:attr:`SetLoss.per_row`): the gate stores
them by row, so that a promoted candidate's numbers are the next file's "before" numbers
(``core.memory.row_losses``).
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
from trainer.model.hardware import autocast_dtype, select_attention, select_precision
from trainer.model.label_logits import (
    IGNORE_INDEX,
    keep_labelled_positions,
    takes_logits_to_keep,
    token_losses,
)
from trainer.model.loading import load_model, load_model_config
from trainer.shared_prefix import (
    after_prefix,
    cache_argument,
    prefix_cache,
    prefix_order,
    shared_prefix_length,
    shares_prefixes,
    window_limit,
)

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
    per_row: tuple[tuple[float, int], ...] = ()
    """``(summed loss, trained tokens)`` of each row, in the order of the features measured."""

    @classmethod
    def from_rows(cls, per_row: Sequence[tuple[float, int]], seconds: float) -> SetLoss:
        """The set's loss from its rows' sums: the same mean as measuring the rows together."""
        total, count = sum(r[0] for r in per_row), sum(r[1] for r in per_row)
        loss = total / count if count else None
        if loss is not None and not math.isfinite(loss):
            # inf, not NaN: a candidate that overflows fails every rule, a current model that does passes none
            logger.warning("the loss on %d rows is not finite (%s): the model's activations overflow", len(per_row), loss)
            loss = math.inf
        return cls(loss, len(per_row), count, seconds, tuple(per_row))


def eval_collator(config: TrainConfig, tokenizer: Any, attention: str) -> Any:
    """The training collator for single examples (token-budget groups are a training-time matter)."""
    hp = config.hyperparams.model_copy(update={"max_tokens_per_batch": None})
    return build_collator(config.model_copy(update={"hyperparams": hp}), tokenizer, attention)


def token_batches(order: Sequence[int], features: Sequence[dict], max_tokens: int) -> Iterator[list[int]]:
    """Positions of ``features`` in ``order``, grouped up to ``max_tokens`` tokens a group (an
    example longer than that alone)."""
    batch: list[int] = []
    size = 0
    for position in order:
        length = len(features[position]["input_ids"])
        if batch and size + length > max_tokens:
            yield batch
            batch, size = [], 0
        batch.append(position)
        size += length
    if batch:
        yield batch


def measure_loss(
    model: nn.Module,
    features: Sequence[dict],
    collator: Any,
    precision: str = "fp32",
    max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
    share_prefixes: bool = True,
) -> SetLoss:
    """The mean loss per trained token of ``model`` on ``features`` (``input_ids`` and ``labels``).

    Args:
        model: a causal LM (PEFT or not); put in eval mode while measuring, then restored.
        features: tokenized examples, as training sees them.
        collator: the training collator (see :func:`eval_collator`).
        precision: ``bf16``/``fp16`` run under autocast, as in training.
        max_batch_tokens: tokens per forward pass.
        share_prefixes: run the tokens that a batch's rows begin with once, where that is exact
            and supported (:mod:`trainer.shared_prefix`); False runs every row whole (the benchmark's
            comparison).
    """
    started = time.perf_counter()
    device = next(model.parameters()).device
    dtype = autocast_dtype(precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    use_kept = takes_logits_to_keep(model)
    sharing = share_prefixes and shares_prefixes(model, collator)
    if sharing:  # padding-free: no padding to save by length, so rows that begin alike go together
        order = prefix_order(features)
    else:
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    limit = window_limit(model)
    per_row: list[tuple[float, int]] = [(0.0, 0)] * len(features)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast:
            for positions in token_batches(order, features, max_batch_tokens):
                batch = [{"input_ids": features[i]["input_ids"], "labels": features[i]["labels"]} for i in positions]
                shared = shared_prefix_length(batch, limit) if sharing else 0
                losses = (_shared_prefix_row_losses(model, collator, batch, shared, device, use_kept) if shared
                          else _batch_row_losses(model, collator(batch), batch, device, use_kept))
                for i, row in zip(positions, losses):
                    per_row[i] = row
    finally:
        model.train(was_training)
    return SetLoss.from_rows(per_row, time.perf_counter() - started)


def _shared_prefix_row_losses(model: nn.Module, collator: Any, examples: list[dict], shared: int,
                              device: torch.device, use_kept: bool) -> list[tuple[float, int]]:
    """:func:`_batch_row_losses` of ``examples`` whose first ``shared`` tokens are the same and
    unlabelled: those run once, then the rest of each row, packed, after them (trainer/shared_prefix.py)."""
    cache = prefix_cache(model, examples[0]["input_ids"][:shared], device, use_kept)
    rest = after_prefix(examples, shared)
    batch = collator(rest)
    batch["position_ids"] = batch["position_ids"] + shared
    return _batch_row_losses(model, batch, rest, device, use_kept, {cache_argument(model): cache, "use_cache": True})


def _batch_row_losses(model: nn.Module, batch: dict, examples: list[dict], device: torch.device,
                      use_kept: bool, extra: dict | None = None) -> list[tuple[float, int]]:
    """``(summed cross-entropy, trained tokens)`` of each example of one collated batch (``extra``:
    more arguments of the forward, such as a prefix's cache)."""
    batch = {key: value.to(device) for key, value in batch.items() if isinstance(value, torch.Tensor)}
    owner = _example_of_position(batch["input_ids"].shape, [len(e["input_ids"]) for e in examples], device)
    kept = keep_labelled_positions(batch) if use_kept else None
    inputs = {key: value for key, value in batch.items() if key != "labels"} | (extra or {"use_cache": False})
    if kept is not None:
        logits = model(**inputs, logits_to_keep=kept["logits_to_keep"]).logits
        targets, owner = kept["shift_labels"], owner[:, kept["logits_to_keep"]]
    else:
        logits = model(**inputs).logits
        targets = nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)
    losses = token_losses(logits, targets, IGNORE_INDEX)
    trained = targets.reshape(-1) != IGNORE_INDEX
    owner = owner.reshape(-1)[trained]
    sums = torch.zeros(len(examples), dtype=torch.float64, device=device).index_add_(0, owner, losses[trained].double())
    counts = torch.bincount(owner, minlength=len(examples))
    return [(float(total), int(count)) for total, count in zip(sums.tolist(), counts.tolist())]


def _example_of_position(shape: torch.Size, lengths: list[int], device: torch.device) -> torch.Tensor:
    """Which example each position of the batch belongs to: one row per example when padded, or
    the examples one after another in a single row when padding-free."""
    if shape[0] == len(lengths):
        return torch.arange(len(lengths), device=device)[:, None].expand(shape)
    owners = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
    return owners[None, :]


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
