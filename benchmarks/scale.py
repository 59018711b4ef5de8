"""Cost as the state grows: snapshots, ledger entries, event lines and the size of a rolled-back model.

Builds each state synthetically in a temp base dir (``trainctl init``) at two or more sizes, times
the operations a user or the daemon runs on it, and prints one table with the growth exponent
between consecutive sizes, ``log(t2/t1) / log(n2/n1)`` (1.0 is linear, 0 is constant):

* ``snapshots``: N snapshot folders. One is made by ``SnapshotStore.create`` from a tiny full model
  (``tests/tiny_models.py``), as the daemon makes them; the other N-1 are copies of it under new ids
  (what a long-running base dir holds, the way ``store.py`` lays them out). Timed: ``trainctl
  snapshots list`` (the CLI, a child process, wall time including Python start-up) and the same
  listing in this process, a rollback to the made one, and creating + promoting one more;
* ``ledger``: N entries in ``status/ledger.jsonl`` (or ``ledger.json``, for code from before the
  append-only ledger). Timed: the first lookup of a new ``Ledger`` (reads the file), then a lookup on
  the same object (what the daemon does for each file), and a record;
* ``daemon``: ``TrainingDaemon(base)`` and its first ``run_once()`` (empty inbox) in the snapshot
  and ledger base dir above, the daemon's start-up work without the HTTP server;
* ``events``: N lines in ``status/events.jsonl``, written as ``EventLog.emit`` writes them (one
  file, no rotation: the worst case, a log from before rotation). Timed through the HTTP API in
  this process (FastAPI ``TestClient``): ``GET /api/status``, ``GET /api/events?limit=100`` (what the
  dashboard asks first), ``GET /api/events?after=<last-5>`` (a poller), and ``trainctl status``;
* ``rollback``: a full-model snapshot with one sparse safetensors file of N GiB (a hole: no disk
  blocks; reading it still costs what hashing N GiB of zeros costs). Timed: rollback (quick check)
  and ``rollback --deep`` (re-hash) through ``trainctl rollback`` in this process (``core.cli.main``).

If ``benchmarks/scale_file.py`` is present its ``run(workdir, sizes)`` rows (validation and
tokenization of a growing file) are printed after, unless ``--skip-file``.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/scale.py --workdir /tmp/scale --skip-file

With the defaults (100/1,000 snapshots, 10k/100k ledger entries, 100k/1M event lines, 1/10 GiB)
it needs about 1.5 GB of disk and a few minutes, most of it creating the 10 GiB snapshot (hashed
once, as the daemon would) and its ``--deep`` rollback. Run it from a copy of an older checkout
(``git archive``) with ``PYTHONPATH`` at that copy to measure that code: every step uses only
functions that copy also has.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient

from core.cli import main as trainctl
from core.daemon.loop import TrainingDaemon
from core.http.access import HttpContext
from core.http.app import create_app
from core.snapshots.store import SnapshotStore, build_manifest, format_snapshot_table
from core.state.layout import BaseDir, init_base_dir
from core.state.ledger import Ledger
from core.state.status import DaemonState, StatusFile
from tests.tiny_models import build_tiny_model_dir, write_sparse_safetensors
from trainer.config import TrainConfig


def timed(action: Callable[[], Any], repeats: int = 1) -> float:
    """Fastest wall seconds of ``repeats`` calls."""
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def cli_wall(*args: str) -> float:
    """Wall seconds of ``trainctl ARGS`` in a child process run from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def quiet_cli(*args: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return trainctl(list(args))


def _manifest(stem: str) -> dict:
    return build_manifest(source_file=f"{stem}.jsonl", sha256=stem.ljust(64, "0")[:64], rows=8, steps=2,
                          first_loss=2.0, last_loss=1.0, eval_loss=None, config=TrainConfig(),
                          base_model="tiny", profile="default", parent_snapshot=None)


def _create(store: SnapshotStore, model: Path, stem: str):
    return store.create(Path(shutil.copytree(model, store.layout.root / ".scratch" / stem)), _manifest(stem), stem)


def build_snapshots(base: BaseDir, model: Path, count: int) -> str:
    """``count`` snapshots: one made by ``create``, copies of it under the following ids. Returns the made one."""
    store = SnapshotStore(base)
    made = _create(store, model, "made")
    for seq in range(2, count + 1):
        copy = base.snapshots / f"{seq:04d}-20250101-000000-copy{seq}"
        shutil.copytree(made.path, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        (copy / "manifest.json").write_text(json.dumps({**manifest, "id": copy.name}, indent=2))
    store.promote(f"{count:04d}")
    return made.id


def build_ledger(base: BaseDir, count: int) -> str:
    entries = {f"{i:064x}": {"file": f"f{i}.jsonl", "outcome": "trained", "snapshot": f"{i:04d}-x",
                             "recorded_at": "2025-01-01T00:00:00Z"} for i in range(count)}
    if base.ledger_file.suffix == ".jsonl":
        base.ledger_file.write_text("".join(json.dumps({"sha256": d, **e}) + "\n" for d, e in entries.items()))
    else:
        base.ledger_file.write_text(json.dumps(entries, indent=2) + "\n")
    os.sync()  # so that the timed record's fsync flushes its own write, not the whole built file
    return f"{count // 2:064x}"


def build_events(base: BaseDir, count: int) -> None:
    lines = (json.dumps({"id": i, "ts": "2025-01-01T00:00:00.000Z", "type": "file_detected",
                         "file": f"f{i}.jsonl", "path": f"inbox/f{i}.jsonl"}) + "\n" for i in range(1, count + 1))
    with open(base.events_file, "w", encoding="utf-8") as handle:
        handle.writelines(lines)


def measure_state(workdir: Path, model: Path, snapshots: int, entries: int) -> dict[str, Any]:
    base = init_base_dir(workdir / f"state-{snapshots}-{entries}")
    made = build_snapshots(base, model, snapshots)
    digest = build_ledger(base, entries)
    store, root = SnapshotStore(base), str(base.root)
    row: dict[str, Any] = {"snapshots": snapshots, "ledger": entries}
    row["list_cli_s"] = cli_wall("snapshots", "list", "--base-dir", root)
    row["list_s"] = timed(lambda: format_snapshot_table(store.list()), 3)
    row["rollback_s"] = timed(lambda: quiet_cli("rollback", made, "--base-dir", root))
    row["promote_s"] = timed(lambda: store.promote(_create(store, model, "extra").id))
    row["ledger_first_s"] = timed(lambda: Ledger(base.ledger_file).lookup(digest))
    ledger = Ledger(base.ledger_file)
    ledger.lookup(digest)
    row["ledger_lookup_s"] = timed(lambda: ledger.lookup(digest), 5)
    row["ledger_record_s"] = timed(lambda: ledger.record("f" * 64, file="new.jsonl", outcome="trained"), 3)

    def start() -> None:
        TrainingDaemon(base.root).run_once()

    row["daemon_start_s"] = timed(start)
    return row


def measure_events(workdir: Path, lines: int) -> dict[str, Any]:
    base = init_base_dir(workdir / f"events-{lines}")
    build_events(base, lines)
    StatusFile(base.status_file).update(state=DaemonState.IDLE)
    root = str(base.root)
    client = TestClient(create_app(HttpContext(layout=base, token="benchmark", read_only=True)))
    row: dict[str, Any] = {"events": lines, "mb": round(base.events_file.stat().st_size / 2**20)}
    row["api_status_s"] = timed(lambda: client.get("/api/status").raise_for_status(), 3)
    row["api_events_tail_s"] = timed(lambda: client.get("/api/events?limit=100").raise_for_status(), 3)
    row["api_events_after_s"] = timed(lambda: client.get(f"/api/events?after={lines - 5}").raise_for_status(), 3)
    row["status_cli_s"] = cli_wall("status", "--base-dir", root)
    return row


def measure_rollback(workdir: Path, model: Path, gigabytes: int) -> dict[str, Any]:
    base = init_base_dir(workdir / f"big-{gigabytes}")
    big_model = Path(shutil.copytree(model, workdir / f"big-model-{gigabytes}"))
    write_sparse_safetensors(big_model / "padding.safetensors", gigabytes * 2**30)
    store = SnapshotStore(base)
    row: dict[str, Any] = {"gib": gigabytes}
    row["create_s"] = timed(lambda: store.create(big_model, _manifest("big"), "big"))
    big = store.list()[-1].id
    small = _create(store, model, "small").id
    store.promote(small)
    root = str(base.root)
    row["rollback_s"] = timed(lambda: quiet_cli("rollback", big, "--base-dir", root) == 0 or _fail(big))
    quiet_cli("rollback", small, "--base-dir", root)
    deep = ("--deep",) if "--deep" in _rollback_help() else ()
    row["rollback_deep_s"] = timed(lambda: quiet_cli("rollback", big, *deep, "--base-dir", root) == 0 or _fail(big))
    shutil.rmtree(base.root)
    return row


def _rollback_help() -> str:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        trainctl(["rollback", "--help"])
    return out.getvalue()


def _fail(snapshot: str) -> bool:
    raise RuntimeError(f"rollback to {snapshot} failed")


def growth(rows: list[dict[str, Any]], size_key: str, key: str) -> list[str]:
    out = ["-"]
    for small, large in itertools.pairwise(rows):
        if not small.get(key) or large.get(key) is None:
            out.append("?")
            continue
        out.append(f"{math.log(large[key] / small[key]) / math.log(large[size_key] / small[size_key]):.2f}")
    return out


def table(rows: list[dict[str, Any]], size_keys: list[str], keys: list[str]) -> str:
    slopes = {key: growth(rows, size_keys[0], key) for key in keys}
    header = "| " + " | ".join(size_keys) + " | " + " | ".join(f"{key} | growth" for key in keys) + " |"
    lines = [header, "|" + " --- |" * (len(size_keys) + 2 * len(keys))]
    for i, row in enumerate(rows):
        cells = [str(row[k]) for k in size_keys]
        cells += [f"{'-' if row.get(k) is None else f'{row[k]:.4f}'} | {slopes[k][i]}" for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="scratch folder (emptied first)")
    parser.add_argument("--snapshots", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--ledger", type=int, nargs="+", default=[10_000, 100_000],
                        help="ledger entries, one per --snapshots size")
    parser.add_argument("--events", type=int, nargs="*", default=[100_000, 1_000_000],
                        help="event lines; none given: no events table")
    parser.add_argument("--gigabytes", type=int, nargs="*", default=[1, 10],
                        help="rolled-back model sizes; none given: no rollback table")
    parser.add_argument("--file-sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--skip-file", action="store_true", help="leave out benchmarks/scale_file.py")
    parser.add_argument("--out", type=Path, help="also write every row as JSON here")
    args = parser.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    model = build_tiny_model_dir(args.workdir / "tiny-model")
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs", flush=True)
    results: dict[str, list[dict[str, Any]]] = {}
    results["state"] = [measure_state(args.workdir, model, n, e) for n, e in zip(args.snapshots, args.ledger)]
    print(table(results["state"], ["snapshots", "ledger"], [k for k in results["state"][0] if k.endswith("_s")]))
    if args.events:
        results["events"] = [measure_events(args.workdir, n) for n in args.events]
        print(table(results["events"], ["events", "mb"], [k for k in results["events"][0] if k.endswith("_s")]))
    if args.gigabytes:
        results["rollback"] = [measure_rollback(args.workdir, model, gb) for gb in args.gigabytes]
        print(table(results["rollback"], ["gib"], ["create_s", "rollback_s", "rollback_deep_s"]))
    if not args.skip_file and (REPO / "benchmarks" / "scale_file.py").exists():
        sys.path.insert(0, str(REPO / "benchmarks"))
        import scale_file

        results["file"] = scale_file.run(args.workdir / "file", args.file_sizes)
        print(scale_file.format_table(results["file"]))
    print(f"load average {os.getloadavg()[0]:.2f} at the end", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
