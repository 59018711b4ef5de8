"""The merged export: a LoRA adapter folded into its base, saved as a plain safetensors model.

vLLM, llama.cpp's converter and anything that reads Hugging Face models then load it without PEFT.
The merge is done in fp32 and checked against the unmerged adapter before anything is saved; the
saved model is read back and checked again in the precision it was saved in. ``eos_token_id`` in
``config.json`` and ``generation_config.json`` lists the chat template's end-of-turn token, so a
server stops where training taught the model to stop.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from trainer.export.checks import EXACT, TOLERANCES, CheckResult, Reference, check_same_tokens, compare
from trainer.inference.loading import LoadedModel
from trainer.inference.turns import stop_token_ids

logger = logging.getLogger(__name__)

TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
_NAMES = {dtype: name for name, dtype in TORCH_DTYPES.items()}


def native_dtype(model_dir: str | Path) -> str:
    """The precision a model directory was saved in (``bf16``, ``f16`` or ``f32``; f32 if unrecorded)."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    recorded = config.get("dtype") or config.get("torch_dtype") or "float32"
    return _NAMES.get(getattr(torch, str(recorded), torch.float32), "f32")


def merge(loaded: LoadedModel) -> tuple[Any, Reference]:
    """Fold an adapter into its base (a full model is returned as is), checked in fp32.

    Args:
        loaded: the trained model, loaded in fp32.

    Returns:
        The plain model and the reference the exports are checked against (the unmerged model's
        logits and greedy reply on the fixed prompt).

    Raises:
        ExportError: the merged model's logits differ from the adapter's.
    """
    reference = Reference.of(loaded.model, loaded.tokenizer)
    if loaded.kind != "adapter":
        return loaded.model, reference
    model = loaded.model.merge_and_unload()
    result = compare(model, reference, EXACT, "the merged model differs from the adapter on its base")
    logger.info("merged the adapter into its base: %s", result.summary())
    return model, reference


def save_merged(model: Any, tokenizer: Any, reference: Reference, out_dir: Path, dtype: str) -> CheckResult:
    """Save the merged model and tokenizer in ``dtype``, read them back and check them.

    Returns:
        How close the saved model is to the trained one.

    Raises:
        ExportError: the saved model is not the merged one rounded to ``dtype``, its tokenizer
            differs, or the rounding moved the logits more than ``dtype`` allows.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stops = stop_token_ids(tokenizer)
    _cast_parameters(model, TORCH_DTYPES[dtype])
    if stops:
        model.config.eos_token_id = stops if len(stops) > 1 else stops[0]
        model.generation_config.eos_token_id = stops
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    check_same_tokens(AutoTokenizer.from_pretrained(out_dir, trust_remote_code=False), reference, out_dir.name)
    _cast_parameters(model, torch.float32)
    intended = Reference.of(model, tokenizer)  # exactly the rounded weights, in fp32
    saved = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32, trust_remote_code=False)
    compare(saved, intended, EXACT, f"the model saved in {out_dir.name} is not the merged one")
    return compare(saved, reference, TOLERANCES[dtype], f"the merged model in {dtype} strays from the trained one")


def _cast_parameters(model: Any, dtype: torch.dtype) -> None:
    """Cast the weights only: buffers such as RoPE's ``inv_freq`` are not saved, and a loaded model
    recomputes them in fp32, so rounding them here would make the in-memory model differ from it."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.data = parameter.data.to(dtype)
