"""Per-run storage: every training run gets its own folder under ``runs/``, never overwritten.

::

    runs/
      latest -> 2026-11-22_18-30-00       symlink to the newest run, replaced atomically
      2026-11-22_18-30-00/
        run.json                          what ran, on what, and how it ended (written atomically)
        train.log                         this run's log records
        tensorboard/                      TensorBoard event files
        checkpoints/checkpoint-N/         resumable step checkpoints (see trainer/checkpoint_manager)
        model/                            the trained model, when the run completed

A second run started within the same second gets ``-1``, ``-2``... appended to its name.
Use a run as a context manager: an exception marks it ``failed`` (``interrupted`` for Ctrl-C or
SIGTERM's ``KeyboardInterrupt``/``SystemExit``) before it propagates.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from core.base.atomic import atomic_write_json, fsync_dir
from core.base.clock import utc_now_iso
from core.base.hashing import sha256_file
from trainer.config import TrainConfig

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
LOG_FILE = "train.log"
LATEST_LINK = "latest"
CHECKPOINTS_DIRNAME = "checkpoints"
MODEL_DIRNAME = "model"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RunStatus(str, Enum):
    """How a run stands; serialized as its value."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


def git_sha(directory: Path) -> str | None:
    """``git rev-parse HEAD`` in ``directory``; None when it is not a git repo or git is missing."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def data_file_record(path: Path, weight: float = 1.0) -> dict[str, Any]:
    """What run.json records about one data file: path, size, SHA-256 and mixing weight."""
    path = Path(path)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path), "weight": weight}


def config_summary(config: TrainConfig) -> dict[str, Any]:
    """The settings a reader of run.json looks for first."""
    hp = config.hyperparams
    summary: dict[str, Any] = {
        "base_model": config.base_model,
        "profile": config.profile,
        "method": config.method,
        "max_steps": hp.max_steps,
        "epochs": hp.epochs,
        "batch_size": hp.batch_size,
        "gradient_accumulation": hp.gradient_accumulation,
        "learning_rate": hp.learning_rate,
    }
    if config.adapter:
        summary["lora"] = {"r": config.lora.r, "alpha": config.lora.alpha}
    return summary


def claim_run_dir(runs_root: Path, now: datetime) -> Path:
    """Create a fresh ``runs/<timestamp>[-k]`` folder; ``mkdir`` fails on an existing name."""
    stem = now.strftime("%Y-%m-%d_%H-%M-%S")
    for suffix in range(1000):
        candidate = runs_root / (stem if suffix == 0 else f"{stem}-{suffix}")
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        return candidate
    raise RuntimeError(f"{runs_root}: 1000 runs named {stem}*; clean up runs/ and retry")


def point_latest(runs_root: Path, run_dir: Path) -> None:
    """Make ``runs/latest`` point at ``run_dir`` (temp symlink + ``os.replace``: never missing)."""
    tmp = runs_root / f".{LATEST_LINK}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(run_dir.name, tmp)
    os.replace(tmp, runs_root / LATEST_LINK)
    fsync_dir(runs_root)


@dataclass
class Run:
    """One run folder and its ``run.json``. Create with :func:`start_run` or :func:`reopen_run`."""

    path: Path
    record: dict[str, Any]
    _handler: logging.Handler | None = field(default=None, repr=False)
    _root_level: int = field(default=logging.NOTSET, repr=False)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIRNAME

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIRNAME

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    @property
    def status(self) -> RunStatus:
        return RunStatus(self.record["status"])

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` into run.json and rewrite it atomically."""
        self.record.update(fields)
        atomic_write_json(self.path / RUN_FILE, self.record)

    def attach_log(self, level: int = logging.INFO) -> None:
        """Copy this process's log records at ``level`` and above into ``train.log`` until
        :meth:`finish`. The root logger is lowered to ``level`` meanwhile if it was set higher."""
        if self._handler is None:
            self._handler = logging.FileHandler(self.log_file, encoding="utf-8")
            self._handler.setFormatter(logging.Formatter(LOG_FORMAT))
            self._handler.setLevel(level)
            root = logging.getLogger()
            self._root_level = root.level
            if root.level > level:
                root.setLevel(level)
            root.addHandler(self._handler)

    def detach_log(self) -> None:
        """Stop writing ``train.log`` and restore the root logger's level."""
        if self._handler is not None:
            root = logging.getLogger()
            root.removeHandler(self._handler)
            root.setLevel(self._root_level)
            self._handler.close()
            self._handler = None

    def finish(self, status: RunStatus, **results: Any) -> None:
        """Record how the run ended (with results such as losses) and close its log file."""
        logger.info("run %s %s", self.id, status.value)
        self.update(status=status.value, finished_at=utc_now_iso(), **results)
        self.detach_log()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.record.get("status") == RunStatus.RUNNING.value:
            interrupted = issubclass(exc_type, (KeyboardInterrupt, SystemExit))
            logger.error("run %s stopped: %s: %s", self.id, exc_type.__name__, exc)
            status = RunStatus.INTERRUPTED if interrupted else RunStatus.FAILED
            self.finish(status, error=f"{exc_type.__name__}: {exc}")
        self.detach_log()


