"""Shared by the fault-injection tests and the soak driver: real daemon processes, kills, invariants.

Nothing here sleeps a fixed time to wait for the daemon: :func:`wait_until` polls the state files
(status, events, queue folders) with a generous deadline, so a slow machine makes a test slower,
not flaky.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from core.base.faults import FAULT_ENV
from core.daemon.work_queue import REPORT_SUFFIX, WORK_SUFFIX
from core.memory.buffers import MemorySet, ReplayBuffer
from core.snapshots.store import SnapshotError, SnapshotStore, read_manifest, verify_snapshot
from core.state.events import EventLog
from core.state.layout import BaseDir, init_base_dir
from core.state.ledger import Ledger
from core.state.status import StatusFile, TrainingStatus
from tests.reliability.fork_server import ForkedDaemon, ForkServer

POLL_SECONDS = 0.05
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def daemon_config(model_dir: Path, **overrides: Any) -> dict:
    """A config.json for the tiny model: deterministic, a checkpoint every step, retries unlimited.

    Every kill of the daemon during training counts as an attempt (a crash is not told apart from a
    file that crashes the child), so ``max_attempts`` is set above any kill count used here.
    """
    config = {
        "base_model": str(model_dir),
        "model_display_name": "tiny-reliability",
        "method": "lora",
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
        "hyperparams": {
            "fp_precision": "fp32", "max_length": 128, "batch_size": 2, "learning_rate": 5e-3,
            "max_steps": 12, "warmup_ratio": 0.0, "lr_scheduler": "cosine",
            "use_gradient_checkpointing": False, "seed": 0,
        },
        "checkpoint": {"save_steps": 1, "keep_last": 2, "log_steps": 1},
        "daemon": {
            "stable_seconds": 0.0, "rescan_seconds": 0.5, "max_attempts": 1000, "keep_snapshots": 50,
            "stop_timeout_seconds": 30,
        },
        "gate": {"min_answer_dependence": 0.0},  # the tiny random model learns no question-answer pairing: the answer-dependence rule would reject it
    }
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    return config


def make_base_dir(root: Path, config: dict) -> BaseDir:
    """A fresh base dir at ``root`` with ``config`` as its config.json."""
    layout = init_base_dir(root)
    layout.config_file.write_text(json.dumps(config), encoding="utf-8")
    return layout


def update_config(layout: BaseDir, **sections: dict) -> None:
    """Change some keys of some sections of the base dir's config.json."""
    config = json.loads(layout.config_file.read_text(encoding="utf-8"))
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    layout.config_file.write_text(json.dumps(config), encoding="utf-8")


def daemon_env(fault: str | None = None) -> dict[str, str]:
    """The environment of a daemon under test: no TensorBoard server, an optional fault."""
    env = {**os.environ, "TB_AUTO": "0"}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return env


def start_daemon(
    layout: BaseDir,
    *,
    once: bool = True,
    fault: str | None = None,
    log: Path | None = None,
    server: ForkServer | None = None,
) -> subprocess.Popen | ForkedDaemon:
    """``python -m core.training_daemon --base-dir ROOT [--once]``; output appended to ``log``.

    ``log`` defaults to ``logs/daemon-run.log`` in the base dir. With ``server`` the daemon is forked
    from it instead, which skips the imports (see ``fork_server``). Never give a kill ``fault`` to a
    daemon run inside the test process: the child's kill takes its daemon along.
    """
    layout.logs.mkdir(parents=True, exist_ok=True)
    log = log or layout.logs / "daemon-run.log"
    argv = ["--base-dir", str(layout.root)] + (["--once"] if once else [])
    if server is not None:
        return server.start(argv, daemon_env(fault), log)
    with open(log, "ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "core.training_daemon", *argv], stdin=subprocess.DEVNULL, stdout=output,
            stderr=subprocess.STDOUT, env=daemon_env(fault), start_new_session=True,
        )


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc; the training child runs in its own session)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def training_child_of(pid: int, layout: BaseDir) -> bool:
    """Whether ``pid`` is (still) a training child working in ``layout``: pids get reused."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"core.child.worker" in command and str(layout.root).encode() in command and alive(pid)


def process_state(pid: int) -> str | None:
    """The state letter /proc gives for ``pid`` (``R``, ``S``, ``T`` stopped, ``Z`` zombie...), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def stopped_child(pid: int) -> int | None:
    """The child of daemon ``pid`` that froze itself at a ``stop`` fault (see ``core.base.faults``), if any."""
    return next((child for child in children(pid) if process_state(child) == "T"), None)


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    return process_state(pid) not in (None, "Z")


