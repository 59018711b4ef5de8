"""The ``replay`` section of config.json: rows of earlier files mixed into each new file's training."""

from __future__ import annotations

from pydantic import Field

from trainer.config.schema_base import StrictModel


class ReplaySettings(StrictModel):
    """Replay against forgetting: training rows of earlier promoted files, from a bounded buffer."""

    ratio: float = Field(0.1, ge=0.0, le=10.0)
    """Replay rows mixed into each file's training data, as a share of the file's own training rows
    (0.1: one replay row per ten). 0 turns replay off. The rows are drawn with a fixed seed."""

    max_rows: int = Field(5000, ge=1, le=1_000_000)
    """Rows the replay buffer keeps (reservoir sampling over every promoted file's training rows)."""

    seed: int = 4321
    """Seed of the replay draw and of the buffer's reservoir sampling."""
