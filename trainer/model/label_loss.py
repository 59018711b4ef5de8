"""Cross-entropy of the kept logits in chunks of rows, without an fp32 copy of all of them.

Transformers' ``ForCausalLMLoss`` upcasts the whole ``(positions, vocab)`` logit tensor to fp32, takes
its log-softmax (another fp32 tensor of that size, kept for the backward), and the backward fills a
third one before casting the gradient back to the logits' dtype. With a 49 k vocabulary that is
memory traffic, not arithmetic: for the 676 labelled positions of one benchmark step it took 192 ms
of forward and backward on 2 CPU cores, and 84 ms for the forward alone (docs/performance.md,
"The loss without an fp32 copy of the logits").

:func:`token_losses` computes the same numbers, ``logsumexp(z) - z[target]`` per position, in fp32,
on :data:`CHUNK_ROWS` rows at a time (their fp32 copy stays in the cache), and keeps only the
logits (which exist anyway) and one fp32 normaliser per position for the backward, where the
gradient ``softmax(z) - onehot(target)`` is formed chunk by chunk in fp32 and written in the logits'
dtype, as the stock path's cast would write it. :func:`causal_lm_loss` is ``ForCausalLMLoss`` on top
of it; :func:`use_chunked_loss` installs it on a model whose loss is the stock one.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.loss.loss_utils import ForCausalLMLoss

from trainer.data.chat_masking import IGNORE_INDEX

CHUNK_ROWS = 32
"""Positions per chunk: 32 x 49,152 fp32 logits are 6 MB (measured best of 16, 32, 64, 128)."""


class _TokenCrossEntropy(torch.autograd.Function):
    """Per-position cross-entropy of ``(positions, vocab)`` logits; 0 where the target is ignored."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
        normalisers = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        for start in range(0, logits.shape[0], CHUNK_ROWS):
            normalisers[start : start + CHUNK_ROWS] = torch.logsumexp(logits[start : start + CHUNK_ROWS].float(), dim=-1)
        trained = targets != ignore_index
        safe_targets = torch.where(trained, targets, 0)
        picked = logits.gather(1, safe_targets[:, None]).squeeze(1).float()
        ctx.save_for_backward(logits, safe_targets, trained, normalisers)
        return (normalisers - picked) * trained

    @staticmethod
    def backward(ctx, grad_losses: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, safe_targets, trained, normalisers = ctx.saved_tensors
        scale = grad_losses.float() * trained
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], CHUNK_ROWS):
            end = min(start + CHUNK_ROWS, logits.shape[0])
            rows = torch.arange(end - start, device=logits.device)
            chunk = logits[start:end].float().sub_(normalisers[start:end, None]).exp_().mul_(scale[start:end, None])
            chunk[rows, safe_targets[start:end]] -= scale[start:end]
            grad[start:end] = chunk
        return grad, None, None


def token_losses(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy of each position, fp32, flattened: ``logits`` (..., vocab), ``targets`` (...);
    0 where the target is ``ignore_index``. Same values and gradient as
    ``cross_entropy(logits.float(), targets, reduction="none")``."""
    flat = logits.reshape(-1, logits.shape[-1])
    return _TokenCrossEntropy.apply(flat, targets.reshape(-1).to(flat.device), ignore_index)


def causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    vocab_size: int,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = IGNORE_INDEX,
    shift_labels: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """Transformers' ``ForCausalLMLoss`` (same arguments, same result) through :func:`token_losses`."""
    if shift_labels is None:
        shift_labels = nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    losses = token_losses(logits.reshape(-1, vocab_size), shift_labels, ignore_index)
    if num_items_in_batch is None:
        return losses.sum() / (shift_labels != ignore_index).sum().to(losses.device)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(losses.device)
    return losses.sum() / num_items_in_batch


def use_chunked_loss(model: nn.Module) -> bool:
    """Give the causal LM under ``model`` (PEFT or not) :func:`causal_lm_loss` if its loss is
    transformers' stock ``ForCausalLMLoss``; a model with a loss of its own keeps it. Returns
    whether the chunked loss is in use."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "loss_function", None) is causal_lm_loss:
        return True
    if getattr(base, "loss_function", None) is not ForCausalLMLoss:
        return False
    base.loss_function = causal_lm_loss
    return True
