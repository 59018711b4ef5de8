"""UltimateTrainer end to end on the tiny model: loss falls, weights change, output reloads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.runs.job import train_file
from core.train import TRAINING_INFO_FILENAME, UltimateTrainer
from tests.conftest import chat_rows, write_jsonl
from trainer.config import parse_config
from trainer.model.model_dirs import check_model_dir


def _config(tiny_config: dict, **hyperparams) -> object:
    raw = json.loads(json.dumps(tiny_config))
    raw["hyperparams"].update({"epochs": 4, **hyperparams})
    return parse_config(raw, Path("config.json"))


def _lora_weights(model) -> dict[str, torch.Tensor]:
    return {
        name.replace(".default", ""): param.detach().clone()
        for name, param in model.named_parameters()
        if "lora_" in name
    }


@pytest.fixture()
def data_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "chat.jsonl", chat_rows(16))


def test_lora_training_lowers_loss_changes_adapter_and_saves_valid_dir(tiny_config, data_file, tmp_path):
    config = _config(tiny_config)
    job = UltimateTrainer(
        config, data_file, base_dir=tmp_path, model_source=config.base_model, output_dir=tmp_path / "ckpt"
    )
    job.setup()
    before = _lora_weights(job.model)
    result = job.train()
    after = _lora_weights(job.model)

    assert result.steps == 16  # 16 examples / batch 4 * 4 epochs
    assert torch.isfinite(torch.tensor(result.last_loss))
    assert result.last_loss < result.first_loss
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert any("lora_B" in name for name in changed), "LoRA B matrices never moved"

    out = job.save(tmp_path / "out", result)
    check = check_model_dir(out)
    assert check.ok and check.kind == "adapter", check.reason
    assert {"adapter_config.json", "adapter_model.safetensors", TRAINING_INFO_FILENAME} <= {
        p.name for p in out.iterdir()
    }
    info = json.loads((out / TRAINING_INFO_FILENAME).read_text())
    assert info["profile"] == "default" and info["config"]["lora"]["r"] == 4


def test_training_on_an_adapter_continues_the_same_adapter(tiny_config, data_file, tmp_path):
    config = _config(tiny_config, epochs=1)
    first, adapter_dir = train_file(config, data_file, tmp_path, output=tmp_path / "first")
    saved = load_file(adapter_dir / "adapter_model.safetensors")

    job = UltimateTrainer(
        config, data_file, base_dir=tmp_path, model_source=adapter_dir, output_dir=tmp_path / "ckpt2"
    )
    job.setup()
    live = _lora_weights(job.model)
    assert set(live) == set(saved)
    for name, tensor in saved.items():
        assert torch.equal(live[name], tensor), f"{name} did not load the saved adapter"
    assert all(p.requires_grad for n, p in job.model.named_parameters() if "lora_" in n)
    job.train()
    moved = _lora_weights(job.model)
    assert any(not torch.equal(moved[n], saved[n]) for n in saved)


def test_full_fine_tune_writes_a_full_model_dir(tiny_config, data_file, tmp_path):
    raw = json.loads(json.dumps(tiny_config))
    raw["method"] = "full"
    raw["hyperparams"].update({"epochs": 2, "learning_rate": 1e-3})
    config = parse_config(raw, Path("config.json"))
    result, out = train_file(config, data_file, tmp_path, output=tmp_path / "full")
    check = check_model_dir(out)
    assert check.ok and check.kind == "full", check.reason
    assert result.last_loss < result.first_loss


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TB_AUTO": "0"}
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )


def test_cli_train_writes_valid_model_dir(tiny_config, data_file, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny_config))
    proc = _run_cli("train", str(data_file), "--base-dir", str(tmp_path), "--output", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert check_model_dir(tmp_path / "out").ok
    assert "model: " in proc.stdout
    run = json.loads((tmp_path / "runs" / "latest" / "run.json").read_text())
    assert run["status"] == "completed" and run["phase"] == "train"
    assert run["steps"] == 4 and run["final_loss"] is not None
    assert [Path(f["path"]).name for f in run["data_files"]] == ["chat.jsonl"]
    assert run["config"] == tiny_config
    assert (tmp_path / "runs" / "latest" / "train.log").stat().st_size > 0


def test_cli_train_refuses_bad_config_naming_every_problem(tiny_config, data_file, tmp_path):
    bad = json.loads(json.dumps(tiny_config))
    bad["hyperparams"]["learnig_rate"] = 0.1
    bad["hyperparams"]["batch_size"] = "four"
    bad["lora"]["r"] = 0
    (tmp_path / "config.json").write_text(json.dumps(bad))
    proc = _run_cli("train", str(data_file), "--base-dir", str(tmp_path), "--output", "out", cwd=tmp_path)
    assert proc.returncode == 2
    for needle in ("hyperparams.learnig_rate", "learning_rate", "hyperparams.batch_size", "lora.r"):
        assert needle in proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_train_reports_a_file_without_usable_rows(tiny_config, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny_config))
    bad = write_jsonl(tmp_path / "bad.jsonl", ["{not json", '{"messages": []}'])
    proc = _run_cli("train", str(bad), "--base-dir", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert "bad.jsonl" in proc.stderr and "no usable example" in proc.stderr


def test_new_adapter_init_follows_the_configured_seed(tiny_config, data_file, tmp_path):
    def initial_adapter(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed + 1000)  # unrelated RNG use before setup must not matter
        job = UltimateTrainer(
            _config(tiny_config, seed=seed), data_file, base_dir=tmp_path,
            model_source=tiny_config["base_model"], output_dir=tmp_path / f"ckpt{seed}",
        )
        job.setup()
        return _lora_weights(job.model)

    first, again, other = initial_adapter(0), initial_adapter(0), initial_adapter(1)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert any(not torch.equal(first[name], other[name]) for name in first)
