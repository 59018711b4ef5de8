"""Does ``hyperparams.max_length`` fit the model? Read from the model's ``config.json``, no weights loaded.

``trainctl config check``, ``trainctl validate`` and the daemon ask before anything trains, so a
``max_length`` above the model's positions is a config error naming the field, not a failed file.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.config import ConfigError, TrainConfig
from trainer.model.model_dirs import ADAPTER_CONFIG


def model_positions(source: str | Path) -> int | None:
    """``max_position_embeddings`` of a local model dir (of an adapter's recorded base), or None.

    None when it cannot be told without loading anything: a hub id, or a config without the field.
    """
    path = Path(source)
    config_file = path / "config.json"
    if not config_file.is_file() and (path / ADAPTER_CONFIG).is_file():
        base = _read_json(path / ADAPTER_CONFIG).get("base_model_name_or_path")
        config_file = Path(base) / "config.json" if base else config_file
    if not config_file.is_file():
        return None
    data = _read_json(config_file)
    limit = data.get("max_position_embeddings") or data.get("text_config", {}).get("max_position_embeddings")
    return limit if isinstance(limit, int) else None


def check_max_length(config: TrainConfig, source: str | Path, config_file: Path) -> None:
    """Raise unless ``hyperparams.max_length`` fits the positions of the model at ``source``.

    Raises:
        ConfigError: naming ``hyperparams.max_length``, the model's limit and what to set.
    """
    limit = model_positions(source)
    wanted = config.hyperparams.max_length
    if limit is not None and wanted > limit:
        problem = (
            f"hyperparams.max_length: {wanted} is more than the {limit} positions of the model "
            f"{source}; set hyperparams.max_length to at most {limit}"
        )
        raise ConfigError(config_file, [problem])


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
