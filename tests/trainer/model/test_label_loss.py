"""The chunked cross-entropy gives the stock loss's values and gradients, without its fp32 copy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM
from transformers.loss.loss_utils import ForCausalLMLoss

from trainer.model import label_loss
from trainer.model.label_loss import causal_lm_loss, token_losses, use_chunked_loss


def _logits_and_targets(rows: int, vocab: int, dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=generator) * 4).to(dtype)
    targets = torch.randint(0, vocab, (rows,), generator=generator)
    targets[::3] = -100
    return logits, targets


@pytest.mark.parametrize("rows", [1, label_loss.CHUNK_ROWS - 1, label_loss.CHUNK_ROWS, label_loss.CHUNK_ROWS + 1, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_token_losses_and_their_gradient_equal_the_stock_cross_entropy(rows, dtype):
    logits, targets = _logits_and_targets(rows, 1000, dtype)
    upstream = torch.randn(rows, generator=torch.Generator().manual_seed(1))

    ours_in = logits.clone().requires_grad_()
    ours = token_losses(ours_in, targets)
    (ours * upstream).sum().backward()
    stock_in = logits.clone().requires_grad_()
    stock = F.cross_entropy(stock_in.float(), targets, ignore_index=-100, reduction="none")
    (stock * upstream).sum().backward()

    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, stock, rtol=1e-6, atol=1e-5)
    assert ours_in.grad.dtype == dtype
    torch.testing.assert_close(ours_in.grad.float(), stock_in.grad.float(), rtol=1e-2 if dtype == torch.bfloat16 else 1e-5,
                               atol=1e-6)
    assert not ours_in.grad[targets == -100].any()


@pytest.mark.parametrize("num_items", [None, 37, torch.tensor(41)], ids=["mean", "int", "tensor"])
@pytest.mark.parametrize("shifted", [False, True], ids=["labels", "shift_labels"])
def test_causal_lm_loss_equals_transformers_for_causal_lm_loss(num_items, shifted):
    logits, labels = _logits_and_targets(2 * 50, 300, torch.bfloat16, seed=2)
    logits, labels = logits.view(2, 50, 300), labels.view(2, 50)
    kwargs = {"shift_labels": labels} if shifted else {}

    ours = causal_lm_loss(logits, labels, 300, num_items_in_batch=num_items, **kwargs)
    stock = ForCausalLMLoss(logits, labels, 300, num_items_in_batch=num_items, **kwargs)

    torch.testing.assert_close(ours, stock, rtol=1e-6, atol=1e-6)


def test_it_is_installed_only_over_the_stock_loss(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.loss_function is ForCausalLMLoss
    assert use_chunked_loss(model) and model.loss_function is causal_lm_loss
    assert use_chunked_loss(model)  # idempotent

    def own_loss(*args, **kwargs):
        raise AssertionError("not called")

    other = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    other.loss_function = own_loss
    assert not use_chunked_loss(other) and other.loss_function is own_loss
