"""Merged export: the adapter folded into its base answers as the adapter on its base does."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.tiny_models import build_tiny_adapter_dir
from trainer.export.checks import Reference, compare, prompt_ids
from trainer.export.errors import ExportError
from trainer.export.merged import merge, native_dtype, save_merged
from trainer.inference.loading import load_trained


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return build_tiny_adapter_dir(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "adapter")


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits


def test_merged_model_saved_and_read_back_matches_adapter_on_base(adapter, tiny_model_dir, tmp_path):
    unmerged = load_trained(adapter, str(tiny_model_dir))
    ids = prompt_ids(unmerged.tokenizer)
    adapter_logits = _logits(unmerged.model, ids)
    assert not torch.allclose(adapter_logits, _logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ids))

    model, reference = merge(load_trained(adapter, str(tiny_model_dir)))
    result = save_merged(model, unmerged.tokenizer, reference, tmp_path, "f32")

    saved = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert not hasattr(saved, "peft_config")
    torch.testing.assert_close(_logits(saved, ids), adapter_logits, atol=1e-4, rtol=1e-4)
    assert result.relative_error <= 1e-4 and result.same_greedy_reply
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in tmp_path.iterdir()}
    im_end = unmerged.tokenizer.convert_tokens_to_ids("<|im_end|>")
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert im_end in generation["eos_token_id"]


def test_merged_export_in_bf16_is_saved_in_bf16_within_its_tolerance(adapter, tiny_model_dir, tmp_path):
    model, reference = merge(load_trained(adapter, str(tiny_model_dir)))
    result = save_merged(model, load_trained(adapter, str(tiny_model_dir)).tokenizer, reference, tmp_path, "bf16")
    assert native_dtype(tmp_path) == "bf16"
    assert 0 < result.relative_error <= result.tolerance


def test_compare_rejects_a_model_with_other_weights(adapter, tiny_model_dir, tmp_path):
    trained = load_trained(adapter, str(tiny_model_dir))
    reference = Reference.of(trained.model, trained.tokenizer)
    base_only = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(ExportError, match="the base model: logits differ"):
        compare(base_only, reference, 1e-2, "the base model")
