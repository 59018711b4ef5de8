"""The queue folders: a claimed file's work folder in ``queue/processing/``, and filing it away.

A claimed file ``queue/processing/NAME`` has a work folder ``queue/processing/NAME.work/`` that
survives daemon restarts:

* ``state.json``: the file's SHA-256, attempts started, and the model training started from (so a
  resumed run continues from the same model even if ``current_model`` moved meanwhile);
* ``config.json``: the config the daemon accepted, which the training child reads;
* ``checkpoints/``, ``model/``, ``result.json``: written by the training child.

An attempt is counted before the child starts, so a daemon that crashes with the file still counts
it after a restart; a clean stop on request gives the attempt back.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from core.base.atomic import atomic_write_json, fsync_dir
from core.base.errors import UserError
from core.child.protocol import CHECKPOINTS_DIRNAME, MODEL_DIRNAME, RESULT_FILENAME
from core.daemon.inbox import SUFFIX, free_name
from core.state.layout import BaseDir
from trainer.checkpoints.markers import latest_checkpoint
from trainer.config import TrainConfig, config_to_dict

logger = logging.getLogger(__name__)

WORK_SUFFIX = ".work"
STATE_FILENAME = "state.json"
CONFIG_FILENAME = "config.json"
REPORT_SUFFIX = ".report.json"


@dataclass
class WorkState:
    """What the daemon remembers about a claimed file across restarts."""

    sha256: str
    attempts: int = 0
    model_source: str | None = None
    parent_snapshot: str | None = None


class WorkItem:
    """A claimed file and its work folder.

    Args:
        path: The file in ``queue/processing/``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.work_dir = self.path.with_name(self.path.name + WORK_SUFFIX)

    @property
    def config_file(self) -> Path:
        return self.work_dir / CONFIG_FILENAME

    @property
    def model_dir(self) -> Path:
        return self.work_dir / MODEL_DIRNAME

    def load_state(self, sha256: str) -> WorkState:
        """The saved state, or a fresh one (discarding the work folder) if it belongs to other content."""
        try:
            saved = json.loads((self.work_dir / STATE_FILENAME).read_text(encoding="utf-8"))
            state = WorkState(**saved)
        except (OSError, ValueError, TypeError):
            state = None
        if state is not None and state.sha256 == sha256:
            return state
        if self.work_dir.exists():
            logger.warning("%s: discarding %s, it belongs to other content", self.path.name, self.work_dir)
            self.discard()
        return WorkState(sha256=sha256)

    def save_state(self, state: WorkState) -> None:
        """Persist ``state`` atomically."""
        atomic_write_json(self.work_dir / STATE_FILENAME, asdict(state))

    def write_config(self, config: TrainConfig) -> Path:
        """Store the config this attempt trains with; returns its path."""
        atomic_write_json(self.config_file, config_to_dict(config))
        return self.config_file

    def latest_checkpoint(self) -> Path | None:
        """The newest complete step checkpoint of this file's run with steps left to train, or None."""
        return latest_checkpoint(self.work_dir / CHECKPOINTS_DIRNAME, unfinished=True)

    def read_result(self) -> dict | None:
        """The training child's ``result.json``, or None if it wrote none."""
        try:
            result = json.loads((self.work_dir / RESULT_FILENAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return result if isinstance(result, dict) else None

    def clear_result(self) -> None:
        """Remove the previous attempt's result so a crash cannot be mistaken for its outcome."""
        (self.work_dir / RESULT_FILENAME).unlink(missing_ok=True)

    def discard(self) -> None:
        """Delete the work folder (after the file is finished, or when it belongs to other content)."""
        shutil.rmtree(self.work_dir, ignore_errors=True)


def leftover_files(processing: Path) -> list[Path]:
    """Files left in ``queue/processing/`` by an earlier run, oldest first (work folders excluded)."""
    try:
        entries = [entry for entry in os.scandir(processing) if not entry.name.endswith(WORK_SUFFIX)]
    except FileNotFoundError:
        return []
    entries = [entry for entry in entries if entry.name.endswith(SUFFIX) and not entry.name.startswith(".")]
    entries.sort(key=lambda e: (e.stat(follow_symlinks=False).st_mtime_ns, e.name))
    return [Path(entry.path) for entry in entries]


def file_away(path: Path, folder: Path, report: dict) -> Path:
    """Move ``path`` into ``folder`` (``queue/done`` or ``queue/failed``) and write its report beside it.

    The report is written first, under the name the file will have, so a file in done/ or
    failed/ always has its report. If ``NAME`` is taken there, ``-1``, ``-2``... is added.

    Returns:
        The file's new path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = free_name(folder, path.name)
    atomic_write_json(report_path(target), report)
    os.rename(path, target)
    fsync_dir(folder)
    fsync_dir(path.parent)
    logger.info("%s -> %s (report %s)", path.name, target, report_path(target).name)
    return target


def report_path(path: Path) -> Path:
    """Where the report of a filed-away ``path`` lives."""
    return path.with_name(path.name + REPORT_SUFFIX)


def requeue_failed(layout: BaseDir, name: str) -> Path:
    """Move ``queue/failed/NAME`` back into the inbox and delete its stale report (``trainctl retry``).

    The daemon then takes it like any new file: validated and trained again from ``current_model``.

    Returns:
        The file's path in the inbox.

    Raises:
        UserError: there is no such failed file, or a file of that name already waits in the inbox.
    """
    source = layout.failed / Path(name).name
    if not source.is_file() or name.endswith(REPORT_SUFFIX):
        failed = sorted(p.name for p in layout.failed.glob(f"*{SUFFIX}")) if layout.failed.is_dir() else []
        raise UserError(f"no failed file {name!r} in {layout.failed}; failed files: {', '.join(failed) or 'none'}")
    target = layout.inbox / source.name
    if target.exists():
        raise UserError(f"{target} already exists; move it away first, then retry {source.name}")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(source, target)
    report_path(source).unlink(missing_ok=True)
    fsync_dir(target.parent)
    fsync_dir(source.parent)
    logger.info("%s: moved back into %s for another try", source.name, target.parent)
    return target
