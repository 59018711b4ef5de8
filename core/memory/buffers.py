"""``memory/heldout.json`` and ``memory/replay.json``: rows of promoted files, kept with their provenance.

Both are filled when a file's model is promoted (``core.snapshots.promotion``), never before, so a
rejected file leaves no trace in them. Every row keeps where it came from: the file name, its
SHA-256 and the line, with the normalized example (any training format reads back the same way).

* **Memory set** (:class:`MemorySet`): the held-out rows of every promoted file, shared out evenly:
  with ``gate.memory_rows`` rows for ``n`` files each file keeps ``memory_rows // n`` rows (at
  least one; the newest ``memory_rows`` files when there are more), so old files stay represented.
  Its rows were never trained on.
* **Replay buffer** (:class:`ReplayBuffer`): a reservoir sample (algorithm R) of the training rows
  of every promoted file, at most ``replay.max_rows``: each row ever offered has the same chance of
  being in it. A new file's training mixes in a seeded draw from it (``replay.ratio``).

A file is added to each at most once (by SHA-256), so adding again after a crash changes nothing;
each file is rewritten atomically, and the seeds make every draw reproducible.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.base.atomic import atomic_write_json

logger = logging.getLogger(__name__)

HELDOUT_FILENAME = "heldout.json"
REPLAY_FILENAME = "replay.json"
HELDOUT_ROWS_FILENAME = "trainctl_heldout.jsonl"
"""In a snapshot: the held-out rows of its file, one :class:`Row` per line (written by the child)."""


@dataclass(frozen=True)
class Row:
    """One remembered row and where it came from."""

    file: str
    sha256: str
    line: int
    example: dict

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "line": self.line, "example": self.example}

    @classmethod
    def from_dict(cls, data: dict) -> "Row":
        return cls(str(data["file"]), str(data["sha256"]), int(data["line"]), dict(data["example"]))

    @classmethod
    def from_example(cls, file: str, sha256: str, example: dict) -> Row:
        """The row of a parsed example (``trainer.data.formats.RowStream``), its line taken out of it."""
        return cls(file, sha256, example["_line"], {k: v for k, v in example.items() if k != "_line"})


def read_rows(path: Path) -> list[Row]:
    """The rows of a :data:`HELDOUT_ROWS_FILENAME` file; none when it is missing (older snapshots)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [Row.from_dict(json.loads(line)) for line in text.splitlines() if line.strip()]


class MemoryFileError(ValueError):
    """A memory file exists but cannot be read."""


def _load(path: Path, empty: dict) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return empty
    except (OSError, ValueError) as exc:
        raise MemoryFileError(f"{path} cannot be read ({exc}); delete it to start an empty one "
                           "(earlier files are then no longer measured or replayed)") from None
    if not isinstance(data, dict):
        raise MemoryFileError(f"{path} must hold a JSON object; delete it to start an empty one")
    return data


class MemorySet:
    """The held-out rows of promoted files (``memory/heldout.json``).

    Args:
        folder: the base dir's ``memory/`` folder.
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / HELDOUT_FILENAME

    def files(self) -> list[dict]:
        """``{"file", "sha256", "rows": [...]}`` per promoted file, oldest first."""
        return list(_load(self.path, {"files": []}).get("files", []))

    def rows(self, limit: int) -> list[Row]:
        """The memory set: up to ``limit`` rows, an even share of each file's (newest files first to go in)."""
        files = self.files()
        if limit <= 0 or not files:
            return []
        files = files[-limit:]
        quota = max(1, limit // len(files))
        return [Row.from_dict(row) for entry in files for row in entry["rows"][:quota]]

    def add(self, file: str, sha256: str, rows: Sequence[Row], limit: int) -> bool:
        """Remember a promoted file's held-out ``rows`` (shuffled by its digest, so any prefix is a
        fair sample); trim every file to its share of ``limit``. Returns False if it was already in."""
        files = self.files()
        if not rows or any(entry["sha256"] == sha256 for entry in files):
            return False
        ordered = list(rows)
        random.Random(sha256).shuffle(ordered)
        files.append({"file": file, "sha256": sha256, "rows": [row.to_dict() for row in ordered]})
        files = files[-limit:] if limit > 0 else []
        quota = max(1, limit // max(1, len(files)))
        for entry in files:
            entry["rows"] = entry["rows"][:quota]
        atomic_write_json(self.path, {"files": files})
        logger.info("memory set: %s added (%d rows kept per file)", file, quota)
        return True


class ReplayBuffer:
    """A reservoir sample of the training rows of promoted files (``memory/replay.json``).

    Args:
        folder: the base dir's ``memory/`` folder.
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / REPLAY_FILENAME

    def _state(self) -> dict:
        return _load(self.path, {"seen": 0, "files": [], "rows": []})

    def rows(self) -> list[Row]:
        """Every row in the buffer."""
        return [Row.from_dict(row) for row in self._state().get("rows", [])]

    def add(self, file: str, sha256: str, rows: Iterable[Row], max_rows: int, seed: int) -> bool:
        """Offer a promoted file's training rows (read one at a time) to the reservoir. Returns False if
        it was already in."""
        state = self._state()
        if sha256 in state["files"]:
            return False
        rng = random.Random(f"{seed}:{sha256}")
        kept, seen, offered = state["rows"][:max_rows], int(state["seen"]), 0
        for row in rows:
            seen, offered = seen + 1, offered + 1
            if len(kept) < max_rows:
                kept.append(row.to_dict())
            elif (slot := rng.randrange(seen)) < max_rows:
                kept[slot] = row.to_dict()
        atomic_write_json(self.path, {"seen": seen, "files": [*state["files"], sha256], "rows": kept})
        logger.info("replay buffer: %s offered %d rows (%d of %d seen rows kept)", file, offered, len(kept), seen)
        return True

    def draw(self, count: int, sha256: str, seed: int) -> list[Row]:
        """``count`` rows (fewer if the buffer is smaller) for the file ``sha256``, the same every time."""
        rows = self.rows()
        return random.Random(f"{seed}:draw:{sha256}").sample(rows, min(count, len(rows)))
