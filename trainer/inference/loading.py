"""Loading a trained model to generate with: a full model directory, or a LoRA adapter on its base.

An adapter is applied with PEFT and not merged, so the model generates exactly as it was trained
(merging folds the adapter into the base weights, which rounds them in the base's dtype).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.base.errors import UserError
from trainer.model.model_dirs import check_model_dir, is_valid_model_dir

logger = logging.getLogger(__name__)


class InferenceLoadError(UserError, ValueError):
    """The model directory or an adapter's base model cannot be loaded; the message says what to do."""


@dataclass
class LoadedModel:
    """A model ready to generate, with where it came from.

    Attributes:
        model: a ``PreTrainedModel``, or a ``PeftModel`` wrapping one for an adapter.
        tokenizer: the tokenizer saved with the model (or with its base).
        kind: ``"full"`` or ``"adapter"``.
        base: the base model directory of an adapter; None for a full model.
    """

    model: Any
    tokenizer: Any
    kind: str
    base: str | None


def load_trained(path: str | Path, base: str | None = None, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load the model or adapter at ``path`` for generation (eval mode, no gradients).

    Args:
        path: a full model directory or a PEFT adapter directory.
        base: the base model of an adapter (``trainer.model.loading.adapter_base_model``).
        dtype: dtype of the base weights (an adapter's own weights stay in the dtype PEFT picks).

    Raises:
        InferenceLoadError: ``path`` is not a complete model, or an adapter comes without its base.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    check = check_model_dir(path)
    if not check.ok:
        raise InferenceLoadError(f"{path}: not a usable model directory: {check.reason}")
    base = base if check.kind == "adapter" else None
    if check.kind == "adapter" and not (base and is_valid_model_dir(base)):
        raise InferenceLoadError(
            f"{path.name}: its base model {base!r} is not a complete model directory here; restore it "
            "(for the embedded model: `trainctl prepare-model`) or set base_model in config.json"
        )
    model = AutoModelForCausalLM.from_pretrained(base or path, dtype=dtype, trust_remote_code=False)
    tokenizer_dir = path if (path / "tokenizer_config.json").exists() else base
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False)
    if base is not None:
        model = PeftModel.from_pretrained(model, path)
        logger.info("loaded adapter %s on base %s", path, base)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, kind=check.kind, base=base)
