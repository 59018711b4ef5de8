"""The ``emoji_think`` profile: the model thinks silently and frames some replies with emoji.

Training data loses its ``<think>...</think>`` blocks, so the model learns to answer without showing
its reasoning. For a deterministic half of the chat examples (chosen from the example's index) the
reply is framed: a thinking emoji repeated 2-8 times marks that the model thought first, and a stop
emoji repeated 2-4 times ends the reply; the user turn asks for exactly those markers. At generation
time ``<think>`` is discouraged and EOS is pushed once a reply ends with a stop emoji twice.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from profiles.base import Example

# Single code points only (no variation selectors or ZWJ sequences), so a repeated emoji is just
# the same characters again and decoded text can be matched with a plain ``endswith``.
THINKING_EMOJIS = ("🤔", "💭", "🧠")
"""Emoji that open a framed reply: thinking face, thought balloon, brain."""

STOP_EMOJIS = ("🛑", "✅", "🏁")
"""Emoji that close a framed reply: stop sign, check mark button, chequered flag."""

THINK_REPEATS = (2, 8)
"""Inclusive range of how often the thinking emoji is repeated."""

STOP_REPEATS = (2, 4)
"""Inclusive range of how often the stop emoji is repeated; generation stops after the minimum."""

THINK_TAG = "<think>"

_SYSTEM_PROMPT = (
    "Today is {date}. Think silently: never write out your reasoning and never use <think> tags. "
    "When the user asks for it, begin your reply with the thinking emoji they name, to mark that "
    "you thought before answering, and end it with the stop emoji they name, then stop."
)

_TAG_OR_BLOCK = r"(?:<think>.*?</think>|</?think>)"
# A run of think blocks and stray tags with the whitespace around it, so the gap can be closed up.
# The look-behind starts a match only at the beginning of a whitespace run, which keeps long runs
# of spaces linear instead of quadratic.
_THINK_MARKUP = re.compile(
    rf"(?<!\s)(\s*){_TAG_OR_BLOCK}(?:\s*{_TAG_OR_BLOCK})*(\s*)", re.DOTALL
)


def strip_think(text: str) -> str:
    """Remove ``<think>...</think>`` blocks and stray think tags, closing up the gaps.

    A removed piece becomes a space, or one or two line breaks (keeping the next line's indentation)
    when it sat between lines, and the result is stripped: ``"<think>hm</think>\\n\\nHi"`` becomes
    ``"Hi"``.
    """

    def close_gap(match: re.Match[str]) -> str:
        before, after = match.group(1), match.group(2)
        breaks = min(max(before.count("\n"), after.count("\n")), 2)
        return "\n" * breaks + after.rpartition("\n")[2] if breaks else " "

    return _THINK_MARKUP.sub(close_gap, text).strip()


@dataclass(frozen=True)
class Decoration:
    """The markers framing one reply, and the user instruction asking for them."""

    think: str
    stop: str

    @property
    def instruction(self) -> str:
        """The sentence appended to the user turn."""
        return f"Begin your reply with {self.think} and end it with {self.stop}."


def choose_decoration(index: int) -> Decoration | None:
    """The markers for the example at ``index``, or None for the undecorated half.

    A ``random.Random`` seeded with the index makes every choice, so the same index always gets
    the same answer, in any process.
    """
    rng = random.Random(index)
    if rng.random() >= 0.5:
        return None
    think = rng.choice(THINKING_EMOJIS) * rng.randint(*THINK_REPEATS)
    stop = rng.choice(STOP_EMOJIS) * rng.randint(*STOP_REPEATS)
    return Decoration(think=think, stop=stop)


def _last_index(messages: list[dict[str, Any]], role: str) -> int | None:
    return next((i for i in reversed(range(len(messages))) if messages[i]["role"] == role), None)


def _decorate(messages: list[dict[str, Any]], decoration: Decoration) -> None:
    """Frame the last assistant reply and instruct the user turn before it, in place.

    Nothing changes when there is no such pair or the reply is empty (``validate_example`` reports
    that), so the instruction is present exactly when the reply is framed.
    """
    reply = _last_index(messages, "assistant")
    user = _last_index(messages[:reply], "user") if reply is not None else None
    if user is None or not messages[reply]["content"]:
        return
    messages[user]["content"] = f"{messages[user]['content']}\n\n{decoration.instruction}"
    messages[reply]["content"] = f"{decoration.think} {messages[reply]['content']} {decoration.stop}"


class EmojiThinkProfile:
    """Silent thinking with emoji markers; see the module docstring.

    Args:
        think_penalty: Logit penalty for the tokens spelling ``<think>`` during generation.
        stop_penalty: Strength of the push towards EOS after a stop sequence (see
            ``EosAfterStopProcessor``).
    """

    name = "emoji_think"

    def __init__(self, think_penalty: float = 10.0, stop_penalty: float = 20.0) -> None:
        self.think_penalty = think_penalty
        self.stop_penalty = stop_penalty

    def system_prompt_template(self) -> str | None:
        return _SYSTEM_PROMPT

    def transform_example(self, example: Example, index: int) -> Example:
        if "text" in example:
            return {**example, "text": strip_think(example["text"])}
        messages = [
            {**m, "content": strip_think(m["content"])} if m["role"] == "assistant" else dict(m)
            for m in example["messages"]
        ]
        decoration = choose_decoration(index)
        if decoration is not None:
            _decorate(messages, decoration)
        return {**example, "messages": messages}

    def validate_example(self, example: Example) -> list[str]:
        if "text" in example:
            if not strip_think(example["text"]):
                return ["text is empty once <think> blocks are removed; keep text outside the tags"]
            return []
        return [
            f"message {i} (assistant) is empty once <think> blocks are removed; "
            "put the reply itself outside the <think> tags"
            for i, m in enumerate(example["messages"])
            if m["role"] == "assistant" and not strip_think(m["content"])
        ]

    def logits_processors(self, tokenizer: Any) -> list[Any]:
        # Imported here: the processors need torch, and the processes that only tokenize (data
        # validation, trainer/data/file_pass.py) should not pay its import.
        from profiles.processors import EosAfterStopProcessor, SpellingPenaltyProcessor

        stops = [emoji * STOP_REPEATS[0] for emoji in STOP_EMOJIS]
        return [
            SpellingPenaltyProcessor(tokenizer, THINK_TAG, self.think_penalty),
            EosAfterStopProcessor(tokenizer, stops, self.stop_penalty),
        ]
