"""A conversation with a trained model, shaped the way training shaped the data.

The prompt is rendered with the model's own chat template; the system prompt is the profile's
template with today's date filled in (as ``trainer.data.tokenization`` does for training rows),
unless the user gives one; generation uses the profile's logits processors and stops at the
template's end-of-turn token. Replies are streamed piece by piece through ``TextStreamer``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessorList, TextStreamer

from profiles import Profile
from trainer.data.tokenization import fill_system_prompt, with_system_prompt
from trainer.inference.turns import stop_token_ids


class _CallbackStreamer(TextStreamer):
    """``TextStreamer`` that hands each finished piece of text to a callback instead of printing it."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._on_text(text)


@dataclass
class GenerationSettings:
    """How one reply is generated."""

    max_new_tokens: int = 256
    """Longest reply in tokens."""
    temperature: float = 0.0
    """0 decodes greedily; above 0 samples with this temperature."""


@dataclass
class ChatSession:
    """A conversation: the history, the system prompt, and one model that answers.

    Args:
        model: a causal LM (or a ``PeftModel``) in eval mode.
        tokenizer: its tokenizer, with a chat template.
        profile: the profile the model was trained with.
        system: a system prompt that replaces the profile's; None keeps the profile's (or none).
    """

    model: Any
    tokenizer: Any
    profile: Profile
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)

    def system_prompt(self) -> str | None:
        """The system prompt in force: the user's, else the profile's with today's date, else None."""
        if self.system is not None:
            return self.system
        template = self.profile.system_prompt_template()
        return fill_system_prompt(template) if template else None

    def messages(self, user_text: str) -> list[dict[str, str]]:
        """The conversation to render for the next reply."""
        conversation = self.history + [{"role": "user", "content": user_text}]
        prompt = self.system_prompt()
        return with_system_prompt(conversation, prompt) if prompt else conversation

    def reset(self) -> None:
        """Forget the conversation so far."""
        self.history.clear()

    def reply(self, user_text: str, settings: GenerationSettings, on_text: Callable[[str], None]) -> str:
        """Answer ``user_text``, streaming the reply to ``on_text``; both turns join the history.

        Returns:
            The whole reply, special tokens removed.
        """
        inputs = self.tokenizer.apply_chat_template(
            self.messages(user_text), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        sampling = settings.temperature > 0
        stops = stop_token_ids(self.tokenizer)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else next(iter(stops), None)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=settings.max_new_tokens,
                do_sample=sampling,
                temperature=settings.temperature if sampling else None,
                top_p=None,
                top_k=None,
                eos_token_id=stops or None,
                pad_token_id=pad,
                logits_processor=LogitsProcessorList(self.profile.logits_processors(self.tokenizer)),
                streamer=_CallbackStreamer(self.tokenizer, on_text),
            )
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
        self.history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": text}]
        return text
