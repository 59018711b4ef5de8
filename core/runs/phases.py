"""Phase and pipeline configs for ``trainctl run``: what to train on, mixed how, with which settings.

A phase config (``configs/pretrain.json``, ``configs/sft.json``)::

    {
      "phase": "sft",
      "data": [{"path": "samples/chat.jsonl", "weight": 1.0}],
      "training": { ...the same keys as config.json... }
    }

A pipeline config (``configs/pipeline.json``) lists phase configs run in order::

    {"phases": ["configs/pretrain.json", "configs/sft.json"]}

Paths are relative to the base dir. ``weight`` says how often each row of a file is used: 2 uses
every row twice, 0.5 a seeded half of them. The mixed rows are streamed into one JSONL file in the
run folder, which ``UltimateTrainer`` then trains on.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.base.atomic import atomic_writer
from core.base.errors import UserError
from trainer.config import ConfigError, TrainConfig
from trainer.config.loader import read_json_file, validate_model
from trainer.data.formats import RowError, RowStream

logger = logging.getLogger(__name__)

Phase = Literal["pretrain", "sft"]
PHASE_MISSING = "see configs/ for examples"
EXPECTED_ROWS = {
    "pretrain": 'a .jsonl file of {"text": ...} rows, e.g. samples/text.jsonl',
    "sft": 'a .jsonl file of chat rows ({"messages": [...]}, ShareGPT, Alpaca or prompt/completion), '
    "e.g. samples/chat.jsonl",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class DataSource(_Strict):
    """One data file of a phase and its mixing weight."""

    path: str = Field(min_length=1)
    """JSONL file, relative to the base dir (or absolute)."""

    weight: float = Field(1.0, gt=0.0, le=100.0)
    """How often each row is used: 2 = every row twice, 0.5 = a seeded half of the rows."""


class PhaseConfig(_Strict):
    """A phase config file: the phase, its data mix and its training settings."""

    phase: Phase
    """``pretrain`` (plain text, loss on every token) or ``sft`` (chats, loss on assistant turns)."""

    data: list[DataSource] = Field(min_length=1)
    """Data files with mixing weights."""

    training: TrainConfig = Field(default_factory=TrainConfig)
    """Training settings: the keys of config.json."""


class PipelineConfig(_Strict):
    """A pipeline config file: phase configs run in order."""

    phases: list[str] = Field(min_length=1)
    """Phase config files. Each phase after the first starts from the previous phase's best
    weights with a fresh optimizer."""


@dataclass(frozen=True)
class LoadedPhase:
    """A phase config as read from disk: its path, verbatim text and parsed content."""

    path: Path
    text: str
    config: PhaseConfig


def _resolve(base_dir: Path, path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else Path(base_dir) / path


def load_phase(path: Path, expected: Phase | None = None) -> LoadedPhase:
    """Read and validate a phase config.

    Raises:
        ConfigError: unreadable, invalid, or not the ``expected`` phase; every problem is listed.
    """
    text, raw = read_json_file(path, PHASE_MISSING)
    config = validate_model(PhaseConfig, raw, path)
    if expected and config.phase != expected:
        raise ConfigError(path, [f"phase: this file is a {config.phase} config, not {expected}"])
    return LoadedPhase(path, text, config)


def load_pipeline(path: Path, base_dir: Path) -> list[LoadedPhase]:
    """Read a pipeline config and every phase config it lists."""
    _, raw = read_json_file(path, PHASE_MISSING)
    pipeline = validate_model(PipelineConfig, raw, path)
    return [load_phase(_resolve(base_dir, name)) for name in pipeline.phases]


def check_data_files(phases: list[LoadedPhase], base_dir: Path) -> None:
    """Fail before any model loads if a data file is missing; list every one.

    Raises:
        UserError: one line per missing or misnamed path, with what each phase expects.
    """
    problems = []
    for loaded in phases:
        for source in loaded.config.data:
            path = _resolve(base_dir, source.path)
            if path.suffix != ".jsonl":
                problems.append(f"{loaded.path.name}: {source.path}: expected a .jsonl file")
            elif not path.is_file():
                problems.append(
                    f"{loaded.path.name}: {source.path}: not found at {path}; expected "
                    f"{EXPECTED_ROWS[loaded.config.phase]}"
                )
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise UserError(
            f"{len(problems)} data file(s) missing (paths are relative to {base_dir}):\n{listing}"
        )


def _good_rows(path: Path) -> Iterator[dict]:
    """The normalized good rows of ``path``, one at a time (bad rows are skipped, as training skips them)."""
    for item in RowStream(path):
        if not isinstance(item, RowError):
            yield {k: v for k, v in item.items() if k != "_line"}


def _count_rows(path: Path, source: DataSource, phase: Phase) -> int:
    """The good rows of ``source``, checked to be the phase's kind.

    Raises:
        UserError: no usable row, or rows of the other phase's kind.
    """
    stream = RowStream(path)
    count = sum(not isinstance(item, RowError) for item in stream)
    if stream.format is None or not count:
        raise UserError(f"{source.path}: no usable row; expected {EXPECTED_ROWS[phase]}")
    if (stream.format == "text") != (phase == "pretrain"):
        raise UserError(f"{source.path}: {stream.format} rows in a {phase} phase; expected {EXPECTED_ROWS[phase]}")
    return count


def _weighted(path: Path, count: int, weight: float, rng: random.Random) -> Iterator[dict]:
    """Every row of ``path`` ``floor(weight)`` times, then a seeded sample for the fraction, in file order.

    The sample is drawn while reading (selection sampling: each row is taken with probability
    ``still needed / still unread``), so exactly ``round(count * fraction)`` rows come out and
    nothing but two counters is held.
    """
    whole, fraction = int(weight), weight - int(weight)
    for _ in range(whole):
        yield from _good_rows(path)
    needed = math.floor(count * fraction + 0.5)
    for unread, row in zip(range(count, 0, -1), _good_rows(path) if needed else ()):
        if rng.random() * unread < needed:
            needed -= 1
            yield row


def mix_data(loaded: LoadedPhase, base_dir: Path, out_file: Path) -> tuple[Path, int]:
    """Stream each data file's rows, weighted, into ``out_file`` (written atomically).

    Memory does not grow with the files: rows are read, weighted and written one at a time.

    Returns:
        ``out_file`` and the number of rows written.

    Raises:
        UserError: a file holds rows of the wrong kind for the phase, or no usable row.
    """
    phase = loaded.config.phase
    rng = random.Random(loaded.config.training.hyperparams.seed)
    written = 0
    with atomic_writer(out_file) as handle:
        for source in loaded.config.data:
            path = _resolve(base_dir, source.path)
            count = _count_rows(path, source, phase)
            for row in _weighted(path, count, source.weight, rng):
                handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
                written += 1
            logger.info("%s: %d rows x weight %g", source.path, count, source.weight)
    return out_file, written
