"""Per-example SDPA for padding-free batches gives the same loss and gradients as the masked SDPA."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, DataCollatorWithFlattening

from trainer.model.attention import KERNEL_NAME, SDPA_PACKED, example_bounds, register_packed_sdpa

_bounds = example_bounds


def test_example_bounds_follow_restarting_position_ids():
    assert example_bounds(torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])) == [0, 3, 5, 9]
    assert example_bounds(torch.tensor([[0, 1, 2, 3]])) is None
    assert example_bounds(torch.tensor([[0, 1], [0, 1]])) is None
    assert example_bounds(None) is None


def _loss_and_grads(model_dir, attention: str, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attention)
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    return loss.item(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lengths", [[7, 19, 3, 30], [12]])
def test_packed_sdpa_matches_sdpa_on_flattened_batches(tiny_model_dir, lengths):
    register_packed_sdpa()
    generator = torch.Generator().manual_seed(1)
    features = [{"input_ids": torch.randint(3, 300, (n,), generator=generator).tolist()} for n in lengths]
    for feature in features:
        feature["labels"] = list(feature["input_ids"])
    batch = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)(features)

    reference_loss, reference_grads = _loss_and_grads(tiny_model_dir, "sdpa", batch)
    loss, grads = _loss_and_grads(tiny_model_dir, KERNEL_NAME, batch)

    assert loss == pytest.approx(reference_loss, rel=1e-5)
    assert grads.keys() == reference_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_bounds_are_read_once_per_forward_not_once_per_layer(tiny_model_dir, monkeypatch):
    import trainer.model.attention

    register_packed_sdpa()
    reads = []
    monkeypatch.setattr(trainer.model.attention, "example_bounds", lambda ids: reads.append(ids) or _bounds(ids))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=KERNEL_NAME)
    batch = DataCollatorWithFlattening(return_position_ids=True)([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}])

    model(**batch, use_cache=False)
    assert model.config.num_hidden_layers == 2 and len(reads) == 1
    model(**{k: v.clone() for k, v in batch.items()}, use_cache=False)  # the next step's batch
    assert len(reads) == 2
    changed = batch["position_ids"].clone()
    assert trainer.model.attention.bounds_once_per_forward(changed) == [0, 3, 5]
    changed[0, 3:] = torch.tensor([3, 4])  # in place: one example now
    assert trainer.model.attention.bounds_once_per_forward(changed) is None


def test_padded_batches_fall_back_to_sdpa_with_the_padding_mask(tiny_model_dir):
    register_packed_sdpa()
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
        "labels": torch.tensor([[5, 6, 7, 8], [9, 10, -100, -100]]),
    }

    assert _loss_and_grads(tiny_model_dir, KERNEL_NAME, batch)[0] == pytest.approx(
        _loss_and_grads(tiny_model_dir, "sdpa", batch)[0], rel=1e-6
    )


def test_auto_attention_without_flash_attn_picks_packed_sdpa_for_padding_free_batches(monkeypatch):
    from trainer.model.hardware import select_attention

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    assert select_attention("auto", "bf16", padding_free=True).value == SDPA_PACKED
    assert select_attention("auto", "bf16", padding_free=False).value == "sdpa"
    assert select_attention("sdpa", "bf16", padding_free=True).value == "sdpa"


def test_bounds_of_inference_mode_tensors_are_read_without_the_version_counter():
    import trainer.model.attention

    with torch.inference_mode():
        position_ids = torch.tensor([[0, 1, 2, 0, 1]])
    assert trainer.model.attention.bounds_once_per_forward(position_ids) == [0, 3, 5]
