"""README.md stays true: every config field is documented, and the quick start names both scripts."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from trainer.config import TrainConfig

README = Path(__file__).resolve().parents[1] / "README.md"


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        if name == "schema_ref":
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += _field_paths(annotation, f"{prefix}{name}.")
        else:
            paths.append(prefix + name)
    return paths


def test_every_config_field_is_in_the_readme_config_table():
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## Configuration"):]
    documented = set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)*)`", table))
    missing = [path for path in _field_paths(TrainConfig) if path not in documented]
    assert not missing, f"document these config fields in README.md's Configuration table: {missing}"


def test_quick_start_names_the_two_scripts():
    quick = README.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "scripts/demo.sh" in quick and "scripts/test.sh" in quick


def test_readme_names_what_the_code_does_for_a_new_user():
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## Configuration"):]
    assert f"| `base_model` | `{TrainConfig().base_model}` |" in table
    assert "`DIR/logs/train-NAME.log` (`NAME` without `.jsonl`: `data.jsonl` logs to `train-data.log`)" in text
    assert "`trainctl retry NAME`" in text and "`trainctl --version`" in text and "$TRAINCTL_HOME" in text
    assert '"$schema": "config.schema.json"' in text
    assert "about a minute" not in text  # the demo takes minutes on two CPU cores
    assert "trained 3, duplicate 1, invalid 0, failed 1" in text
