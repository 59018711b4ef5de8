"""``StrictModel``: the base of every config section, in its own module so that each section can
live in a module of its own and ``schema.py`` can import them without a cycle."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base for every config section: unknown keys rejected, field docstrings exported, and strict
    types: ``"epochs": "3"`` is an error naming the field, not silently read as 3."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True, strict=True)
