"""The base directory: where the daemon keeps its inbox, queue, snapshots and state.

One ``BaseDir`` names every path so no other module builds them by hand::

    <root>/
      config.json                 training configuration (``trainctl init`` writes the defaults)
      inbox/  inbox/high/  inbox/low/   drop JSONL files here (high is taken before inbox/, low after)
      queue/processing/           the file being trained (claimed by atomic rename)
      queue/done/  queue/failed/  finished files; failed ones with a report
      queue/rejected/             files whose model the promotion gate rejected, with a report
      eval/                       golden evaluation sets (JSONL) the promotion gate measures
      memory/                     held-out rows of promoted files (memory set), the replay buffer
      queue/uploads/              HTTP uploads being received and checked (never read by the daemon)
      current_model               symlink to the promoted snapshot
      snapshots/<id>/             one model per trained file, with manifest.json
      status/                     training_status.json, events.jsonl, ledger.jsonl, daemon.lock,
                                  http_token (0600), paused (while claiming is paused)
      logs/  runs/                daemon logs, per-run checkpoints (base models: the models home)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from core.base.atomic import atomic_write_json
from core.base.errors import UserError
from core.state.http_token import ensure_http_token
from trainer.config import CONFIG_FILENAME, TrainConfig, config_to_dict, json_schema
from trainer.model.source import resolve_model_source

logger = logging.getLogger(__name__)

SCHEMA_FILENAME = "config.schema.json"


@dataclass(frozen=True)
class BaseDir:
    """Paths inside one base directory. Creating the object touches nothing on disk."""

    root: Path

    @classmethod
    def at(cls, root: str | Path) -> "BaseDir":
        """The base dir at ``root``, as an absolute path."""
        return cls(Path(root).expanduser().resolve())

    def model_source(self, config: TrainConfig) -> str:
        """The model a new training run continues from: ``current_model`` when valid, else ``base_model``."""
        return resolve_model_source(self.current_model, self.root, config)

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILENAME

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def inbox_high(self) -> Path:
        return self.inbox / "high"

    @property
    def inbox_low(self) -> Path:
        return self.inbox / "low"

    @property
    def processing(self) -> Path:
        return self.root / "queue" / "processing"

    @property
    def done(self) -> Path:
        return self.root / "queue" / "done"

    @property
    def failed(self) -> Path:
        return self.root / "queue" / "failed"

    @property
    def rejected(self) -> Path:
        """Files whose model the promotion gate rejected, each with its report."""
        return self.root / "queue" / "rejected"

    @property
    def eval_dir(self) -> Path:
        """Golden evaluation sets written by the user: every ``*.jsonl`` file in it."""
        return self.root / "eval"

    @property
    def memory(self) -> Path:
        """The memory set and the replay buffer (``core.memory``)."""
        return self.root / "memory"

    @property
    def current_model(self) -> Path:
        return self.root / "current_model"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def status_dir(self) -> Path:
        return self.root / "status"

    @property
    def status_file(self) -> Path:
        return self.status_dir / "training_status.json"

    @property
    def events_file(self) -> Path:
        return self.status_dir / "events.jsonl"

    @property
    def ledger_file(self) -> Path:
        return self.status_dir / "ledger.jsonl"

    @property
    def promotions_file(self) -> Path:
        return self.status_dir / "promotions.json"

    @property
    def lock_file(self) -> Path:
        return self.status_dir / "daemon.lock"

    @property
    def pause_file(self) -> Path:
        return self.status_dir / "paused"

    @property
    def http_token_file(self) -> Path:
        return self.status_dir / "http_token"

    @property
    def uploads(self) -> Path:
        return self.root / "queue" / "uploads"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def folders(self) -> list[Path]:
        """Every folder of the layout, parents first. ``current_model`` is not one: it is a link."""
        return [
            self.inbox,
            self.inbox_high,
            self.inbox_low,
            self.processing,
            self.done,
            self.failed,
            self.rejected,
            self.eval_dir,
            self.snapshots,
            self.status_dir,
            self.logs,
            self.runs,
        ]

    def ensure(self) -> "BaseDir":
        """Create every folder of the layout that is missing; returns ``self``."""
        for folder in self.folders():
            folder.mkdir(parents=True, exist_ok=True)
        return self


class NotABaseDirError(UserError):
    """A command that reads a base dir was pointed at a folder that is not one."""


def existing_base_dir(root: str | Path) -> BaseDir:
    """The base dir at ``root``, which must already be one (it holds ``config.json``).

    Raises:
        NotABaseDirError: naming the folder and what to do.
    """
    layout = BaseDir.at(root)
    if not layout.config_file.is_file():
        raise NotABaseDirError(
            f"{layout.root} is not a base dir (it has no {CONFIG_FILENAME}); use --base-dir DIR to name "
            "one, or create it with `trainctl init DIR`"
        )
    return layout


def init_base_dir(root: str | Path) -> BaseDir:
    """Create the layout under ``root`` and a default ``config.json`` if there is none.

    An existing ``config.json`` is never overwritten, so running this twice is safe. The default one
    starts with ``"$schema": "config.schema.json"``, written beside it, so editors complete and
    explain every field.
    """
    layout = BaseDir.at(root).ensure()
    if layout.config_file.exists():
        logger.info("kept existing %s", layout.config_file)
    else:
        atomic_write_json(layout.root / SCHEMA_FILENAME, json_schema())
        atomic_write_json(layout.config_file, {"$schema": SCHEMA_FILENAME, **config_to_dict(TrainConfig())})
        logger.info("wrote default %s", layout.config_file)
    ensure_http_token(layout.http_token_file)
    return layout
