"""Re-read ``config.json`` before each file, keeping the last good config when an edit is refused.

An edit is refused when it is invalid, or when it cannot continue the current model: a different
``base_model`` or ``method``, or (for LoRA) a different adapter rank, target modules, DoRA, rsLoRA
or saved modules than the snapshot in ``current_model`` was trained with; and when this machine
cannot run it (``method: qlora`` without CUDA). The daemon then records the reason (status
``last_error``, a ``config_rejected`` event, once per edit) and carries on with the previous config.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from core.child.torchrun import launch_problems
from core.snapshots.store import SnapshotError, SnapshotStore, read_manifest
from core.state.events import EventLog, EventType
from core.state.layout import BaseDir
from core.state.status import StatusFile
from trainer.config import ConfigError, TrainConfig, load_config
from trainer.config.schema import LoraSettings
from trainer.model.hardware import qlora_problem

logger = logging.getLogger(__name__)

NEW_LINEAGE_HINT = (
    "To start a new lineage deliberately, stop the daemon and move current_model and snapshots/ "
    "aside (or `trainctl init` a new base dir and drop the files there). Until then the daemon keeps "
    "training with the previous config."
)


ADAPTER_KEYS = ("r", "target_modules", "use_dora", "modules_to_save", "use_rslora")
"""``lora`` settings an adapter is made of: its shapes, the extra modules it saves, the scale its
weights were trained for. A snapshot trained before a key existed had its default."""


def lineage_problems(config: TrainConfig, trained_with: dict, base_dir: Path) -> list[str]:
    """Settings of ``config`` that cannot continue a model trained with the config ``trained_with``.

    Args:
        config: The new config.
        trained_with: The ``config`` recorded in the current snapshot's manifest.
        base_dir: For comparing relative ``base_model`` paths.
    """
    old_lora = trained_with.get("lora") or {}
    changes = []
    if _model_key(trained_with.get("base_model"), base_dir) != _model_key(config.base_model, base_dir):
        changes.append(f"base_model {trained_with.get('base_model')!r} -> {config.base_model!r}")
    if trained_with.get("method") != config.method:
        changes.append(f"method {trained_with.get('method')!r} -> {config.method!r}")
    elif config.adapter:
        new_lora = config.lora.model_dump()
        for key in ADAPTER_KEYS:
            old, new = old_lora.get(key, LoraSettings().model_dump()[key]), new_lora[key]
            if _as_set(old) != _as_set(new):
                changes.append(f"lora.{key} {old} -> {new}")
    return changes


def _as_set(value: object) -> object:
    """Module lists compare as sets (their order means nothing to PEFT); other values as they are."""
    return frozenset(value) if isinstance(value, list) else value


def _model_key(name: object, base_dir: Path) -> str:
    """A local path resolved against the base dir; a hub id as written."""
    text = str(name)
    candidate = Path(text) if Path(text).is_absolute() else base_dir / text
    return str(candidate.resolve()) if candidate.exists() else text


class ConfigGuard:
    """Holds the config the daemon trains with.

    Args:
        layout: The base directory.
        events: Where ``config_rejected`` is emitted.
        status: Where ``last_error`` is set.
    """

    def __init__(self, layout: BaseDir, events: EventLog, status: StatusFile) -> None:
        self.layout = layout
        self.events = events
        self.status = status
        self.config: TrainConfig | None = None
        self._seen: tuple[str, str | None] | None = None
        self._last_rejection: str | None = None

    def reload(self) -> TrainConfig | None:
        """Re-read ``config.json``; return the config to use (the last good one if the edit is refused).

        Returns None only while no good config has been seen since the daemon started.
        """
        current = SnapshotStore(self.layout).current()
        key = (self._digest(), current.id if current else None)
        if key == self._seen:
            return self.config
        self._seen = key
        try:
            config = load_config(self.layout.config_file)
            problems = self._lineage(config, current.path) if current else []
        except ConfigError as exc:
            self._reject(str(exc), exc.problems)
            return self.config
        if problems:
            message = (
                f"{self.layout.config_file}: refused, it cannot continue the current model "
                f"{current.id}: {'; '.join(problems)}. {NEW_LINEAGE_HINT}"
            )
            self._reject(message, problems)
            return self.config
        machine = launch_problems(config, daemon=True)
        if quantization := qlora_problem(config.method):
            machine.append(quantization)
        if machine:
            self._reject(f"{self.layout.config_file}: refused on this machine: {'; '.join(machine)}", machine)
            return self.config
        if self.config is not None and config != self.config:
            logger.info("%s changed; the next file trains with the new config", self.layout.config_file)
        if self._last_rejection is not None:
            self.status.update(last_error=None)
            self._last_rejection = None
        self.config = config
        return config

    @property
    def rejection(self) -> str | None:
        """Why the current ``config.json`` is refused (the last good one is in force), or None."""
        return self._last_rejection

    def _lineage(self, config: TrainConfig, snapshot: Path) -> list[str]:
        try:
            trained_with = read_manifest(snapshot).get("config") or {}
        except SnapshotError as exc:
            logger.warning("cannot compare config.json with %s: %s", snapshot.name, exc)
            return []
        return lineage_problems(config, trained_with, self.layout.root)

    def _reject(self, message: str, problems: list[str]) -> None:
        if message == self._last_rejection:
            return  # the same edit, seen again after a new snapshot: already reported
        self._last_rejection = message
        logger.error("%s", message)
        kept = "the previous config" if self.config is not None else "no config (waiting for a fix)"
        self.events.emit(EventType.CONFIG_REJECTED, file=self.layout.config_file.name, problems=problems, kept=kept)
        self.status.update(last_error=message)

    def _digest(self) -> str:
        try:
            return hashlib.sha256(self.layout.config_file.read_bytes()).hexdigest()
        except FileNotFoundError:
            return "missing"
