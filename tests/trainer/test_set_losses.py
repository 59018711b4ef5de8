"""The gate's loss: per trained token, as training counts it, whatever the batching."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from profiles import get_profile
from tests.conftest import chat_rows
from trainer.config import TrainConfig
from trainer.data.eval_sets import tokenize_set
from trainer.set_losses import eval_collator, measure_loss, token_batches


def _features(tokenizer, n: int) -> list[dict]:
    config = TrainConfig(hyperparams={"max_length": 128})
    return tokenize_set("t", "file", chat_rows(n), tokenizer, get_profile("default"), config).features


def _reference(model, features) -> list[tuple[float, int]]:
    """One example at a time through the model's own loss: each row's summed loss and trained tokens."""
    rows = []
    with torch.no_grad():
        for f in features:
            ids, labels = torch.tensor([f["input_ids"]]), torch.tensor([f["labels"]])
            tokens = int((labels[:, 1:] != -100).sum())
            rows.append((float(model(input_ids=ids, labels=labels).loss) * tokens, tokens))
    return rows


def test_the_loss_is_per_trained_token_and_the_same_packed_padded_or_one_by_one(tiny_model_dir, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    features = _features(tiny_tokenizer, 9)
    rows = _reference(model.eval(), features)
    expected = sum(r[0] for r in rows) / sum(r[1] for r in rows)
    model.train()
    packed = eval_collator(TrainConfig(), tiny_tokenizer, "sdpa")
    padded = eval_collator(TrainConfig(hyperparams={"padding_free": False}), tiny_tokenizer, "sdpa")
    for collator, budget in ((packed, 4096), (packed, 1), (padded, 300)):
        measured = measure_loss(model, features, collator, max_batch_tokens=budget)
        assert abs(measured.loss - expected) < 1e-4, (budget, measured.loss, expected)
        assert measured.rows == 9 and measured.tokens == sum(sum(x != -100 for x in f["labels"][1:]) for f in features)
        # each row's own numbers, in the order given, though batches are formed shortest first
        assert [r[1] for r in measured.per_row] == [r[1] for r in rows]
        assert all(abs(got[0] - want[0]) < 1e-3 * max(1.0, want[0]) for got, want in zip(measured.per_row, rows))
    assert model.training  # dropout is off only while measuring


def test_batches_stay_within_the_token_budget():
    features = [{"input_ids": [0] * n, "labels": [0] * n} for n in (5, 5, 5, 12, 1)]
    assert list(token_batches(range(5), features, 10)) == [[0, 1], [2], [3], [4]]
    assert list(token_batches([4, 0, 1, 2, 3], features, 10)) == [[4, 0], [1, 2], [3]]
