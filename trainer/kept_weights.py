"""The model as it was before training, on demand: a LoRA run's trainable weights kept aside.

Training a LoRA adapter changes only its trainable tensors (the adapter, and ``modules_to_save``), so
a copy of those taken before ``train()`` is the whole difference between the current model and the
candidate. :meth:`KeptWeights.restored` puts the copy back for the length of a ``with`` block (to
measure the current model on rows it was never measured on) and then the trained values, so
measuring the current model after training needs neither a second model in memory nor a reload.
Full fine-tuning trains every weight: keeping them would double the model's memory, so it is not
offered there (:func:`can_keep`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from trainer.distributed import world_size


def can_keep(model: nn.Module, adapter: bool) -> bool:
    """Whether the trainable weights are an adapter's, small enough to copy, in one process
    (under DDP or FSDP the wrappers own the parameters)."""
    return adapter and world_size() == 1 and any(p.requires_grad for p in model.parameters())


class KeptWeights:
    """A copy of ``model``'s trainable weights as they are now (on the CPU).

    Args:
        model: the model whose trainable parameters to copy.
    """

    def __init__(self, model: nn.Module) -> None:
        self.weights = {name: p.detach().to("cpu", copy=True)
                        for name, p in model.named_parameters() if p.requires_grad}

    @contextmanager
    def restored(self, model: nn.Module) -> Iterator[nn.Module]:
        """``model`` with the kept weights inside the block, its own weights again after it."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            current = {name: params[name].detach().clone() for name in self.weights}
            for name, weight in self.weights.items():
                params[name].copy_(weight)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, weight in current.items():
                    params[name].copy_(weight)
