"""Shared fixtures: tiny local models, tokenizers and base dirs. Nothing is downloaded."""

from __future__ import annotations

import json
import random
import shutil
import tracemalloc
from pathlib import Path

import pytest

from tests.tiny_models import build_tiny_model_dir, build_tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A ChatML byte-level BPE tokenizer (~400 tokens)."""
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved 2-layer, hidden-64 Llama model directory. Treat as read-only."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def tiny_model_copy(tiny_model_dir, tmp_path) -> Path:
    """A private, writable copy of the tiny model directory."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def write_jsonl(path: Path, rows: list) -> Path:
    """Write rows (dicts, or raw strings written verbatim) as a JSONL file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def chat_rows(n: int, seed: int = 0) -> list[dict]:
    """``n`` small OpenAI-style chat rows with replies of varying length."""
    words = ["paris", "fox", "dog", "morning", "help", "capital", "answer", "quick"]
    rows = []
    for i in range(n):
        reply = " ".join(words[(i + seed + k) % len(words)] for k in range(2 + (i * 3) % 7))
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": f"Question {i}: say some words."},
                    {"role": "assistant", "content": reply},
                ]
            }
        )
    return rows


def garbage_rows(rows: list[dict], seed: int = 0) -> list[dict]:
    """The same chat questions with answers nobody could learn from: random symbols (the gate rejects them)."""
    rng = random.Random(seed)
    garbage = json.loads(json.dumps(rows))
    for row in garbage:
        row["messages"][-1]["content"] = "".join(rng.choice("0123456789+-*/=()[]{}") for _ in range(30))
    return garbage


TEXT_WORDS = ["paris", "fox", "dog", "morning", "help", "capital", "answer", "quick", "river", "stone"]


def text_file(path: Path, rows: int) -> Path:
    """``rows`` pretraining rows, every 100th bad, each line over 1 KiB.

    Text rows are cheap to tokenize, so the test measures what is held, not speed. The unused
    ``note`` key makes even the smaller file larger than the 1 MiB block files are hashed in, so
    that block is the same in both measurements.
    """
    rng = random.Random(rows)
    note = "n" * 1100
    with path.open("w", encoding="utf-8") as handle:
        for i in range(rows):
            words = " ".join(rng.choice(TEXT_WORDS) for _ in range(rng.randint(5, 40)))
            handle.write('{"text": 7}\n' if i % 100 == 99 else f'{{"text": "{words}", "note": "{note}"}}\n')
    return path


def peak_bytes(work) -> int:
    """The most memory Python objects took while ``work()`` ran (``tracemalloc``)."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture()
def tiny_config(tiny_model_dir) -> dict:
    """A config.json mapping for fast CPU tests on the tiny model."""
    return {
        "base_model": str(tiny_model_dir),
        "model_display_name": "tiny-test",
        "method": "lora",
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "hyperparams": {
            "fp_precision": "fp32",
            "max_length": 128,
            "batch_size": 4,
            "learning_rate": 5e-3,
            "epochs": 1,
            "warmup_ratio": 0.0,
            "lr_scheduler": "constant",
            "use_gradient_checkpointing": False,
            "seed": 0,
        },
        "checkpoint": {"save_steps": 1000, "log_steps": 1},
        "daemon": {"stable_seconds": 0.0},
        # a tiny random model learns no question-answer pairing in a few steps (core/child/pairing.py)
        "gate": {"min_answer_dependence": 0.0},
    }