def run_results(result: Any, state: Any, model_dir: Path) -> dict[str, Any]:
    """The run.json fields of a completed training: a ``TrainResult`` and the Trainer's final state."""
    return {
        "steps": result.steps,
        "first_loss": result.first_loss,
        "final_loss": result.last_loss,
        "eval_loss": result.eval_loss,
        "best_eval_loss": state.best_metric,
        "best_checkpoint": state.best_model_checkpoint,
        "examples": result.examples,
        "model_dir": str(model_dir),
    }


def start_run(
    runs_root: Path,
    *,
    phase: str,
    config: TrainConfig,
    config_file: Path | None = None,
    config_text: str | None = None,
    data_files: Sequence[dict[str, Any]] = (),
    base_dir: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Run:
    """Create ``runs/<timestamp>/`` with run.json (status ``running``), attach its log, point latest.

    Args:
        runs_root: the ``runs/`` folder (created if missing).
        phase: what is trained, e.g. ``pretrain``, ``sft`` or ``file``.
        config: the resolved config, summarized in run.json.
        config_file: the config file the run was started with.
        config_text: that file's text; stored verbatim (as JSON) in run.json.
        data_files: one :func:`data_file_record` per data file.
        base_dir: the base dir, whose git commit (if any) is recorded.
        extra: more fields for run.json (e.g. the model the run starts from).
    """
    runs_root = Path(runs_root)
    path = claim_run_dir(runs_root, datetime.now())
    record: dict[str, Any] = {
        "id": path.name,
        "status": RunStatus.RUNNING.value,
        "phase": phase,
        "started_at": utc_now_iso(),
        "finished_at": None,
        "git_sha": git_sha(base_dir) if base_dir else None,
        **config_summary(config),
        "data_files": list(data_files),
        "config_file": str(config_file) if config_file else None,
        "config": json.loads(config_text) if config_text else None,
        **(extra or {}),
    }
    run = Run(path, record)
    run.update()
    run.attach_log()
    point_latest(runs_root, path)
    logger.info("run %s started in %s", run.id, path)
    return run


def read_run(path: Path) -> Run | None:
    """The run at ``path``, or None when it has no readable run.json."""
    try:
        record = json.loads((Path(path) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Run(Path(path), record) if isinstance(record, dict) else None


def list_runs(runs_root: Path) -> list[Run]:
    """Every readable run under ``runs_root``, oldest first (``latest`` is skipped)."""
    if not Path(runs_root).is_dir():
        return []
    runs = [read_run(p) for p in sorted(Path(runs_root).iterdir()) if p.is_dir() and not p.is_symlink()]
    return sorted((r for r in runs if r is not None), key=lambda r: (r.record.get("started_at", ""), r.id))


def reopen_run(run: Run, **fields: Any) -> Run:
    """Continue an unfinished run in its own folder: status back to ``running``, log re-attached."""
    resumes = [*run.record.get("resumes", []), {"at": utc_now_iso(), **fields}]
    run.update(status=RunStatus.RUNNING.value, finished_at=None, resumes=resumes)
    run.attach_log()
    point_latest(run.path.parent, run.path)
    logger.info("run %s continues in %s", run.id, run.path)
    return run
