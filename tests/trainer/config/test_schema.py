"""config.json: defaults, error messages a user can act on, the exported schema, and `trainctl config`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli import main
from profiles import available_profiles
from trainer.config import (
    CONFIG_FILENAME,
    ConfigError,
    TrainConfig,
    config_to_dict,
    json_schema,
    load_config,
    parse_config,
)
from trainer.config.schema import StrictModel


def write_config(base_dir: Path, content: dict | str) -> Path:
    """Write ``content`` (a mapping, or raw text written verbatim) as ``base_dir/config.json``."""
    path = base_dir / CONFIG_FILENAME
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def problems_of(raw: dict) -> list[str]:
    """The problems ``parse_config`` reports for ``raw`` (fails the test if it reports none)."""
    with pytest.raises(ConfigError) as info:
        parse_config(raw, Path(CONFIG_FILENAME))
    return info.value.problems


def undocumented_properties(schema: dict) -> list[str]:
    """``section.field`` for every property of the schema or of its ``$defs`` without a description."""
    sections = {"(top level)": schema, **schema.get("$defs", {})}
    return [
        f"{section}.{name}"
        for section, definition in sections.items()
        for name, prop in definition.get("properties", {}).items()
        if not str(prop.get("description", "")).strip()
    ]


# --- defaults and a valid file ------------------------------------------------------------------


def test_empty_config_file_resolves_to_the_defaults(tmp_path):
    config = load_config(write_config(tmp_path, {}))

    assert config == TrainConfig()
    assert config.profile == "default"
    assert config.method == "lora"
    assert config.hyperparams.fp_precision == "auto"


def test_resolved_config_round_trips_through_config_json(tmp_path, tiny_config):
    resolved = config_to_dict(parse_config(tiny_config, Path(CONFIG_FILENAME)))

    reloaded = load_config(write_config(tmp_path, resolved))

    assert config_to_dict(reloaded) == resolved
    assert reloaded.hyperparams.batch_size == tiny_config["hyperparams"]["batch_size"]


def test_schema_key_is_accepted_for_editors():
    config = parse_config({"$schema": "./config.schema.json"}, Path(CONFIG_FILENAME))

    assert config.schema_ref == "./config.schema.json"
    assert "schema_ref" not in config_to_dict(config)


# --- problems name the key or path --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"hyperparam": {}}, "hyperparam: unknown key; did you mean 'hyperparams'?"),
        ({"methd": "full"}, "methd: unknown key; did you mean 'method'?"),
        ({"hyperparams": {"batchsize": 8}}, "hyperparams.batchsize: unknown key; did you mean 'batch_size'?"),
        ({"lora": {"alhpa": 8}}, "lora.alhpa: unknown key; did you mean 'alpha'?"),
    ],
)
def test_unknown_key_is_named_with_the_nearest_valid_one(raw, expected):
    assert problems_of(raw) == [expected]


def test_unknown_key_without_a_near_match_lists_the_valid_keys():
    [problem] = problems_of({"checkpoint": {"zzzz": 1}})

    assert problem.startswith("checkpoint.zzzz: unknown key; valid keys: ")
    for key in ("save_steps", "keep_last", "resume", "log_steps"):
        assert key in problem


@pytest.mark.parametrize(
    ("raw", "path", "detail"),
    [
        ({"hyperparams": {"batch_size": "four"}}, "hyperparams.batch_size", "integer"),
        ({"hyperparams": {"batch_size": 0}}, "hyperparams.batch_size", "greater than or equal to 1"),
        ({"hyperparams": {"learning_rate": 0}}, "hyperparams.learning_rate", "greater than 0"),
        ({"hyperparams": {"fp_precision": "fp8"}}, "hyperparams.fp_precision", "'bf16'"),
        ({"lora": {"dropout": 1.5}}, "lora.dropout", "less than 1"),
        ({"lora": {"target_modules": []}}, "lora.target_modules", "at least 1 item"),
        ({"eval": {"split_ratio": -0.1}}, "eval.split_ratio", "greater than or equal to 0"),
        ({"method": "qlora4"}, "method", "'lora', 'qlora' or 'full'"),
        ({"trust_remote_code": "maybe"}, "trust_remote_code", "boolean"),
    ],
)
def test_wrong_type_or_range_names_the_json_path(raw, path, detail):
    [problem] = problems_of(raw)

    assert problem.startswith(f"{path}: ")
    assert detail in problem


def test_every_problem_is_reported_together(tmp_path):
    path = write_config(
        tmp_path,
        {
            "hyperparams": {"batch_size": 0, "learnig_rate": 1e-4},
            "lora": {"r": "big"},
            "daemon": {"max_attempts": -1},
        },
    )

    with pytest.raises(ConfigError) as info:
        load_config(path)

    paths = sorted(problem.split(":")[0] for problem in info.value.problems)
    assert paths == ["daemon.max_attempts", "hyperparams.batch_size", "hyperparams.learnig_rate", "lora.r"]
    message = str(info.value)
    assert message.startswith(f"{path}: 4 problem(s):")
    for problem in info.value.problems:
        assert f"  - {problem}" in message


def test_invalid_json_reports_line_and_column(tmp_path):
    path = write_config(tmp_path, '{\n  "profile": "default",\n  "method": lora\n}\n')

    with pytest.raises(ConfigError) as info:
        load_config(path)

    [problem] = info.value.problems
    assert problem.startswith("line 3 column 13: invalid JSON")


def test_json_that_is_not_an_object_is_rejected(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, "[1, 2]"))

    assert info.value.problems == ["(top level): expected a JSON object"]


def test_missing_config_file_says_how_to_create_one(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / CONFIG_FILENAME)

    assert "trainctl init" in info.value.problems[0]


def test_unknown_profile_lists_the_known_ones():
    [problem] = problems_of({"profile": "no_such_profile"})

    assert problem.startswith("profile: unknown profile 'no_such_profile'")
    assert available_profiles()
    for name in available_profiles():
        assert name in problem


def test_eval_file_and_split_ratio_together_are_rejected():
    [problem] = problems_of({"eval": {"file": "eval.jsonl", "split_ratio": 0.1}})

    assert "eval.file" in problem and "eval.split_ratio" in problem
    assert parse_config({"eval": {"file": "eval.jsonl"}}, Path(CONFIG_FILENAME)).eval.file == "eval.jsonl"
    assert parse_config({"eval": {"split_ratio": 0.1}}, Path(CONFIG_FILENAME)).eval.split_ratio == 0.1


# --- the exported JSON Schema -------------------------------------------------------------------


def test_every_config_field_has_a_description_in_the_schema():
    schema = json_schema()
    section_names = {"LoraSettings", "Hyperparams", "DataSettings", "EvalSettings",
                     "CheckpointSettings", "DaemonSettings"}

    assert section_names <= set(schema["$defs"])
    assert undocumented_properties(schema) == []


def test_description_check_catches_an_undocumented_field():
    class Section(StrictModel):
        documented: int = 1
        """Has a docstring."""

        forgotten: int = 2

    class Config(StrictModel):
        section: Section = Section()
        """A nested section."""

    assert undocumented_properties(Config.model_json_schema()) == ["Section.forgotten"]


def test_schema_describes_the_fields_users_edit():
    schema = json_schema()
    hyperparams = schema["$defs"]["Hyperparams"]["properties"]

    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "$schema" in schema["properties"]
    assert schema["additionalProperties"] is False
    assert hyperparams["fp_precision"]["enum"] == ["auto", "bf16", "fp16", "fp32"]
    assert hyperparams["batch_size"]["minimum"] == 1


# --- trainctl config ----------------------------------------------------------------------------


def test_config_check_exits_2_and_prints_every_problem(tmp_path, capsys):
    write_config(tmp_path, {"hyperparams": {"batch_size": 0, "seeed": 1}, "profile": "nope"})

    code = main(["config", "check", "--base-dir", str(tmp_path)])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert "3 problem(s)" in captured.err
    assert "hyperparams.batch_size:" in captured.err
    assert "hyperparams.seeed: unknown key; did you mean 'seed'?" in captured.err
    assert "profile: unknown profile 'nope'" in captured.err


def test_config_check_on_invalid_json_exits_2(tmp_path, capsys):
    write_config(tmp_path, '{"method": "lora",}')

    assert main(["config", "check", "--base-dir", str(tmp_path)]) == 2
    assert "line 1 column 19: invalid JSON" in capsys.readouterr().err


def test_config_check_prints_the_resolved_config(tmp_path, capsys):
    write_config(tmp_path, {"hyperparams": {"batch_size": 8}, "method": "full"})

    code = main(["config", "check", "--base-dir", str(tmp_path)])

    resolved = json.loads(capsys.readouterr().out)
    assert code == 0
    assert resolved["hyperparams"]["batch_size"] == 8
    assert resolved["method"] == "full"
    assert resolved["lora"]["r"] == TrainConfig().lora.r  # defaults filled in
    assert resolved == config_to_dict(load_config(tmp_path / CONFIG_FILENAME))


def test_config_schema_writes_a_parseable_schema_file(tmp_path, capsys):
    target = tmp_path / "config.schema.json"

    code = main(["config", "schema", "-o", str(target)])

    assert code == 0
    assert str(target) in capsys.readouterr().out
    assert json.loads(target.read_text(encoding="utf-8")) == json_schema()
