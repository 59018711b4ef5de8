"""Generic logits processors: per-row decisions on real token ids from the tiny tokenizer."""

from __future__ import annotations

import pytest
import torch

from profiles.processors import EosAfterStopProcessor, SpellingPenaltyProcessor
from tests.profiles.helpers import left_padded, pad_left
from tests.tiny_models import build_tiny_tokenizer


def test_spelling_penalty_lowers_the_next_token_of_a_partial_spelling(tiny_tokenizer):
    spelling = tiny_tokenizer.encode("<think>", add_special_tokens=False)
    assert len(spelling) > 1, "the tiny tokenizer must spell <think> with several tokens"
    prefix = tiny_tokenizer.encode("Hello ", add_special_tokens=False)
    input_ids = pad_left(tiny_tokenizer, [prefix + spelling[:done] for done in range(len(spelling))])
    scores = torch.zeros(len(spelling), len(tiny_tokenizer))

    out = SpellingPenaltyProcessor(tiny_tokenizer, "<think>", penalty=3.0)(input_ids, scores)

    assert torch.equal(out[0], scores[0]), "a bare '<' must stay available for code and markup"
    for done in range(1, len(spelling)):
        expected = torch.zeros(len(tiny_tokenizer))
        expected[spelling[done]] = -3.0
        assert torch.equal(out[done], expected), f"row with {done} spelling tokens"


def test_spelling_penalty_lowers_a_single_added_token_at_every_step():
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens(["<think>"])
    think_id = tokenizer.convert_tokens_to_ids("<think>")
    input_ids = left_padded(tokenizer, ["Hello", "The quick brown fox"])
    scores = torch.randn(2, len(tokenizer), generator=torch.Generator().manual_seed(0))

    out = SpellingPenaltyProcessor(tokenizer, "<think>", penalty=4.0)(input_ids, scores)

    assert torch.allclose(out[:, think_id], scores[:, think_id] - 4.0)
    others = torch.ones(len(tokenizer), dtype=torch.bool)
    others[think_id] = False
    assert torch.equal(out[:, others], scores[:, others])


def test_eos_is_pushed_only_in_rows_ending_with_a_stop_string(tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    input_ids = left_padded(tiny_tokenizer, ["Done. STOP", "Done. STO", "STOP then more"])
    scores = torch.randn(3, len(tiny_tokenizer), generator=torch.Generator().manual_seed(0))
    scores[:, eos] = scores.min() - 1.0

    out = EosAfterStopProcessor(tiny_tokenizer, ["STOP"], penalty=5.0)(input_ids, scores)

    others = torch.cat([out[0, :eos], out[0, eos + 1 :]])
    assert out[0].argmax() == eos
    assert out[0, eos] - others.max() >= 10.0
    assert torch.equal(out[1:], scores[1:])


def test_eos_processor_needs_an_eos_token():
    tokenizer = build_tiny_tokenizer()
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="eos_token"):
        EosAfterStopProcessor(tokenizer, ["STOP"], penalty=5.0)
