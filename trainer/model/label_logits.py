"""Logits only where a label is trained.

A causal LM's loss needs the logits of a position only when the next token is a label. In chat
fine-tuning the system prompt and the user turns carry no labels (28% of the tokens of the
benchmark data), yet ``lm_head`` projects every position onto the whole vocabulary (49 k for
SmolLM2) and the loss upcasts all of those logits to fp32. Transformers' causal LMs take a
``logits_to_keep`` tensor of positions for exactly this; :class:`LabelledLogitsMixin` passes the
labelled positions and hands the loss the labels already shifted (``shift_labels``), so the rest
of ``Trainer.compute_loss`` (token-count normalisation across gradient accumulation, device
scaling) is unchanged. The loss on those logits is :mod:`trainer.model.label_loss`'s, which skips the
fp32 copy of all of them. The loss and gradients equal the full-logits ones (tests/core/test_label_logits.py).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from torch import nn

from trainer.model.label_loss import IGNORE_INDEX, use_chunked_loss

logger = logging.getLogger(__name__)



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
