"""May a checkpoint continue under this config and model? Shape changes refuse, other changes warn."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trainer.checkpoints.markers import MARKER_NAME, SHAPE_KEYS, checkpoint_problem, model_shape, read_marker
from trainer.config import ConfigError, TrainConfig, config_to_dict, parse_config

logger = logging.getLogger(__name__)

FSDP_MODEL_NAME = "pytorch_model_fsdp"  # accelerate's folder of model shards (accelerate.utils.constants)
# Config keys that change which parameters exist or their shapes.
SHAPE_CONFIG_KEYS = (
    "method", "lora.r", "lora.target_modules", "lora.use_dora", "lora.modules_to_save", "lora.use_rslora",
)
"""``lora.use_rslora`` changes no shape but the scale the saved weights were trained for."""
# Config keys that do not affect training, so a change is not worth a warning.
IGNORED_CONFIG_PREFIXES = ("model_display_name", "daemon.")


class ResumeError(ValueError):
    """A checkpoint cannot be resumed with the current model or config; the message says why."""


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _saved_config(checkpoint: Path, marker: dict | None) -> TrainConfig | None:
    """The config a checkpoint was trained with, from its marker."""
    if marker is None or not isinstance(marker.get("config"), dict):
        return None
    try:
        return parse_config(marker["config"], checkpoint / MARKER_NAME)
    except ConfigError as exc:
        logger.warning("cannot read the config saved in %s: %s", checkpoint, exc)
        return None


def checkpoint_world_size(checkpoint: Path) -> int:
    """Processes that wrote ``checkpoint``: HF saves one ``rng_state_<rank>.pth`` per process under several."""
    return len(list(Path(checkpoint).glob("rng_state_*.pth"))) or 1


def is_fsdp_sharded(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` holds FSDP shards (``pytorch_model_fsdp_0/``), not one whole state."""
    return any(p.is_dir() for p in Path(checkpoint).glob(f"{FSDP_MODEL_NAME}*"))


def check_world_size(checkpoint: Path, world_size: int) -> None:
    """DDP checkpoints resume on any number of processes; FSDP shards only on as many as wrote them.

    Raises:
        ResumeError: ``checkpoint`` is sharded by a different number of processes; names both.
    """
    saved = checkpoint_world_size(checkpoint)
    if is_fsdp_sharded(checkpoint) and saved != world_size:
        raise ResumeError(
            f"cannot resume from {checkpoint}: it holds FSDP shards written by {saved} processes and this "
            f"run has {world_size}; sharded state resumes only on the same number. Set distributed."
            f"nproc_per_node (times nnodes) back to {saved}, or start fresh with --no-resume"
        )


def check_resume_compatible(
    checkpoint: Path, config: TrainConfig, model_config: Any, world_size: int = 1
) -> list[str]:
    """Check that ``checkpoint`` can continue under ``config`` with a model of ``model_config``.

    Returns:
        One warning per setting that differs but does not block a resume (e.g. learning rate),
        each naming the key and both values.

    Raises:
        ResumeError: the checkpoint is incomplete, or a shape-critical setting (model dimensions,
            method, LoRA rank or target modules) differs, or FSDP shards were written by another
            number of processes (``world_size``: this run's). The message lists each difference.
    """
    checkpoint = Path(checkpoint)
    if (problem := checkpoint_problem(checkpoint)) is not None:
        raise ResumeError(
            f"cannot resume from {checkpoint}: {problem}; pick another checkpoint or pass --no-resume"
        )
    check_world_size(checkpoint, world_size)
    marker = read_marker(checkpoint)
    saved_shape = (marker or {}).get("model") or {}
    current_shape = model_shape(model_config)
    blocking = [
        f"model {key}: checkpoint {saved_shape[key]!r}, now {current_shape[key]!r}"
        for key in SHAPE_KEYS
        if key in saved_shape and saved_shape[key] != current_shape[key]
    ]
    saved = _saved_config(checkpoint, marker)
    if saved is None:
        warnings = [f"{checkpoint} records no config; settings could not be compared"]
        old, new = {}, {}
    else:
        warnings = []
        old, new = _flatten(config_to_dict(saved)), _flatten(config_to_dict(config))
    lora = config.adapter
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key) or key.startswith(IGNORED_CONFIG_PREFIXES):
            continue
        change = f"{key}: checkpoint {old.get(key)!r}, now {new.get(key)!r}"
        if key == "method" or (lora and key in SHAPE_CONFIG_KEYS):
            blocking.append(change)
        elif lora or not key.startswith("lora."):
            warnings.append(change)
    if blocking:
        raise ResumeError(
            f"cannot resume from {checkpoint}: parameter shapes would differ ("
            + "; ".join(blocking)
            + "). Restore those settings, or start fresh with --no-resume."
        )
    for warning in warnings:
        logger.warning("resuming from %s with a changed setting: %s", checkpoint, warning)
    return warnings
