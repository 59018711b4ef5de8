"""config.json: the schema (``schema.py``) and how it is read (``loader.py``)."""

from trainer.config.loader import (
    CONFIG_FILENAME,
    ConfigError,
    config_hash,
    config_to_dict,
    json_schema,
    load_config,
    parse_config,
)
from trainer.config.schema import TrainConfig

__all__ = [
    "CONFIG_FILENAME",
    "ConfigError",
    "TrainConfig",
    "config_hash",
    "config_to_dict",
    "json_schema",
    "load_config",
    "parse_config",
]
