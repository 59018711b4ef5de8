"""Measuring rows that begin alike: the tokens they share run once per batch.

The rows of a chat file usually begin with the same tokens: the chat template's default system
prompt (SmolLM2 and Qwen2.5 write one into every row that has none), a system prompt the user
repeats in every row, an instruction at the start of every question. A loss needs no logit before
the position that predicts a row's first label, so when the rows of a batch share their first
``P`` tokens up to there, the batch runs those ``P`` tokens once, keeps their keys and values in
the model's cache, and runs only the rest of each row, packed, at positions ``P`` onwards. The
packed attention kernel (``trainer/model/attention.py``) lets each row see the prefix, then itself.
Same loss up to the rounding of a matmul of another shape (``tests/trainer/test_shared_prefix.py``),
for fewer tokens: 28 of the 108 tokens of a row of the gate-cost benchmark (docs/learning.md).

Used where it is exact and supported: forward passes without gradients (the gate's measuring and
the held-out loss), padding-free batches, a model attending through ``sdpa_packed``, and rotary
frequencies that do not depend on the length of the forward (not dynamic NTK, not LongRoPE).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import DataCollatorWithFlattening

from trainer.model.attention import KERNEL_NAME
from trainer.model.label_logits import IGNORE_INDEX

MIN_SHARED_TOKENS = 8
"""A shorter common start is run with each row: the saving would not pay for the extra forward."""


def _base_model(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def shares_prefixes(model: nn.Module, collator: Any) -> bool:
    """Whether batches of ``model`` collated by ``collator`` may run a shared prefix once: padding-free
    batches, the model attending through ``sdpa_packed`` (which handles the prefix), and rotary
    frequencies that do not depend on the length of a forward pass."""
    config = getattr(_base_model(model), "config", None)
    return (isinstance(collator, DataCollatorWithFlattening)
            and getattr(config, "_attn_implementation", None) == KERNEL_NAME
            and not length_dependent_rope(config))


LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")
"""Rotary types whose frequencies follow the longest position of the forward (dynamic NTK scaling,
LongRoPE of Phi-3 128k): a prefix run alone would get other frequencies than with its rows."""


def length_dependent_rope(config: Any) -> bool:
    """Whether any layer type of ``config`` uses a rotary embedding of :data:`LENGTH_DEPENDENT_ROPE`."""
    parameters = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    per_layer = parameters.values() if all(isinstance(v, dict) for v in parameters.values()) else [parameters]
    kinds = [str(p.get("rope_type", p.get("type", "default"))) for p in per_layer]
    return any(any(name in kind for name in LENGTH_DEPENDENT_ROPE) for kind in kinds)


def prefix_order(features: Sequence[dict]) -> list[int]:
    """Positions of ``features`` in the order of their token ids, so rows that begin alike are neighbours."""
    return sorted(range(len(features)), key=lambda i: features[i]["input_ids"])


def shared_prefix_length(rows: Sequence[dict], limit: int | None = None) -> int:
    """How many leading tokens every row of ``rows`` shares and no row's loss needs a logit of.

    The prefix ends before the position that predicts each row's first label (the logit there
    must be the row's own), leaves each row at least one token, and is at most ``limit`` tokens
    (a sliding window's reach). 0 when that is under :data:`MIN_SHARED_TOKENS` or for one row.
    """
    if len(rows) < 2:
        return 0
    ids = [row["input_ids"] for row in rows]
    first, last = min(ids), max(ids)  # the common start of all rows is that of the extremes
    length = next((i for i, (a, b) in enumerate(zip(first, last)) if a != b), min(len(first), len(last)))
    for row in rows:
        labelled = next((i for i, label in enumerate(row["labels"]) if label != IGNORE_INDEX), len(row["labels"]))
        length = min(length, labelled - 1, len(row["input_ids"]) - 1)
    if limit is not None:
        length = min(length, limit)
    return length if length >= MIN_SHARED_TOKENS else 0


def window_limit(model: nn.Module) -> int | None:
    """The longest prefix a sliding-window layer still sees whole from every row, if any layer has a window."""
    window = getattr(getattr(_base_model(model), "config", None), "sliding_window", None)
    return window - 1 if isinstance(window, int) and window > 0 else None


def after_prefix(rows: Sequence[dict], length: int) -> list[dict]:
    """Each row without its first ``length`` tokens (``input_ids`` and ``labels``)."""
    return [{"input_ids": row["input_ids"][length:], "labels": row["labels"][length:]} for row in rows]


def cache_argument(model: nn.Module) -> str:
    """The name of the model's cache argument: ``cache`` in newer transformers, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(_base_model(model).forward).parameters else "past_key_values"


def prefix_cache(model: nn.Module, prefix: Sequence[int], device: torch.device, takes_logits_to_keep: bool) -> Any:
    """Run ``prefix`` alone and return the model's cache holding its keys and values."""
    ids = torch.tensor([list(prefix)], device=device)
    extra = {"logits_to_keep": 1} if takes_logits_to_keep else {}
    outputs = model(input_ids=ids, position_ids=torch.arange(len(prefix), device=device)[None], use_cache=True, **extra)
    cache = getattr(outputs, "cache", None)
    return cache if cache is not None else outputs.past_key_values
