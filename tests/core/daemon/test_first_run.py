"""The README's first flow on a fresh base dir: init, drop a file, ``daemon --once``, nothing else.

The embedded model is found in the models home (``TRAINCTL_HOME``; here a tiny model under the
embedded name), so the base dir gets no copy of it. The snapshot's README is a real model card, the
snapshot list shows the mean loss, and the adapter still loads after the base dir is moved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import chat_rows, write_jsonl
from tests.tiny_models import build_tiny_model_dir

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))


@pytest.fixture()
def env(tmp_path) -> dict:
    # The default config trains up to 1,024 tokens: the tiny model needs that many positions.
    build_tiny_model_dir(tmp_path / "home" / "models" / "SmolLM2-135M-Instruct", max_positions=1024)
    return {**os.environ, "TRAINCTL_HOME": str(tmp_path / "home"), "TB_AUTO": "0"}


def _trainctl(env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TRAINCTL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_init_drop_once_trains_and_promotes_with_no_other_step_and_no_model_copy(tmp_path, env):
    assert _trainctl(env, tmp_path, "init", "mybase").returncode == 0
    base = tmp_path / "mybase"
    # The one change to the defaults: the tiny random model learns no question-answer pairing, so the
    # gate's answer-dependence rule would (rightly) reject it; the embedded model passes it.
    config = json.loads((base / "config.json").read_text())
    config["gate"]["min_answer_dependence"] = 0.0
    (base / "config.json").write_text(json.dumps(config))
    write_jsonl(base / "inbox" / "data.jsonl", chat_rows(12))

    once = _trainctl(env, tmp_path, "daemon", "--base-dir", "mybase", "--once")

    assert once.returncode == 0, once.stderr[-3000:]
    assert once.stdout.strip().splitlines()[-1] == "trained 1, duplicate 0, invalid 0, failed 0"
    assert (base / "queue" / "done" / "data.jsonl").exists()
    snapshot = (base / "current_model").resolve()
    assert snapshot.parent == base / "snapshots"
    assert not list(base.rglob("model.safetensors")), "the base dir must hold no copy of the base model"
    assert (base / "logs" / "train-data.log").exists()

    card = (snapshot / "README.md").read_text(encoding="utf-8")
    manifest = json.loads((snapshot / "manifest.json").read_text())
    assert 'base_model: "SmolLM2-135M-Instruct"' in card and "library_name: peft" in card
    assert "`data.jsonl`" in card and f"{manifest['steps']}" in card
    assert f"mean {manifest['mean_loss']:.4f}" in card and "AutoModelForCausalLM.from_pretrained" in card

    listing = _trainctl(env, tmp_path, "snapshots", "list", "--base-dir", "mybase").stdout
    assert "MEAN LOSS" in listing and f"{manifest['mean_loss']:.4f}" in listing

    # Move the base dir: the adapter still loads by itself, and the daemon carries on there.
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    os.rename(base, moved)
    load = (
        "import sys; from transformers import AutoModelForCausalLM; "
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); print('adapter', m._hf_peft_config_loaded)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", load, str(moved / "current_model")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "adapter True" in loaded.stdout
    write_jsonl(moved / "inbox" / "more.jsonl", chat_rows(12, seed=5))
    again = _trainctl(env, tmp_path, "daemon", "--base-dir", str(moved), "--once")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (moved / "queue" / "done" / "more.jsonl").exists()
