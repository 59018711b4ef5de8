"""Causal attention in query blocks: the same attention as the flash kernel, within bf16 rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, DataCollatorWithFlattening

from trainer.model import block_attention
from trainer.model.attention import KERNEL_NAME, register_packed_sdpa


def _inputs(tokens: int, heads: int, kv_heads: int, seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(1, heads, tokens, 32), (1, kv_heads, tokens, 32), (1, kv_heads, tokens, 32), (1, heads, tokens, 32)]
    return tuple(torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes)


def _flash(query, key, value, scale):
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale)


def _output_and_grads(attention, inputs, grad_output, dtype, scale):
    leaves = [x.detach().to(dtype).clone().requires_grad_() for x in inputs]
    output = attention(*leaves, scale)
    output.backward(grad_output.to(dtype))
    return [output.double()] + [leaf.grad.double() for leaf in leaves]


@pytest.mark.parametrize("tokens", [2, 5, 127, 128, 129, 300])
@pytest.mark.parametrize(("heads", "kv_heads"), [(6, 2), (4, 4)])
def test_output_and_gradients_match_an_fp64_reference_as_closely_as_the_flash_kernel(tokens, heads, kv_heads):
    *inputs, grad_output = _inputs(tokens, heads, kv_heads, seed=tokens)
    scale = 0.3  # not a power of two, as with Gemma's query_pre_attn_scalar
    reference = _output_and_grads(_flash, inputs, grad_output, torch.float64, scale)
    flash = _output_and_grads(_flash, inputs, grad_output, torch.bfloat16, scale)
    blocks = _output_and_grads(block_attention.block_causal_attention, inputs, grad_output, torch.bfloat16, scale)

    for name, want, theirs, ours in zip(("output", "query", "key", "value"), reference, flash, blocks):
        assert ours.shape == want.shape
        flash_error = ((theirs - want).norm() / want.norm()).item()
        error = ((ours - want).norm() / want.norm()).item()
        assert error <= 2 * flash_error + 1e-3, (name, error, flash_error)


def test_a_one_token_example_attends_to_itself_only():
    query, key, value, grad_output = (x.to(torch.bfloat16).requires_grad_() for x in _inputs(1, 6, 2, seed=0))
    output = block_attention.block_causal_attention(query, key, value, 0.3)
    output.backward(grad_output)
    torch.testing.assert_close(output, value.repeat_interleave(3, dim=1))
    assert query.grad.abs().max() < 1e-2 * grad_output.abs().max()  # nothing to learn from one key


def test_only_short_bf16_examples_being_trained_take_the_block_path():
    def tensors(tokens, dtype=torch.bfloat16, grad=True):
        return [torch.zeros(1, 4, tokens, 8, dtype=dtype, requires_grad=grad) for _ in range(3)]

    assert block_attention.applies(*tensors(block_attention.MAX_TOKENS), dropout=0.0)
    assert not block_attention.applies(*tensors(block_attention.MAX_TOKENS + 1), dropout=0.0)
    assert not block_attention.applies(*tensors(64), dropout=0.1)
    assert not block_attention.applies(*tensors(64, dtype=torch.float32), dropout=0.0)
    assert not block_attention.applies(*tensors(64, grad=False), dropout=0.0)
    with torch.no_grad():
        assert not block_attention.applies(*tensors(64), dropout=0.0)


def _bf16_loss_and_grads(model_dir, batch):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation=KERNEL_NAME)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    return loss.float().item(), {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}


def test_a_packed_bf16_training_step_gives_the_flash_kernels_loss_and_gradients(tiny_model_dir, monkeypatch):
    register_packed_sdpa()
    generator = torch.Generator().manual_seed(3)
    features = [{"input_ids": torch.randint(3, 300, (n,), generator=generator).tolist()} for n in (9, 40, 3, 150)]
    for feature in features:
        feature["labels"] = list(feature["input_ids"])
    batch = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)(features)

    calls = []
    original = block_attention.block_causal_attention
    monkeypatch.setattr(block_attention, "block_causal_attention", lambda *a: calls.append(1) or original(*a))
    loss, grads = _bf16_loss_and_grads(tiny_model_dir, batch)
    assert calls, "the block path was not taken"
    monkeypatch.setattr(block_attention, "MAX_TOKENS", 0)
    flash_loss, flash_grads = _bf16_loss_and_grads(tiny_model_dir, batch)

    assert loss == pytest.approx(flash_loss, rel=1e-2)
    for name, grad in grads.items():
        relative = ((grad - flash_grads[name]).norm() / flash_grads[name].norm()).item()
        assert relative < 0.05, (name, relative)
