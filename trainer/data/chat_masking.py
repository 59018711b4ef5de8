"""Where the trained assistant replies are in a conversation rendered by the model's own chat template.

A reply is labelled from the end of the generation prompt (what the template writes before a reply
when asked for one) through the template's **end-of-turn marker**, the special token it closes an
assistant turn with (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``, ``</s>``, ``<|end|>``), so
that the model learns to stop. Nothing else is labelled: not the system prompt, the user turns, the
role headers, nor what a template writes after the marker (Phi-3 ends a conversation with EOS).

The marker is read once per tokenizer from a probe conversation (:func:`end_of_turn_marker`); a
template that closes an assistant turn with no special token is refused, since a model trained on
it would never learn to stop.

Two methods find the replies, chosen per conversation:

* **prefix** (one sequence per conversation): the text before reply *i* with the generation prompt
  and the text through reply *i* are prefixes of the whole rendering. True for ChatML (Qwen 2.5),
  Llama 3 and Gemma.
* **per turn** (one sequence per trained reply): templates that render earlier turns differently
  once the conversation goes on (Qwen 3 drops the reasoning of earlier replies, Mistral v0.3 moves
  the system prompt into the last user turn, Phi-3 appends EOS at the end) are cut after each
  trained reply, and each cut is rendered on its own with only its last reply labelled: exactly
  the text the model sees when it generates that reply.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from typing import Any

from core.base.errors import UserError

IGNORE_INDEX = -100
PROBE_REPLY = "trainctl-probe-reply"


class ChatTemplateError(UserError, ValueError):
    """The tokenizer's chat template cannot be used for assistant-only loss masking."""


@dataclass(frozen=True)
class Piece:
    """One training sequence of a conversation: its token ids, its labels and how it was masked."""

    input_ids: list[int]
    labels: list[int]
    method: str
    """``prefix`` or ``per_turn``."""


def render(tokenizer: Any, messages: list[dict[str, Any]], generation_prompt: bool = False) -> str:
    """The conversation as the chat template writes it (only ``role`` and ``content`` are passed)."""
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=generation_prompt)


def _special_tokens(tokenizer: Any) -> list[str]:
    added = [token.content for token in getattr(tokenizer, "added_tokens_decoder", {}).values()]
    return sorted(set(added) | set(tokenizer.all_special_tokens), key=len, reverse=True)


def end_of_turn_marker(tokenizer: Any) -> str:
    """The special token the chat template closes an assistant turn with.

    Raises:
        ChatTemplateError: the tokenizer has no chat template, or its template writes no special
            token right after an assistant reply.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            "the model's tokenizer has no chat template, so chat rows cannot be rendered; use a model "
            "whose tokenizer_config.json or chat_template.jinja has one, or give text rows instead"
        )
    probe = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": PROBE_REPLY}]
    rendered = render(tokenizer, probe)
    after = rendered[rendered.index(PROBE_REPLY) + len(PROBE_REPLY):].lstrip()
    marker = next((token for token in _special_tokens(tokenizer) if token and after.startswith(token)), None)
    if marker is None:
        raise ChatTemplateError(
            f"the chat template closes an assistant reply with {after[:40]!r}, not with a special "
            "end-of-turn token, so a model trained on it would never learn to stop; use a template "
            "that writes the end-of-turn or EOS token (e.g. {{ eos_token }}) after each assistant reply"
        )
    return marker


def _trained_turns(messages: list[dict[str, Any]]) -> list[int]:
    return [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1) != 0]


def _reply_end(text: str, marker: str, start: int) -> int:
    end = text.find(marker, start)
    if end < 0:
        raise ChatTemplateError(f"the chat template does not close this assistant reply with {marker!r}")
    return end + len(marker)


def _label(tokenizer: Any, text: str, spans: list[tuple[int, int]], method: str) -> Piece:
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
    return Piece(ids, reply_labels(ids, offsets, spans), method)


def reply_labels(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """Each token's id where it reaches into a reply span, else ``IGNORE_INDEX``: a token that
    reaches into a reply is part of it (Mistral's " Hello" after "[/INST]").

    Offsets in text order (both ends never decreasing, what tokenizers give) make the tokens of a
    span one run, found by bisection; anything else is checked token by token.
    """
    starts, ends = [start for start, _ in offsets], [end for _, end in offsets]
    if starts != sorted(starts) or ends != sorted(ends):
        return [token if any(start < hi and end > lo for lo, hi in spans) else IGNORE_INDEX
                for token, (start, end) in zip(ids, offsets)]
    labels = [IGNORE_INDEX] * len(ids)
    for lo, hi in spans:
        first, stop = bisect.bisect_right(ends, lo), bisect.bisect_left(starts, hi)
        labels[first:stop] = ids[first:stop]
    return labels


def _prefix_spans(tokenizer: Any, messages: list[dict[str, Any]], full: str, marker: str):
    """Reply spans in ``full`` by prefix rendering, or None if the template is not prefix-stable here."""
    spans = []
    for i in _trained_turns(messages):
        before = render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        through = full if i + 1 == len(messages) else render(tokenizer, messages[: i + 1])
        if not (full.startswith(through) and through.startswith(before)) or marker not in through[len(before):]:
            return None
        spans.append((len(before), _reply_end(full, marker, len(before))))
    return spans


def _last_reply_start(tokenizer: Any, messages: list[dict[str, Any]], text: str) -> int:
    """Where the last message's reply starts in ``text`` (the rendering of ``messages``)."""
    before = render(tokenizer, messages[:-1], generation_prompt=True) if len(messages) > 1 else ""
    if before and text.startswith(before):
        return len(before)
    # The generation prompt is not where the reply goes (Mistral-7B-Instruct-v0.3 drops the system
    # prompt once a reply follows): the reply starts where this text and the same conversation with
    # an empty reply part ways.
    emptied = render(tokenizer, messages[:-1] + [{**messages[-1], "content": ""}])
    return len(os.path.commonprefix([text, emptied]))


def _per_turn_pieces(tokenizer: Any, messages: list[dict[str, Any]], marker: str) -> list[Piece]:
    pieces = []
    for i in _trained_turns(messages):
        text = render(tokenizer, messages[: i + 1])
        start = _last_reply_start(tokenizer, messages[: i + 1], text)
        pieces.append(_label(tokenizer, text, [(start, _reply_end(text, marker, start))], "per_turn"))
    return pieces


def encode_conversation(tokenizer: Any, messages: list[dict[str, Any]], marker: str) -> list[Piece]:
    """The training sequences of one conversation, labelled only on trained replies and their marker.

    Args:
        tokenizer: a tokenizer with a chat template.
        messages: ``role``/``content`` messages; an assistant message with ``weight`` 0 is not trained.
        marker: the template's end-of-turn token, from :func:`end_of_turn_marker`.

    Returns:
        One piece (prefix-stable template) or one piece per trained reply (see module doc). A
        conversation without a trained reply gives one unlabelled piece.
    """
    full = render(tokenizer, messages)
    spans = _prefix_spans(tokenizer, messages, full, marker)
    if spans is not None or not _trained_turns(messages):
        return [_label(tokenizer, full, spans or [], "prefix")]
    return _per_turn_pieces(tokenizer, messages, marker)
