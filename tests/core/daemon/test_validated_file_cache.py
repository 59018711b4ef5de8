"""The training child of a file the daemon validated loads its features instead of tokenizing again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import chat_rows, write_jsonl
from tests.tiny_models import build_tiny_model_dir

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))


def test_daemon_validation_tokenizes_once_and_the_child_loads_it(tmp_path):
    build_tiny_model_dir(tmp_path / "home" / "models" / "SmolLM2-135M-Instruct", max_positions=1024)
    env = {**os.environ, "TRAINCTL_HOME": str(tmp_path / "home"), "TB_AUTO": "0"}
    subprocess.run([TRAINCTL, "init", str(tmp_path / "base")], env=env, check=True, capture_output=True)
    base = tmp_path / "base"
    write_jsonl(base / "inbox" / "data.jsonl", chat_rows(12) + ["not json"])

    once = subprocess.run([TRAINCTL, "daemon", "--base-dir", str(base), "--once"], env=env,
                          capture_output=True, text=True, timeout=600)

    # Trained either way; whether the promotion gate keeps a tiny random model's result is not the point.
    assert "invalid 0, failed 0" in once.stdout, once.stderr[-3000:]
    assert any((base / "queue" / folder / "data.jsonl").exists() for folder in ("done", "rejected"))
    entries = [p for p in (base / "cache" / "tokenized").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1, entries  # a second key would mean the child tokenized with other inputs
    log = (base / "logs" / "train-data.log").read_text(encoding="utf-8")
    assert "loaded from cache" in log and "data.jsonl: 12 examples" in log
    assert "skipping line 13" in log


def test_a_large_file_is_tokenized_in_parts_and_the_child_trains_on_all_of_them(tmp_path):
    build_tiny_model_dir(tmp_path / "home" / "models" / "SmolLM2-135M-Instruct", max_positions=1024)
    env = {**os.environ, "TRAINCTL_HOME": str(tmp_path / "home"), "TB_AUTO": "0"}
    subprocess.run([TRAINCTL, "init", str(tmp_path / "base")], env=env, check=True, capture_output=True)
    base = tmp_path / "base"
    config = json.loads((base / "config.json").read_text())
    config["hyperparams"]["max_steps"] = 2
    config["data"]["tokenize_workers"] = 2
    (base / "config.json").write_text(json.dumps(config))
    write_jsonl(base / "inbox" / "data.jsonl", chat_rows(20_000) + ["not json"])

    once = subprocess.run([TRAINCTL, "daemon", "--base-dir", str(base), "--once"], env=env,
                          capture_output=True, text=True, timeout=600)

    assert "invalid 0, failed 0" in once.stdout, once.stderr[-3000:]
    daemon_log = (base / "logs" / "daemon.log").read_text(encoding="utf-8")
    assert "data.jsonl: tokenizing in 2 processes" in daemon_log and "failed (" not in daemon_log
    entries = [p for p in (base / "cache" / "tokenized").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and len(list(entries[0].glob("features-*.arrow"))) == 2
    log = (base / "logs" / "train-data.log").read_text(encoding="utf-8")
    assert "loaded from cache" in log and "data.jsonl: 20000 examples" in log
    assert "skipping line 20001" in log
