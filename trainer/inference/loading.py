"""Loading a trained model to generate with: a full model directory, or a LoRA adapter on its base.

An adapter is applied with PEFT and not merged, so the model generates exactly as it was trained
(merging folds the adapter into the base weights, which rounds them in the base's dtype). Weights
load in fp32: on CPU, decoding in bf16 measured 4x slower than fp32 (docs/performance.md, "Chat").
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace
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
        model: a ``PreTrainedModel``, or a ``PeftModel`` wrapping one once the adapter is attached.
        tokenizer: the tokenizer saved with the model (or with its base).
        kind: ``"full"`` or ``"adapter"``.
        base: the base model directory of an adapter; None for a full model.
        path: the model or adapter directory that was asked for.
    """

    model: Any
    tokenizer: Any
    kind: str
    base: str | None
    path: Path


def load_trained(path: str | Path, base: str | None = None, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load the model or adapter at ``path`` for generation (eval mode, no gradients).

    Args:
        path: a full model directory or a PEFT adapter directory.
        base: the base model of an adapter (``trainer.model.source.adapter_base_model``).
        dtype: dtype of the base weights (an adapter's own weights stay in the dtype PEFT picks).

    Raises:
        InferenceLoadError: ``path`` is not a complete model, or an adapter comes without its base.
    """
    return attach_adapter(load_base(path, base, dtype))


def load_base(path: str | Path, base: str | None = None, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """The first half of :func:`load_trained`: the full model, or an adapter's base without the adapter.

    Raises:
        InferenceLoadError: as :func:`load_trained`.
    """
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
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, kind=check.kind, base=base, path=path)


def attach_adapter(loaded: LoadedModel) -> LoadedModel:
    """The second half of :func:`load_trained`: an adapter applied (unmerged) to its loaded base."""
    if loaded.kind != "adapter":
        return loaded
    from peft import PeftModel

    model = PeftModel.from_pretrained(loaded.model, loaded.path)
    model.eval()
    logger.info("loaded adapter %s on base %s", loaded.path, loaded.base)
    return replace(loaded, model=model)


def generation_threads(cores: int | None = None, load: float | None = None) -> int:
    """How many CPU threads generation should use: the cores that other processes leave free.

    PyTorch starts one OpenMP thread per core, and each small operation of token-by-token decoding
    waits for all of them; a thread that finds no free core stalls every step. With the 1-minute
    load average at 8 on 2 cores, one thread decoded 4-8x faster than two (docs/performance.md).

    Args:
        cores: usable cores (default: this process's CPU affinity).
        load: other processes' demand (default: the 1-minute load average).
    """
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    load = load if load is not None else os.getloadavg()[0]
    return max(1, min(cores, math.floor(cores - load + 0.5)))
