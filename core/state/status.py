"""``status/training_status.json``: what the daemon is doing now, for ``trainctl status`` and tools.

The daemon and its training child process both update the file. ``StatusFile.update`` is a
read-modify-write under an ``fcntl.flock`` on a sibling lock file, so neither loses the other's
fields; the write itself is atomic, so a reader never sees half a file and needs no lock.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.base.atomic import atomic_write_text
from core.base.clock import utc_now_iso
from core.base.locking import exclusive_lock, pid_alive


class DaemonState(str, Enum):
    """What the daemon is doing; serialized as the plain name."""

    IDLE = "idle"
    VALIDATING = "validating"
    TRAINING = "training"
    SNAPSHOTTING = "snapshotting"
    STOPPING = "stopping"
    ERROR = "error"


class TrainingStatus(BaseModel):
    """The content of ``training_status.json``. Unset numbers are ``null`` (not known yet)."""

    model_config = ConfigDict(extra="forbid")

    state: DaemonState = Field(DaemonState.IDLE, description="What the daemon is doing now.")
    model_display_name: str | None = Field(None, description="Name of the model, from config.json.")
    current_file: str | None = Field(None, description="Inbox file being validated or trained.")
    current_step: int | None = Field(None, description="Optimizer steps done on the current file.")
    total_steps: int | None = Field(None, description="Optimizer steps planned for the current file.")
    epoch: float | None = Field(None, description="Epochs done on the current file (fractional).")
    loss: float | None = Field(None, description="Latest logged training loss.")
    eval_loss: float | None = Field(None, description="Latest held-out evaluation loss.")
    learning_rate: float | None = Field(None, description="Learning rate at the latest logged step.")
    tokens_per_second: float | None = Field(None, description="Training throughput in tokens/s.")
    eta_seconds: float | None = Field(None, description="Estimated seconds left on the current file.")
    queued_files: list[str] = Field(default_factory=list, description="Inbox files waiting, in order.")
    last_completed_file: str | None = Field(None, description="Last file trained and promoted.")
    last_error: str | None = Field(
        None, description="The error in force, with what to do about it: cleared once a later file trains "
        "or the condition (a full disk, an environment fault) ends.",
    )
    paused: str | None = Field(
        None, description="A file stopped on request: 'NAME: paused at step N of M, resumes on next start'.",
    )
    current_snapshot: str | None = Field(None, description="Id of the snapshot in current_model.")
    attention_backend: str | None = Field(None, description="Attention kernel in use, e.g. sdpa.")
    tensorboard_url: str | None = Field(None, description="TensorBoard address while the daemon's server runs.")
    http_url: str | None = Field(None, description="Dashboard and HTTP API address, while it is served.")
    daemon_pid: int | None = Field(None, description="Process id of the daemon.")
    started_at: str | None = Field(None, description="When the daemon started (ISO-8601 UTC).")
    updated_at: str | None = Field(None, description="When this file was last written (ISO-8601 UTC).")


class StatusFileError(ValueError):
    """``training_status.json`` exists but does not hold a valid status."""


class StatusFile:
    """Read and update one ``training_status.json``.

    Args:
        path: The status file; its folder is created on the first write.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def read(self) -> TrainingStatus | None:
        """The current status, or ``None`` if the daemon has not written one yet.

        Raises:
            StatusFileError: the file is not a valid status.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return TrainingStatus.model_validate_json(text)
        except ValidationError as exc:
            raise StatusFileError(
                f"{self.path} is not a valid status ({exc.error_count()} problem(s)); delete it, "
                "the daemon writes a new one"
            ) from exc

    def write(self, status: TrainingStatus) -> TrainingStatus:
        """Replace the whole status (stamping ``updated_at``); returns what was written."""
        with exclusive_lock(self.lock_path):
            return self._write(status)

    def update(self, **fields) -> TrainingStatus:
        """Change only ``fields``, keeping the rest of the file; returns the new status.

        Raises:
            StatusFileError: a field name or value is not valid for ``TrainingStatus``.
        """
        with exclusive_lock(self.lock_path):
            current = self.read() or TrainingStatus()
            try:
                merged = TrainingStatus.model_validate({**current.model_dump(), **fields})
            except ValidationError as exc:
                raise StatusFileError(f"invalid status update {sorted(fields)}: {exc}") from exc
            return self._write(merged)

    def _write(self, status: TrainingStatus) -> TrainingStatus:
        stamped = status.model_copy(update={"updated_at": utc_now_iso()})
        atomic_write_text(self.path, stamped.model_dump_json(indent=2) + "\n")
        return stamped


def format_duration(seconds: float) -> str:
    """``3725`` -> ``1:02:05``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _age_seconds(iso: str | None, now: datetime) -> float | None:
    if not iso:
        return None
    return (now - datetime.fromisoformat(iso)).total_seconds()



def _progress(status: TrainingStatus) -> str:
    if status.current_step is None:
        return "-"
    if not status.total_steps:
        return str(status.current_step)
    percent = 100.0 * status.current_step / status.total_steps
    return f"{status.current_step}/{status.total_steps} ({percent:.1f}%)"


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_status(status: TrainingStatus, now: datetime | None = None) -> str:
    """A human-readable summary of ``status``, one ``label: value`` per line."""
    now = now or datetime.now(timezone.utc)
    age = _age_seconds(status.updated_at, now)
    pid = "-" if status.daemon_pid is None else str(status.daemon_pid)
    if status.daemon_pid is not None and not pid_alive(status.daemon_pid):
        pid += " (not running)"
    rows = [
        ("state", status.state.value),
        ("model", status.model_display_name or "-"),
        ("file", status.current_file or "-"),
        ("step", _progress(status)),
        ("epoch", _number(status.epoch, ".2f")),
        ("loss", _number(status.loss, ".4f")),
        ("eval loss", _number(status.eval_loss, ".4f")),
        ("learning rate", _number(status.learning_rate, ".2e")),
        ("tokens/s", _number(status.tokens_per_second, ".1f")),
        ("eta", "-" if status.eta_seconds is None else format_duration(status.eta_seconds)),
        ("queue", ", ".join(status.queued_files) or "(empty)"),
        ("last completed", status.last_completed_file or "-"),
        ("last error", status.last_error or "-"),
        ("paused", status.paused or "-"),
        ("snapshot", status.current_snapshot or "-"),
        ("attention", status.attention_backend or "-"),
        ("tensorboard", status.tensorboard_url or "-"),
        ("dashboard", status.http_url or "-"),
        ("daemon pid", pid),
        ("updated", "-" if age is None else f"{format_duration(max(age, 0.0))} ago"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def no_status_message(path: Path) -> str:
    """What to tell a user when the daemon has not written a status yet."""
    return f"no status yet: {path} does not exist; start the daemon with `trainctl daemon`"


def render_status(path: Path) -> str:
    """The summary of the status file at ``path`` (ending in a newline), or a hint if there is none.

    Raises:
        StatusFileError: the file is not a valid status.
    """
    current = StatusFile(path).read()
    return (no_status_message(path) if current is None else format_status(current)) + "\n"


def watch_status(path: Path, interval: float, out: TextIO, clear: bool) -> None:
    """Print the summary every ``interval`` seconds until interrupted (Ctrl-C)."""
    try:
        while True:
            try:
                text = render_status(path)
            except StatusFileError as exc:
                text = f"error: {exc}\n"
            out.write(("\033[H\033[2J" if clear else "") + text)
            out.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        out.write("\n")
