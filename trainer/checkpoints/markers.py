"""Step checkpoints you can trust: complete-or-absent, pruned, and checked before a resume.

Hugging Face ``Trainer._save_checkpoint`` (transformers 5.x) writes ``checkpoint-N/`` straight into
``output_dir`` with no temp folder and no fsync, and ``get_last_checkpoint`` picks the highest number
even if the save was cut short. This module adds only what is missing:

* :class:`~trainer.checkpoints.callback.CheckpointCallback` runs in ``on_save`` (called once the model, optimizer, scheduler, RNG
  state and ``trainer_state.json`` are all written). It stores the run's config verbatim as
  ``trainctl_config.json``, fsyncs every file, then atomically writes ``trainctl_checkpoint.json``:
  the completion marker, listing each file with its size and SHA-256. No marker, no checkpoint.
* :func:`latest_checkpoint` returns the highest-step checkpoint whose marker matches its files.
* :func:`prune_checkpoints` replaces HF's rotation (``save_total_limit=None``) and never deletes the
  best checkpoint or the resume source.
* :func:`~trainer.checkpoints.resume.check_resume_compatible` refuses a resume whose model shape differs and warns about any
  other setting that changed.

Deleting a checkpoint renames it to ``.trash-checkpoint-N`` first, so a crash mid-delete leaves a
temp folder (cleaned later), never a half-deleted folder that still looks complete.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.base.atomic import atomic_write_json, atomic_write_text, fsync_dir, remove_tree
from core.base.clock import utc_now_iso
from core.base.hashing import sha256_file
from trainer.config import TrainConfig, config_to_dict

logger = logging.getLogger(__name__)

MARKER_NAME = "trainctl_checkpoint.json"
CONFIG_COPY_NAME = "trainctl_config.json"
TRAINER_STATE_NAME = "trainer_state.json"
MARKER_FORMAT = 1

_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# tmp-checkpoint-N: the staging folder of transformers 4.x; .trash-*: our own interrupted deletes.
_TEMP_RE = re.compile(r"^(tmp-checkpoint-\d+|\.trash-checkpoint-\d+.*)$")

# Model settings that change parameter shapes: a checkpoint saved with other values cannot load.
SHAPE_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "max_position_embeddings",
)



def checkpoint_step(path: Path) -> int | None:
    """The step number of a ``checkpoint-N`` folder, or None for any other name."""
    match = _CHECKPOINT_RE.match(path.name)
    return int(match.group(1)) if match else None


def _checkpoint_dirs(root: Path) -> list[Path]:
    """``checkpoint-N`` folders under ``root``, lowest step first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def _checkpoint_files(checkpoint: Path) -> list[Path]:
    """Every regular file in the checkpoint except the marker, sorted by relative path."""
    files = [p for p in checkpoint.rglob("*") if p.is_file() and p.name != MARKER_NAME]
    return sorted(files, key=lambda p: p.relative_to(checkpoint).as_posix())


def model_shape(model_config: Any) -> dict[str, Any]:
    """The shape-critical settings of a ``PretrainedConfig`` (or plain dict), by :data:`SHAPE_KEYS`."""
    if hasattr(model_config, "get_text_config"):
        model_config = model_config.get_text_config()
    if hasattr(model_config, "to_dict"):
        model_config = model_config.to_dict()
    return {key: model_config.get(key) for key in SHAPE_KEYS}


def write_completion_marker(
    checkpoint: Path, *, config_text: str, config: TrainConfig, model_config: Any
) -> dict:
    """Make ``checkpoint`` complete: copy the config in, fsync every file, write the marker last.

    Args:
        checkpoint: a ``checkpoint-N`` folder that HF Trainer has finished writing.
        config_text: the run's config file, stored verbatim as ``trainctl_config.json``.
        config: the same config, resolved; recorded in the marker for resume checks.
        model_config: the model's ``PretrainedConfig``; its shape is recorded in the marker.

    Returns:
        The marker's content.
    """
    atomic_write_text(checkpoint / CONFIG_COPY_NAME, config_text)
    files = {
        p.relative_to(checkpoint).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p, fsync=True)}
        for p in _checkpoint_files(checkpoint)
    }
    for folder in {p.parent for p in checkpoint.rglob("*") if p.is_file()} | {checkpoint}:
        fsync_dir(folder)
    marker = {
        "format": MARKER_FORMAT,
        "step": checkpoint_step(checkpoint),
        "saved_at": utc_now_iso(),
        "model": model_shape(model_config),
        "config": config_to_dict(config),
        "files": files,
    }
    atomic_write_json(checkpoint / MARKER_NAME, marker)
    fsync_dir(checkpoint.parent)
    return marker


