"""What happened to a file, recorded everywhere a user looks: queue folder, report, event, status.

Every file the daemon takes ends in exactly one of these ways. ``OutcomeRecorder`` moves it to
``queue/done/`` or ``queue/failed/`` with ``NAME.report.json`` beside it, emits the event, and
returns the status to idle, so a failed file is a recorded outcome and the daemon carries on.
"""

from __future__ import annotations

import logging
from enum import Enum

from core.base.clock import utc_now_iso
from core.daemon.sd_notify import SystemdNotifier
from core.daemon.work_queue import WorkItem, file_away
from core.state.events import EventLog, EventType
from core.state.layout import BaseDir
from core.state.ledger import Ledger
from core.state.status import DaemonState, StatusFile
from trainer.data.validation import ValidationReport

logger = logging.getLogger(__name__)

PROGRESS_CLEARED = dict(
    current_step=None, total_steps=None, epoch=None, loss=None, eval_loss=None,
    learning_rate=None, tokens_per_second=None, eta_seconds=None,
)


class Outcome(str, Enum):
    """What one ``TrainingDaemon.run_once()`` did."""

    IDLE = "idle"
    """Nothing in the inbox."""
    WAITING = "waiting"
    """Files are in the inbox, but still changing (see ``daemon.stable_seconds``)."""
    TRAINED = "trained"
    """Trained and promoted; filed in queue/done."""
    DUPLICATE = "duplicate"
    """Same content as a file trained before; filed in queue/done without training."""
    INVALID = "invalid"
    """Validation found the file unusable; filed in queue/failed with its report."""
    FAILED = "failed"
    """Training or snapshotting failed for the last allowed attempt; filed in queue/failed."""
    RETRY = "retry"
    """An attempt failed; the file stays in queue/processing for the next one."""
    CONFIG_REJECTED = "config_rejected"
    """No usable config.json yet; nothing was taken."""
    INTERRUPTED = "interrupted"
    """Stopped on request; the file stays in queue/processing and resumes from its checkpoint."""
    DISK_FULL = "disk_full"
    """A write failed for lack of space; the file stays in queue/processing (the attempt is not
    counted) and is retried from its last checkpoint after ``daemon.rescan_seconds``."""


class OutcomeRecorder:
    """Files a finished file away and records its outcome.

    Args:
        layout: The base directory.
        events: The event log.
        status: The status file.
        ledger: The exactly-once ledger (failed contents are recorded too, for history).
        notifier: systemd status line.
    """

    def __init__(
        self, layout: BaseDir, events: EventLog, status: StatusFile, ledger: Ledger, notifier: SystemdNotifier
    ) -> None:
        self.layout = layout
        self.events = events
        self.status = status
        self.ledger = ledger
        self.notifier = notifier

    def trained(self, item: WorkItem, digest: str, snapshot_id: str, **report) -> Outcome:
        """The file's snapshot is current: file it in queue/done."""
        name = item.path.name
        self.events.emit(EventType.SNAPSHOT_PROMOTED, file=name, snapshot=snapshot_id)
        self._file(item, self.layout.done, Outcome.TRAINED, sha256=digest, snapshot=snapshot_id, **report)
        self.status.update(state=DaemonState.IDLE, current_file=None, last_completed_file=name,
                           current_snapshot=snapshot_id, **PROGRESS_CLEARED)
        self.notifier.status(f"idle; last trained {name} -> {snapshot_id}")
        return Outcome.TRAINED

    def duplicate(self, item: WorkItem, digest: str, entry: dict) -> Outcome:
        """The same content was trained before (``entry`` is its ledger record): file it in queue/done."""
        name, original, snapshot = item.path.name, entry.get("file"), entry.get("snapshot")
        logger.info("%s has the same content as %s (snapshot %s); not training it again", name, original, snapshot)
        self._file(item, self.layout.done, Outcome.DUPLICATE, sha256=digest, duplicate_of=original,
                   snapshot=snapshot, message=f"duplicate of {original} (trained into snapshot {snapshot})")
        self.events.emit(EventType.FILE_DUPLICATE, file=name, duplicate_of=original, snapshot=snapshot)
        self.status.update(state=DaemonState.IDLE, current_file=None, **PROGRESS_CLEARED)
        return Outcome.DUPLICATE

    def invalid(self, item: WorkItem, report: ValidationReport) -> Outcome:
        """Validation refused the file: file it in queue/failed with the validation report."""
        name = item.path.name
        self._file(item, self.layout.failed, Outcome.INVALID, sha256=report.sha256,
                   validation=report.model_dump(mode="json"))
        self.events.emit(EventType.VALIDATION_FAILED, file=name, problems=report.problems, bad_rows=report.bad_rows)
        self.status.update(state=DaemonState.IDLE, current_file=None,
                           last_error=f"{name}: {'; '.join(report.problems)}", **PROGRESS_CLEARED)
        return Outcome.INVALID

    def failed(
        self,
        item: WorkItem,
        digest: str | None,
        error: str,
        trace: str | None,
        validation: ValidationReport | None = None,
        **report,
    ) -> Outcome:
        """Training or snapshotting failed for good: file it in queue/failed with the error and traceback."""
        name = item.path.name
        if digest is not None:
            self.ledger.record(digest, file=name, outcome="failed", error=error)
        self._file(item, self.layout.failed, Outcome.FAILED, sha256=digest, error=error, traceback=trace,
                   validation=validation.model_dump(mode="json") if validation else None, **report)
        self.events.emit(EventType.FILE_FAILED, file=name, error=error)
        self.status.update(state=DaemonState.IDLE, current_file=None, last_error=f"{name}: {error}",
                           **PROGRESS_CLEARED)
        return Outcome.FAILED

    def _file(self, item: WorkItem, folder, outcome: Outcome, **fields) -> None:
        item.discard()
        report = {"file": item.path.name, "outcome": outcome.value, "finished_at": utc_now_iso(), **fields}
        file_away(item.path, folder, report)
