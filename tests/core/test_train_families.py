"""``trainctl train`` end to end on tiny Mistral and Gemma 2 models with their chat templates: the attention
``auto`` picks implements the sliding window (and Gemma 2's soft-capping), and training completes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma2Config, MistralConfig

from tests.conftest import write_jsonl
from tests.trainer.data.chat_templates import GEMMA, family_tokenizer
from trainer.model.model_dirs import check_model_dir

SHAPE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=256)


def _model_dir(path: Path, family: str) -> Path:
    tokenizer = family_tokenizer("mistral-v0.3") if family == "mistral" else family_tokenizer("gemma3", GEMMA)
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    config = (MistralConfig(**SHAPE, **ids, sliding_window=8) if family == "mistral" else
              Gemma2Config(**SHAPE, **ids, head_dim=16, sliding_window=8, layer_types=["sliding_attention", "full_attention"]))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _rows() -> list[dict]:
    words = "the quick brown fox jumps over the lazy dog".split()
    return [
        {"messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"Question {i}: what is the capital of France?"},
            {"role": "assistant", "content": " ".join(words[(i + k) % len(words)] for k in range(12))},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "Answer the question briefly."},
        ]}
        for i in range(8)
    ]


@pytest.mark.parametrize("family", ["mistral", "gemma2"])
def test_cli_train_uses_packed_attention_with_the_window_and_finishes(family, tmp_path):
    config = {
        "base_model": str(_model_dir(tmp_path / "model", family)),
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        "hyperparams": {"fp_precision": "fp32", "max_length": 128, "batch_size": 4, "max_steps": 2,
                        "warmup_ratio": 0.0, "use_gradient_checkpointing": False},
        "eval": {"split_ratio": 0.0},
        "checkpoint": {"log_steps": 1},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    data = write_jsonl(tmp_path / "chat.jsonl", _rows())

    proc = subprocess.run(
        [sys.executable, "-m", "core.cli", "train", str(data), "--base-dir", str(tmp_path), "--output", "out"],
        cwd=tmp_path, env={**os.environ, "TB_AUTO": "0", "CUDA_VISIBLE_DEVICES": ""}, capture_output=True,
        text=True, timeout=300,
    )

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert check_model_dir(tmp_path / "out").ok
    assert "attention: sdpa_packed (flash_attn" in proc.stderr
    if family == "mistral":  # its template trains each reply of a conversation as its own sequence
        assert "8 conversations train one sequence per reply" in proc.stderr
