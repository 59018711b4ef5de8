"""Reading ``config.json``: parse, validate, and report every problem at once with its JSON path."""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from core.base.errors import UserError
from trainer.config.schema import TrainConfig

CONFIG_FILENAME = "config.json"
M = TypeVar("M", bound=BaseModel)


class ConfigError(UserError, ValueError):
    """``config.json`` is unreadable or invalid. ``problems`` lists each one, path first."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        listing = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"{path}: {len(problems)} problem(s):\n{listing}")


def _section_model(loc: tuple, root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model that owns the field at ``loc`` (a tuple of keys), if any."""
    model: type[BaseModel] = root
    for key in loc[:-1]:
        if isinstance(key, int):  # an item of a list: its model is the list's item type
            continue
        field = model.model_fields.get(key)
        annotation = field.annotation if field else None
        item = getattr(annotation, "__args__", (None,))[0] if getattr(annotation, "__origin__", None) is list else None
        annotation = item or annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _describe(error: dict, root: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    path = ".".join(str(part) for part in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        owner = _section_model(loc, root)
        known = [f.alias or name for name, f in owner.model_fields.items()] if owner else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(known)}"
        return f"{path}: unknown key{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] in {"missing"} or "input" not in error:
        return f"{path}: {message}"
    return f"{path}: {message} (got {json.dumps(error['input'], default=str)[:80]})"


def validate_model(model: type[M], raw: object, path: Path) -> M:
    """Validate parsed JSON against ``model``; raise ``ConfigError`` listing every problem with its path."""
    if not isinstance(raw, dict):
        raise ConfigError(path, ["(top level): expected a JSON object"])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(path, [_describe(err, model) for err in exc.errors()]) from None


def parse_config(raw: dict, path: Path) -> TrainConfig:
    """Validate an already-parsed config mapping; raise ``ConfigError`` listing every problem."""
    return validate_model(TrainConfig, raw, path)


def read_json_file(path: str | Path, missing: str) -> tuple[str, object]:
    """A JSON config file's text and parsed content.

    Args:
        path: the file.
        missing: what to tell the user when the file does not exist.

    Raises:
        ConfigError: the file is missing, not UTF-8, or not JSON (with line and column).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, [f"file not found; {missing}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    try:
        return text, json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(path, [f"line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"]) from None


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate ``config.json``.

    Raises:
        ConfigError: the file is missing, not JSON, or breaks the schema. Every problem is listed.
    """
    _, raw = read_json_file(path, "create one with `trainctl init`")
    return parse_config(raw, Path(path))


def config_to_dict(config: TrainConfig) -> dict:
    """The resolved config as plain JSON data (defaults filled in, ``$schema`` left out)."""
    return config.model_dump(mode="json", exclude={"schema_ref"})


def config_hash(config: TrainConfig) -> str:
    """A stable SHA-256 of the resolved config, used to tell runs and snapshots apart."""
    canonical = json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def json_schema() -> dict:
    """The JSON Schema of config.json, with every field's description."""
    schema = TrainConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "trainctl config.json"
    return schema
