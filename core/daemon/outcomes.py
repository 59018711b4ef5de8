"""What happened to a file, recorded everywhere a user looks: queue folder, report, event, status.

Every file the daemon takes ends in exactly one of these ways. ``OutcomeRecorder`` moves it to
``queue/done/`` or ``queue/failed/`` with ``NAME.report.json`` beside it, emits the event, and
returns the status to idle, so a failed file is a recorded outcome and the daemon carries on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum

from core.base.clock import utc_now_iso
from core.daemon.sd_notify import SystemdNotifier
from core.daemon.work_queue import WorkItem, file_away
from core.snapshots.gate import Verdict
from core.snapshots.store import SnapshotInfo
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
    REJECTED = "rejected"
    """Trained, but the promotion gate rejected the model; filed in queue/rejected, kept as a snapshot."""
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
    BLOCKED = "blocked"
    """An environment fault (base model, tokenizer, current_model; see core.daemon.environment)
    holds; nothing was taken and the files stay where they are until it is fixed."""


COUNTED = ("trained", "duplicate", "invalid", "failed")
"""Outcomes that ``daemon --once`` always counts on its last line, in this order."""
NOT_TRAINED = ("invalid", "failed", "rejected")
"""Outcomes of a file that was filed away untrained: ``daemon --once`` then exits 1."""


class OutcomeRecorder:
    """Files a finished file away and records its outcome.

    Args:
        layout: The base directory.
        events: The event log.
        status: The status file.
        ledger: The exactly-once ledger (failed contents are recorded too, for history).
        notifier: systemd status line.
        standing_error: The error that outlives a trained file (a refused config.json), or None:
            ``last_error`` becomes it once a file trains, so a file's old error is cleared.
    """

    def __init__(
        self, layout: BaseDir, events: EventLog, status: StatusFile, ledger: Ledger, notifier: SystemdNotifier,
        standing_error: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.layout = layout
        self.events = events
        self.status = status
        self.ledger = ledger
        self.notifier = notifier
        self.standing_error = standing_error
        self._reported: set[tuple[str, str]] = set()

    def trained(self, item: WorkItem, digest: str, snapshot_id: str, **report) -> Outcome:
        """The file's snapshot is current: file it in queue/done."""
        name = item.path.name
        self.events.emit(EventType.SNAPSHOT_PROMOTED, file=name, snapshot=snapshot_id)
        self._file(item, self.layout.done, Outcome.TRAINED, sha256=digest, snapshot=snapshot_id, **report)
        self.status.update(state=DaemonState.IDLE, current_file=None, last_completed_file=name,
                           current_snapshot=snapshot_id, last_error=self.standing_error(), **PROGRESS_CLEARED)
        self.notifier.status(f"idle; last trained {name} -> {snapshot_id}")
        return Outcome.TRAINED

    def gated(self, item: WorkItem, digest: str, snapshot: SnapshotInfo, **report) -> Outcome:
        """The file's snapshot was judged: promoted (queue/done) or rejected (queue/rejected)."""
        if snapshot.verdict == Verdict.REJECTED.value:
            outcome = self.rejected(item, digest, snapshot, **report)
        else:
            outcome = self.trained(item, digest, snapshot.id, evaluation=snapshot.evaluation, **report)
        # After the outcome, which rewrites last_error; a rejection's advice is not overwritten.
        self.report_eval_problems(report.get("training"), in_status=outcome is Outcome.TRAINED)
        return outcome

    def rejected(self, item: WorkItem, digest: str, snapshot: SnapshotInfo, **report) -> Outcome:
        """The gate kept ``current_model``: file it in queue/rejected with every set's losses and the rule."""
        name, evaluation = item.path.name, snapshot.evaluation or {}
        advice = (f"current_model is unchanged; inspect snapshot {snapshot.id} (`trainctl snapshots list`, "
                  f"`trainctl eval {snapshot.id}`), fix the file and drop it in again, or promote it anyway "
                  f"with `trainctl snapshots promote {snapshot.id} --force`")
        self.events.emit(EventType.PROMOTION_REJECTED, file=name, snapshot=snapshot.id, rule=evaluation.get("rule"))
        self._file(item, self.layout.rejected, Outcome.REJECTED, sha256=digest, snapshot=snapshot.id,
                   rule=evaluation.get("rule"), evaluation=evaluation, message=advice, **report)
        self.status.update(state=DaemonState.IDLE, current_file=None,
                           last_error=f"{name}: rejected by the promotion gate ({evaluation.get('rule')}); {advice}",
                           **PROGRESS_CLEARED)
        self.notifier.status(f"idle; {name} rejected by the promotion gate")
        return Outcome.REJECTED

    def report_eval_problems(self, training: dict | None, in_status: bool = True) -> None:
        """An unusable golden set: an event and the status line, once per path and reason."""
        for problem in ((training or {}).get("gate") or {}).get("problems", []):
            key = (problem["path"], problem["reason"])
            if key in self._reported:
                continue
            self._reported.add(key)
            self.events.emit(EventType.EVAL_SET_INVALID, path=problem["path"], reason=problem["reason"])
            if in_status:
                self.status.update(last_error=f"evaluation set {problem['path']} left out of the gate: "
                                              f"{problem['reason']}")

    def duplicate(self, item: WorkItem, digest: str, entry: dict) -> Outcome:
        """The same content was trained (or rejected) before (``entry`` is its ledger record)."""
        name, original, snapshot = item.path.name, entry.get("file"), entry.get("snapshot")
        if entry.get("outcome") == Outcome.REJECTED.value:
            message = (f"same content as {original}, which the promotion gate rejected (snapshot {snapshot}); "
                       f"not training it again. Promote that snapshot with `trainctl snapshots promote "
                       f"{snapshot} --force`, or change the file")
            self._file(item, self.layout.rejected, Outcome.DUPLICATE, sha256=digest, duplicate_of=original,
                       snapshot=snapshot, message=message)
            self.events.emit(EventType.FILE_DUPLICATE, file=name, duplicate_of=original, snapshot=snapshot,
                             rejected=True)
            self.status.update(state=DaemonState.IDLE, current_file=None, last_error=f"{name}: {message}",
                               **PROGRESS_CLEARED)
            return Outcome.DUPLICATE
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

    def paused(self, name: str, steps: int | None, total: int | None) -> Outcome:
        """Stopped on request: the file waits in queue/processing and resumes on the next start."""
        where = f"at step {steps if steps is not None else 0} of {total if total is not None else '?'}"
        logger.info("%s: stopped %s; it resumes on the next start", name, where)
        self.status.update(paused=f"{name}: paused {where}, resumes on next start")
        return Outcome.INTERRUPTED


class OutcomeCounts:
    """What ``daemon --once`` did, for its last line and its exit code."""

    def __init__(self) -> None:
        self.counts: dict[Outcome, int] = {}
        self.last: Outcome | None = None

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        self.last = outcome

    def line(self) -> str:
        """``trained 3, duplicate 1, invalid 0, failed 1`` (and any other outcome of a file that happened)."""
        values = {outcome.value: n for outcome, n in self.counts.items()}
        shown = [*COUNTED, *(v for v in NOT_TRAINED if v not in COUNTED and v in values)]
        return ", ".join(f"{value} {values.get(value, 0)}" for value in shown)

    def exit_code(self) -> int:
        """2: no usable config.json; 1: a file was filed untrained (invalid, failed, rejected), or the
        daemon stopped on a full disk or an environment fault; else 0."""
        if self.last is Outcome.CONFIG_REJECTED:
            return 2
        untrained = any(outcome.value in NOT_TRAINED for outcome in self.counts)
        return 1 if untrained or self.last in (Outcome.DISK_FULL, Outcome.BLOCKED) else 0
