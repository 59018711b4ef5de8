"""The training daemon: an inbox file in, a promoted snapshot out, one file at a time.

``TrainingDaemon.run_once()`` takes at most one file through the flow and returns what happened::

    re-read config.json (core.daemon.config_guard) -> claim the next inbox file (core.daemon.inbox)
    -> duplicate? (core.state.ledger) -> validate (trainer.data.validation)
    -> train in a child process (core.child.launcher, core.child.worker, core.child.supervisor)
    -> snapshot, verify, promote, prune, ledger record (core.snapshots.promotion)
    -> file moved to queue/done or queue/failed with a report, event, status (core.daemon.outcomes)

``run_forever()`` is a thin loop around it (``--once`` drains the inbox and exits). A file left
in ``queue/processing/`` by a stopped or crashed daemon is taken first and resumes from its latest
checkpoint. A write that fails for lack of space is not the file's fault: the file waits in
``queue/processing/`` (``disk_full`` event, status ``error``) and is retried every
``daemon.rescan_seconds``. Signal handlers only set flags: the first SIGTERM/SIGINT asks the training
child to checkpoint and stop, the second kills it.

Run it with ``trainctl daemon --base-dir DIR [--once]`` or ``python -m core.daemon.loop``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.base.clock import utc_now_iso
from core.base.errors import is_disk_full
from core.base.hashing import sha256_file
from core.child.protocol import EXIT_DISK_FULL, EXIT_TRAINED
from core.child.standby import Standby
from core.child.supervisor import POLL_SECONDS, StopRequest
from core.daemon.child_run import log_tail, run_child, wait_for_orphan
from core.daemon.config_guard import ConfigGuard
from core.daemon.environment import EnvironmentGuard
from core.daemon.inbox import Inbox, InboxFile, InboxWatcher, StabilityTracker, check_regular_file, claim
from core.daemon.lock import DaemonLock
from core.daemon.outcomes import PROGRESS_CLEARED, Outcome, OutcomeCounts, OutcomeRecorder
from core.daemon.sd_notify import SystemdNotifier
from core.daemon.work_queue import WorkItem, WorkState, leftover_files
from core.http.server import start_daemon_server, stop_daemon_server
from core.runs.tensorboard import ensure_tensorboard
from core.snapshots.promotion import promote_run, recover_promotion
from core.snapshots.store import SnapshotStore
from core.state.events import EventLog, EventType
from core.state.layout import BaseDir
from core.state.ledger import Ledger
from core.state.status import DaemonState, StatusFile
from profiles import get_profile
from trainer.config import TrainConfig
from trainer.data.dataset import CACHE_DIRNAME
from trainer.data.validation import ValidationReport, validate_file
from trainer.model.loading import load_tokenizer

logger = logging.getLogger(__name__)
PAUSES = (Outcome.IDLE, Outcome.CONFIG_REJECTED, Outcome.WAITING, Outcome.DISK_FULL, Outcome.BLOCKED)


class TrainingDaemon:
    """Trains every file dropped into ``BASE_DIR/inbox`` and promotes the result.

    Args:
        base_dir: The base directory (created if needed; ``config.json`` must exist).
        clock: Monotonic clock for the stability rule; tests inject a fake one.
        notifier: systemd notifier; default reads ``$NOTIFY_SOCKET``.
    """

    def __init__(
        self,
        base_dir: str | Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.layout = BaseDir.at(base_dir).ensure()
        self.status = StatusFile(self.layout.status_file)
        self.events = EventLog(self.layout.events_file)
        self.ledger = Ledger(self.layout.ledger_file)
        self.snapshots = SnapshotStore(self.layout)
        self.inbox = Inbox(self.layout)
        self.guard = ConfigGuard(self.layout, self.events, self.status)
        self.tracker = StabilityTracker(0.0, clock)
        self.notifier = notifier or SystemdNotifier()
        self.record = OutcomeRecorder(self.layout, self.events, self.status, self.ledger, self.notifier,
                                      standing_error=lambda: self.guard.rejection)
        self.environment = EnvironmentGuard(self.layout, self.snapshots, self.events, self.status)
        self.counts = OutcomeCounts()
        self.wake = threading.Event()
        self.stop = StopRequest()
        self._detected: set[Path] = set()
        self._queued: list[str] | None = None
        self._next_check = 0.0
        self._tokenizer: tuple[str, Any] | None = None
        self._tensorboard_url: str | None = None
        self.standby = Standby(self.layout.root)  # a warm training child; used from run_forever() on

    # --- one step ---------------------------------------------------------------------------

    def run_once(self) -> Outcome:
        """Handle at most one file: a leftover in queue/processing first, else the next inbox file."""
        config = self.guard.reload()
        if config is None:
            return Outcome.CONFIG_REJECTED
        self.tracker.stable_seconds = config.daemon.stable_seconds
        if self.environment.blocked(config):  # files stay where they are until it is fixed
            return Outcome.BLOCKED
        leftovers = leftover_files(self.layout.processing)
        if leftovers:
            logger.info("%s was left in %s; taking it up again", leftovers[0].name, self.layout.processing)
            path = leftovers[0]
        else:
            path = self._claim_next()
            if isinstance(path, Outcome):
                return path
        return self._handle(WorkItem(path), config, leftover=bool(leftovers))

    def _claim_next(self) -> Path | Outcome:
        if self.layout.pause_file.exists():  # POST /api/pause: claim nothing until /api/resume
            return Outcome.IDLE
        scan = self.inbox.scan()
        for entry in scan.ignored:
            self.events.emit(EventType.ENTRY_IGNORED, path=self._relative(entry.path), reason=entry.reason)
        candidates = scan.candidates
        self.tracker.retain({c.path for c in candidates})
        for new in [c for c in candidates if c.path not in self._detected]:
            self.events.emit(EventType.FILE_DETECTED, file=new.path.name, path=self._relative(new.path))
        self._detected = {c.path for c in candidates}
        stable = [c for c in candidates if self.tracker.is_stable(c)]
        if not stable:
            self._set_queue(candidates)
            self._next_check = min((self.tracker.seconds_left(c) for c in candidates), default=0.0)
            return Outcome.WAITING if candidates else Outcome.IDLE
        chosen = stable[0]
        try:
            claimed = claim(chosen.path, self.layout.processing)
        except FileNotFoundError:
            logger.info("%s disappeared before it could be claimed", chosen.path)
            return Outcome.WAITING
        self._set_queue([c for c in candidates if c is not chosen])
        self.events.emit(EventType.FILE_CLAIMED, file=claimed.name, path=self._relative(chosen.path))
        return claimed

    def _handle(self, item: WorkItem, config: TrainConfig, leftover: bool) -> Outcome:
        name = item.path.name
        self.notifier.status(f"processing {name}")
        self.status.update(state=DaemonState.VALIDATING, current_file=name, paused=None,
                           model_display_name=config.model_display_name, **PROGRESS_CLEARED)
        digest = None
        try:
            check_regular_file(item.path)
            digest = sha256_file(item.path)
            entry = self._trained_before(digest)
            if leftover and (entry is None or entry.get("file") == name):
                if (snapshot := recover_promotion(self.snapshots, self.ledger, item, digest, config)) is not None:
                    return self.record.gated(item, digest, snapshot, recovered=True)
            if entry is not None:
                return self.record.duplicate(item, digest, entry)
            state = item.load_state(digest)
            if state.model_source is None:
                state.model_source, state.parent_snapshot = self._model_source(config)
            report = self._validate(item.path, config, state.model_source)
            if not report.usable:
                return self.record.invalid(item, report)
            return self._train(item, config, state, report)
        except Exception as exc:
            if is_disk_full(exc, self.layout.root):
                logger.exception("%s: disk full", name)
                return self._disk_full(name, f"{type(exc).__name__}: {exc}")
            logger.exception("%s failed", name)
            return self.record.failed(item, digest, f"{type(exc).__name__}: {exc}", traceback.format_exc())

    # --- the steps ----------------------------------------------------------------------------

    def _trained_before(self, digest: str) -> dict | None:
        entry = self.ledger.lookup(digest)
        return entry if entry and entry.get("outcome") in ("trained", "rejected") else None

    def _model_source(self, config: TrainConfig) -> tuple[str, str | None]:
        """The model to train from, and the snapshot id it is (None for the base model).

        ``current_model`` was verified by the environment check at the top of this ``run_once()``
        (``core.daemon.environment``), so it is not hashed a second time here.
        """
        current = self.snapshots.current()
        source = self.layout.model_source(config)
        parent = current.id if current and Path(source) == current.path.resolve() else None
        return source, parent

    def _validate(self, path: Path, config: TrainConfig, model_source: str) -> ValidationReport:
        if self._tokenizer is None or self._tokenizer[0] != model_source:
            self._tokenizer = (model_source, load_tokenizer(model_source, config.trust_remote_code))
        # The same cache the child reads: a validated file is not tokenized a second time.
        cache_dir = self.layout.root / CACHE_DIRNAME if config.data.cache_tokenized else None
        return validate_file(path, config, self._tokenizer[1], get_profile(config.profile), cache_dir)

    def _train(self, item: WorkItem, config: TrainConfig, state: WorkState, report: ValidationReport) -> Outcome:
        name = item.path.name
        if self.stop.requested or not wait_for_orphan(item, config, self.stop, self.notifier.watchdog):
            return Outcome.INTERRUPTED  # asked to stop while validating: do not start a child now
        state.attempts += 1
        item.save_state(state)
        resume = item.latest_checkpoint() if config.checkpoint.resume else None
        self.events.emit(
            EventType.TRAINING_STARTED, file=name, attempt=state.attempts, model_source=state.model_source,
            resume_from=str(resume) if resume else None,
        )
        self.status.update(state=DaemonState.TRAINING, total_steps=report.estimate.steps)
        self.notifier.status(f"training {name} (attempt {state.attempts})")
        item.clear_result()
        self._start_tensorboard()
        log_file = self.layout.logs / f"train-{item.path.stem}.log"
        code = run_child(self.layout, item, config, state.model_source, resume, log_file, self.stop,
                         on_tick=self.notifier.watchdog, on_stop=self._stopping, standby=self.standby)
        result = item.read_result() or {}
        if code == EXIT_TRAINED and result.get("outcome") == "trained":
            self.events.emit(EventType.TRAINING_COMPLETED, file=name, steps=result.get("steps"),
                             last_loss=result.get("last_loss"))
            return self._promote(item, config, state, report, result)
        if self.stop.requested:
            state.attempts -= 1  # stopped on request: not the file's fault
            item.save_state(state)
            return self.record.paused(name, result.get("steps"), report.estimate.steps)
        error = result.get("error") or f"training child exited with code {code}; see {log_file}"
        if code == EXIT_DISK_FULL:
            state.attempts -= 1  # a full disk is not the file's fault
            item.save_state(state)
            return self._disk_full(name, error)
        if state.attempts < config.daemon.max_attempts:
            logger.warning("%s: attempt %d of %d failed: %s", name, state.attempts, config.daemon.max_attempts, error)
            self.status.update(last_error=f"{name}: attempt {state.attempts} failed: {error}")
            return Outcome.RETRY
        trace = result.get("traceback") or log_tail(log_file)
        return self.record.failed(item, state.sha256, error, trace, validation=report, attempts=state.attempts)

    def _promote(self, item: WorkItem, config: TrainConfig, state: WorkState, report: ValidationReport,
                 result: dict) -> Outcome:
        self.status.update(state=DaemonState.SNAPSHOTTING)
        snapshot = promote_run(self.snapshots, self.ledger, item, config, state, result)
        return self.record.gated(item, state.sha256, snapshot, attempts=state.attempts, training=result,
                                 validation=report.model_dump(mode="json"))

    def _disk_full(self, name: str, error: str) -> Outcome:
        """Keep the file for a retry once there is space again; record why, where there is room to."""
        rescan = self.guard.config.daemon.rescan_seconds if self.guard.config else 10.0
        message = (
            f"{name}: disk full ({error}); free space on the file system of {self.layout.root}, the "
            f"file is retried every {rescan:g} s from its last complete checkpoint"
        )
        logger.error("%s", message)
        try:
            self.events.emit(EventType.DISK_FULL, file=name, error=error)
            self.status.update(state=DaemonState.ERROR, last_error=message, **PROGRESS_CLEARED)
        except OSError as exc:
            logger.error("cannot record the full disk in %s either: %s", self.layout.status_dir, exc)
        return Outcome.DISK_FULL

    # --- helpers ------------------------------------------------------------------------------

    def _start_tensorboard(self) -> None:
        """One TensorBoard server for ``runs/`` (each file's run writes there), restarted if it died."""
        url = ensure_tensorboard(self.layout.runs)
        if url != self._tensorboard_url:
            self._tensorboard_url = url
            self.status.update(tensorboard_url=url)

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.layout.inbox)) if path.is_relative_to(self.layout.inbox) else str(path)

    def _set_queue(self, candidates: list[InboxFile]) -> None:
        queued = [self._relative(c.path) for c in candidates]
        if queued != self._queued:
            self._queued = queued
            self.status.update(queued_files=queued)

    # --- the loop -----------------------------------------------------------------------------

    def run_forever(self, once: bool = False) -> int:
        """Loop over ``run_once()`` until stopped (or, with ``once``, until the inbox is empty).

        Returns:
            The exit code; with ``once``, ``OutcomeCounts.exit_code()`` (1 when a file was not trained).

        Raises:
            DaemonLockedError: another daemon runs on this base dir.
        """
        with DaemonLock(self.layout.lock_file):
            self.stop.install()
            self.standby.start()
            watcher = InboxWatcher(self.layout.inbox, self.wake)
            watcher.start()
            self._started()
            outcome = None
            try:
                while not self.stop.requested:
                    try:
                        outcome = self.run_once()
                    except Exception as exc:  # a status or event write outside a file's handling
                        if not is_disk_full(exc, self.layout.root):
                            raise
                        outcome = self._disk_full("the daemon", f"{type(exc).__name__}: {exc}")
                    self.counts.add(outcome)
                    if once and outcome in PAUSES and outcome is not Outcome.WAITING:
                        break
                    if outcome in PAUSES:
                        self.standby.keep_ready(self.guard.config)  # warm the next child while waiting
                        self._sleep(outcome)
            finally:
                self.standby.close()
                watcher.stop()
                self._stopped()
        return self.counts.exit_code() if once else (2 if outcome is Outcome.CONFIG_REJECTED else 0)

    def _sleep(self, outcome: Outcome) -> None:
        """Wait for a file-system event, the next rescan, or a stop request."""
        rescan = self.guard.config.daemon.rescan_seconds if self.guard.config else 10.0
        timeout = min(rescan, max(self._next_check, POLL_SECONDS)) if outcome is Outcome.WAITING else rescan
        end = time.monotonic() + timeout
        while not self.stop.requested and not self.wake.is_set() and time.monotonic() < end:
            self.wake.wait(min(POLL_SECONDS, max(0.0, end - time.monotonic())))
            self.notifier.watchdog()
        self.wake.clear()

    def _started(self) -> None:
        logger.info("daemon started on %s (pid %d)", self.layout.root, os.getpid())
        self.events.emit(EventType.DAEMON_STARTED, pid=os.getpid(), base_dir=str(self.layout.root))
        config = self.guard.reload()
        self.http = start_daemon_server(self.layout, config.http if config else None, self.wake)
        self.status.update(state=DaemonState.IDLE, daemon_pid=os.getpid(), started_at=utc_now_iso(), tensorboard_url=None,
                           model_display_name=config.model_display_name if config else None,
                           current_file=None, **PROGRESS_CLEARED)
        self.notifier.ready("watching the inbox")

    def _stopping(self) -> None:
        self.status.update(state=DaemonState.STOPPING)
        self.notifier.stopping()

    def _stopped(self) -> None:
        self.notifier.stopping()
        stop_daemon_server(self.http)
        self.status.update(state=DaemonState.IDLE, daemon_pid=None, tensorboard_url=None, **PROGRESS_CLEARED)
        self.events.emit(EventType.DAEMON_STOPPED, pid=os.getpid(), forced=self.stop.forced)
        logger.info("daemon stopped (pid %d)", os.getpid())
