"""The base dir layout and ``trainctl init``."""

from __future__ import annotations

import json

from core.cli import main
from core.state.layout import BaseDir, init_base_dir
from trainer.config import TrainConfig, config_to_dict, load_config

EXPECTED_FOLDERS = {
    "inbox",
    "inbox/high",
    "inbox/low",
    "queue",
    "queue/processing",
    "queue/done",
    "queue/failed",
    "queue/rejected",
    "eval",
    "snapshots",
    "status",
    "logs",
    "runs",
}


def _tree(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_paths_are_named_under_root(tmp_path):
    base = BaseDir.at(tmp_path)
    assert base.status_file == tmp_path / "status" / "training_status.json"
    assert base.lock_file == tmp_path / "status" / "daemon.lock"
    assert base.processing == tmp_path / "queue" / "processing"
    assert base.inbox_high == tmp_path / "inbox" / "high"
    assert base.current_model == tmp_path / "current_model"
    assert not any(tmp_path.iterdir()), "naming paths must not create anything"


def test_init_creates_exactly_the_layout_and_a_loadable_default_config(tmp_path):
    base = init_base_dir(tmp_path / "base")
    assert _tree(base.root) == EXPECTED_FOLDERS | {"config.json", "config.schema.json", "status/http_token"}
    assert base.http_token_file.stat().st_mode & 0o777 == 0o600
    assert not base.current_model.exists()
    assert config_to_dict(load_config(base.config_file)) == config_to_dict(TrainConfig())


def test_init_never_overwrites_config(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"model_display_name": "mine"}\n', encoding="utf-8")
    init_base_dir(tmp_path)
    assert json.loads(config.read_text(encoding="utf-8")) == {"model_display_name": "mine"}


def test_cli_init_takes_dir_or_base_dir(tmp_path, capsys):
    assert main(["init", str(tmp_path / "a")]) == 0
    assert main(["init", "--base-dir", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "config.json").is_file()
    assert (tmp_path / "b" / "queue" / "failed").is_dir()
    assert str(tmp_path / "a") in capsys.readouterr().out
