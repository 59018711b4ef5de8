"""The attention ``auto`` picks is right for each model family, checked against the family's own eager attention.

Each test builds a tiny random model of one family from its transformers config class, with
sliding windows much shorter than the examples and soft-capping where the family has it, and
compares one padding-free batch under the selected kernel with the same examples run one by one
(no packing) under transformers' eager attention: the loss and every gradient must agree.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    DataCollatorWithFlattening,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)

import trainer.model.attention as attention
from trainer.model.attention import KERNEL_NAME, SDPA_PACKED, register_packed_sdpa
from trainer.model.hardware import select_attention

WINDOW = 8
LENGTHS = [27, 9, 40]
"""Three examples, two longer than the window."""
SHAPE = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.2, pad_token_id=0,
    bos_token_id=1, eos_token_id=2,
)
"""A large init range makes attention peaked, so a wrong window or missing soft-cap shows in the loss."""

FAMILIES = {
    "llama": lambda: LlamaConfig(**SHAPE),
    "qwen2": lambda: Qwen2Config(**SHAPE, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
    "qwen3": lambda: Qwen3Config(
        **SHAPE, head_dim=16, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1
    ),
    "mistral": lambda: MistralConfig(**SHAPE, sliding_window=WINDOW),
    "phi3": lambda: Phi3Config(**SHAPE, sliding_window=WINDOW, original_max_position_embeddings=128),
    "gemma": lambda: GemmaConfig(**SHAPE, head_dim=16),
    "gemma2": lambda: Gemma2Config(
        **SHAPE, head_dim=16, sliding_window=WINDOW, attn_logit_softcapping=2.0, final_logit_softcapping=5.0,
        query_pre_attn_scalar=24, layer_types=["sliding_attention", "full_attention"],
    ),
    "gemma3_text": lambda: Gemma3TextConfig(
        **SHAPE, head_dim=16, sliding_window=WINDOW, final_logit_softcapping=5.0, query_pre_attn_scalar=24,
        layer_types=["sliding_attention", "full_attention"],
    ),
}


def _examples() -> list[dict[str, list[int]]]:
    generator = torch.Generator().manual_seed(3)
    examples = [{"input_ids": torch.randint(1, 128, (n,), generator=generator).tolist()} for n in LENGTHS]
    for example in examples:
        example["labels"] = list(example["input_ids"])
    return examples


def _model(family: str, attn: str, dtype: torch.dtype, lora: bool, checkpointing: bool):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(FAMILIES[family](), attn_implementation=attn)
    if lora:  # the frozen base in bf16 under bf16, as trainer/model/loading.py loads it
        model = get_peft_model(model.to(dtype), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                torch.nn.init.normal_(parameter, std=0.1)  # lora_B starts at 0: give it gradients to compare
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model.train()


def _autocast(dtype: torch.dtype):
    return torch.autocast("cpu", dtype=dtype) if dtype == torch.bfloat16 else contextlib.nullcontext()


def _grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.float() for name, p in model.named_parameters() if p.grad is not None}


def packed_loss_and_grads(family: str, attn: str, dtype: torch.dtype, lora: bool, checkpointing: bool):
    """One padding-free batch of all examples."""
    model = _model(family, attn, dtype, lora, checkpointing)
    batch = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)(_examples())
    with _autocast(dtype):
        loss = model(**batch, use_cache=False).loss
    loss.backward()
    return loss.item(), _grads(model)


def one_by_one_loss_and_grads(family: str, dtype: torch.dtype, lora: bool, checkpointing: bool):
    """Each example alone under eager attention; the loss is the mean over all labelled tokens."""
    model = _model(family, "eager", dtype, lora, checkpointing)
    examples = _examples()
    total = sum(len(example["labels"]) - 1 for example in examples)
    loss = 0.0
    for example in examples:
        batch = {key: torch.tensor([value]) for key, value in example.items()}
        with _autocast(dtype):
            part = model(**batch, use_cache=False, num_items_in_batch=total).loss
        part.backward()
        loss += part.item()
    return loss, _grads(model)


def assert_same(packed, reference, dtype: torch.dtype) -> None:
    (loss, grads), (ref_loss, ref_grads) = packed, reference
    rel = 1e-5 if dtype == torch.float32 else 4e-3  # a window ignored moves the loss by 0.5-1.5 %
    assert loss == pytest.approx(ref_loss, rel=rel)
    assert grads.keys() == ref_grads.keys() and grads
    worst = max((grads[n] - ref_grads[n]).norm() / ref_grads[n].norm().clamp_min(1e-12) for n in grads)
    assert worst < (1e-4 if dtype == torch.float32 else 5e-2), f"largest relative gradient error {worst:.3g}"


@pytest.fixture(autouse=True)
def _registered():
    register_packed_sdpa()


@pytest.mark.parametrize("family", FAMILIES)
def test_auto_picks_packed_sdpa_for_every_verified_family_on_cpu(family, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_attention("auto", "fp32", padding_free=True, model_config=FAMILIES[family]()).value == SDPA_PACKED


@pytest.mark.parametrize("checkpointing", [False, True], ids=["no-ckpt", "ckpt"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("family", FAMILIES)
def test_packed_batch_equals_examples_run_one_by_one(family, dtype, lora, checkpointing, monkeypatch):
    calls = []
    example_attention = attention._example_attention
    monkeypatch.setattr(attention, "_example_attention", lambda *a, **k: calls.append(1) or example_attention(*a, **k))

    packed = packed_loss_and_grads(family, KERNEL_NAME, dtype, lora, checkpointing)

    assert calls, "the packed batch did not take the per-example path"
    assert_same(packed, one_by_one_loss_and_grads(family, dtype, lora, checkpointing), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("family", ["mistral", "gemma2", "qwen2", "gemma3_text"])
def test_a_packed_path_that_ignores_the_window_is_caught(family, dtype, monkeypatch):
    example_attention = attention._example_attention
    monkeypatch.setattr(
        attention, "_example_attention", lambda *a, **k: example_attention(*a, **{**k, "sliding_window": None})
    )
    packed = packed_loss_and_grads(family, KERNEL_NAME, dtype, True, False)

    with pytest.raises(AssertionError):
        assert_same(packed, one_by_one_loss_and_grads(family, dtype, True, False), dtype)


def test_a_packed_path_that_ignores_soft_capping_is_caught(monkeypatch):
    example_attention = attention._example_attention
    monkeypatch.setattr(attention, "_example_attention", lambda *a, **k: example_attention(*a, **{**k, "softcap": None}))
    packed = packed_loss_and_grads("gemma2", KERNEL_NAME, torch.float32, False, False)

    with pytest.raises(AssertionError):
        assert_same(packed, one_by_one_loss_and_grads("gemma2", torch.float32, False, False), torch.float32)


@pytest.mark.parametrize("family", ["gemma2", "mistral"])
def test_batches_that_are_not_packed_match_eager_too(family):
    """One example, and a padded batch: the soft-capped path runs over the whole batch."""
    examples = _examples()
    padded = torch.zeros(2, 40, dtype=torch.long)
    mask = torch.zeros(2, 40, dtype=torch.long)
    for row, example in enumerate(examples[1:]):
        padded[row, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
        mask[row, : len(example["input_ids"])] = 1
    labels = padded.masked_fill(mask == 0, -100)
    batches = [
        {"input_ids": torch.tensor([examples[2]["input_ids"]]), "labels": torch.tensor([examples[2]["labels"]])},
        {"input_ids": padded, "attention_mask": mask, "labels": labels},
    ]
    for batch in batches:
        losses = [_model(family, attn, torch.float32, False, False)(**batch, use_cache=False).loss.item()
                  for attn in (KERNEL_NAME, "eager")]
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
