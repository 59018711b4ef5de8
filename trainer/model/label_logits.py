"""Logits only where a label is trained, and their loss without an fp32 copy of them.

A causal LM's loss needs the logits of a position only when the next token is a label. In chat
fine-tuning the system prompt and the user turns carry no labels (28% of the tokens of the
benchmark data), yet ``lm_head`` projects every position onto the whole vocabulary (49 k for
SmolLM2) and the loss upcasts all of those logits to fp32. Transformers' causal LMs take a
``logits_to_keep`` tensor of positions for exactly this; :class:`LabelledLogitsMixin` passes the
labelled positions and hands the loss the labels already shifted (``shift_labels``), so the rest
of ``Trainer.compute_loss`` (token-count normalisation across gradient accumulation, device
scaling) is unchanged. The loss on those logits is :func:`causal_lm_loss` (below), which skips the
fp32 copy of all of them. The loss and gradients equal the full-logits ones (tests/trainer/model/test_label_logits.py).

The loss of the kept logits, in chunks of rows: transformers' ``ForCausalLMLoss`` upcasts the whole
``(positions, vocab)`` logit tensor to fp32, takes its log-softmax (another fp32 tensor of that size, kept for the backward), and the backward fills a
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

import inspect
import logging
from typing import Any

import torch
from torch import nn
from transformers.loss.loss_utils import ForCausalLMLoss

from trainer.data.chat_masking import IGNORE_INDEX

logger = logging.getLogger(__name__)

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



def takes_logits_to_keep(model: nn.Module) -> bool:
    """Whether the causal LM under ``model`` (PEFT or not) accepts a ``logits_to_keep`` argument."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def keep_labelled_positions(inputs: dict[str, Any]) -> dict[str, Any] | None:
    """``inputs`` for a forward that computes logits only where the next token is a label.

    Returns None when there is nothing to gain or it would not be exact: no ``labels``, labels the
    collator already shifted, or no labelled position at all.
    """
    labels = inputs.get("labels")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 2 or "shift_labels" in inputs:
        return None
    shifted = nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # position t predicts t+1
    keep = (shifted != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)  # union over the batch's rows
    if keep.numel() == 0:
        return None
    targets = shifted[:, keep]
    return {**inputs, "labels": targets, "shift_labels": targets, "logits_to_keep": keep}


class LabelledLogitsMixin:
    """``Trainer.compute_loss`` with logits computed only at labelled positions (see module doc).

    Used for training, and for evaluation unless ``compute_metrics`` needs every logit (without
    it, evaluation keeps only the loss). Label smoothing, a custom ``compute_loss_func``, Liger's
    fused loss (which never materialises the logits anyway) and models without ``logits_to_keep``
    take the stock path, as does everything when ``labelled_logits_only`` is set False (the
    benchmark's ``ours_all_logits`` does, to measure what this saves).
    """

    labelled_logits_only = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._labelled_logits_apply(model):
            inputs = keep_labelled_positions(inputs) or inputs
            if not getattr(self, "_chunked_loss", False):
                self._chunked_loss = use_chunked_loss(self.accelerator.unwrap_model(model))
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _labelled_logits_apply(self, model: nn.Module) -> bool:
        if not self.labelled_logits_only:
            return False
        if self.label_smoother is not None or self.compute_loss_func is not None:
            return False
        if getattr(self.args, "use_liger_kernel", False):
            return False
        if not model.training and self.compute_metrics is not None:
            return False  # metrics would see the kept positions' logits only
        if not hasattr(self, "_takes_logits_to_keep"):
            self._takes_logits_to_keep = takes_logits_to_keep(self.accelerator.unwrap_model(model))
            if not self._takes_logits_to_keep:
                logger.info("logits for every position: %s has no logits_to_keep", type(model).__name__)
        return self._takes_logits_to_keep
