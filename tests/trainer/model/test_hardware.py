"""Fast-path choices: checkpointing by memory, Liger/compile only where they run, bf16 LoRA base,
fused AdamW on CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig

from core.train import UltimateTrainer
from tests.conftest import chat_rows, write_jsonl
from trainer.builders import build_training_arguments
from trainer.config import TrainConfig, parse_config
from trainer.model.hardware import (
    Choice,
    estimate_activation_bytes,
    select_gradient_checkpointing,
    select_liger,
    select_torch_compile,
)
from trainer.model.loading import load_model

SMOLLM2 = LlamaConfig(
    num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3, vocab_size=49152
)
GIB = 2**30


@pytest.fixture()
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize(("setting", "value"), [(True, "on"), (False, "off")])
def test_explicit_checkpointing_passes_through(setting, value):
    assert select_gradient_checkpointing(setting, SMOLLM2, 2048, free_bytes=0) == Choice(value, "set in config.json")


def test_auto_checkpointing_is_off_when_activations_fit_easily():
    assert estimate_activation_bytes(SMOLLM2, 2048) < 3 * GIB
    assert select_gradient_checkpointing("auto", SMOLLM2, 2048, free_bytes=20 * GIB).value == "off"


def test_auto_checkpointing_is_on_when_memory_is_short():
    choice = select_gradient_checkpointing("auto", SMOLLM2, 2048, free_bytes=4 * GIB)

    assert choice.value == "on"
    assert "2048-token step" in choice.reason and "4.0 GiB free" in choice.reason


def test_liger_is_off_without_the_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "liger_kernel" else real(name, *a))

    assert select_liger(True) == Choice("off", "liger-kernel is not installed")
    assert select_liger(False).value == "off"


def test_liger_and_compile_are_off_on_cpu_and_training_arguments_follow(no_cuda, tmp_path, monkeypatch, caplog):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "liger_kernel" else real(name, *a))
    config = TrainConfig.model_validate({"hyperparams": {"use_liger": True, "torch_compile": True}})

    with caplog.at_level("INFO", logger="trainer.builders"):
        args = build_training_arguments(config, tmp_path, "bf16")

    assert select_liger(True).value == select_torch_compile(True).value == "off"
    assert args.use_liger_kernel is False and args.torch_compile is False
    assert "hyperparams.use_liger ignored" in caplog.text and "hyperparams.torch_compile ignored" in caplog.text


def test_lora_in_bf16_loads_the_frozen_base_in_bf16_and_keeps_the_adapter_fp32(tiny_config, tmp_path):
    config = parse_config(tiny_config, Path("config.json"))

    model, _ = load_model(str(config.base_model), config, tmp_path, "sdpa", "bf16")

    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}
    full, _ = load_model(str(config.base_model), config.model_copy(update={"method": "full"}), tmp_path, "sdpa", "bf16")
    assert {p.dtype for p in full.parameters()} == {torch.float32}


def test_bf16_lora_trains_and_the_optimizer_is_fused_adamw_on_cpu(tiny_config, tmp_path):
    raw = json.loads(json.dumps(tiny_config))
    raw["hyperparams"].update({"fp_precision": "bf16", "max_steps": 3})
    config = parse_config(raw, Path("config.json"))
    data_file = write_jsonl(tmp_path / "chat.jsonl", chat_rows(12))
    job = UltimateTrainer(config, data_file, base_dir=tmp_path, model_source=config.base_model,
                          output_dir=tmp_path / "ckpt")
    job.setup()
    before = {n: p.detach().clone() for n, p in job.model.named_parameters() if "lora_B" in n}

    result = job.train()

    assert job.trainer.optimizer.defaults.get("fused") is True
    assert torch.isfinite(torch.tensor(result.last_loss))
    assert any(not torch.equal(p, before[n]) for n, p in job.model.named_parameters() if n in before)
