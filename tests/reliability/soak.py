"""The kill loop: crash the daemon again and again while it works through an inbox, check nothing is lost.

A round drops the same inbox into a fresh base dir (two files to train, a duplicate, an invalid
file) and starts ``python -m core.training_daemon --once``. Each start gets one planned kill:

* a crash at the N-th write of a state file (``TRAINCTL_FAULT``, see ``core.base.faults``): checkpoint
  marker, the gate's evaluation cache, model result, snapshot manifest (the gate's verdict), promotion
  stack, memory set, replay buffer, ledger, report, status, work state;
* or a SIGKILL a seeded random delay after an event (daemon started, training started, checkpoint
  saved): of the daemon and its training child together (a power cut), or of the daemon alone (the
  child is orphaned, gets SIGTERM and must checkpoint and exit).

After every kill the invariants of ``harness.invariant_problems`` are checked with nothing running.
When a start drains the inbox, the round is compared with an uninterrupted run: every file has the
same outcome, exactly once, and every snapshot has the same adapter weights.

``tests/reliability/test_kill_loop.py`` runs one round of about 20 kills in CI; ``scripts/soak.sh
DURATION`` runs rounds until the time is up and prints one summary line::

    .venv/bin/python -m tests.reliability.soak --duration 10m
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from core.snapshots.store import SnapshotStore
from core.state.layout import BaseDir
from tests.conftest import chat_rows, write_jsonl
from tests.reliability.fork_server import ForkServer
from tests.reliability.harness import (
    children,
    daemon_config,
    events,
    filed,
    invariant_problems,
    kill_everything,
    make_base_dir,
    max_difference,
    outcomes,
    snapshot_weights,
    start_daemon,
    training_child_of,
    wait_until,
)
from tests.tiny_models import build_tiny_model_dir

ROUND_TIMEOUT = 900.0
MAX_WEIGHT_DIFFERENCE = 1e-6  # resume is exact on CPU; this only absorbs float noise
START_TIMEOUT = 300.0

# Points in the flow a crash can hit, by the state file about to be written (see core.base.faults).
# (pattern, highest N worth trying): N is drawn from 1..highest.
WRITE_FAULTS = [
    ("*", 8),                          # the daemon's first writes: claim, validation, work state
    ("state.json", 1),                 # validated, attempt not yet recorded
    ("training_status.json", 12),      # status writes, by the daemon or the child's progress
    ("trainctl_config.json", 4),       # checkpoint written by HF, not yet marked complete
    ("trainctl_checkpoint.json", 4),   # checkpoint complete but for its marker
    ("eval/*.json", 2),                # the gate measuring the current model (its cache entry)
    ("result.json", 1),                # model saved, result not yet reported
    ("manifest.json", 1),              # snapshot staged, not yet renamed into place
    ("promotions.json", 1),            # current_model swapped, promotion not recorded
    ("heldout.json", 1),               # promoted by the gate's verdict, not yet in the memory set
    ("replay.json", 1),                # in the memory set, not yet in the replay buffer
    ("ledger.jsonl", 1),               # promoted, not yet in the ledger
    ("*.report.json", 1),              # in the ledger, not yet filed in done/
]
ANCHORS = ("daemon_started", "training_started", "checkpoint_saved")
# `daemon --once` exit codes of a drained inbox: 1 when that start filed a file untrained (broken.jsonl).
DRAINED = (0, 1)


@dataclass(frozen=True)
class Kill:
    """One planned kill: a write fault, or a SIGKILL ``delay`` s after the next ``anchor`` event."""

    fault: str | None = None
    anchor: str | None = None
    delay: float = 0.0
    daemon_only: bool = False

    def __str__(self) -> str:
        if self.fault:
            return f"crash at write {self.fault}"
        who = "daemon only" if self.daemon_only else "daemon and child"
        return f"SIGKILL {who} {self.delay:.2f} s after {self.anchor}"


def plan_kill(rng: random.Random) -> Kill:
    """A random kill: a write fault half of the time, else a timed kill."""
    if rng.random() < 0.5:
        pattern, highest = rng.choice(WRITE_FAULTS)
        return Kill(fault=f"{pattern}:{rng.randint(1, highest)}")
    return Kill(anchor=rng.choice(ANCHORS), delay=rng.uniform(0.0, 2.5), daemon_only=rng.random() < 0.3)


def ci_plan(seed: int) -> list[Kill]:
    """23 kills along the flow of the round's inbox, every write fault at least once; timed delays seeded.

    The kills follow the files in order, alpha.jsonl's training and promotion, then bravo.jsonl's.
    A timed kill is short enough not to skip ahead: a daemon start cannot finish a training within
    1.5 s, 3 s after a child starts it is at most a few of its 12 steps in, and so is it 0.3 s after
    a checkpoint (an orphaned child ends the step it is in). So the checkpoint faults that follow
    still find checkpoints to fail, and each file's promotion faults find its promotion. A kill that
    finds its phase passed fires at the next matching point.
    """
    rng = random.Random(seed)

    def timed(anchor: str, longest: float, daemon_only: bool = False) -> Kill:
        return Kill(anchor=anchor, delay=rng.uniform(0.0, longest), daemon_only=daemon_only)

    return [
        Kill(fault="*:3"),                         # alpha.jsonl claimed, being validated
        timed("daemon_started", 1.5),
        Kill(fault="state.json:1"),                # validated, attempt not recorded yet
        timed("training_started", 3.0),            # the child starting up
        Kill(fault="eval/*.json:1"),               # the gate measuring the current model, before training
        Kill(fault="trainctl_config.json:2"),      # checkpoint-2 written by HF, not marked complete
        timed("checkpoint_saved", 0.3, daemon_only=True),  # the orphaned child must stop cleanly
        Kill(fault="trainctl_checkpoint.json:2"),  # checkpoint complete but for its marker
        Kill(fault="*:5"),                         # config handed to the child, child not started
        Kill(fault="result.json:1"),               # model saved, result not written
        Kill(fault="manifest.json:1"),             # snapshot staged, not renamed into place
        Kill(fault="promotions.json:1"),           # current_model swapped, promotion not recorded
        Kill(fault="heldout.json:1"),              # verdict acted on: promoted, not yet remembered
        Kill(fault="replay.json:1"),               # in the memory set, not yet in the replay buffer
        Kill(fault="ledger.jsonl:1"),              # promoted, not in the ledger yet
        Kill(fault="*.report.json:1"),             # in the ledger, not filed in done/ yet
        timed("daemon_started", 1.5),              # broken.jsonl, alpha-copy.jsonl, bravo.jsonl
        Kill(fault="*:4"),
        timed("training_started", 3.0, daemon_only=True),
        Kill(fault="trainctl_checkpoint.json:3"),
        timed("checkpoint_saved", 0.3),
        Kill(fault="manifest.json:1"),
        Kill(fault="promotions.json:1"),           # promoted over alpha's snapshot, not recorded
    ]


def inbox_files() -> dict[str, list]:
    """The inbox of every round, in claim order: two files to train, one invalid, one duplicate."""
    alpha = chat_rows(8, seed=1)
    return {
        "alpha.jsonl": alpha,
        "broken.jsonl": ["{not json", '{"messages": []}', '"a string"'],
        "alpha-copy.jsonl": alpha,
        "bravo.jsonl": chat_rows(8, seed=2),
    }


def drop_inbox(layout: BaseDir) -> list[str]:
    """Write the round's inbox with increasing mtimes (the claim order); return the names."""
    names = []
    for i, (name, rows) in enumerate(inbox_files().items()):
        path = write_jsonl(layout.inbox / name, rows)
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
        names.append(name)
    return names


