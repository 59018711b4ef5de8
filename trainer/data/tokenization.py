"""Turning normalized examples into ``input_ids`` + ``labels`` for causal-LM training.

Chats are rendered with the tokenizer's own chat template. Labels are ``-100`` everywhere except
the tokens of trained assistant turns, and each trained turn includes its end-of-turn token (the
text the template closes the turn with, e.g. ``<|im_end|>``) so the model learns to stop. Text
examples (continued pretraining) train on every token and end with EOS.

The assistant spans are found by rendering the conversation prefix by prefix: the text before turn
*i* with the generation prompt, and the text through turn *i*. This works for any template whose
renderings are prefixes of each other, which holds for the common families (ChatML, Llama, Mistral,
Gemma); a template that is not is reported, not silently mis-masked.
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics
from dataclasses import dataclass, field
from typing import Any

from core.base.errors import UserError
from profiles import Example, Profile

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


class ChatTemplateError(UserError, ValueError):
    """The tokenizer's chat template cannot be used for assistant-only loss masking."""


@dataclass
class TokenizeStats:
    """What happened to the examples of one file on their way to features."""

    examples: int = 0
    """Examples turned into features (after drops)."""
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


def _render(tokenizer: Any, messages: list[dict[str, Any]], generation_prompt: bool = False) -> str:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=generation_prompt)


def _assistant_spans(tokenizer: Any, messages: list[dict[str, Any]], full: str) -> list[tuple[int, int]]:
    """Character spans of the trained assistant turns in ``full``, end-of-turn marker included."""
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        before = _render(tokenizer, messages[:i], generation_prompt=True)
        through = _render(tokenizer, messages[: i + 1])
        if not (full.startswith(through) and through.startswith(before)):
            raise ChatTemplateError(
                "the tokenizer's chat template does not render conversations prefix by prefix, so "
                "assistant turns cannot be located; use a model with a standard chat template"
            )
        spans.append((len(before), len(through.rstrip())))
    return spans


def encode_chat(tokenizer: Any, messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """Token ids and labels of one conversation (labels only on trained assistant turns)."""
    full = _render(tokenizer, messages)
    spans = _assistant_spans(tokenizer, messages, full)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    labels = [
        token if any(lo <= start < hi for lo, hi in spans) else IGNORE_INDEX
        for token, (start, _end) in zip(encoded["input_ids"], encoded["offset_mapping"])
    ]
    return list(encoded["input_ids"]), labels


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
    features, stats = [], TokenizeStats()
    for index, example in enumerate(examples):
        line = example.get("_line", index + 1)
        example = profile.transform_example(example, index)
        if "messages" in example:
            messages = example["messages"]
            if system_prompt is not None:
                messages = with_system_prompt(messages, system_prompt)
            ids, labels = encode_chat(tokenizer, messages)
        else:
            ids, labels = encode_text(tokenizer, example["text"])
        stats.lengths.append(len(ids))
        if len(ids) > max_length:
            if on_overlength == "drop":
                stats.dropped += 1
                stats.long_rows.append((line, len(ids), "dropped"))
                continue
            stats.truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
        trained = sum(label != IGNORE_INDEX for label in labels[1:])
        if trained == 0:
            stats.no_trained_tokens += 1
            stats.long_rows.append((line, stats.lengths[-1], "untrained"))
            continue
        if len(ids) < stats.lengths[-1]:
            stats.long_rows.append((line, stats.lengths[-1], "truncated"))
        stats.trained_tokens += trained
        stats.total_tokens += len(ids)
        features.append({"input_ids": ids, "labels": labels})
    stats.examples = len(features)
    return features, stats
