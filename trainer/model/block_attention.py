"""Causal attention of one short example in query blocks, for bf16 training on a CPU.

PyTorch's CPU flash-attention kernel is slow for the short examples of chat data: its backward
costs 3-4 times its forward, and one forward and backward of a 128-token example (9 query heads,
3 key/value heads, head size 64, bf16) took 2.4 ms against 1.3 ms for this module on the 2-core
machine of docs/performance.md ("Attention of short examples"). For examples of up to
:data:`MAX_TOKENS` tokens, :class:`BlockCausalAttention` computes the same attention with a few
large matrix multiplies per block of :data:`BLOCK` queries:

* forward: the scores of a block of queries against the keys up to the block's end, the causal
  mask inside the block's diagonal tile, a softmax that keeps the probabilities in the input's dtype
  (it accumulates in fp32), and their product with the values;
* backward: flash attention's identity ``dS = P * (dP - rowsum(dO * O))``, with ``dP`` and ``dS`` in
  fp32 (they are differenced), so only the probabilities (bf16) are kept from the forward, never
  the fp32 scores.

Grouped-query attention is done without copying the keys and values for each query head: the
queries of a key/value head's group are stacked into one matrix instead.

What it costs: the kept probabilities, about ``heads x tokens`` bytes per token and layer (4.6 KB at
512 tokens and 9 heads), which is why longer examples keep the flash kernel, whose memory does not
grow with the square of the length. Precision: the scores are rounded to bf16 before the softmax, as
in transformers' eager attention; the output and gradients stay within about twice the flash kernel's
own bf16 error of an fp64 reference (``tests/trainer/model/test_block_attention.py``).
"""

from __future__ import annotations

import torch

BLOCK = 128
"""Queries per block: the scores of a block stay in the CPU's cache (measured best of 64, 128, 256)."""
MAX_TOKENS = 512
"""Longest example that takes this path; longer ones go to the flash kernel (no faster here beyond
about 1,024 tokens, and the kept probabilities grow with the square of the length)."""

_upper_masks: dict[tuple[int, torch.device], torch.Tensor] = {}
"""The diagonal tiles' masks by size and device: at most :data:`BLOCK` sizes per device."""


def applies(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, dropout: float) -> bool:
    """Whether an example's attention takes this path: bf16 on a CPU, gradients wanted, no dropout,
    at most :data:`MAX_TOKENS` tokens, as many keys as queries."""
    return (
        query.device.type == "cpu"
        and query.dtype == key.dtype == value.dtype == torch.bfloat16
        and dropout == 0.0
        and query.shape[2] == key.shape[2] <= MAX_TOKENS
        and query.shape[1] % key.shape[1] == 0
        and torch.is_grad_enabled()
        and (query.requires_grad or key.requires_grad or value.requires_grad)
    )


def _strictly_upper(size: int, device: torch.device) -> torch.Tensor:
    """Boolean ``(size, size)`` mask, True above the diagonal (the keys a query may not see)."""
    mask = _upper_masks.get((size, device))
    if mask is None:
        mask = _upper_masks[(size, device)] = torch.ones(size, size, dtype=torch.bool, device=device).triu_(1)
    return mask


class BlockCausalAttention(torch.autograd.Function):
    """``softmax(scale * q k^T + causal mask) v`` for one example, in blocks of :data:`BLOCK` queries.

    Shapes: ``query`` (batch, heads, tokens, head_dim); ``key`` and ``value`` (batch, kv_heads,
    tokens, head_dim) with ``heads`` a multiple of ``kv_heads``. The output has the query's shape.
    """

    @staticmethod
    def forward(ctx, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
        batch, heads, tokens, dim = query.shape
        kv_heads = key.shape[1]
        groups = heads // kv_heads
        scaled = (query * scale).reshape(batch, kv_heads, groups, tokens, dim)
        key_t = key.transpose(-1, -2)
        output = torch.empty(batch, kv_heads, groups, tokens, dim, dtype=query.dtype, device=query.device)
        probabilities = []
        for start in range(0, tokens, BLOCK):
            end = min(tokens, start + BLOCK)
            rows = groups * (end - start)
            block = scaled[:, :, :, start:end].reshape(batch, kv_heads, rows, dim)
            scores = torch.matmul(block, key_t[..., :end]).view(batch, kv_heads, groups, end - start, end)
            scores[..., start:end].masked_fill_(_strictly_upper(end - start, query.device), float("-inf"))
            probs = torch.softmax(scores, dim=-1)
            output[:, :, :, start:end] = torch.matmul(probs.view(batch, kv_heads, rows, end), value[:, :, :end]).view(
                batch, kv_heads, groups, end - start, dim
            )
            probabilities.append(probs)
        output = output.view(batch, heads, tokens, dim)
        ctx.save_for_backward(query, key, value, output, *probabilities)
        ctx.scale = scale
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        query, key, value, output, *probabilities = ctx.saved_tensors
        batch, heads, tokens, dim = query.shape
        kv_heads = key.shape[1]
        groups = heads // kv_heads
        grad_output = grad_output.contiguous()
        # rowsum(dP * P) = rowsum(dO * O): one (tokens x dim) product instead of a (tokens x tokens) one
        correction = (grad_output.float() * output.float()).sum(-1, keepdim=True)
        correction = correction.view(batch, kv_heads, groups, tokens, 1)
        grad_output = grad_output.view(batch, kv_heads, groups, tokens, dim)
        grouped_query = query.reshape(batch, kv_heads, groups, tokens, dim)
        value_t = value.transpose(-1, -2).float()  # dP in fp32: it is differenced with rowsum(dO * O)
        grad_query = torch.empty_like(grouped_query)
        grad_key = torch.zeros(batch, kv_heads, tokens, dim, dtype=torch.float32, device=query.device)
        grad_value = torch.zeros_like(grad_key)
        for index, start in enumerate(range(0, tokens, BLOCK)):
            end = min(tokens, start + BLOCK)
            rows = groups * (end - start)
            probs = probabilities[index].view(batch, kv_heads, rows, end)
            block_grad = grad_output[:, :, :, start:end].reshape(batch, kv_heads, rows, dim)
            grad_value[:, :, :end] += torch.matmul(probs.transpose(-1, -2), block_grad)
            grad_probs = torch.matmul(block_grad.float(), value_t[..., :end])
            grad_probs = grad_probs.view(batch, kv_heads, groups, end - start, end).sub_(correction[:, :, :, start:end])
            grad_scores = grad_probs.mul_(probabilities[index]).to(query.dtype).view(batch, kv_heads, rows, end)
            grad_query[:, :, :, start:end] = torch.matmul(grad_scores, key[:, :, :end]).view(
                batch, kv_heads, groups, end - start, dim
            )
            block_query = grouped_query[:, :, :, start:end].reshape(batch, kv_heads, rows, dim)
            grad_key[:, :, :end] += torch.matmul(grad_scores.transpose(-1, -2), block_query)
        grad_query = grad_query.mul_(ctx.scale).view(batch, heads, tokens, dim)
        return grad_query, grad_key.mul_(ctx.scale).to(key.dtype), grad_value.to(value.dtype), None


def block_causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of one example; see :class:`BlockCausalAttention`."""
    return BlockCausalAttention.apply(query, key, value, scale)
