"""Machine-dependent choices (precision, attention) and where the model to continue from comes from."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

import trainer.model.hardware as hardware
from core.base.errors import UserError
from trainer.config import TrainConfig
from trainer.model.hardware import Choice, select_attention, select_precision
from trainer.model.source import ModelSourceError, resolve_model_source

CURRENT_MODEL_DIRNAME = "current_model"


@pytest.fixture()
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture()
def cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def fake_flash_attn_installed(monkeypatch, installed: bool) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "flash_attn":
            return importlib.machinery.ModuleSpec("flash_attn", None) if installed else None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


# --- precision ----------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["bf16", "fp32"])
def test_explicit_precision_passes_through(no_cuda, setting):
    assert select_precision(setting) == Choice(setting, "set in config.json")


def test_explicit_fp16_passes_through_with_cuda(cuda):
    assert select_precision("fp16") == Choice("fp16", "set in config.json")


def test_fp16_without_cuda_says_what_to_change_in_config_json(no_cuda):
    with pytest.raises(UserError, match="config.json") as info:
        select_precision("fp16")

    assert "hyperparams.fp_precision=fp16 needs a CUDA GPU" in str(info.value)


def test_auto_precision_on_cpu_with_bf16_support(no_cuda, monkeypatch):
    monkeypatch.setattr(hardware, "_cpu_runs_bf16", lambda: True)

    choice = select_precision("auto")

    assert choice.value == "bf16"
    assert "CPU" in choice.reason


def test_auto_precision_on_cpu_without_bf16_support(no_cuda, monkeypatch):
    monkeypatch.setattr(hardware, "_cpu_runs_bf16", lambda: False)

    assert select_precision("auto") == Choice("fp32", "no fast bf16 on this device")


def test_auto_precision_on_a_bf16_gpu(cuda, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(hardware, "_cpu_runs_bf16", lambda: False)

    assert select_precision("auto") == Choice("bf16", "CUDA device supports bf16")


def test_auto_precision_on_a_gpu_without_bf16(cuda, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    monkeypatch.setattr(hardware, "_cpu_runs_bf16", lambda: True)

    assert select_precision("auto").value == "fp32"


def test_auto_precision_on_this_machine_is_bf16_or_fp32():
    choice = select_precision("auto")

    assert choice.value in {"bf16", "fp32"}
    assert choice.reason


# --- attention ----------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["sdpa", "eager", "flash_attention_2"])
def test_explicit_attention_passes_through(setting):
    assert select_attention(setting, "fp32") == Choice(setting, "set in config.json")


def test_auto_attention_without_flash_attn_is_sdpa(cuda, monkeypatch):
    fake_flash_attn_installed(monkeypatch, installed=False)

    assert select_attention("auto", "bf16") == Choice("sdpa", "flash_attn not installed")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_auto_attention_with_flash_attn_cuda_and_half_precision(cuda, monkeypatch, precision):
    fake_flash_attn_installed(monkeypatch, installed=True)

    assert select_attention("auto", precision).value == "flash_attention_2"


def test_auto_attention_with_flash_attn_but_fp32_is_sdpa(cuda, monkeypatch):
    fake_flash_attn_installed(monkeypatch, installed=True)

    assert select_attention("auto", "fp32") == Choice("sdpa", "flash_attn needs bf16/fp16")


def test_auto_attention_with_flash_attn_but_no_cuda_is_sdpa(no_cuda, monkeypatch):
    fake_flash_attn_installed(monkeypatch, installed=True)

    assert select_attention("auto", "bf16") == Choice("sdpa", "flash_attn needs CUDA")


# --- model source -------------------------------------------------------------------------------


def test_valid_current_model_wins_over_base_model(tmp_path, tiny_model_dir):
    current = Path(shutil.copytree(tiny_model_dir, tmp_path / CURRENT_MODEL_DIRNAME))
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "base")

    source = resolve_model_source(tmp_path / CURRENT_MODEL_DIRNAME, tmp_path, TrainConfig(base_model="models/base"))

    assert source == str(current.resolve())


def test_invalid_current_model_falls_back_to_base_model(tmp_path, tiny_model_dir):
    current = tmp_path / CURRENT_MODEL_DIRNAME
    current.mkdir()
    (current / "config.json").write_text("{}")  # an interrupted copy: no weights, no tokenizer
    base = Path(shutil.copytree(tiny_model_dir, tmp_path / "models" / "base"))

    source = resolve_model_source(tmp_path / CURRENT_MODEL_DIRNAME, tmp_path, TrainConfig(base_model="models/base"))

    assert source == str(base.resolve())


def test_relative_base_model_is_resolved_from_the_base_dir(tmp_path, tiny_model_dir, monkeypatch):
    base = Path(shutil.copytree(tiny_model_dir, tmp_path / "base_dir" / "models" / "mine"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    source = resolve_model_source(tmp_path / "base_dir" / CURRENT_MODEL_DIRNAME, tmp_path / "base_dir", TrainConfig(base_model="models/mine"))

    assert source == str(base.resolve())


def test_absolute_base_model_is_used_as_is(tmp_path, tiny_model_dir):
    source = resolve_model_source(tmp_path / CURRENT_MODEL_DIRNAME, tmp_path, TrainConfig(base_model=str(tiny_model_dir)))

    assert source == str(tiny_model_dir.resolve())


def test_missing_default_model_says_to_run_prepare_model(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINCTL_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelSourceError) as info:
        resolve_model_source(tmp_path / CURRENT_MODEL_DIRNAME, tmp_path, TrainConfig())

    message = str(info.value)
    assert "trainctl prepare-model" in message
    assert TrainConfig().base_model in message
    assert str(tmp_path / "home" / "models" / "SmolLM2-135M-Instruct") in message


@pytest.mark.parametrize(
    "base_model", ["SmolLM2-135M-Instruct", "embedded:SmolLM2-135M-Instruct", "models/SmolLM2-135M-Instruct"]
)
def test_the_embedded_model_is_found_in_the_models_home_from_any_base_dir(tmp_path, tiny_model_dir, monkeypatch, base_model):
    prepared = shutil.copytree(tiny_model_dir, tmp_path / "home" / "models" / "SmolLM2-135M-Instruct")
    monkeypatch.setenv("TRAINCTL_HOME", str(tmp_path / "home"))
    base_dir = tmp_path / "mybase"
    base_dir.mkdir()

    source = resolve_model_source(base_dir / CURRENT_MODEL_DIRNAME, base_dir, TrainConfig(base_model=base_model))

    assert source == str(Path(prepared).resolve())


def test_a_legacy_base_dir_copy_of_the_embedded_model_is_still_used(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("TRAINCTL_HOME", str(tmp_path / "empty-home"))
    own = shutil.copytree(tiny_model_dir, tmp_path / "old" / "models" / "SmolLM2-135M-Instruct")

    source = resolve_model_source(
        tmp_path / "old" / CURRENT_MODEL_DIRNAME, tmp_path / "old", TrainConfig(base_model="models/SmolLM2-135M-Instruct")
    )

    assert source == str(Path(own).resolve())


@pytest.mark.parametrize("missing", ["./models/mine", "/nonexistent/model/dir"])
def test_missing_local_path_is_an_error_not_a_hub_id(tmp_path, missing):
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_model_source(tmp_path / CURRENT_MODEL_DIRNAME, tmp_path, TrainConfig(base_model=missing))


def test_hub_id_is_passed_through(tmp_path):
    source = resolve_model_source(tmp_path / CURRENT_MODEL_DIRNAME, tmp_path, TrainConfig(base_model="HuggingFaceTB/SmolLM2-135M-Instruct"))

    assert source == "HuggingFaceTB/SmolLM2-135M-Instruct"
