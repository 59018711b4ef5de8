"""``method: qlora`` on a machine without CUDA is refused at start, before any file is claimed."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from core.cli import main
from core.daemon.loop import Outcome, TrainingDaemon
from core.state.events import EventLog
from core.state.layout import init_base_dir
from core.state.status import StatusFile
from tests.conftest import chat_rows, write_jsonl
from trainer.model.hardware import qlora_problem


@pytest.fixture()
def qlora_base(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setenv("TB_AUTO", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    layout = init_base_dir(tmp_path / "base")
    layout.config_file.write_text(json.dumps({**tiny_config, "method": "qlora"}), encoding="utf-8")
    return layout


def test_the_daemon_refuses_qlora_without_cuda_and_leaves_the_inbox_alone(qlora_base):
    dropped = write_jsonl(qlora_base.inbox / "a.jsonl", chat_rows(4))

    assert TrainingDaemon(qlora_base.root).run_once() == Outcome.CONFIG_REJECTED

    assert dropped.exists() and not any(qlora_base.processing.iterdir())
    error = StatusFile(qlora_base.status_file).read().last_error
    assert "method=qlora" in error and "needs a CUDA GPU" in error and "set method to lora" in error
    [event] = [e for e in EventLog(qlora_base.events_file).read() if e["type"] == "config_rejected"]
    assert "bitsandbytes" in event["problems"][0]


def test_trainctl_train_with_qlora_without_cuda_is_a_clear_error(qlora_base, tmp_path, capsys):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(4))

    assert main(["train", str(data), "--base-dir", str(qlora_base.root)]) == 2

    assert "method=qlora" in capsys.readouterr().err


def test_qlora_on_cuda_without_bitsandbytes_says_what_to_install(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else find_spec(name, *a))

    assert "pip install bitsandbytes" in qlora_problem("qlora")
    assert qlora_problem("lora") is None