@dataclass
class Reference:
    """What an uninterrupted run produced."""

    outcomes: dict[str, str]
    weights: dict[str, dict]


@dataclass
class RoundResult:
    """What one round of kills did and found."""

    kills: list[str] = field(default_factory=list)
    files: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    differences: dict[str, float] = field(default_factory=dict)
    max_difference: float = 0.0


def run_reference(root: Path, model_dir: Path, server: ForkServer | None = None) -> Reference:
    """Run the inbox once without faults."""
    layout = make_base_dir(root, daemon_config(model_dir))
    drop_inbox(layout)
    daemon = start_daemon(layout, server=server)
    code = daemon.wait(timeout=ROUND_TIMEOUT)
    if code not in DRAINED:
        raise RuntimeError(f"the uninterrupted run exited with {code}; see {layout.logs}")
    return Reference(outcomes(layout), snapshot_weights(layout))


class KillLoop:
    """Runs rounds of kills against one reference.

    Args:
        model_dir: The tiny base model.
        reference: The uninterrupted run to compare with.
        server: Forks the daemons (see ``fork_server``); None starts ``python -m core.training_daemon``.
        log: Called with one line per kill and per finding.
    """

    def __init__(
        self, model_dir: Path, reference: Reference, server: ForkServer | None = None, log=lambda line: None
    ) -> None:
        self.model_dir = model_dir
        self.reference = reference
        self.server = server
        self.log = log
        self.orphans: list[int] = []

    def run_round(self, root: Path, plan) -> RoundResult:
        """Kill the daemon as ``plan`` says (an iterator of Kill, or None: no more kills) until done."""
        layout = make_base_dir(root, daemon_config(self.model_dir))
        names = drop_inbox(layout)
        result = RoundResult(files=len(names))
        deadline = time.monotonic() + ROUND_TIMEOUT
        while True:
            if time.monotonic() > deadline:
                result.problems.append(f"round not finished after {ROUND_TIMEOUT:.0f} s")
                break
            kill = next(plan, None)
            code, killed = self._one_start(layout, kill)
            if killed:
                result.kills.append(str(kill))
                problems = invariant_problems(layout, names)
                self.log(f"kill {len(result.kills)}: {kill}: {'; '.join(problems) or 'ok'}")
                result.problems += [f"after kill {len(result.kills)} ({kill}): {p}" for p in problems]
            elif code in DRAINED:
                # The last daemon waited for every orphan before training on (child.lock).
                if alive_orphans := [pid for pid in self.orphans if training_child_of(pid, layout)]:
                    result.problems.append(f"training children {alive_orphans} outlived the round")
                break
            else:
                result.problems.append(f"daemon exited with {code} without being killed; see {layout.logs}")
                self.log(result.problems[-1])
        self._compare(layout, names, result)
        return result

    def _one_start(self, layout: BaseDir, kill: Kill | None) -> tuple[int, bool]:
        """Start the daemon once and apply ``kill``; returns (exit code, whether it was killed)."""
        seen = {anchor: len(events(layout, anchor)) for anchor in ANCHORS}
        self.orphans = [pid for pid in self.orphans if training_child_of(pid, layout)]
        daemon = start_daemon(layout, fault=kill.fault if kill else None, server=self.server)
        if kill is None or kill.fault:
            code = daemon.wait(timeout=ROUND_TIMEOUT)  # a write fault kills the daemon and its child
            return code, code == -signal.SIGKILL
        try:
            wait_until(lambda: daemon.poll() is not None or len(events(layout, kill.anchor)) > seen[kill.anchor],
                       START_TIMEOUT, f"event {kill.anchor}")
            deadline = time.monotonic() + kill.delay
            while daemon.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        except AssertionError:
            pass  # stuck: killed below anyway, and the invariants say what is wrong
        if daemon.poll() is not None:
            return daemon.returncode, False
        if kill.daemon_only:
            # The orphaned child gets SIGTERM (PR_SET_PDEATHSIG), ends its step and checkpoints; the
            # next daemon starts at once, as systemd would, and must wait for it.
            self.orphans += children(daemon.pid)
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=30)
        else:
            kill_everything(daemon, extra=[pid for pid in self.orphans if training_child_of(pid, layout)])
        return daemon.returncode, True

    def _compare(self, layout: BaseDir, names: list[str], result: RoundResult) -> None:
        got = outcomes(layout)
        expected = self.reference.outcomes
        result.lost = [f"{n}: {got.get(n) or 'not finished'}, expected {expected.get(n)}"
                       for n in names if got.get(n) != expected.get(n)]
        copies = [n for folder in filed(layout).values() for n in folder if n not in names]
        sources = Counter(s.source_file for s in SnapshotStore(layout).list())
        result.duplicated = copies + [f"{n}: {k} snapshots" for n, k in sources.items() if k > 1]
        weights = snapshot_weights(layout)
        result.lost += [f"{n}: no snapshot" for n in self.reference.weights if n not in weights]
        result.differences = {n: max_difference(weights[n], ref)
                              for n, ref in self.reference.weights.items() if n in weights}
        result.max_difference = max(result.differences.values(), default=float("inf"))


