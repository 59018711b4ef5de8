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

    round_rows: int = Field(128, ge=0, le=100_000)
    """Golden and memory sets with more rows than this are measured on the candidate in rounds of
    this many rows, in a fixed random order, until the verdict on the whole set is clear (see
    ``decisive_z``); a close call is measured whole, so the verdict is the same as measuring every
    row, at a fraction of the cost when the set is well clear of ``max_regression``. 0: every row."""

    decisive_z: float = Field(3.0, ge=0.0, le=100.0)
    """How clear a verdict must be to stop measuring a set early: the set's estimated change from the
    measured rows must be this many standard errors (finite-population corrected) on one side of
    ``max_regression``. 3 stops on the wrong side in about 0.1% of rounds at most, only for a set at
    the limit. 0: every row is measured."""
