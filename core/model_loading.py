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


def select_attention(setting: str, precision: str) -> Choice:
    """Resolve ``hyperparams.attn_implementation`` (``auto`` prefers flash_attention_2, then SDPA)."""
    if setting != "auto":
        return Choice(setting, "set in config.json")
    if importlib.util.find_spec("flash_attn") is None:
        return Choice("sdpa", "flash_attn not installed")
    if not torch.cuda.is_available():
        return Choice("sdpa", "flash_attn needs CUDA")
    if precision not in ("bf16", "fp16"):
        return Choice("sdpa", "flash_attn needs bf16/fp16")
    return Choice("flash_attention_2", "flash_attn installed, CUDA, half precision")


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
    source: str, config: TrainConfig, base_dir: Path, attention: str
) -> tuple[Any, Any]:
    """Load the model and tokenizer to train, applying or continuing LoRA per ``config.method``.

    * a full model dir + ``lora``: a new adapter is created;
    * an adapter dir + ``lora``: the same adapter is loaded trainable, so training continues it;
    * an adapter dir + ``full``: the adapter is merged into its base and every weight trains;
    * a full model dir or hub id + ``full``: every weight trains.

    Master weights are fp32; bf16/fp16 run as autocast (see ``build_training_arguments``).

    Raises:
        ModelSourceError: ``source`` is a local directory that is not a valid model dir.
    """
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, set_seed

    from core.builders import build_lora_config

    kind = "full"
    if Path(source).exists():
        check = check_model_dir(source)
        if not check.ok:
            raise ModelSourceError(f"{source}: not a usable model directory: {check.reason}")
        kind = check.kind
    remote = config.trust_remote_code
    base_source = _adapter_base(Path(source), config, base_dir) if kind == "adapter" else source
    model = AutoModelForCausalLM.from_pretrained(
        base_source, dtype=torch.float32, attn_implementation=attention, trust_remote_code=remote
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