def kill_everything(daemon: subprocess.Popen | ForkedDaemon, extra: list[int] = ()) -> None:
    """A power cut: stop the daemon and its children first (nobody sees the others die), then SIGKILL."""
    _signal(daemon.pid, signal.SIGSTOP)  # stopped first, so it cannot start a child while we look
    pids = [daemon.pid, *children(daemon.pid), *extra]
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            _signal(pid, sig)
    daemon.wait(timeout=30)
    wait_until(lambda: not any(alive(pid) for pid in pids), 30, "killed processes to exit")


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL_SECONDS)


def events(layout: BaseDir, kind: str | None = None) -> list[dict]:
    """Events of ``kind`` (all when None), oldest first."""
    return [e for e in EventLog(layout.events_file).read() if kind is None or e["type"] == kind]


def load_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """The adapter tensors of a snapshot (or any folder holding ``adapter_model.safetensors``)."""
    return load_file(Path(model_dir) / ADAPTER_WEIGHTS)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute elementwise difference; ``inf`` if the tensor names or shapes differ."""
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return float("inf")
    return max((float((a[k] - b[k]).abs().max()) for k in a), default=0.0)


def filed(layout: BaseDir) -> dict[str, list[str]]:
    """Finished files by folder (``done``/``failed``/``rejected``); reports and hidden temp files left out.

    A kill during an atomic write leaves its hidden temp file (``.NAME.XXXX.tmp``) behind; it is
    never read, so it is not counted here.
    """
    return {
        folder.name: sorted(p.name for p in folder.iterdir()
                            if not p.name.endswith(REPORT_SUFFIX) and not p.name.startswith("."))
        for folder in (layout.done, layout.failed, layout.rejected)
    }


def locations(layout: BaseDir, names: list[str]) -> dict[str, list[str]]:
    """Where each input file is now: any of inbox, processing, done, failed, rejected (a name may repeat)."""
    where: dict[str, list[str]] = {name: [] for name in names}
    folders = {"inbox": layout.inbox, "processing": layout.processing, "done": layout.done,
               "failed": layout.failed, "rejected": layout.rejected}
    for label, folder in folders.items():
        for path in folder.iterdir():
            if path.is_dir() or path.name.endswith((REPORT_SUFFIX, WORK_SUFFIX)) or path.name.startswith("."):
                continue
            stem, suffix = os.path.splitext(path.name)
            base = stem.rsplit("-", 1)[0] + suffix if stem.rsplit("-", 1)[-1].isdigit() else path.name
            if base in where:
                where[base].append(label if base == path.name else f"{label} as {path.name}")
    return where


def invariant_problems(layout: BaseDir, names: list[str]) -> list[str]:
    """What must hold after any crash, however abrupt. Empty when all is well.

    * ``current_model`` is absent or a snapshot that passes ``verify_snapshot``;
    * the status file, ledger and event log parse;
    * every input file is in exactly one place, under its own name;
    * no file content has more than one snapshot, and every trained ledger entry names one;
    * the gate judged each snapshot once (its verdict is in its manifest): a rejected one is never
      current, every rejected ledger entry names a rejected snapshot, and no rejected content is
      in the memory set or the replay buffer.
    """
    problems = []
    current = SnapshotStore(layout).current()
    if layout.current_model.is_symlink():
        try:
            verify_snapshot(layout.current_model.resolve())
        except SnapshotError as exc:
            problems.append(f"current_model does not verify: {exc}")
        if current is None:
            problems.append(f"current_model points outside snapshots/: {os.readlink(layout.current_model)}")
    try:
        StatusFile(layout.status_file).read()
    except ValueError as exc:
        problems.append(f"status file unreadable: {exc}")
    try:
        ledger = Ledger(layout.ledger_file).entries()
    except ValueError as exc:
        problems.append(f"ledger unreadable: {exc}")
        ledger = {}
    EventLog(layout.events_file).read()
    for name, where in locations(layout, names).items():
        if len(where) != 1 or " as " in where[0]:
            problems.append(f"{name} is in {where or 'no folder'}")
    snapshots = SnapshotStore(layout).list()
    per_digest = Counter(read_manifest(s.path)["sha256"] for s in snapshots)
    problems += [f"content {d[:12]} has {n} snapshots" for d, n in per_digest.items() if n > 1]
    ids = {s.id for s in snapshots}
    for digest, entry in ledger.items():
        if entry.get("outcome") == "trained" and entry.get("snapshot") not in ids:
            problems.append(f"ledger entry {entry.get('file')} names missing snapshot {entry.get('snapshot')}")
    return problems + gate_problems(layout, snapshots, ledger)


def gate_problems(layout: BaseDir, snapshots: list, ledger: dict) -> list[str]:
    """The gate's invariants (see :func:`invariant_problems`)."""
    problems = [f"snapshot {s.id} has no gate verdict" for s in snapshots if s.verdict is None]
    problems += [f"rejected snapshot {s.id} is current" for s in snapshots if s.is_current and s.verdict == "rejected"]
    verdicts = {s.id: s.verdict for s in snapshots}
    problems += [f"ledger entry {e.get('file')} is rejected but snapshot {e.get('snapshot')} is {verdicts.get(e.get('snapshot'))}"
                 for e in ledger.values() if e.get("outcome") == "rejected" and verdicts.get(e.get("snapshot")) != "rejected"]
    rejected = {read_manifest(s.path)["sha256"] for s in snapshots if s.verdict == "rejected"}
    remembered = {entry["sha256"] for entry in MemorySet(layout.memory).files()}
    remembered |= {row.sha256 for row in ReplayBuffer(layout.memory).rows()}
    problems += [f"rejected content {d[:12]} is remembered" for d in remembered & rejected]
    return problems


