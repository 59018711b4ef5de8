"""SDPA per example for padding-free batches, where flash-attn's varlen kernel is not available.

A padding-free batch is one row holding several examples, told apart by position ids that restart
(``DataCollatorWithFlattening``). flash-attn attends within each example. transformers' SDPA path
instead builds a block-diagonal ``T x T`` mask for the whole row and attends over all of it, so its
attention work grows with the square of the step's tokens instead of the sum of the squares of the
example lengths: with 16 examples in a 2048-token step that is up to 16 times the work, most of it
masked out, and the masked SDPA kernel on CPU is slower per element than the causal one.

``sdpa_packed`` is transformers' attention with one change: when the position ids show packed
examples, attention runs on each example's slice of the row. It does what the model's attention
layer asks for, as transformers' own kernels do:

* ``scaling``: the layer's softmax scale (e.g. Gemma's ``query_pre_attn_scalar``);
* ``sliding_window``: a layer of sliding-window attention (Mistral, Phi-3, Qwen2 with
  ``use_sliding_window``, Gemma 2/3 sliding layers) lets a token see itself and the
  ``sliding_window - 1`` tokens before it, the mask of ``transformers.masking_utils``;
* ``softcap``: logit soft-capping (Gemma 2), ``tanh(scores / cap) * cap`` before the softmax, as in
  Gemma 2's eager attention (SDPA has no soft-capping, so those layers run the eager math, on
  each example of a packed batch and on the whole batch otherwise).

A short example in bf16 being trained on a CPU goes to :mod:`trainer.model.block_attention`
(plain matmuls in query blocks: faster there than the CPU flash kernel); every other example
keeps SDPA.

Packed examples may also follow a prefix they all share, held in the cache: the keys are then
longer than the queries by the prefix, and each example attends to the prefix and then causally to
itself (:mod:`trainer.shared_prefix`, used when measuring losses).

Anything else that changes attention (attention sinks, a position bias) is refused here, and
``trainer/model/hardware.py`` does not select this kernel for such models. Every other batch that is
not packed (padded batches, a single example, generation with a cache) goes to transformers' own
``sdpa_attention_forward`` with the mask transformers builds for SDPA. The kernel is registered
with transformers' ``AttentionInterface`` and ``AttentionMaskInterface`` (as :data:`KERNEL_NAME`),
so it is chosen like any attention kernel.
"""

from __future__ import annotations

import weakref
from itertools import pairwise
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from trainer.model import block_attention

SDPA_PACKED = "sdpa_packed"
"""The kernel's name in config.json and in the status."""
KERNEL_NAME = "packed_per_example"
"""Its name with transformers. It must not contain "sdpa": transformers refuses every "sdpa" kernel
for a model class without SDPA support, such as Gemma 2, whose soft-capping this kernel implements."""
UNSUPPORTED_KWARGS = ("s_aux", "sinks", "position_bias")
"""Attention arguments that change the result and that the per-example path does not implement."""


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
    if position_ids.is_inference():  # no version counter to tell an in-place change (evaluation only)
        return example_bounds(position_ids)
    if _last_bounds is not None and _last_bounds[0]() is position_ids and _last_bounds[1] == position_ids._version:
        return _last_bounds[2]
    bounds = example_bounds(position_ids)
    _last_bounds = (weakref.ref(position_ids), position_ids._version, bounds)
    return bounds


def window_mask(length: int, sliding_window: int, device: torch.device) -> torch.Tensor:
    """Boolean ``(length, length)`` mask, True where query ``i`` may see key ``j``: ``i - window < j <= i``."""
    offsets = torch.arange(length, device=device)[:, None] - torch.arange(length, device=device)[None, :]
    return (offsets >= 0) & (offsets < sliding_window)


def _causal_mask(query_length: int, key_length: int, device: torch.device) -> torch.Tensor:
    """Boolean causal mask whose last query sees every key (queries at the end of a cache)."""
    shift = key_length - query_length
    return torch.arange(key_length, device=device)[None, :] <= torch.arange(query_length, device=device)[:, None] + shift


