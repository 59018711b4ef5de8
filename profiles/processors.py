"""Logits processors that profiles hand to ``model.generate``.

Both work on batches row by row: each row of ``input_ids`` (prompt plus what was generated so far)
decides on its own whether its row of ``scores`` changes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor

logger = logging.getLogger(__name__)


class SpellingPenaltyProcessor(LogitsProcessor):
    """Lower the logits of the tokens that spell an unwanted string, such as ``<think>``.

    The string is encoded the way it is spelled at the start of a text (no leading space).

    * If that is a single token (an added or special token, as ``<think>`` is in Qwen3-style
      vocabularies), that token is lowered at every step.
    * Otherwise each later token of the spelling is lowered when the row already ends with the tokens
      before it: after ``<`` the ``t`` is lowered, after ``<t`` the ``hin``, and so on. The first token
      (``<``) is left alone because it also starts code, markup and maths; penalising it everywhere
      would hurt ordinary replies, while lowering every continuation is enough to steer away from
      the string.

    Only this canonical spelling is covered; a byte-level model can in principle spell the same text
    with other token splits.

    Args:
        tokenizer: The tokenizer the model generates with.
        text: The unwanted string.
        penalty: How much to subtract from the logits of the tokens concerned.
    """

    def __init__(self, tokenizer: Any, text: str, penalty: float) -> None:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            raise ValueError(f"the tokenizer encodes {text!r} as no tokens; nothing to penalise")
        self.spelling = torch.tensor(ids, dtype=torch.long)
        self.penalty = penalty
        self._first_step = 0 if len(ids) == 1 else 1
        logger.debug("penalising %r, spelled as token ids %s, by %s", text, ids, penalty)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        spelling = self.spelling.to(input_ids.device)
        bias = torch.zeros_like(scores)
        for done in range(self._first_step, min(len(spelling), input_ids.shape[1] + 1)):
            tail = input_ids[:, input_ids.shape[1] - done :]
            rows = (tail == spelling[:done]).all(dim=1)
            bias[rows, spelling[done]] = self.penalty
        return scores - bias


class EosAfterStopProcessor(LogitsProcessor):
    """Make EOS the clear favourite in rows whose text ends with a stop string.

    The last few ids of each row are decoded and compared with the stop strings, so the stop is found
    however the tokenizer splits it (emoji are usually several byte tokens). In a stopped row every
    other token is lowered by ``penalty`` and EOS is set ``penalty`` above the row's best logit, so it
    ends at least ``2 * penalty`` above everything else. Other rows are left as they are.

    Args:
        tokenizer: The tokenizer the model generates with; it must define ``eos_token``.
        stop_strings: Texts after which generation should end.
        penalty: Size of the push towards EOS (see above).

    Raises:
        ValueError: the tokenizer has no EOS token, or no stop strings were given.
    """

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str], penalty: float) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token; set eos_token in tokenizer_config.json")
        if not stop_strings:
            raise ValueError("stop_strings is empty; give at least one text to stop after")
        self.tokenizer = tokenizer
        self.stop_strings = tuple(stop_strings)
        self.eos_token_id = tokenizer.eos_token_id
        self.penalty = penalty
        # Every token decodes to at least one byte, so this many ids always cover the longest stop.
        self._tail_length = max(len(stop.encode("utf-8")) for stop in self.stop_strings)

    def stopped_rows(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """A boolean tensor, one entry per row: does the row's text end with a stop string?"""
        tails = self.tokenizer.batch_decode(input_ids[:, -self._tail_length :])
        return torch.tensor([tail.endswith(self.stop_strings) for tail in tails], dtype=torch.bool)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        stopped = self.stopped_rows(input_ids).to(scores.device)
        if not stopped.any():
            return scores
        pushed = scores - self.penalty
        pushed[:, self.eos_token_id] = scores.max(dim=-1).values + self.penalty
        return torch.where(stopped[:, None], pushed, scores)
