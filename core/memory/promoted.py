"""Remembering a promoted file: its held-out rows into the memory set, its training rows into replay.

Called once a file's snapshot is current (by the daemon, by its crash recovery and by
``trainctl snapshots promote``); adding the same file again changes nothing, so a crash between the
promotion and this step is repaired by running it again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from core.memory.buffers import HELDOUT_ROWS_FILENAME, MemorySet, ReplayBuffer, Row, read_rows
from core.state.layout import BaseDir
from profiles import get_profile
from trainer.config import TrainConfig
from trainer.data.formats import DataFileError, RowError, RowStream

logger = logging.getLogger(__name__)


def training_rows(source: Path, name: str, sha256: str, heldout: list[Row], config: TrainConfig) -> Iterator[Row]:
    """The good rows of ``source`` that were not held out, read one at a time (none if the file
    cannot be read)."""
    try:
        stream = RowStream(source, get_profile(config.profile))
    except DataFileError as exc:
        logger.warning("%s: its rows are not offered to the replay buffer: %s", name, exc)
        return iter(())
    held = {row.line for row in heldout}
    return (Row.from_example(name, sha256, item)
            for item in stream if not isinstance(item, RowError) and item["_line"] not in held)


def remember_promoted(layout: BaseDir, snapshot: Path, source: Path | None, name: str, sha256: str,
                      config: TrainConfig) -> None:
    """Add a promoted file to the memory set (from the snapshot's held-out rows) and, when its
    ``source`` file is at hand, its training rows to the replay buffer."""
    heldout = read_rows(snapshot / HELDOUT_ROWS_FILENAME)
    MemorySet(layout.memory).add(name, sha256, heldout, config.gate.memory_rows)
    if source is not None and source.is_file():
        rows = training_rows(source, name, sha256, heldout, config)
        ReplayBuffer(layout.memory).add(name, sha256, rows, config.replay.max_rows, config.replay.seed)
