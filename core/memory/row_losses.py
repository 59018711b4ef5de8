"""A model's loss on each remembered row, so that each row is measured once per model.

The gate measures the current model ("before") and the candidate ("after") on the same sets. When
the candidate is promoted it *becomes* the current model, so its "after" numbers are the next
file's "before" numbers: the child writes them, row by row, into the candidate's model folder
(:data:`ROW_LOSSES_FILENAME`, carried by the snapshot and pruned with it). The next file's child
reads them from the snapshot it starts from and measures only the rows they lack (its own
held-out rows, a new golden file), then keeps those in ``cache/eval/`` under the model's path, so a
retried file or the file after a rejected one measures nothing again.

A row is known by the SHA-256 of its tokens and labels, so a changed tokenizer, template or
``max_length`` makes new rows, never a wrong match; the numbers are kept only for the precision and
attention they were measured with. The set's loss from stored rows is the same token-weighted mean
as measuring the set at once (``SetLoss.from_rows``), so the gate decides the same.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from core.base.atomic import atomic_write_json

logger = logging.getLogger(__name__)

ROW_LOSSES_FILENAME = "trainctl_row_losses.json"
"""In a model folder (a snapshot): the model's ``[summed loss, trained tokens]`` by row key."""
EVAL_CACHE_DIRNAME = "cache/eval"


def row_key(feature: dict) -> str:
    """The SHA-256 of a tokenized row's ``input_ids`` and ``labels``."""
    return hashlib.sha256(json.dumps([list(feature["input_ids"]), list(feature["labels"])]).encode()).hexdigest()


class RowLosses:
    """Per-row losses of one model, measured at one precision and attention.

    Args:
        precision: the run's precision (``bf16``, ``fp32``...).
        attention: the attention implementation.
    """

    def __init__(self, precision: str, attention: str) -> None:
        self.precision, self.attention = precision, attention
        self.rows: dict[str, tuple[float, int]] = {}

    def load(self, path: Path) -> "RowLosses":
        """Add the rows stored at ``path`` if they were measured like this; a missing, unreadable or
        differently measured file adds nothing (those rows are then measured again)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if (data["precision"], data["attention"]) == (self.precision, self.attention):
                self.rows.update({key: (float(v[0]), int(v[1])) for key, v in data["rows"].items()})
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
            logger.warning("%s cannot be read (%s); its rows are measured again", path, exc)
        return self

    def save(self, path: Path) -> None:
        """Write every row atomically."""
        atomic_write_json(Path(path), {"precision": self.precision, "attention": self.attention,
                                       "rows": {key: list(value) for key, value in self.rows.items()}})

    def missing(self, keys: Sequence[str]) -> list[int]:
        """Positions of ``keys`` without a stored number."""
        return [i for i, key in enumerate(keys) if key not in self.rows]

    def add(self, keys: Sequence[str], per_row: Sequence[tuple[float, int]]) -> None:
        """Store each row's ``(summed loss, trained tokens)``."""
        self.rows.update(zip(keys, per_row))

    def get(self, keys: Sequence[str]) -> list[tuple[float, int]]:
        """The stored numbers of ``keys`` (each must be stored)."""
        return [self.rows[key] for key in keys]


def cache_path(base_dir: Path, model_source: str, precision: str, attention: str) -> Path:
    """Where the rows measured on ``model_source`` (a snapshot path or the base model) are cached."""
    key = hashlib.sha256(json.dumps(["rows", model_source, precision, attention]).encode()).hexdigest()
    return Path(base_dir) / EVAL_CACHE_DIRNAME / f"{key}.json"
