"""SDPA per example for padding-free batches, where flash-attn's varlen kernel is not available.

A padding-free batch is one row holding several examples, told apart by position ids that restart
(``DataCollatorWithFlattening``). flash-attn attends within each example. transformers' SDPA path
instead builds a block-diagonal ``T x T`` mask for the whole row and attends over all of it, so its
attention work grows with the square of the step's tokens instead of the sum of the squares of the
example lengths: with 16 examples in a 2048-token step that is up to 16 times the work, most of it
masked out, and the masked SDPA kernel on CPU is slower per element than the causal one.

``sdpa_packed`` is transformers' SDPA attention with one change: when the position ids show packed
examples, SDPA runs causally on each example's slice of the row. Everything else (padded batches,
a single example, generation with a cache) goes to transformers' own ``sdpa_attention_forward``
with the mask transformers builds for SDPA. It is registered under its name with transformers'
``AttentionInterface`` and ``AttentionMaskInterface``, so it is chosen like any attention kernel.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

SDPA_PACKED = "sdpa_packed"


def example_bounds(position_ids: torch.Tensor | None) -> list[int] | None:
    """Start offsets of the packed examples in a one-row batch, plus the row length.

    An example starts wherever the position id is not the previous one plus 1 (the rule of
    ``transformers.masking_utils.find_packed_sequence_indices``). None when the batch is not one
    row of at least two examples.
    """
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[0] != 1:
        return None
    row = position_ids[0]
    starts = [0] + ((row[1:] - row[:-1]) != 1).nonzero().flatten().add(1).tolist()
    return starts + [row.shape[0]] if len(starts) > 1 else None


_last_bounds: tuple[weakref.ref, int, list[int] | None] | None = None


def bounds_once_per_forward(position_ids: torch.Tensor | None) -> list[int] | None:
    """:func:`example_bounds`, computed once for all layers of a forward.

    Every layer gets the same ``position_ids`` tensor, and reading the bounds back to the host is a
    device sync on a GPU, so the last result is kept while that very tensor (same object, not
    modified in place) comes back.
    """
    global _last_bounds
    if position_ids is None:
        return None
    if _last_bounds is not None and _last_bounds[0]() is position_ids and _last_bounds[1] == position_ids._version:
        return _last_bounds[2]
    bounds = example_bounds(position_ids)
    _last_bounds = (weakref.ref(position_ids), position_ids._version, bounds)
    return bounds


def packed_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal SDPA on each packed example; transformers' SDPA for any other batch.

    Shapes as transformers' attention functions: ``query`` is (batch, heads, tokens, head_dim),
    the output (batch, tokens, heads, head_dim).
    """
    bounds = bounds_once_per_forward(kwargs.get("position_ids"))
    if bounds is None or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal,
            **kwargs,
        )
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    outputs = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
            dropout_p=dropout, scale=scaling, is_causal=True,
        )
        for start, end in zip(bounds, bounds[1:])
    ]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def register_packed_sdpa() -> None:
    """Make ``attn_implementation="sdpa_packed"`` known to transformers (idempotent)."""
    AttentionInterface.register(SDPA_PACKED, packed_sdpa_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(SDPA_PACKED, sdpa_mask)