def read_marker(checkpoint: Path) -> dict | None:
    """The checkpoint's completion marker, or None if it is absent or unreadable."""
    try:
        marker = json.loads((checkpoint / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("files"), dict) else None


def checkpoint_problem(checkpoint: Path, *, checksums: bool = False) -> str | None:
    """Why ``checkpoint`` cannot be trusted, or None when it is complete.

    Complete means: the marker exists, every file it lists is present with the recorded size (and
    SHA-256 when ``checksums``), no unlisted file appeared, and ``trainer_state.json`` parses.
    """
    marker = read_marker(checkpoint)
    if marker is None:
        return f"no readable {MARKER_NAME} (the save did not finish)"
    present = {p.relative_to(checkpoint).as_posix(): p for p in _checkpoint_files(checkpoint)}
    listed = marker["files"]
    if missing := sorted(set(listed) - set(present)):
        return f"missing file(s): {', '.join(missing)}"
    if extra := sorted(set(present) - set(listed)):
        return f"file(s) not in the marker: {', '.join(extra)}"
    for name, entry in listed.items():
        if present[name].stat().st_size != entry.get("size"):
            return f"{name} has {present[name].stat().st_size} bytes, marker says {entry.get('size')}"
        if checksums and sha256_file(present[name], fsync=True) != entry.get("sha256"):
            return f"{name} does not match its SHA-256 in the marker"
    try:
        json.loads((checkpoint / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{TRAINER_STATE_NAME} is unreadable: {exc}"
    return None


def clean_temp_folders(root: Path) -> list[Path]:
    """Delete leftover temp folders (interrupted saves of transformers 4.x, interrupted deletes)."""
    if not root.is_dir():
        return []
    removed = [p for p in root.iterdir() if p.is_dir() and _TEMP_RE.match(p.name)]
    for path in removed:
        logger.warning("removing leftover temp folder %s", path)
        shutil.rmtree(path)
    return removed


def remove_incomplete(root: Path) -> list[Path]:
    """Delete temp folders and every ``checkpoint-N`` without a valid marker under ``root``.

    Call only while nothing is saving into ``root`` (before training starts), since a save in
    progress has no marker yet.
    """
    removed = clean_temp_folders(root)
    for path in _checkpoint_dirs(root):
        if (problem := checkpoint_problem(path)) is not None:
            logger.warning("removing incomplete checkpoint %s: %s", path, problem)
            remove_tree(path, path.with_name(f".trash-{path.name}"))
            removed.append(path)
    return removed


def latest_checkpoint(root: Path, *, unfinished: bool = False) -> Path | None:
    """The highest-step complete checkpoint under ``root``, or None.

    Incomplete or corrupt checkpoints are skipped with a warning; the one returned is also checked
    against its SHA-256 sums. Leftover temp folders are removed.

    Args:
        root: The run's checkpoint folder.
        unfinished: Skip checkpoints that reached their run's ``max_steps``. HF ``Trainer`` resumed
            from one of those in the middle of an epoch trains one more step before it checks the
            step count, so a run that crashed after its last checkpoint would end past its plan (one
            step further per crash). Resuming from the one before trains the last steps again,
            exactly as the first time.
    """
    root = Path(root)
    clean_temp_folders(root)
    for path in reversed(_checkpoint_dirs(root)):
        problem = checkpoint_problem(path, checksums=True)
        if problem is None and unfinished and _reached_max_steps(path):
            problem = "it reached max_steps; resuming it would train past them"
        if problem is None:
            return path
        logger.warning("skipping checkpoint %s: %s", path, problem)
    return None


def _reached_max_steps(checkpoint: Path) -> bool:
    state = json.loads((checkpoint / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    return 0 < state.get("max_steps", 0) <= state.get("global_step", 0)


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root`` (size check only), lowest step first."""
    return [p for p in _checkpoint_dirs(Path(root)) if checkpoint_problem(p) is None]


def best_checkpoint(root: Path) -> Path | None:
    """The best checkpoint recorded by HF (``best_model_checkpoint`` in the newest trainer_state.json).

    The recorded path is matched by folder name under ``root``, so a moved run still resolves.
    """
    for path in reversed(complete_checkpoints(root)):
        state = json.loads((path / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
        if best := state.get("best_model_checkpoint"):
            candidate = Path(root) / Path(best).name
            return candidate if candidate.is_dir() else None
    return None


def prune_checkpoints(root: Path, keep_last: int, *, protect: Iterable[Path] = ()) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints; return what was deleted.

    The best checkpoint (``best_model_checkpoint`` of trainer_state.json) and every path in
    ``protect`` (e.g. the resume source) are never deleted. Incomplete folders are left alone: one
    may be a save in progress.
    """
    root = Path(root)
    complete = complete_checkpoints(root)
    kept = {p.resolve() for p in complete[-keep_last:]}
    kept |= {Path(p).resolve() for p in protect}
    if (best := best_checkpoint(root)) is not None:
        kept.add(best.resolve())
    deleted = [p for p in complete if p.resolve() not in kept]
    for path in deleted:
        logger.info("pruning checkpoint %s (keep_last=%d)", path, keep_last)
        remove_tree(path, path.with_name(f".trash-{path.name}"))
    return deleted
