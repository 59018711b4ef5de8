"""The ``Profile`` protocol: how a profile shapes training data and generation.

An *example* is a plain dict in one of two normalized shapes (see ``trainer/data/formats.py``):

* chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str, "weight": 0|1}, ...]}``
  (``weight`` is optional; assistant turns train by default, other roles never do);
* text: ``{"text": str}`` for continued pretraining (loss on every token).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

Example = dict[str, Any]


@runtime_checkable
class Profile(Protocol):
    """What every profile provides. Profiles are small classes registered in ``profiles/__init__``."""

    name: str

    def system_prompt_template(self) -> str | None:
        """A system prompt forced onto every chat example, or None to keep the data's own.

        The template may contain ``{date}``, filled with today's ISO date at training time.
        """
        ...

    def transform_example(self, example: Example, index: int) -> Example:
        """Return the example to train on (a new dict; the input is not modified).

        ``index`` is the example's position in its file, so choices can be deterministic.
        """
        ...

    def logits_processors(self, tokenizer: Any) -> list[Any]:
        """``transformers.LogitsProcessor`` objects to use when generating with this profile."""
        ...

    def validate_example(self, example: Example) -> list[str]:
        """Profile-specific problems with an example (empty when it is fine)."""
        ...
