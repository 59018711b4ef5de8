"""LoRA folded into the frozen weight for training, when the adapter has no dropout.

PEFT computes a LoRA linear as ``x W^T + s (x A^T) B^T``: the frozen matmul, two small matmuls,
a scaling and an add, and before them a cast of ``x`` to the adapter's fp32 (autocast casts it back
to bf16 for each matmul). With dropout 0 the same output is ``x (W + s B A)^T``, so
:class:`FoldedLoraLinear` forms ``W + s B A`` once per step (one ``addmm`` of rank r) and does one
matmul forward and one for the input gradient. The adapter's gradients come through the low-rank
path as in PEFT (``dB = s g^T (x A^T)``, ``dA = s (g B)^T x``), so the frozen weight's gradient
(a full-size matmul) is never formed. Outputs and gradients equal PEFT's up to rounding
(tests/trainer/model/test_lora_fold.py).

Only plain LoRA on ``nn.Linear`` with dropout 0 and one active adapter is folded, and only in
training mode: evaluation, generation, merging and saving see PEFT's own forward.

``UltimateTrainer.setup`` calls :func:`fold_lora_for_training`; ``benchmarks/step_profile.py
--ab-fold`` measures it against PEFT's forward (+5% on 2 CPU cores, docs/performance.md,
"Against tuned peers").
"""

from __future__ import annotations

import logging
import types
from typing import Any

import torch
from peft.tuners.lora import Linear as LoraLinear
from torch import nn
from torch.nn import functional as F

from trainer.distributed import world_size

logger = logging.getLogger(__name__)


class FoldedLoraLinear(torch.autograd.Function):
    """``y = x (W + s B A)^T + b`` with gradients for ``x``, ``A`` and ``B`` only (``W``, ``b`` frozen)."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling):
        dtype = _compute_dtype(x, weight)
        a, b = lora_a.to(dtype), lora_b.to(dtype)
        folded = torch.addmm(weight.to(dtype), b, a, alpha=scaling)
        x = x.to(dtype)
        ctx.save_for_backward(x, folded, a, b)
        ctx.scaling = scaling
        ctx.param_dtypes = (lora_a.dtype, lora_b.dtype)
        return F.linear(x, folded, None if bias is None else bias.to(dtype))

    @staticmethod
    def backward(ctx, grad_out):
        x, folded, a, b = ctx.saved_tensors
        grad_out = grad_out.to(x.dtype)
        g2, x2 = grad_out.reshape(-1, grad_out.shape[-1]), x.reshape(-1, x.shape[-1])
        grad_x = (grad_out @ folded) if ctx.needs_input_grad[0] else None
        grad_b = (g2.t() @ (x2 @ a.t())).mul_(ctx.scaling).to(ctx.param_dtypes[1])
        grad_a = ((g2 @ b).t() @ x2).mul_(ctx.scaling).to(ctx.param_dtypes[0])
        return grad_x, None, None, grad_a, grad_b, None


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The matmul dtype: autocast's where it is on, else the frozen weight's."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def _folded_forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """PEFT ``lora.Linear.forward`` with the adapter folded in while training (see module doc)."""
    if not self.training or self.merged or self.disable_adapters or args or kwargs:
        return self._unfolded_forward(x, *args, **kwargs)
    [adapter] = self.active_adapters
    base = self.base_layer
    return FoldedLoraLinear.apply(
        x, base.weight, base.bias, self.lora_A[adapter].weight, self.lora_B[adapter].weight, self.scaling[adapter]
    )


def foldable(module: nn.Module) -> bool:
    """Whether ``module`` is a PEFT LoRA linear that :func:`fold_lora` can fold (a plain
    ``nn.Linear`` base: not a quantized one)."""
    if not isinstance(module, LoraLinear) or type(module.base_layer) is not nn.Linear:
        return False
    if len(module.active_adapters) != 1 or module.lora_variant:
        return False
    [adapter] = module.active_adapters
    return adapter in module.lora_A and isinstance(module.lora_dropout[adapter], nn.Identity)


def fold_lora(model: nn.Module) -> int:
    """Fold every foldable LoRA linear of ``model`` for training; return how many were folded."""
    folded = 0
    for module in model.modules():
        if foldable(module) and not hasattr(module, "_unfolded_forward"):
            module._unfolded_forward = module.forward
            module.forward = types.MethodType(_folded_forward, module)
            folded += 1
    return folded


def fold_lora_for_training(model: nn.Module) -> int:
    """:func:`fold_lora` in a single process; under DDP/FSDP the wrappers own the parameters and the
    adapter keeps PEFT's forward. Returns how many layers were folded."""
    if world_size() > 1:
        return 0
    folded = fold_lora(model)
    if folded:
        logger.info("LoRA folded into the frozen weight of %d layers for training (lora.dropout is 0)", folded)
    return folded


def unfold_lora(model: nn.Module) -> None:
    """Undo :func:`fold_lora`: PEFT's own forward everywhere again."""
    for module in model.modules():
        if hasattr(module, "_unfolded_forward"):
            module.forward = module._unfolded_forward
            del module._unfolded_forward
