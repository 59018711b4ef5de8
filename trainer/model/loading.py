"""Loading the model a training run continues from (which one: ``source``; machine-dependent choices: ``hardware``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from trainer.builders import build_lora_config, build_quantization_config
from trainer.config import TrainConfig
from trainer.model.attention import SDPA_PACKED, register_packed_sdpa, transformers_name
from trainer.model.model_dirs import check_model_dir
from trainer.model.source import ModelSourceError, adapter_base_model

logger = logging.getLogger(__name__)


def weights_dtype(config: TrainConfig, precision: str) -> torch.dtype:
    """The dtype to load the model in.

    Trained weights are fp32 (master weights; bf16/fp16 run as autocast). A LoRA run in bf16 loads
    the frozen base in bf16: autocast casts those weights to bf16 for every matmul anyway, so the
    products are the same, while the model takes half the memory, and the casts and the fp32
    elementwise work between matmuls disappear. The adapter itself stays fp32 (PEFT upcasts it).
    """
    return torch.bfloat16 if config.adapter and precision == "bf16" else torch.float32


def load_model_config(source: str, config: TrainConfig, base_dir: Path) -> Any:
    """The transformers config of the model ``source`` trains (an adapter's base for an adapter dir).

    Read before loading, so that the attention kernel can be chosen for the architecture.

    Raises:
        ModelSourceError: ``source`` is a local directory that is not a valid model dir.
    """
    from transformers import AutoConfig

    base_source = source
    if Path(source).exists():
        check = check_model_dir(source)
        if not check.ok:
            raise ModelSourceError(f"{source}: not a usable model directory: {check.reason}")
        if check.kind == "adapter":
            base_source = adapter_base_model(Path(source), config, base_dir)
    return AutoConfig.from_pretrained(base_source, trust_remote_code=config.trust_remote_code)


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
    * ``qlora``: as ``lora``, on a base loaded in 4 bit (:func:`build_quantization_config`);
    * an adapter dir + ``lora``: the same adapter is loaded trainable, so training continues it;
    * an adapter dir + ``full``: the adapter is merged into its base and every weight trains;
    * a full model dir or hub id + ``full``: every weight trains.

    Master weights are fp32; bf16/fp16 run as autocast (see ``build_training_arguments``); a frozen
    LoRA base is loaded in bf16 when ``precision`` is bf16 (see :func:`weights_dtype`).

    Raises:
        ModelSourceError: ``source`` is a local directory that is not a valid model dir.
    """
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training
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
    base_source = adapter_base_model(Path(source), config, base_dir) if kind == "adapter" else source
    model = AutoModelForCausalLM.from_pretrained(
        base_source, dtype=weights_dtype(config, precision), attn_implementation=transformers_name(attention),
        trust_remote_code=remote, quantization_config=build_quantization_config(config, precision),
    )
    if config.method == "qlora":  # norms to fp32, inputs that carry gradients; the Trainer checkpoints
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    tokenizer = load_tokenizer(source if kind == "full" or _has_tokenizer(source) else base_source, remote)
    if kind == "adapter":
        model = PeftModel.from_pretrained(model, source, is_trainable=config.adapter)
        if config.method == "full":
            model = model.merge_and_unload()
        logger.info("continuing adapter %s on base %s", source, base_source)
    elif config.adapter:
        set_seed(config.hyperparams.seed)  # the adapter init must not depend on earlier RNG use
        _warn_unmatched_targets(model, config.lora.target_modules, source)
        model = get_peft_model(model, build_lora_config(config))
        logger.info("new LoRA adapter (r=%d) on %s", config.lora.r, source)
    return model, tokenizer


def _warn_unmatched_targets(model: Any, targets: list[str] | str, source: str) -> None:
    """PEFT only fails when no target matches; say which ones miss (Phi-3 fuses q/k/v into qkv_proj)."""
    if isinstance(targets, str):
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(name == t or name.endswith(f".{t}") for name in names)]
    if missing:
        logger.warning(
            "lora.target_modules %s match no layer of %s, so they get no adapter; use \"all-linear\" or the "
            "model's own layer names (docs/models.md)", missing, source,
        )


def _has_tokenizer(path: str) -> bool:
    return any((Path(path) / name).exists() for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"))
