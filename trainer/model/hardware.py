"""Hardware choices made once per run: precision, attention kernel, gradient checkpointing, fused kernels.

Each decision depends on the machine and returns the reason, so that it can be logged and shown in
the status JSON.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from core.base.errors import UserError
from trainer.model import block_attention
from trainer.model.attention import SDPA_PACKED


@dataclass(frozen=True)
class Choice:
    """A machine-dependent decision and why it was made."""

    value: str
    reason: str


def _cpu_runs_bf16() -> bool:
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def select_precision(setting: str) -> Choice:
    """Resolve ``hyperparams.fp_precision`` for this machine.

    Raises:
        UserError: fp16 was asked for without CUDA.
    """
    cuda = torch.cuda.is_available()
    if setting == "fp16" and not cuda:
        raise UserError("hyperparams.fp_precision=fp16 needs a CUDA GPU; use bf16 or fp32 in config.json")
    if setting != "auto":
        return Choice(setting, "set in config.json")
    if cuda and torch.cuda.is_bf16_supported():
        return Choice("bf16", "CUDA device supports bf16")
    if not cuda and _cpu_runs_bf16():
        return Choice("bf16", "CPU has native bf16 matmul (AVX512-BF16/AMX)")
    return Choice("fp32", "no fast bf16 on this device")


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved ``fp_precision`` (``bf16``/``fp16``); None for fp32."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


PACKED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3"})
"""Model types whose attention ``sdpa_packed`` implements (window, soft-capping, scale), each one checked
against the model's own attention by ``tests/trainer/model/test_families.py``."""


def packed_attention_problem(model_config: Any) -> str | None:
    """Why ``sdpa_packed`` may not run this model's attention, or None when it may."""
    model_type = getattr(model_config, "model_type", None)
    if model_type not in PACKED_MODEL_TYPES:
        return f"sdpa_packed is not verified for model type {model_type!r} (see docs/models.md)"
    return None


def select_attention(setting: str, precision: str, padding_free: bool = False, model_config: Any = None) -> Choice:
    """Resolve ``hyperparams.attn_implementation`` for this machine and model.

    ``auto`` prefers flash_attention_2, then SDPA: per example (``sdpa_packed``, see
    ``trainer/model/attention.py``) for padding-free batches of a model type it is verified for
    (:data:`PACKED_MODEL_TYPES`), otherwise transformers' SDPA, or eager for a model whose attention
    logits are soft-capped (Gemma 2).

    Raises:
        UserError: ``sdpa_packed`` was set in config.json for a model it does not implement.
    """
    problem = packed_attention_problem(model_config) if model_config is not None else None
    if setting == SDPA_PACKED and problem is not None:
        raise UserError(f"hyperparams.attn_implementation=sdpa_packed: {problem}; set it to auto in config.json")
    if setting != "auto":
        return Choice(setting, "set in config.json")
    if importlib.util.find_spec("flash_attn") is None:
        reason = "flash_attn not installed"
    elif not torch.cuda.is_available():
        reason = "flash_attn needs CUDA"
    elif precision not in ("bf16", "fp16"):
        reason = "flash_attn needs bf16/fp16"
    else:
        return Choice("flash_attention_2", "flash_attn installed, CUDA, half precision")
    if padding_free and problem is None:
        return Choice(SDPA_PACKED, f"{reason}; padding-free batches attend per example")
    why = f"{reason}; {problem}" if padding_free else reason
    if getattr(model_config, "attn_logit_softcapping", None) is not None:
        return Choice("eager", f"{why}; eager, as SDPA cannot soft-cap attention logits")
    if model_config is not None and not _supports_sdpa(model_config):
        return Choice("eager", f"{why}; eager, as transformers has no SDPA path for this model")
    return Choice("sdpa", why)


