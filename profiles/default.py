"""The ``default`` profile: data is trained as given."""

from __future__ import annotations

from typing import Any

from profiles.base import Example


class DefaultProfile:
    """No forced system prompt, no transform, no logits processors."""

    name = "default"

    def system_prompt_template(self) -> str | None:
        return None

    def transform_example(self, example: Example, index: int) -> Example:
        return example

    def logits_processors(self, tokenizer: Any) -> list[Any]:
        return []

    def validate_example(self, example: Example) -> list[str]:
        return []
