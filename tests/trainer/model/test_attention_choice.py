"""``auto`` attention picks a kernel that implements the model's attention, and says why."""

from __future__ import annotations

import pytest
import torch
from transformers import Gemma2Config, GptOssConfig, LlamaConfig

from core.base.errors import UserError
from trainer.builders import build_collator
from trainer.config import TrainConfig
from trainer.model.attention import SDPA_PACKED
from trainer.model.hardware import select_attention


@pytest.fixture(autouse=True)
def _cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_a_model_with_attention_sinks_is_not_given_the_packed_kernel():
    choice = select_attention("auto", "bf16", padding_free=True, model_config=GptOssConfig())

    assert choice.value == "eager"  # transformers has no SDPA path for gpt-oss's sinks
    assert "not verified for model type 'gpt_oss'" in choice.reason


def test_an_unverified_model_type_with_sdpa_support_gets_transformers_sdpa():
    config = LlamaConfig()
    config.model_type = "olmo"

    choice = select_attention("auto", "fp32", padding_free=True, model_config=config)

    assert choice.value == "sdpa" and "olmo" in choice.reason


def test_soft_capped_attention_without_packing_runs_eager_because_sdpa_cannot_soft_cap():
    choice = select_attention("auto", "fp32", padding_free=False, model_config=Gemma2Config())

    assert choice.value == "eager" and "soft-cap" in choice.reason
    assert select_attention("auto", "fp32", padding_free=True, model_config=Gemma2Config()).value == SDPA_PACKED


def test_sdpa_packed_set_by_hand_for_an_unverified_model_is_a_config_error():
    with pytest.raises(UserError, match="attn_implementation=sdpa_packed.*gpt_oss.*set it to auto"):
        select_attention("sdpa_packed", "fp32", padding_free=True, model_config=GptOssConfig())


def _flatten(attention: str) -> dict:
    collator = build_collator(TrainConfig(), tokenizer=None, attention=attention)
    return collator([{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}])


def test_flash_attention_gets_the_example_boundaries_as_varlen_arguments():
    batch = _flatten("flash_attention_2")

    assert batch["cu_seq_lens_q"].tolist() == batch["cu_seq_lens_k"].tolist() == [0, 3, 5]
    assert batch["max_length_q"] == batch["max_length_k"] == 3
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]


def test_sdpa_kernels_read_the_boundaries_from_the_position_ids_alone():
    batch = _flatten(SDPA_PACKED)

    assert "cu_seq_lens_q" not in batch
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