def parse_duration(text: str) -> float:
    """``90s``, ``10m``, ``1h`` or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 90s, 10m or 1h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def soak(duration: float, seed: int, workdir: Path, log) -> tuple[str, bool]:
    """Run rounds with random kills until ``duration`` s have passed; return the summary line and
    whether everything held."""
    model_dir = build_tiny_model_dir(workdir / "model")
    server = ForkServer()
    reference = run_reference(workdir / "reference", model_dir, server)
    loop = KillLoop(model_dir, reference, server, log)
    rng = random.Random(seed)
    end = time.monotonic() + duration
    kills = files = rounds = 0
    lost, duplicated, problems, worst = [], [], [], 0.0

    def plan():
        while time.monotonic() < end:
            yield plan_kill(rng)

    while time.monotonic() < end:
        rounds += 1
        root = workdir / f"round-{rounds}"
        result = loop.run_round(root, plan())
        kills += len(result.kills)
        files += result.files
        lost += result.lost
        duplicated += result.duplicated
        problems += result.problems
        worst = max(worst, result.max_difference)
        log(f"round {rounds}: {len(result.kills)} kills, lost {result.lost}, duplicated {result.duplicated}, "
            f"weight differences {result.differences}, problems {result.problems}")
        if not (result.lost or result.duplicated or result.problems) and result.max_difference <= MAX_WEIGHT_DIFFERENCE:
            shutil.rmtree(root)
    server.close()
    summary = (
        f"soak {duration:.0f}s seed {seed}: {kills} kills, {rounds} rounds, {files} files, {len(lost)} lost, "
        f"{len(duplicated)} duplicated, max weight difference {worst:.3g}, "
        f"{len(problems)} invariant violations"
    )
    return summary, not (lost or duplicated or problems) and worst <= MAX_WEIGHT_DIFFERENCE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=parse_duration, required=True, help="e.g. 90s, 10m, 1h")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="plan seed (default: the time)")
    parser.add_argument("--workdir", type=Path, help="where rounds run (default: a temp dir, removed)")
    parser.add_argument("--log", type=Path, help="one line per kill (default: WORKDIR/soak.log)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trainctl-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = args.log or workdir / "soak.log"
    with open(log_path, "a", encoding="utf-8") as log_file:
        def log(line: str) -> None:
            log_file.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            log_file.flush()

        summary, ok = soak(args.duration, args.seed, workdir, log)
        log(summary)
    print(summary if ok else f"{summary}; details in {log_path}")
    if args.workdir is None and ok:
        shutil.rmtree(workdir)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
