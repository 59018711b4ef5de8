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
import statistics
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateError

from profiles import Example, Profile
from trainer.data.chat_masking import IGNORE_INDEX, ChatTemplateError, Piece, encode_conversation, end_of_turn_marker

__all__ = ["IGNORE_INDEX", "ChatTemplateError", "TokenizeStats", "encode_text", "tokenize_examples"]

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
    lengths: list[int] = field(default_factory=list)
    """Token count of every example before truncation."""
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
        if not self.lengths:
            return {}
        ordered = sorted(self.lengths)
        return {
            "min": ordered[0],
            "mean": round(statistics.fmean(ordered), 1),
            "p50": ordered[len(ordered) // 2],
            "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
            "max": ordered[-1],
        }


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


def tokenize_examples(
    examples: list[Example],
    tokenizer: Any,
    profile: Profile,
    max_length: int,
    on_overlength: str = "truncate",
    today: dt.date | None = None,
) -> tuple[list[dict[str, list[int]]], TokenizeStats]:
    """Apply the profile, render, tokenize and mask every example.

    Args:
        examples: normalized examples from ``trainer.data.formats.read_examples``.
        tokenizer: a Hugging Face tokenizer with a chat template (for chat examples).
        profile: supplies the forced system prompt and the per-example transform.
        max_length: longest example kept, in tokens.
        on_overlength: ``truncate`` or ``drop`` examples longer than ``max_length``.
        today: date for ``{date}`` in the system prompt (default: today).

    Returns:
        Features (``input_ids``, ``labels``) and the statistics of the pass.
    """
    template = profile.system_prompt_template()
    system_prompt = fill_system_prompt(template, today) if template is not None else None
    if system_prompt is not None:
        logger.info("profile %s: system prompt for this file: %r", profile.name, system_prompt)
    features, stats, marker = [], TokenizeStats(), None
    for index, example in enumerate(examples):
        line = example.get("_line", index + 1)
        example = profile.transform_example(example, index)
        if "messages" in example:
            marker = marker or _marker(tokenizer)
            pieces = _encode_chat(tokenizer, example["messages"], system_prompt, marker, line)
            stats.per_turn_conversations += pieces[0].method == "per_turn"
        else:
            pieces = [Piece(*encode_text(tokenizer, example["text"]), "text")]
        kept = len(features)
        for piece in pieces:
            _add_piece(features, stats, piece, line, max_length, on_overlength)
        stats.trained_rows += len(features) > kept
    stats.examples = len(features)
    return features, stats


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
    features: list[dict[str, list[int]]], stats: TokenizeStats, piece: Piece, line: int, max_length: int,
    on_overlength: str,
) -> None:
    """Truncate or drop an overlong sequence, leave out one with no trained token, count the rest."""
    ids, labels = piece.input_ids, piece.labels
    stats.lengths.append(len(ids))
    if len(ids) > max_length:
        if on_overlength == "drop":
            stats.dropped += 1
            stats.long_rows.append((line, len(ids), "dropped"))
            return
        stats.truncated += 1
        ids, labels = ids[:max_length], labels[:max_length]
    trained = sum(label != IGNORE_INDEX for label in labels[1:])
    if trained == 0:
        stats.no_trained_tokens += 1
        stats.long_rows.append((line, stats.lengths[-1], "untrained"))
        return
    if len(ids) < stats.lengths[-1]:
        stats.long_rows.append((line, stats.lengths[-1], "truncated"))
    stats.trained_tokens += trained
    stats.total_tokens += len(ids)
    features.append({"input_ids": ids, "labels": labels})
