"""A batch of rows that begin alike is measured with their common start run once, and the losses are
those of measuring each row whole, for every verified model family."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    DataCollatorWithFlattening,
    LlamaConfig,
    Phi3Config,
)

from tests.trainer.model.test_families import FAMILIES
from trainer import set_losses, shared_prefix
from trainer.model.attention import KERNEL_NAME, register_packed_sdpa
from trainer.model.label_logits import IGNORE_INDEX
from trainer.set_losses import measure_loss
from trainer.shared_prefix import MIN_SHARED_TOKENS, shared_prefix_length

PREFIX = 12
WINDOW = 16
"""Longer than the prefix (a prefix must fit in a window), shorter than the rows, so windows still cut."""


def _row(prefix: list[int], question: int, answer: int, generator: torch.Generator) -> dict[str, list[int]]:
    own = torch.randint(3, 128, (question + answer,), generator=generator).tolist()
    ids = prefix + own
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * (len(prefix) + question) + ids[len(prefix) + question:]}


def _rows() -> list[dict[str, list[int]]]:
    generator = torch.Generator().manual_seed(5)
    prefix = torch.randint(3, 128, (PREFIX,), generator=generator).tolist()
    other = prefix[:4] + torch.randint(3, 128, (PREFIX - 4,), generator=generator).tolist()
    shapes = [(3, 20), (6, 9), (1, 31), (4, 14), (2, 25)]
    return [_row(prefix, q, a, generator) for q, a in shapes] + [_row(other, q, a, generator) for q, a in shapes[:3]]


def _model(family: str, lora: bool):
    register_packed_sdpa()
    config = FAMILIES[family]()
    if getattr(config, "sliding_window", None):
        config.sliding_window = WINDOW
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=KERNEL_NAME)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.1)  # lora_B starts at 0: make the adapter count
    return model


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_rows_measured_after_a_shared_prefix_have_their_own_losses(family, lora, monkeypatch):
    model, rows = _model(family, lora), _rows()
    collator = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)
    prefixes = []
    real_cache = set_losses.prefix_cache
    monkeypatch.setattr(set_losses, "prefix_cache", lambda m, ids, *a: prefixes.append(len(ids)) or real_cache(m, ids, *a))
    shared = measure_loss(model, rows, collator, max_batch_tokens=150)
    assert prefixes and all(n >= MIN_SHARED_TOKENS for n in prefixes), "no batch ran a shared prefix"

    monkeypatch.setattr(set_losses, "shares_prefixes", lambda *a: False)
    whole = measure_loss(model, rows, collator, max_batch_tokens=150)
    assert [count for _, count in shared.per_row] == [count for _, count in whole.per_row]
    for (got, _), (want, _) in zip(shared.per_row, whole.per_row):
        assert got == pytest.approx(want, rel=1e-5)


def test_the_prefix_stops_before_the_first_logit_a_row_needs():
    rows = [{"input_ids": list(range(30)) + [40 + i], "labels": [IGNORE_INDEX] * 20 + list(range(20, 30)) + [40 + i]}
            for i in range(3)]
    assert shared_prefix_length(rows) == 19  # position 19 predicts label 20: the row's own logit
    rows[1]["labels"][15] = 15
    assert shared_prefix_length(rows) == 14
    assert shared_prefix_length(rows, limit=10) == 10
    assert shared_prefix_length(rows[:1]) == 0


def test_rows_that_share_little_run_whole():
    rows = [{"input_ids": [1, 2, 3, 4, 5] + [9] * 20, "labels": [IGNORE_INDEX] * 10 + [9] * 15},
            {"input_ids": [1, 2, 3, 4, 5] + [8] * 20, "labels": [IGNORE_INDEX] * 10 + [8] * 15}]
    assert MIN_SHARED_TOKENS > 5 and shared_prefix_length(rows) == 0


def test_rows_are_ordered_so_that_rows_beginning_alike_are_neighbours():
    features = [{"input_ids": [2, 1]}, {"input_ids": [1, 9]}, {"input_ids": [2, 0, 5]}, {"input_ids": [1, 3]}]
    assert shared_prefix.prefix_order(features) == [3, 1, 2, 0]


@pytest.mark.parametrize("family", ["llama", "gemma2", "qwen2"])
def test_in_bf16_the_losses_agree_to_its_rounding(family):
    model, rows = _model(family, lora=False).to(torch.bfloat16), _rows()
    collator = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)
    shared = measure_loss(model, rows, collator, precision="bf16", max_batch_tokens=150)
    whole = measure_loss(model, rows, collator, precision="bf16", max_batch_tokens=150, share_prefixes=False)
    assert shared.loss == pytest.approx(whole.loss, rel=2e-3)


def test_a_rotary_embedding_that_depends_on_the_forward_length_runs_rows_whole():
    collator = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)
    register_packed_sdpa()
    shape = {"vocab_size": 128, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 4,
                 "pad_token_id": 0}
    dynamic = LlamaConfig(**shape, rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    longrope = Phi3Config(**shape, original_max_position_embeddings=16, max_position_embeddings=64, rope_scaling={
        "rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [4.0] * 8})
    for config in (dynamic, longrope, FAMILIES["gemma3_text"]()):
        model = AutoModelForCausalLM.from_config(config, attn_implementation=KERNEL_NAME)
        assert shared_prefix.shares_prefixes(model, collator) == (config is not dynamic and config is not longrope)
