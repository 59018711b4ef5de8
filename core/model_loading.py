"""Choosing and loading the model a training run continues from.

Decisions that depend on the machine (precision, attention kernel) are made here once, and each
returns the reason so that it can be logged and shown in the status JSON.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.attention import SDPA_PACKED, register_packed_sdpa
from core.errors import UserError
from core.model_dirs import check_model_dir, is_valid_model_dir
from trainer.config import TrainConfig

logger = logging.getLogger(__name__)

CURRENT_MODEL_DIRNAME = "current_model"


class ModelSourceError(UserError, ValueError):
    """The model to start from cannot be found or loaded."""


@dataclass(frozen=True)
class Choice:
    """A machine-dependent decision and why it was made."""

    value: str
    reason: str


def resolve_base_model(base_dir: Path, config: TrainConfig) -> str:
    """``config.base_model`` as a local path (relative to ``base_dir``) when one exists, else a hub id."""
    candidate = Path(config.base_model)
    if not candidate.is_absolute():
        candidate = base_dir / candidate
    if candidate.exists():
        return str(candidate.resolve())
    if Path(config.base_model).is_absolute() or config.base_model.startswith((".", "models/")):
        raise ModelSourceError(
            f"base_model {config.base_model!r} does not exist under {base_dir}; run "
            "`trainctl prepare-model` for the embedded model or point base_model at a model directory"
        )
    return config.base_model


def resolve_model_source(base_dir: Path, config: TrainConfig) -> str:
    """The model to continue from: ``current_model/`` when it is a valid model dir, else ``base_model``."""
    current = base_dir / CURRENT_MODEL_DIRNAME
    if is_valid_model_dir(current):
        return str(current.resolve())
    return resolve_base_model(base_dir, config)


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


def select_attention(setting: str, precision: str, padding_free: bool = False) -> Choice:
    """Resolve ``hyperparams.attn_implementation``.

    ``auto`` prefers flash_attention_2, then SDPA: per example (``sdpa_packed``, see
    ``core/attention.py``) for padding-free batches, plain SDPA otherwise.
    """
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
    if padding_free:
        return Choice(SDPA_PACKED, f"{reason}; padding-free batches attend per example")
    return Choice("sdpa", reason)


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
    """Activation memory of one step without checkpointing (see :data:`ACTIVATION_BYTES_PER_HIDDEN`)."""
    per_token = (
        model_config.num_hidden_layers * model_config.hidden_size * ACTIVATION_BYTES_PER_HIDDEN
        + model_config.vocab_size * LOGIT_BYTES_PER_VOCAB
    )
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


def weights_dtype(config: TrainConfig, precision: str) -> torch.dtype:
    """The dtype to load the model in.

    Trained weights are fp32 (master weights; bf16/fp16 run as autocast). A LoRA run in bf16 loads
    the frozen base in bf16: autocast casts those weights to bf16 for every matmul anyway, so the
    products are the same, while the model takes half the memory, and the casts and the fp32
    elementwise work between matmuls disappear. The adapter itself stays fp32 (PEFT upcasts it).
    """
    return torch.bfloat16 if config.method == "lora" and precision == "bf16" else torch.float32


def _adapter_base(adapter_dir: Path, config: TrainConfig, base_dir: Path) -> str:
    """The base model of an adapter: the one it records if that still exists locally, else config's."""
    recorded = json.loads((adapter_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if recorded and is_valid_model_dir(recorded):
        return recorded
    return resolve_base_model(base_dir, config)


def load_tokenizer(source: str, trust_remote_code: bool) -> Any:
    """The tokenizer saved with ``source``; a pad token is set if the model has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    source: str, config: TrainConfig, base_dir: Path, attention: str, precision: str = "fp32"
) -> tuple[Any, Any]:
    """Load the model and tokenizer to train, applying or continuing LoRA per ``config.method``.

    * a full model dir + ``lora``: a new adapter is created;
    * an adapter dir + ``lora``: the same adapter is loaded trainable, so training continues it;
    * an adapter dir + ``full``: the adapter is merged into its base and every weight trains;
    * a full model dir or hub id + ``full``: every weight trains.

    Master weights are fp32; bf16/fp16 run as autocast (see ``build_training_arguments``); a frozen
    LoRA base is loaded in bf16 when ``precision`` is bf16 (see :func:`weights_dtype`).

    Raises:
        ModelSourceError: ``source`` is a local directory that is not a valid model dir.
    """
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, set_seed

    from core.builders import build_lora_config

    if attention == SDPA_PACKED:
        register_packed_sdpa()
    kind = "full"
    if Path(source).exists():
        check = check_model_dir(source)
        if not check.ok:
            raise ModelSourceError(f"{source}: not a usable model directory: {check.reason}")
        kind = check.kind
    remote = config.trust_remote_code
    base_source = _adapter_base(Path(source), config, base_dir) if kind == "adapter" else source
    model = AutoModelForCausalLM.from_pretrained(
        base_source, dtype=weights_dtype(config, precision), attn_implementation=attention,
        trust_remote_code=remote,
    )
    tokenizer = load_tokenizer(source if kind == "full" or _has_tokenizer(source) else base_source, remote)
    if kind == "adapter":
        model = PeftModel.from_pretrained(model, source, is_trainable=config.method == "lora")
        if config.method == "full":
            model = model.merge_and_unload()
        logger.info("continuing adapter %s on base %s", source, base_source)
    elif config.method == "lora":
        set_seed(config.hyperparams.seed)  # the adapter init must not depend on earlier RNG use
        model = get_peft_model(model, build_lora_config(config))
        logger.info("new LoRA adapter (r=%d) on %s", config.lora.r, source)
    return model, tokenizer


def _has_tokenizer(path: str) -> bool:
    return any((Path(path) / name).exists() for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"))