def _supports_sdpa(model_config: Any) -> bool:
    """Whether transformers' causal-LM class for this config runs SDPA (True when the class is unknown)."""
    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(getattr(model_config, "model_type", None))
    model_class = getattr(transformers, name, None) if name else None
    return bool(getattr(model_class, "_supports_sdpa", True))


def qlora_problem(method: str) -> str | None:
    """Why ``method`` cannot train on this machine (QLoRA needs CUDA and bitsandbytes), or None."""
    if method != "qlora":
        return None
    if not torch.cuda.is_available():
        return (
            "method=qlora loads the base model in 4 bit with bitsandbytes, which needs a CUDA GPU, and this "
            "machine has none; set method to lora in config.json, or run on a CUDA machine with "
            "`pip install bitsandbytes`"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        return "method=qlora needs the bitsandbytes package: run `pip install bitsandbytes` in trainctl's environment"
    return None


ACTIVATION_BYTES_PER_HIDDEN = 34
"""Bytes saved for backward per token, layer and hidden unit under mixed precision (Korthikanti et
al. 2022, "Reducing Activation Recomputation", without the attention-score term that SDPA and flash
attention do not store)."""
LOGIT_BYTES_PER_VOCAB = 12
"""Bytes per token and vocabulary entry for the logits: bf16 logits, their fp32 upcast for the
loss and its gradient."""


def free_memory_bytes() -> int:
    """Free memory of the training device: CUDA's free memory, else the host's available RAM."""
    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0]
    import psutil

    return psutil.virtual_memory().available


def estimate_activation_bytes(model_config: Any, tokens_per_step: int) -> int:
    """Activation memory of one step without checkpointing (see :data:`ACTIVATION_BYTES_PER_HIDDEN`);
    on a CPU also the attention probabilities that :mod:`trainer.model.block_attention` keeps, at most
    ``heads x MAX_TOKENS`` bytes per token and layer (bf16, causal: half the keys)."""
    per_token = (
        model_config.num_hidden_layers * model_config.hidden_size * ACTIVATION_BYTES_PER_HIDDEN
        + model_config.vocab_size * LOGIT_BYTES_PER_VOCAB
    )
    if not torch.cuda.is_available():  # the block attention of short examples keeps its bf16 probabilities
        per_token += model_config.num_hidden_layers * model_config.num_attention_heads * block_attention.MAX_TOKENS
    return tokens_per_step * per_token


def select_gradient_checkpointing(
    setting: bool | str, model_config: Any, tokens_per_step: int, free_bytes: int | None = None
) -> Choice:
    """Resolve ``hyperparams.use_gradient_checkpointing``: ``auto`` is on only when memory is short.

    Returns:
        ``Choice("on"|"off", reason)``.
    """
    if setting != "auto":
        return Choice("on" if setting else "off", "set in config.json")
    needed = estimate_activation_bytes(model_config, tokens_per_step)
    free = free_memory_bytes() if free_bytes is None else free_bytes
    verdict = "on" if needed > free / 2 else "off"
    return Choice(verdict, f"activations of a {tokens_per_step}-token step ~{needed / 2**30:.1f} GiB, "
                           f"{free / 2**30:.1f} GiB free")


def select_liger(setting: bool) -> Choice:
    """Resolve ``hyperparams.use_liger``: on only with the package and a CUDA GPU."""
    if not setting:
        return Choice("off", "set in config.json")
    if importlib.util.find_spec("liger_kernel") is None:
        return Choice("off", "liger-kernel is not installed")
    if not torch.cuda.is_available():
        return Choice("off", "Liger's Triton kernels need CUDA")
    return Choice("on", "liger-kernel installed, CUDA")


def select_torch_compile(setting: bool) -> Choice:
    """Resolve ``hyperparams.torch_compile``: on only on CUDA."""
    if not setting:
        return Choice("off", "set in config.json")
    if not torch.cuda.is_available():
        return Choice("off", "CPU: compile time outweighs the gain for one file's run")
    return Choice("on", "CUDA")
