"""Turning normalized examples into ``input_ids`` + ``labels`` for causal-LM training.

Chats are rendered with the tokenizer's own chat template. Labels are ``-100`` everywhere except
the tokens of trained assistant turns, and each trained turn includes its end-of-turn token (the
special token the template closes the turn with, e.g. ``<|im_end|>``) so the model learns to stop;
how the turns are found for each template family is in ``trainer/data/chat_masking.py``. A
conversation usually gives one training sequence; with a template that renders earlier turns
differently as the conversation goes on (Qwen 3, Mistral v0.3) it gives one per trained reply.
Text examples (continued pretraining) train on every token and end with EOS.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from jinja2 import TemplateError

from profiles import Example, Profile
from trainer.data.chat_masking import IGNORE_INDEX, ChatTemplateError, Piece, encode_conversation, end_of_turn_marker

__all__ = ["IGNORE_INDEX", "ChatTemplateError", "ExampleEncoder", "TokenizeStats", "encode_text", "tokenize_examples"]

logger = logging.getLogger(__name__)

@dataclass
class TokenizeStats:
    """What happened to the examples of one file on their way to features."""

    examples: int = 0
    """Training sequences made (after drops): one per row, or one per trained reply of a
    conversation whose template is not prefix-stable."""
    trained_rows: int = 0
    """Rows that gave at least one training sequence."""
    truncated: int = 0
    dropped: int = 0
    """Longer than max_length with ``on_overlength=drop``."""
    no_trained_tokens: int = 0
    """Examples left out because no token carried a label (e.g. truncation cut every reply)."""
    length_counts: dict[int, int] = field(default_factory=dict)
    """How many examples have each token count before truncation: a histogram, so that its size
    does not grow with the number of rows."""
    long_rows: list[tuple[int, int, str]] = field(default_factory=list)
    """``(line, tokens, what happened)`` of each example over max_length or left with no trained
    token; what happened is ``truncated``, ``dropped`` or ``untrained``."""
    trained_tokens: int = 0
    total_tokens: int = 0
    per_turn_conversations: int = 0
    """Conversations whose template is not prefix-stable, trained as one sequence per trained reply
    (see ``trainer/data/chat_masking.py``)."""

    def length_summary(self) -> dict[str, float]:
        """min / mean / p50 / p95 / max of the token lengths (empty if no examples)."""
        if not self.length_counts:
            return {}
        ordered = sorted(self.length_counts.items())
        count = sum(n for _, n in ordered)
        return {
            "min": ordered[0][0],
            "mean": round(sum(length * n for length, n in ordered) / count, 1),
            "p50": _nth(ordered, count // 2),
            "p95": _nth(ordered, min(count - 1, int(count * 0.95))),
            "max": ordered[-1][0],
        }

    def add(self, later: "TokenizeStats") -> None:
        """Count in the statistics of the rows that follow these (a later part of the same file)."""
        for name in (item.name for item in fields(self)):
            mine, theirs = getattr(self, name), getattr(later, name)
            if isinstance(mine, dict):  # the length histogram
                for length, count in theirs.items():
                    mine[length] = mine.get(length, 0) + count
            else:  # counts add up, lists of rows follow each other
                setattr(self, name, mine + theirs)

    def to_dict(self) -> dict[str, Any]:
        """The statistics as JSON-ready data (:meth:`from_dict` reads it back)."""
        return {**asdict(self), "length_counts": sorted(self.length_counts.items())}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenizeStats":
        """The statistics :meth:`to_dict` wrote."""
        return cls(**{**data, "length_counts": {length: n for length, n in data["length_counts"]},
                      "long_rows": [tuple(row) for row in data["long_rows"]]})


def _nth(ordered: list[tuple[int, int]], rank: int) -> int:
    """The ``rank``-th (0-based) smallest length in a sorted ``(length, count)`` histogram."""
    seen = 0
    for length, n in ordered:
        seen += n
        if rank < seen:
            return length
    return ordered[-1][0]


def fill_system_prompt(template: str, today: dt.date | None = None) -> str:
    """Fill ``{date}`` in a profile's system prompt template with today's ISO date."""
    return template.replace("{date}", (today or dt.date.today()).isoformat())


def with_system_prompt(messages: list[dict[str, Any]], prompt: str) -> list[dict[str, Any]]:
    """The conversation with ``prompt`` as its only system message (replacing any given one)."""
    return [{"role": "system", "content": prompt}] + [m for m in messages if m["role"] != "system"]


def encode_text(tokenizer: Any, text: str) -> tuple[list[int], list[int]]:
    """Token ids and labels of a pretraining text: every token trained, EOS appended."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    return ids, list(ids)


