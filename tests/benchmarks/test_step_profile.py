"""The step profiler's dropout A/B: each variant trains as that ``lora.dropout`` would (PEFT's forward
with dropout, or dropout 0 folded), on the same adapter. The speeds themselves are never asserted."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig

from benchmarks import step_profile
from tests.conftest import chat_rows, write_jsonl
from trainer.model import block_attention
from trainer.model.lora_fold import foldable


def _lora_model() -> nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = get_peft_model(AutoModelForCausalLM.from_config(config),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter matter for the output
            nn.init.normal_(param, std=0.05)
    return model.train()


def _loss(model: nn.Module) -> float:
    ids = torch.arange(48).reshape(2, 24)
    return model(input_ids=ids, labels=ids).loss.item()


def test_dropout_variant_runs_peft_dropout_and_zero_variant_folds_to_the_same_adapter():
    model = _lora_model()
    with torch.no_grad():
        model.eval()
        reference = _loss(model)  # PEFT's forward without dropout
        model.train()

        step_profile.set_lora_dropout(model, 0.5)
        layers = [m for m in model.modules() if hasattr(m, "lora_dropout")]
        assert len(layers) == 4 and not any(hasattr(m, "_unfolded_forward") for m in layers)
        assert all(isinstance(m.lora_dropout["default"], nn.Dropout) and m.lora_dropout["default"].p == 0.5
                   for m in layers)
        assert _loss(model) != reference  # the masks reach the adapter's input

        step_profile.set_lora_dropout(model, 0.0)
        assert all(foldable(m) and hasattr(m, "_unfolded_forward") for m in layers)
        assert abs(_loss(model) - reference) < 1e-5


def test_ab_dropout_prints_both_variants_per_repeat(tmp_path, capsys, tiny_model_dir):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(24))

    step_profile.main(["--data", str(data), "--model", str(tiny_model_dir), "--batches", "3",
                       "--repeats", "2", "--ab-dropout", "0.05",
                       "--config", '{"lora": {"dropout": 0, "r": 4, "alpha": 8}, "hyperparams": {"max_length": 128}}'])

    lines = [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("repeat")]
    assert lines == ["repeat 1 dropout 0.05", "repeat 1 dropout 0, folded",
                     "repeat 2 dropout 0.05", "repeat 2 dropout 0, folded"]


def test_ab_attention_alternates_the_flash_kernel_and_block_attention_and_leaves_the_default(
    tmp_path, capsys, tiny_model_dir
):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(24))
    longest = block_attention.MAX_TOKENS

    step_profile.main(["--data", str(data), "--model", str(tiny_model_dir), "--batches", "3", "--repeats", "1",
                       "--ab-attention", "--config", '{"lora": {"r": 4, "alpha": 8}, "hyperparams": {"max_length": 128}}'])

    lines = [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("repeat")]
    assert lines == ["repeat 1 flash kernel", f"repeat 1 block attention up to {longest} tokens"]
    assert block_attention.MAX_TOKENS == longest
