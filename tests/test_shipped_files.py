"""Files shipped at the repo root stay in step with the code: config.json, its schema, samples/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.config import config_to_dict, json_schema, load_config
from trainer.config.schema import TrainConfig
from trainer.data.formats import read_examples

REPO = Path(__file__).resolve().parents[1]
SAMPLE_FORMATS = ["chat", "alpaca", "sharegpt", "prompt_completion", "text"]


def test_root_config_holds_exactly_the_defaults():
    raw = json.loads((REPO / "config.json").read_text(encoding="utf-8"))
    assert raw["$schema"] == "config.schema.json"
    assert config_to_dict(load_config(REPO / "config.json")) == config_to_dict(TrainConfig()), (
        "config.json differs from the schema defaults; update config.json to the new defaults"
    )


def test_root_schema_is_current():
    shipped = json.loads((REPO / "config.schema.json").read_text(encoding="utf-8"))
    assert shipped == json_schema(), (
        "config.schema.json is stale; regenerate it with `trainctl config schema -o config.schema.json`"
    )


@pytest.mark.parametrize("name", SAMPLE_FORMATS)
def test_sample_file_reads_cleanly_in_its_format(name):
    parsed = read_examples(REPO / "samples" / f"{name}.jsonl")
    assert parsed.format == name
    assert parsed.errors == []
    assert len(parsed.examples) >= 10


def test_chat_sample_is_varied():
    examples = read_examples(REPO / "samples" / "chat.jsonl").examples
    replies = [m["content"] for ex in examples for m in ex["messages"] if m["role"] == "assistant"]
    assert len(examples) >= 40
    assert len(set(replies)) == len(replies)
    assert min(map(len, replies)) < 40 < 300 < max(map(len, replies))
    assert any(ex["messages"][0]["role"] == "system" for ex in examples)
    assert any(sum(m["role"] == "assistant" for m in ex["messages"]) > 1 for ex in examples)
