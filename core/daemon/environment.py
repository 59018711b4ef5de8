"""Faults of the environment, not of a file: the daemon stops claiming files until they are fixed.

A base model that is missing or incomplete, a tokenizer that is missing, a ``current_model`` that
no longer verifies, or a ``hyperparams.max_length`` the model cannot hold would fail every file
the same way. Failing the files for it would consume the user's data for a fault that is not
theirs, so before a file is claimed (or a leftover taken up) ``EnvironmentGuard.blocked()`` checks
for them. While one holds, the files stay where they are, the status says ``error`` with what is
wrong and the command that fixes it, and an ``environment_fault`` event is written once; the next
check that passes writes ``environment_resolved`` and the daemon carries on by itself, as it does
after a full disk.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from core.snapshots.store import SnapshotError, SnapshotStore, verify_snapshot
from core.state.events import EventLog, EventType
from core.state.layout import BaseDir
from core.state.status import DaemonState, StatusFile
from trainer.config import ConfigError, TrainConfig
from trainer.model.source import ModelSourceError, adapter_base_model
from trainer.model.model_dirs import check_model_dir
from trainer.model.positions import check_max_length

logger = logging.getLogger(__name__)


class EnvironmentFault(Exception):
    """Something outside the files stops every file from training; the message says how to fix it."""


def check_environment(layout: BaseDir, store: SnapshotStore, config: TrainConfig, verified: set) -> None:
    """Raise the first environment fault that would fail the next file, if there is one.

    Args:
        layout: the base dir.
        store: its snapshots.
        config: the config in force.
        verified: fingerprints of ``current_model`` states that verified before (filled in here),
            so an unchanged snapshot is not hashed again on every rescan.

    Raises:
        EnvironmentFault: what is wrong and the command that fixes it.
    """
    current = store.current()
    if current is not None:
        fingerprint = _fingerprint(current.path)
        if fingerprint not in verified:
            try:
                verify_snapshot(current.path)
            except SnapshotError as exc:
                raise EnvironmentFault(
                    f"current_model ({current.id}) no longer verifies: {exc}; roll back to a good "
                    "snapshot with `trainctl rollback previous` (or `trainctl rollback ID`)"
                ) from None
            verified.clear()  # only the latest state is worth remembering
            verified.add(fingerprint)
    try:
        source = layout.model_source(config)
        _check_model(source, config, layout.root)
        check_max_length(config, source, layout.config_file)
    except (ModelSourceError, ConfigError) as exc:
        raise EnvironmentFault(str(exc)) from None


def _check_model(source: str, config: TrainConfig, base_dir: Path) -> None:
    """A local ``source`` (and an adapter's base model) must be a complete model with a tokenizer."""
    if not Path(source).exists():
        return  # a hub id: only loading it can tell
    check = check_model_dir(source)
    if check.ok and check.kind == "adapter":
        base = adapter_base_model(Path(source), config, base_dir)
        check = check_model_dir(base) if Path(base).exists() else check
        source = base
    if not check.ok:
        raise ModelSourceError(
            f"the model to train from, {source}, is not usable: {check.reason}; for the embedded model "
            "run `trainctl prepare-model --force`, else point base_model in config.json at a complete model"
        )


def _fingerprint(path: Path) -> tuple:
    """The snapshot's id and every file's size and mtime: a change to any of them verifies again."""
    real = path.resolve()
    try:
        files = sorted(os.scandir(real), key=lambda entry: entry.name)
        return real.name, tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file())
    except OSError:
        return real.name, None  # gone or unreadable: verify_snapshot says why


class EnvironmentGuard:
    """Runs :func:`check_environment` before each claim and records when a fault starts and ends.

    Args:
        layout: the base dir.
        store: its snapshots.
        events: the event log.
        status: the status file.
    """

    def __init__(self, layout: BaseDir, store: SnapshotStore, events: EventLog, status: StatusFile) -> None:
        self.layout = layout
        self.store = store
        self.events = events
        self.status = status
        self.fault: str | None = None
        self._verified: set = set()

    def blocked(self, config: TrainConfig) -> bool:
        """True while an environment fault holds (files must stay where they are)."""
        try:
            check_environment(self.layout, self.store, config, self._verified)
        except EnvironmentFault as exc:
            self._report(str(exc))
            return True
        if self.fault is not None:
            logger.info("environment fault resolved: %s", self.fault)
            self.events.emit(EventType.ENVIRONMENT_RESOLVED, error=self.fault)
            self.status.update(state=DaemonState.IDLE, last_error=None)
            self.fault = None
        return False

    def _report(self, message: str) -> None:
        if message == self.fault:
            return
        self.fault = message
        logger.error("not taking files until this is fixed: %s", message)
        self.events.emit(EventType.ENVIRONMENT_FAULT, error=message)
        self.status.update(
            state=DaemonState.ERROR, current_file=None,
            last_error=f"not taking files until this is fixed (they stay in the inbox): {message}",
        )
