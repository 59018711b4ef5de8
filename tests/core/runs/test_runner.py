"""``trainctl run`` on the tiny model: pretrain smoke, auto-resume, pipeline, missing data files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from transformers import TrainerCallback

import core.runs.job
from core.base.errors import UserError
from core.cli import main
from core.runs.phases import load_phase, mix_data
from core.runs.run import list_runs
from core.runs.runner import RunRequest, run_command
from tests.conftest import chat_rows, write_jsonl
from trainer.checkpoints.markers import CONFIG_COPY_NAME, complete_checkpoints
from trainer.model.model_dirs import check_model_dir

TEXT = ["The quick brown fox jumps over the lazy dog.", "The capital of France is Paris.",
        "Hello! How can I help you today?", "Translate to German: good morning. Guten Morgen."]


@pytest.fixture(autouse=True)
def no_tensorboard_server(monkeypatch):
    monkeypatch.setenv("TB_AUTO", "0")


def _training(tiny_config: dict, **hyperparams) -> dict:
    training = json.loads(json.dumps(tiny_config))
    training["hyperparams"].update(hyperparams)
    training["checkpoint"] = {"save_steps": 2, "keep_last": 1, "log_steps": 1}
    return training


def _write_config(base: Path, name: str, config: dict) -> Path:
    path = base / "configs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def base(tmp_path, tiny_config) -> Path:
    """A base dir with sample data and pretrain/sft/pipeline configs for the tiny model."""
    write_jsonl(tmp_path / "samples" / "text.jsonl", [{"text": t} for t in TEXT * 4])
    write_jsonl(tmp_path / "samples" / "chat.jsonl", chat_rows(12))
    write_jsonl(tmp_path / "samples" / "more_chat.jsonl", chat_rows(8, seed=3))
    _write_config(tmp_path, "pretrain.json", {
        "phase": "pretrain",
        "data": [{"path": "samples/text.jsonl", "weight": 1.0}],
        "training": _training(tiny_config, max_steps=4),
    })
    _write_config(tmp_path, "sft.json", {
        "phase": "sft",
        "data": [{"path": "samples/chat.jsonl", "weight": 0.5}, {"path": "samples/more_chat.jsonl"}],
        "training": _training(tiny_config, max_steps=4),
    })
    _write_config(tmp_path, "pipeline.json", {"phases": ["configs/pretrain.json", "configs/sft.json"]})
    return tmp_path


def test_missing_data_files_are_all_listed_before_any_model_loads(base, capsys):
    sft = json.loads((base / "configs" / "sft.json").read_text())
    sft["data"] = [{"path": "samples/gone.jsonl"}, {"path": "data/also-gone.jsonl", "weight": 2}]
    sft["training"]["base_model"] = "models/not-there"  # loading it would fail with another error
    _write_config(base, "sft.json", sft)
    (base / "samples" / "text.jsonl").unlink()

    code = main(["run", "--base-dir", str(base), "--phase", "pipeline", "--config", "configs/pipeline.json"])

    err = capsys.readouterr().err
    assert code == 2
    assert "3 data file(s) missing" in err
    for path in ("samples/text.jsonl", "samples/gone.jsonl", "data/also-gone.jsonl"):
        assert path in err
    assert '{"text": ...} rows' in err and "chat rows" in err
    assert "not-there" not in err
    assert not (base / "runs").exists()


def test_rows_of_the_wrong_kind_for_the_phase_are_refused(base):
    with pytest.raises(UserError, match=r"samples/text.jsonl: text rows in a sft phase; expected .*chat rows"):
        mix_data(load_phase(_write_config(base, "bad.json", {
            "phase": "sft", "data": [{"path": "samples/text.jsonl"}],
        })), base, base / "mixed.jsonl")


def test_pretrain_smoke_through_the_cli(base, capsys):
    code = main(["run", "--base-dir", str(base), "--phase", "pretrain", "--config", "configs/pretrain.json",
                 "--device", "cpu"])

    assert code == 0, capsys.readouterr().err
    run_dir = (base / "runs" / "latest").resolve()
    record = json.loads((run_dir / "run.json").read_text())
    assert (record["status"], record["phase"], record["steps"]) == ("completed", "pretrain", 4)
    assert math.isfinite(record["final_loss"])
    assert record["config"] == json.loads((base / "configs" / "pretrain.json").read_text())
    assert record["data_files"][0]["path"].endswith("samples/text.jsonl") and record["data_files"][0]["sha256"]
    assert check_model_dir(run_dir / "model").ok
    newest = complete_checkpoints(run_dir / "checkpoints")[-1]
    assert newest.name == "checkpoint-4"
    assert (newest / CONFIG_COPY_NAME).read_text() == (base / "configs" / "pretrain.json").read_text()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert "step 4/4 loss" in (run_dir / "train.log").read_text()


def test_resume_from_an_incomplete_checkpoint_is_refused_before_training(base, capsys):
    partial = base / "old" / "checkpoint-3"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"cut short")

    code = main(["run", "--base-dir", str(base), "--phase", "sft", "--config", "configs/sft.json",
                 "--resume", "old/checkpoint-3"])

    assert code == 2
    assert "--resume old/checkpoint-3: no readable trainctl_checkpoint.json" in capsys.readouterr().err
    assert not (base / "runs").exists()


class InterruptAt(TrainerCallback):
    """Ctrl-C arriving during step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            raise KeyboardInterrupt


def test_interrupted_run_continues_in_its_folder_from_the_latest_checkpoint(base, monkeypatch):
    request = RunRequest(base, device="cpu")
    config = base / "configs" / "pretrain.json"
    original = core.runs.job.build_run_callbacks
    monkeypatch.setattr(
        core.runs.job, "build_run_callbacks", lambda *a, **k: [*original(*a, **k), InterruptAt(4)]
    )
    with pytest.raises(KeyboardInterrupt):
        run_command("pretrain", config, request)
    [interrupted] = list_runs(base / "runs")
    assert interrupted.record["status"] == "interrupted"

    monkeypatch.setattr(core.runs.job, "build_run_callbacks", original)
    [resumed] = run_command("pretrain", config, request)

    assert resumed.id == interrupted.id and len(list_runs(base / "runs")) == 1
    assert (resumed.record["status"], resumed.record["steps"]) == ("completed", 4)
    assert resumed.record["resumes"][0]["from_checkpoint"].endswith("checkpoint-2")
    assert resumed.record["resume_warnings"] == [] and resumed.record["resumes"][0]["changed_data"] == []


def test_pipeline_trains_sft_from_pretrain_model_and_skips_finished_phases(base):
    request = RunRequest(base, device="cpu")
    pretrain, sft = run_command("pipeline", base / "configs" / "pipeline.json", request)

    assert (pretrain.record["phase"], sft.record["phase"]) == ("pretrain", "sft")
    assert sft.record["model_source"] == str(pretrain.model_dir)
    assert sft.record["resumed_from"] is None  # fresh optimizer: no checkpoint of pretrain is resumed
    assert sft.record["steps"] == 4 and sft.record["status"] == "completed"
    mixed = (sft.path / "data" / "train.jsonl").read_text().splitlines()
    assert len(mixed) == 12 // 2 + 8  # weight 0.5 takes half of chat.jsonl, weight 1 all of more_chat

    again = run_command("pipeline", base / "configs" / "pipeline.json", request)
    assert [r.id for r in again] == [pretrain.id, sft.id]
    assert len(list_runs(base / "runs")) == 2
