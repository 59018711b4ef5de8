"""The ``--device`` choice: checked before any model loads, then turned into ``TrainingArguments``."""

from __future__ import annotations

from typing import Any

import torch

from core.base.errors import UserError

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def check_device(device: str) -> None:
    """Fail early when the asked-for accelerator is not there.

    Raises:
        UserError: ``device`` is unknown, or is ``cuda``/``mps`` on a machine without one.
    """
    if device not in DEVICES:
        raise UserError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: the Apple MPS backend is not available here; use --device cpu or auto")


def device_arguments(device: str) -> dict[str, Any]:
    """``TrainingArguments`` for ``device``: ``cpu`` forces the CPU even where a GPU exists,
    ``cuda``/``mps`` let HF place the model on that accelerator, ``auto`` keeps the builder's choice."""
    check_device(device)
    if device == "auto":
        return {}
    return {"use_cpu": device == "cpu"}
