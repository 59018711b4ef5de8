"""Choosing and loading the model a training run continues from (machine-dependent choices: ``hardware``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from core.base.errors import UserError
from trainer.builders import build_lora_config
from trainer.config import TrainConfig
from trainer.model.attention import SDPA_PACKED, register_packed_sdpa
from trainer.model.model_dirs import check_model_dir, is_valid_model_dir

logger = logging.getLogger(__name__)

class ModelSourceError(UserError, ValueError):
    """The model to start from cannot be found or loaded."""


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


def resolve_model_source(current: Path, base_dir: Path, config: TrainConfig) -> str:
    """The model to continue from: ``current`` (the base dir's ``current_model``) when it is a valid
    model dir, else ``base_model``."""
    if is_valid_model_dir(current):
        return str(current.resolve())
    return resolve_base_model(base_dir, config)


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