class ExampleEncoder:
    """Applies the profile, renders, tokenizes and masks examples one at a time.

    What happened to the examples so far is counted in ``stats``; nothing else is kept, so a file
    of any length can stream through it.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template (for chat examples).
        profile: supplies the forced system prompt and the per-example transform.
        max_length: longest example kept, in tokens.
        on_overlength: ``truncate`` or ``drop`` examples longer than ``max_length``.
        today: date for ``{date}`` in the system prompt (default: today).
        first_index: the position in its file of the first example given (a later part of a file).
    """

    def __init__(
        self, tokenizer: Any, profile: Profile, max_length: int, on_overlength: str = "truncate",
        today: dt.date | None = None, first_index: int = 0,
    ):
        self.tokenizer, self.profile = tokenizer, profile
        self.max_length, self.on_overlength = max_length, on_overlength
        template = profile.system_prompt_template()
        self.system_prompt = fill_system_prompt(template, today) if template is not None else None
        if self.system_prompt is not None:
            logger.info("profile %s: system prompt for this file: %r", profile.name, self.system_prompt)
        self.stats = TokenizeStats()
        self._marker: str | None = None
        self._index = first_index

    def encode(self, example: Example) -> list[dict[str, list[int]]]:
        """The features (``input_ids``, ``labels``) of one normalized example: none, one, or one per reply.

        Raises:
            ChatTemplateError: the chat template cannot render or mark the conversation (names the line).
        """
        line = example.get("_line", self._index + 1)
        example = self.profile.transform_example(example, self._index)
        self._index += 1
        if "messages" in example:
            self._marker = self._marker or _marker(self.tokenizer)
            pieces = _encode_chat(self.tokenizer, example["messages"], self.system_prompt, self._marker, line)
            self.stats.per_turn_conversations += pieces[0].method == "per_turn"
        else:
            pieces = [Piece(*encode_text(self.tokenizer, example["text"]), "text")]
        kept = [_add_piece(self.stats, piece, line, self.max_length, self.on_overlength) for piece in pieces]
        features = [feature for feature in kept if feature is not None]
        self.stats.trained_rows += bool(features)
        self.stats.examples += len(features)
        return features


def tokenize_examples(
    examples: list[Example],
    tokenizer: Any,
    profile: Profile,
    max_length: int,
    on_overlength: str = "truncate",
    today: dt.date | None = None,
) -> tuple[list[dict[str, list[int]]], TokenizeStats]:
    """Apply the profile, render, tokenize and mask every example (all held in memory).

    Args:
        examples: normalized examples from ``trainer.data.formats.read_examples``.
        tokenizer, profile, max_length, on_overlength, today: as for :class:`ExampleEncoder`.

    Returns:
        Features (``input_ids``, ``labels``) and the statistics of the pass.
    """
    encoder = ExampleEncoder(tokenizer, profile, max_length, on_overlength, today)
    features = [feature for example in examples for feature in encoder.encode(example)]
    return features, encoder.stats


def _marker(tokenizer: Any) -> str:
    try:
        return end_of_turn_marker(tokenizer)
    except TemplateError as exc:
        raise ChatTemplateError(f"the model's chat template fails on a plain user/assistant chat: {exc}") from exc


def _encode_chat(
    tokenizer: Any, messages: list[dict[str, Any]], system_prompt: str | None, marker: str, line: int
) -> list[Piece]:
    if system_prompt is not None:
        messages = with_system_prompt(messages, system_prompt)
    try:
        return encode_conversation(tokenizer, messages, marker)
    except TemplateError as exc:
        raise ChatTemplateError(f"line {line}: the model's chat template refused the conversation: {exc}") from exc
    except ChatTemplateError as exc:
        raise ChatTemplateError(f"line {line}: {exc}") from exc


def _add_piece(
    stats: TokenizeStats, piece: Piece, line: int, max_length: int, on_overlength: str
) -> dict[str, list[int]] | None:
    """Truncate or drop an overlong sequence, leave out one with no trained token, count the rest."""
    ids, labels = piece.input_ids, piece.labels
    length = len(ids)
    stats.length_counts[length] = stats.length_counts.get(length, 0) + 1
    if length > max_length:
        if on_overlength == "drop":
            stats.dropped += 1
            stats.long_rows.append((line, length, "dropped"))
            return None
        stats.truncated += 1
        ids, labels = ids[:max_length], labels[:max_length]
    trained = sum(label != IGNORE_INDEX for label in labels[1:])
    if trained == 0:
        stats.no_trained_tokens += 1
        stats.long_rows.append((line, length, "untrained"))
        return None
    if len(ids) < length:
        stats.long_rows.append((line, length, "truncated"))
    stats.trained_tokens += trained
    stats.total_tokens += len(ids)
    return {"input_ids": ids, "labels": labels}
