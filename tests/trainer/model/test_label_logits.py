"""Logits only at labelled positions: the same loss and gradients as every logit, with fewer rows; their
chunked cross-entropy gives the stock loss's values and gradients without its fp32 copy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, DataCollatorWithFlattening, Trainer, TrainingArguments
from transformers.loss.loss_utils import ForCausalLMLoss

from core.train import FineTuneTrainer
from trainer.model import label_logits
from trainer.model.label_logits import (
    causal_lm_loss,
    keep_labelled_positions,
    takes_logits_to_keep,
    token_losses,
    use_chunked_loss,
)

IGNORE = -100


def test_keep_labelled_positions_keeps_the_positions_whose_next_token_is_a_label():
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, 7, 8, IGNORE, IGNORE, 9]])

    kept = keep_labelled_positions({"input_ids": torch.zeros_like(labels), "labels": labels})

    assert kept["logits_to_keep"].tolist() == [2, 3, 6]
    assert kept["shift_labels"].tolist() == [[7, 8, 9]]
    assert kept["labels"] is kept["shift_labels"]


def test_padded_rows_keep_the_union_of_their_positions_with_the_others_ignored():
    labels = torch.tensor([[IGNORE, 5, 6, IGNORE], [IGNORE, IGNORE, IGNORE, 4]])

    kept = keep_labelled_positions({"labels": labels})

    assert kept["logits_to_keep"].tolist() == [0, 1, 2]
    assert kept["shift_labels"].tolist() == [[5, 6, IGNORE], [IGNORE, IGNORE, 4]]


def test_no_labelled_position_no_labels_or_shifted_labels_take_the_stock_path():
    nothing = torch.tensor([[5, IGNORE, IGNORE]])  # no position predicts a first token
    labels = torch.tensor([[3, 4, 5, 6]])

    assert keep_labelled_positions({"labels": nothing}) is None
    assert keep_labelled_positions({"labels": labels, "shift_labels": labels}) is None
    assert keep_labelled_positions({"input_ids": labels}) is None


def _lora_model(model_dir):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter matter for the gradients
            torch.nn.init.normal_(param, std=0.02)
    return model


def _loss_grads_and_rows(trainer_cls, model_dir, batch, tmp_path):
    model = _lora_model(model_dir)
    rows = []
    model.get_base_model().lm_head.register_forward_hook(lambda _m, args, _o: rows.append(args[0].shape[:-1].numel()))
    args = TrainingArguments(output_dir=str(tmp_path / trainer_cls.__name__), report_to=[], use_cpu=True)
    trainer = trainer_cls(model=model, args=args)
    model.train()
    num_items = (batch["labels"][:, 1:] != IGNORE).sum()
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items)
    assert (model.get_base_model().loss_function is causal_lm_loss) == (trainer_cls is FineTuneTrainer)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, rows[0]


def _chat_like(lengths, prompt, seed=1):
    """Examples whose first ``prompt`` tokens are unlabelled, like a system prompt and user turn."""
    generator = torch.Generator().manual_seed(seed)
    features = []
    for n in lengths:
        ids = torch.randint(3, 300, (n,), generator=generator).tolist()
        features.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return features


@pytest.mark.parametrize("padding_free", [True, False])
def test_the_loss_and_gradients_equal_those_from_every_logit(tiny_model_dir, tmp_path, padding_free):
    features = _chat_like([17, 30, 9, 24], prompt=6)
    if padding_free:
        batch = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)(features)
    else:
        width = max(len(f["input_ids"]) for f in features)
        batch = {
            "input_ids": torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features]),
            "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"]))
                                            for f in features]),
            "labels": torch.tensor([f["labels"] + [IGNORE] * (width - len(f["labels"])) for f in features]),
        }

    loss, grads, rows = _loss_grads_and_rows(FineTuneTrainer, tiny_model_dir, batch, tmp_path)
    reference_loss, reference_grads, reference_rows = _loss_grads_and_rows(Trainer, tiny_model_dir, batch, tmp_path)

    assert loss == pytest.approx(reference_loss, rel=1e-6)
    assert grads.keys() == reference_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=1e-5, atol=1e-7, msg=name)
    assert reference_rows == batch["input_ids"].numel()
    labelled = int((batch["labels"][:, 1:] != IGNORE).any(dim=0).sum())
    assert rows == labelled * batch["input_ids"].shape[0] < reference_rows


def test_a_model_without_logits_to_keep_is_detected(tiny_model_dir):
    model = _lora_model(tiny_model_dir)
    assert takes_logits_to_keep(model) and takes_logits_to_keep(model.get_base_model())

    class Plain(torch.nn.Module):
        def forward(self, input_ids, labels=None):
            return input_ids

    assert not takes_logits_to_keep(Plain())


def _logits_and_targets(rows: int, vocab: int, dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=generator) * 4).to(dtype)
    targets = torch.randint(0, vocab, (rows,), generator=generator)
    targets[::3] = -100
    return logits, targets


@pytest.mark.parametrize("rows", [1, label_logits.CHUNK_ROWS - 1, label_logits.CHUNK_ROWS, label_logits.CHUNK_ROWS + 1, 100])
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
