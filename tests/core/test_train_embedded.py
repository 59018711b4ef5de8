"""`trainctl train` on the embedded SmolLM2-135M-Instruct: the product's own default model.

The model is prepared by ``scripts/test.sh`` (``trainctl prepare-model``); the fixture prepares it
if a developer runs pytest directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.train import UltimateTrainer
from tests.conftest import write_jsonl
from trainer.config import parse_config
from trainer.model.embedded import prepare_model
from trainer.model.model_dirs import check_model_dir

REPO_ROOT = Path(__file__).resolve().parents[2]

REPLIES = [
    "Paris is the capital of France.",
    "Water boils at 100 degrees Celsius at sea level.",
    "A triangle has three sides.",
    "The Pacific is the largest ocean on Earth.",
]


@pytest.fixture(scope="module")
def embedded_model() -> Path:
    return prepare_model()


@pytest.fixture()
def base_dir(tmp_path, embedded_model) -> Path:
    config = {
        "base_model": str(embedded_model),
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "hyperparams": {
            "max_length": 128, "batch_size": 4, "learning_rate": 2e-3, "epochs": 3,
            "warmup_ratio": 0.0, "lr_scheduler": "constant", "use_gradient_checkpointing": False,
        },
        "checkpoint": {"save_steps": 1000, "log_steps": 1},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    rows = [
        {"messages": [{"role": "user", "content": f"Tell me fact number {i}."},
                      {"role": "assistant", "content": REPLIES[i % len(REPLIES)]}]}
        for i in range(8)
    ]
    write_jsonl(tmp_path / "facts.jsonl", rows)
    return tmp_path


def test_trainctl_train_on_embedded_model_learns_and_continues_adapter(base_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "core.cli", "train", str(base_dir / "facts.jsonl"),
         "--base-dir", str(base_dir), "--output", str(base_dir / "out")],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TB_AUTO": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = base_dir / "out"
    check = check_model_dir(out)
    assert check.ok and check.kind == "adapter", check.reason

    info = json.loads((out / "trainctl_training.json").read_text())["result"]
    assert info["steps"] == 6
    assert info["last_loss"] < info["first_loss"]
    saved = load_file(out / "adapter_model.safetensors")
    assert any(torch.count_nonzero(t) > 0 for n, t in saved.items() if "lora_B" in n), "adapter never moved"

    config = parse_config(json.loads((base_dir / "config.json").read_text()), base_dir / "config.json")
    job = UltimateTrainer(
        config, base_dir / "facts.jsonl", base_dir=base_dir, model_source=out, output_dir=base_dir / "ckpt"
    )
    job.setup()
    live = {n.replace(".default", ""): p for n, p in job.model.named_parameters() if "lora_" in n}
    assert set(live) == set(saved)
    assert all(torch.equal(live[n].detach(), saved[n]) and live[n].requires_grad for n in saved)