def snapshot_weights(layout: BaseDir) -> dict[str, dict[str, torch.Tensor]]:
    """Adapter weights of every snapshot, by the file it was trained on."""
    return {s.source_file: load_weights(s.path) for s in SnapshotStore(layout).list()}


def outcomes(layout: BaseDir) -> dict[str, str]:
    """The reported outcome of every finished file, by name."""
    return {
        path.name[: -len(REPORT_SUFFIX)]: json.loads(path.read_text(encoding="utf-8"))["outcome"]
        for folder in (layout.done, layout.failed, layout.rejected)
        for path in folder.glob(f"*{REPORT_SUFFIX}")
    }


class StatusReader(threading.Thread):
    """Parses ``training_status.json`` over and over, as a monitoring tool would, until stopped.

    ``reads`` counts the parses; ``bad`` keeps what failed (never expected: writes are atomic). A
    missing file counts as neither (before the daemon's first write).
    """

    def __init__(self, path: Path, pause: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.path = Path(path)
        self.pause = pause
        self.reads = 0
        self.bad: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = None
            if text is not None:
                try:
                    TrainingStatus.model_validate(json.loads(text))
                    self.reads += 1
                except ValueError as exc:
                    self.bad.append(f"{exc}: {text[:200]!r}")
            self._halt.wait(self.pause)

    def __enter__(self) -> "StatusReader":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._halt.set()
        self.join(timeout=10)


def run_worker(
    layout: BaseDir, data: Path, work: Path, *, resume: Path | None = None, fault: str | None = None
) -> subprocess.CompletedProcess:
    """One training child on its own (``python -m core.child.worker``), as the daemon starts it."""
    command = [sys.executable, "-m", "core.child.worker", "--base-dir", str(layout.root), "--file", str(data),
               "--output", str(work)]
    if resume is not None:
        command += ["--resume", str(resume)]
    layout.logs.mkdir(parents=True, exist_ok=True)
    with open(layout.logs / "worker-run.log", "ab") as log:
        return subprocess.run(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                              env=daemon_env(fault), timeout=600)