def _softcapped_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
    scaling: float, softcap: float, dropout: float,
) -> torch.Tensor:
    """Gemma 2's eager attention: scale, soft-cap, mask (boolean, or additive float), fp32 softmax."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    scores = torch.tanh(scores / softcap) * softcap
    if mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    else:
        scores = scores + mask[..., : key.shape[2]]
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=dropout > 0)
    return torch.matmul(weights, value)


def _example_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *,
    scaling: float, dropout: float, sliding_window: int | None, softcap: float | None, past: int = 0,
) -> torch.Tensor:
    """Causal attention of one example (``query`` etc. are its slice of the row; ``key`` and ``value``
    have the layer's key/value heads, repeated here for the kernels that need one per query head).
    ``key`` and ``value`` may begin with ``past`` positions before the example's first query (a
    shared prefix, see :mod:`trainer.shared_prefix`), which every query sees.
    A short bf16 example being trained goes to :mod:`trainer.model.block_attention`."""
    length = key.shape[2]
    windowed = sliding_window is not None and length > sliding_window
    if past == 0 and softcap is None and not windowed and block_attention.applies(query, key, value, dropout):
        return block_attention.block_causal_attention(query, key, value, scaling)
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    if past == 0 and softcap is None and not windowed:
        return torch.nn.functional.scaled_dot_product_attention(
            query, key, value, dropout_p=dropout, scale=scaling, is_causal=True
        )
    mask = window_mask(length, sliding_window if windowed else length, query.device)[past:]
    if softcap is not None:
        return _softcapped_attention(query, key, value, mask, scaling, softcap, dropout)
    return torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling
    )


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
    """Attention on each packed example; transformers' SDPA for any other batch.

    Shapes as transformers' attention functions: ``query`` is (batch, heads, tokens, head_dim),
    the output (batch, tokens, heads, head_dim).

    Raises:
        NotImplementedError: the layer uses attention sinks or a position bias on a packed batch.
    """
    bounds = bounds_once_per_forward(kwargs.get("position_ids"))
    past = key.shape[2] - query.shape[2]
    if (bounds is None or past < 0) and kwargs.get("softcap") is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal,
            **kwargs,
        )
    unsupported = [name for name in UNSUPPORTED_KWARGS if kwargs.get(name) is not None]
    if unsupported:
        raise NotImplementedError(f"sdpa_packed does not implement {', '.join(unsupported)}; use eager")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if bounds is None or past < 0:  # soft-capped, not packed: the whole batch
        groups = query.shape[1] // key.shape[1]
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
        mask = attention_mask if attention_mask is not None else _causal_mask(query.shape[2], key.shape[2], query.device)
        output = _softcapped_attention(query, key, value, mask, scale, kwargs["softcap"], dropout)
        return output.transpose(1, 2).contiguous(), None
    options = dict(
        scaling=scale, dropout=dropout, sliding_window=kwargs.get("sliding_window"), softcap=kwargs.get("softcap")
    )
    outputs = [
        _example_attention(
            query[:, :, start:end], _example_states(key, past, start, end), _example_states(value, past, start, end),
            past=past, **options,
        )
        for start, end in pairwise(bounds)
    ]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def _example_states(states: torch.Tensor, past: int, start: int, end: int) -> torch.Tensor:
    """One packed example's keys or values, after the ``past`` positions of a prefix all examples share."""
    if not past:
        return states[:, :, start:end]
    return torch.cat([states[:, :, :past], states[:, :, past + start : past + end]], dim=2)


def register_packed_sdpa() -> None:
    """Make the kernel known to transformers as :data:`KERNEL_NAME` (idempotent)."""
    AttentionInterface.register(KERNEL_NAME, packed_sdpa_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(KERNEL_NAME, sdpa_mask)


def transformers_name(attention: str) -> str:
    """The ``attn_implementation`` to pass to transformers for an attention choice."""
    return KERNEL_NAME if attention == SDPA_PACKED else attention
