"""The ``gate`` section of config.json: when a trained file's model may replace ``current_model``."""

from __future__ import annotations

from pydantic import Field

from trainer.config.schema_base import StrictModel


class GateSettings(StrictModel):
    """The promotion gate: a candidate is promoted only if its losses on the evaluation sets allow it.

    The sets are the file's own held-out rows, every JSONL file in ``<base dir>/eval/`` (golden sets)
    and the memory set (held-out rows of earlier promoted files). Losses are measured in the
    training child on the model before and after the file.
    """

    enabled: bool = True
    """Judge every candidate before promoting it. Off: every trained file is promoted, as before."""

    max_regression: float = Field(0.02, ge=0.0, le=10.0)
    """The candidate's loss on a golden or memory set may be at most this share above the current
    model's (0.02: 2%). A file that raises one more is rejected and kept as a snapshot only."""

    require_improvement: bool = True
    """The candidate must have a lower loss than the current model on the file's own held-out rows
    (files too small to split are gated on the other sets only)."""

    min_answer_dependence: float = Field(0.02, ge=0.0, le=10.0)
    """The candidate's loss on the file's held-out rows with each answer moved to the next row's
    question must be at least this share above its loss on the rows as written (0.02: 2%), or the
    answers do not depend on their questions (shuffled labels) and the file is rejected. 0: off."""

    memory_rows: int = Field(512, ge=0, le=100_000)
    """Most held-out rows of earlier promoted files kept as the memory set, shared out evenly so that
    every earlier file stays represented. 0: no memory set."""
