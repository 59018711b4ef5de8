"""The evaluation sets the promotion gate measures: held-out rows, golden sets, the memory set.

* **held-out**: a seeded share of the file's own examples (``eval.split_ratio``, at least
  ``eval.min_examples``, at most ``eval.max_examples``), never trained on. A file too small to
  leave a row for training after the split is trained whole and has no held-out set.
* **golden**: every ``*.jsonl`` file in ``<base dir>/eval/``, written by the user, in any training
  format. A file that cannot be used whole (missing, a bad row, nothing trainable) is left out with
  a :class:`SetProblem` naming it and the reason; it never stops training.
* **memory**: held-out rows of earlier promoted files (kept by ``core.memory``), handed in as examples.

Every set is tokenized like training data, and its SHA-256 is taken over the token ids and labels,
so that a set's numbers can be cached and compared only where the very same tokens were measured.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.base.errors import UserError
from profiles import Example, Profile
from trainer.config import TrainConfig
from trainer.data.formats import DataFileError, read_examples
from trainer.data.tokenization import IGNORE_INDEX, tokenize_examples

logger = logging.getLogger(__name__)

HELDOUT = "heldout"
GOLDEN = "golden"
MEMORY = "memory"
FILE = "file"


@dataclass
class EvalSet:
    """One tokenized evaluation set."""

    name: str
    """``heldout``, ``memory``, or ``eval/NAME.jsonl`` for a golden set."""
    kind: str
    """:data:`HELDOUT`, :data:`GOLDEN`, :data:`MEMORY` or :data:`FILE` (``trainctl eval --data``)."""
    features: list[dict]

    @property
    def sha256(self) -> str:
        """Digest of the token ids and labels: the same rows tokenized otherwise are another set."""
        digest = hashlib.sha256()
        for feature in self.features:
            digest.update(json.dumps([feature["input_ids"], feature["labels"]]).encode())
        return digest.hexdigest()

    @property
    def rows(self) -> int:
        return len(self.features)

    @property
    def tokens(self) -> int:
        """Trained tokens (the ones the loss is over)."""
        return sum(sum(label != IGNORE_INDEX for label in f["labels"][1:]) for f in self.features)


@dataclass(frozen=True)
class SetProblem:
    """An evaluation file left out, and why."""

    path: str
    reason: str


def heldout_indices(examples: int, config: TrainConfig) -> list[int]:
    """Positions of the examples held out of a file of ``examples`` examples, sorted; seeded.

    Empty when the split is off (``eval.split_ratio`` 0, or ``eval.file`` set) or the file is too
    small to keep a row for training after holding out ``eval.min_examples``.
    """
    settings = config.eval
    if settings.split_ratio <= 0 or settings.file:
        return []
    wanted = max(settings.min_examples, math.ceil(examples * settings.split_ratio))
    wanted = min(wanted, settings.max_examples)
    if wanted >= examples:
        return []
    return sorted(random.Random(settings.seed).sample(range(examples), wanted))


def tokenize_set(name: str, kind: str, examples: Sequence[Example], tokenizer: Any, profile: Profile,
                 config: TrainConfig) -> EvalSet:
    """Tokenize ``examples`` as training would (examples left with no trained token are dropped)."""
    features, _ = tokenize_examples(
        list(examples), tokenizer, profile, config.hyperparams.max_length, config.data.on_overlength
    )
    return EvalSet(name, kind, features)


def read_set_file(path: Path, name: str, kind: str, tokenizer: Any, profile: Profile,
                  config: TrainConfig) -> EvalSet:
    """One evaluation file, used whole or not at all.

    Raises:
        UserError: the file is missing, holds a bad row or no example with a trained token; the
            message names the file and what to fix.
    """
    try:
        parsed = read_examples(path, profile)
    except DataFileError as exc:
        raise UserError(str(exc)) from None
    if parsed.errors:
        first = parsed.errors[0]
        raise UserError(f"{path}: {len(parsed.errors)} bad row(s), first line {first.line}: {first.reason}; "
                        "fix or remove them (an evaluation file is used whole or not at all)")
    if not parsed.examples:
        raise UserError(f"{path}: no rows; write rows in a training format or remove the file")
    evaluated = tokenize_set(name, kind, parsed.examples, tokenizer, profile, config)
    if not evaluated.features:
        raise UserError(f"{path}: no example has a trained token within hyperparams.max_length; "
                        "give the rows assistant replies (or text) that fit")
    return evaluated


def golden_files(folder: Path) -> list[Path]:
    """The ``*.jsonl`` files of ``folder`` (hidden ones skipped), by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.jsonl") if not p.name.startswith("."))


def load_golden_sets(folder: Path, tokenizer: Any, profile: Profile,
                     config: TrainConfig) -> tuple[list[EvalSet], list[SetProblem]]:
    """Every usable golden set in ``folder``, and the files left out with the reason."""
    sets, problems = [], []
    for path in golden_files(folder):
        name = f"{folder.name}/{path.name}"
        if not path.is_file() or path.is_symlink():
            problems.append(SetProblem(name, "not a regular file; golden sets must be plain JSONL files"))
            continue
        try:
            sets.append(read_set_file(path, name, GOLDEN, tokenizer, profile, config))
        except UserError as exc:
            logger.warning("golden set %s left out: %s", name, exc)
            problems.append(SetProblem(name, str(exc)))
    return sets, problems
