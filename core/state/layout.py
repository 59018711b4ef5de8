"""The base directory: where the daemon keeps its inbox, queue, snapshots and state.

One ``BaseDir`` names every path so no other module builds them by hand::

    <root>/
      config.json                 training configuration (``trainctl init`` writes the defaults)
      inbox/  inbox/high/  inbox/low/   drop JSONL files here (high is taken before inbox/, low after)
      queue/processing/           the file being trained (claimed by atomic rename)
      queue/done/  queue/failed/  finished files; failed ones with a report
      current_model               symlink to the promoted snapshot
      snapshots/<id>/             one model per trained file, with manifest.json
      status/                     training_status.json, events.jsonl, ledger.json, daemon.lock
      logs/  runs/  models/       daemon logs, per-run checkpoints, downloaded base models
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from core.base.atomic import atomic_write_json
from trainer.config import CONFIG_FILENAME, TrainConfig, config_to_dict
from trainer.model.loading import resolve_model_source

logger = logging.getLogger(__name__)


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
        return self.status_dir / "ledger.json"

    @property
    def promotions_file(self) -> Path:
        return self.status_dir / "promotions.json"

    @property
    def lock_file(self) -> Path:
        return self.status_dir / "daemon.lock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def folders(self) -> list[Path]:
        """Every folder of the layout, parents first. ``current_model`` is not one: it is a link."""
        return [
            self.inbox,
            self.inbox_high,
            self.inbox_low,
            self.processing,
            self.done,
            self.failed,
            self.snapshots,
            self.status_dir,
            self.logs,
            self.runs,
            self.models,
        ]

    def ensure(self) -> "BaseDir":
        """Create every folder of the layout that is missing; returns ``self``."""
        for folder in self.folders():
            folder.mkdir(parents=True, exist_ok=True)
        return self


def init_base_dir(root: str | Path) -> BaseDir:
    """Create the layout under ``root`` and a default ``config.json`` if there is none.

    An existing ``config.json`` is never overwritten, so running this twice is safe.
    """
    layout = BaseDir.at(root).ensure()
    if layout.config_file.exists():
        logger.info("kept existing %s", layout.config_file)
    else:
        atomic_write_json(layout.config_file, config_to_dict(TrainConfig()))
        logger.info("wrote default %s", layout.config_file)
    return layout
