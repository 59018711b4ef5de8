"""Which model a training run or a chat starts from: ``base_model`` resolved to a folder or a hub id,
``current_model`` when it is valid, an adapter's base.

Only paths and small JSON files: no torch, so that commands which merely name a model (``trainctl
status``, the base dir's layout) do not load the libraries that load one (``trainer.model.loading``).
"""

from __future__ import annotations

import json
from pathlib import Path

from core.base.errors import UserError
from trainer.config import TrainConfig
from trainer.config.schema import DEFAULT_BASE_MODEL
from trainer.model.model_dirs import is_valid_model_dir
from trainer.model.models_home import EMBEDDED_PREFIX, HOME_ENV, home_model_name, models_home


class ModelSourceError(UserError, ValueError):
    """The model to start from cannot be found or loaded."""


def resolve_base_model(base_dir: Path, config: TrainConfig) -> str:
    """``config.base_model`` as a local path when one exists, else a hub id.

    A path is resolved from ``base_dir``; a name (``SmolLM2-135M-Instruct``,
    ``embedded:SmolLM2-135M-Instruct``, or the legacy ``models/SmolLM2-135M-Instruct`` when the base
    dir holds no such folder) from the models home (``trainer.model.models_home``).

    Raises:
        ModelSourceError: a local path or a prepared model that does not exist, with the fix.
    """
    name = config.base_model
    if not name.startswith(EMBEDDED_PREFIX):
        candidate = Path(name) if Path(name).is_absolute() else base_dir / name
        if candidate.exists():
            return str(candidate.resolve())
    home_name = home_model_name(name)
    if home_name is not None:
        prepared = models_home() / home_name
        if prepared.exists():
            return str(prepared.resolve())
        if home_name == DEFAULT_BASE_MODEL or name != home_name:
            raise ModelSourceError(
                f"base_model {name!r} is not prepared: {prepared} does not exist; run "
                "`trainctl prepare-model` (it converts the embedded model once, for every base dir), "
                f"set {HOME_ENV} to the folder that holds models/, or point base_model at a model directory"
            )
        return name
    if Path(name).is_absolute() or name.startswith("."):
        where = "" if Path(name).is_absolute() else f" under {base_dir}"
        raise ModelSourceError(
            f"base_model {name!r} does not exist{where}; point base_model at a model directory, "
            "or use `SmolLM2-135M-Instruct` for the embedded model (`trainctl prepare-model`)"
        )
    return name


def resolve_model_source(current: Path, base_dir: Path, config: TrainConfig) -> str:
    """The model to continue from: ``current`` (the base dir's ``current_model``) when it is a valid
    model dir, else ``base_model``."""
    if is_valid_model_dir(current):
        return str(current.resolve())
    return resolve_base_model(base_dir, config)


def adapter_base_model(adapter_dir: Path, config: TrainConfig, base_dir: Path) -> str:
    """The base model of an adapter: the one it records if that still exists locally, else config's."""
    recorded = json.loads((adapter_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if recorded and is_valid_model_dir(recorded):
        return recorded
    return resolve_base_model(base_dir, config)
