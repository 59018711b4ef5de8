"""What a new user meets in the first hour: clear refusals, no tracebacks, retry, version and help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import main
from core.state.layout import init_base_dir
from tests.conftest import write_jsonl

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))


@pytest.fixture()
def base(tmp_path, tiny_config) -> Path:
    layout = init_base_dir(tmp_path / "mybase")
    layout.config_file.write_text(json.dumps(tiny_config), encoding="utf-8")
    return layout.root


@pytest.mark.parametrize(
    "command", [["status"], ["snapshots", "list"], ["config", "check"], ["validate", "x.jsonl"], ["retry", "x.jsonl"]]
)
def test_commands_outside_a_base_dir_say_so(tmp_path, capsys, command):
    assert main([*command, "--base-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} is not a base dir" in err and "--base-dir" in err


def test_a_string_where_a_number_belongs_is_an_error_naming_the_field(base, capsys):
    config = json.loads((base / "config.json").read_text())
    config["hyperparams"]["epochs"] = "3"
    (base / "config.json").write_text(json.dumps(config))

    assert main(["config", "check", "--base-dir", str(base)]) == 2
    assert "hyperparams.epochs" in capsys.readouterr().err


def test_max_length_above_the_model_positions_is_a_config_error_at_check_time(base, capsys):
    config = json.loads((base / "config.json").read_text())
    config["hyperparams"]["max_length"] = 100000
    (base / "config.json").write_text(json.dumps(config))
    data = write_jsonl(base / "data.jsonl", [{"text": "hello"}])

    for command in (["config", "check"], ["validate", str(data)]):
        assert main([*command, "--base-dir", str(base)]) == 2
        err = capsys.readouterr().err
        assert "hyperparams.max_length: 100000 is more than the 512 positions" in err
        assert "at most 512" in err


def test_no_traceback_on_a_closed_pipe(base):
    rows = [{"bad": i} for i in range(4000)]  # a report far larger than a pipe's buffer
    data = write_jsonl(base / "bad.jsonl", rows)
    done = subprocess.run(
        f"{TRAINCTL} --log-level WARNING validate {data} --base-dir {base} --json | head -1",
        shell=True, capture_output=True, text=True, timeout=120,
    )
    assert done.stdout == "{\n"
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr


def test_retry_moves_a_failed_file_back_and_drops_its_stale_report(base, capsys):
    failed = base / "queue" / "failed"
    write_jsonl(failed / "data.jsonl", [{"text": "hello"}])
    (failed / "data.jsonl.report.json").write_text('{"outcome": "failed"}')

    assert main(["retry", "data.jsonl", "--base-dir", str(base)]) == 0

    assert (base / "inbox" / "data.jsonl").exists()
    assert list(failed.iterdir()) == []
    assert main(["retry", "data.jsonl", "--base-dir", str(base)]) == 2
    assert "no failed file 'data.jsonl'" in capsys.readouterr().err


def test_version_and_help_describe_the_tool(capsys):
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0 and capsys.readouterr().out.startswith("trainctl ")
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "inbox" in text and "trainctl init mybase" in text
    assert "a few lines that call a module" not in text


def test_init_writes_a_config_that_points_editors_at_its_schema(tmp_path):
    assert main(["init", str(tmp_path / "fresh")]) == 0
    config = json.loads((tmp_path / "fresh" / "config.json").read_text())
    assert next(iter(config)) == "$schema"
    schema = json.loads((tmp_path / "fresh" / config["$schema"]).read_text())
    assert "hyperparams" in schema["properties"]
