"""Does a crowd of dashboard readers slow training? Train one file with and without 50 readers.

    .venv/bin/python -m benchmarks.http_load --model models/SmolLM2-135M-Instruct \\
        --data benchmarks/data/chat_mixed.jsonl --rows 200 --steps 40 --rounds 2 --out benchmarks/results/http_load.json

Each trial starts a real ``trainctl daemon`` (its HTTP server in the daemon process) on a fresh
base dir and drops the same file into its inbox. The number compared is HF's ``train_runtime``
(the training loop alone, read from the run's TensorBoard events), so model loading and daemon
start-up do not blur it. A round runs one trial of each ``--kinds``:

- ``plain``: no readers;
- ``loaded``: before the file is dropped, ``--readers`` clients (``benchmarks/http_readers.py``)
  each hold ``GET /api/events/stream`` open on the daemon and poll ``GET /api/status`` every
  ``--interval`` seconds until the file is trained;
- ``decoy``: the same readers, pointed at a minimal server in another process that serves the
  status file's bytes, the daemon's server idle: the client's cost without the daemon's server.

The kinds' order turns by one each round, so a drift in the machine's load hits each kind alike,
and each round gives a paired ratio (``loaded``/``plain``, ``decoy``/``plain``); the summary is
their median and range.

The readers run in a separate process at ``--client-priority`` (``idle``: SCHED_IDLE, default;
``nice``: nice 19; ``normal``). A dashboard's browser is normally on another machine, and on a
machine with few cores the benchmark's own connections would otherwise compete with training for
the cores the server is being judged on. The server itself (the daemon process) is never reniced;
its cost is measured on its own: the daemon's CPU seconds (``utime + stime`` of its
``/proc/<pid>/stat``, not its child's) from the file's drop until it is trained, per second of
that window.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import (
    SCALARS,
    EventAccumulator,
)

from benchmarks.http_readers import run_decoy, run_readers
from core.state.layout import init_base_dir
from core.state.status import StatusFile

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))
TICKS = os.sysconf("SC_CLK_TCK")
KINDS = ("plain", "loaded", "decoy")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` itself (not of its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _wait(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise TimeoutError("the daemon did not get there in time")


def _train_runtime(runs: Path) -> float:
    run = (runs / "latest").resolve()
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={SCALARS: 0})
    events.Reload()
    return events.Scalars("train/train_runtime")[-1].value


def _base_dir(args: argparse.Namespace) -> tuple[Path, object]:
    root = Path(tempfile.mkdtemp(prefix="http-load-"))
    layout = init_base_dir(root)
    config = json.loads(layout.config_file.read_text())
    config.update(base_model=str(Path(args.model).resolve()))
    config["hyperparams"].update(max_steps=args.steps, batch_size=args.batch_size, max_length=args.max_length)
    config["eval"].update(split_ratio=0.0)
    config["daemon"].update(stable_seconds=0.0, rescan_seconds=1.0)
    layout.config_file.write_text(json.dumps(config))
    return root, layout


def _start_decoy(status_file: Path) -> tuple[multiprocessing.Process, str]:
    spawn = multiprocessing.get_context("spawn")
    port_queue = spawn.Queue()
    process = spawn.Process(target=run_decoy, args=(status_file, port_queue), daemon=True)
    process.start()
    return process, f"http://127.0.0.1:{port_queue.get(timeout=60)}/"


def _start_readers(args: argparse.Namespace, url: str):
    spawn = multiprocessing.get_context("spawn")
    ready, stop, results = spawn.Event(), spawn.Event(), spawn.Queue()
    process = spawn.Process(target=run_readers, args=(url, args.readers, args.interval, args.client,
                                                      args.client_priority, ready, stop, results))
    process.start()
    if not ready.wait(120):
        raise TimeoutError(f"the {args.readers} readers did not connect in time")
    return process, stop, results


def trial(args: argparse.Namespace, kind: str, round_index: int) -> dict:
    root, layout = _base_dir(args)
    rows = Path(args.data).read_text().splitlines()[: args.rows]
    env = {**os.environ, "TB_AUTO": "0"}
    daemon = subprocess.Popen([TRAINCTL, "daemon", "--base-dir", str(root)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    readers = decoy = None
    counts = {}
    try:
        url = _wait(lambda: (s := StatusFile(layout.status_file).read()) and s.http_url, 300)
        if kind == "decoy":
            decoy, url = _start_decoy(layout.status_file)
        if kind != "plain":
            readers, stop, results = _start_readers(args, url)
        load_before = os.getloadavg()[0]
        cpu_before, started = cpu_seconds(daemon.pid), time.monotonic()
        (layout.inbox / "bench.jsonl").write_text("\n".join(rows) + "\n")
        _wait(lambda: (layout.done / "bench.jsonl").exists() or (layout.failed / "bench.jsonl").exists(), 1800)
        daemon_cpu, window = cpu_seconds(daemon.pid) - cpu_before, time.monotonic() - started
        if readers is not None:
            stop.set()
            counts = results.get(timeout=60)
            readers.join(60)
        if decoy is not None:
            counts["decoy_cpu_s"] = round(cpu_seconds(decoy.pid), 2)
    finally:
        if decoy is not None:
            decoy.kill()
        daemon.terminate()
        daemon.wait(120)
    runtime = _train_runtime(layout.runs)
    shutil.rmtree(root, ignore_errors=True)  # a trial's base dir holds a snapshot and the run: ~10 MB+
    result = {"round": round_index, "kind": kind, "train_runtime_s": round(runtime, 2), "window_s": round(window, 2),
              "daemon_cpu_s": round(daemon_cpu, 2), "daemon_cores": round(daemon_cpu / window, 4),
              "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
              **counts}
    print(json.dumps(result), flush=True)
    return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_trial(args: argparse.Namespace, loaded: bool, round_index: int) -> dict:
    """No training: ``trainctl serve`` on a fresh base dir for ``--serve-seconds``, with or without
    the readers; its CPU per second and per status request, the server's cost alone."""
    root, _ = _base_dir(args)
    port = _free_port()
    server = subprocess.Popen([TRAINCTL, "serve", "--base-dir", str(root), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, counts = f"http://127.0.0.1:{port}/", {}
    try:
        _wait(lambda: _accepts(port), 120)
        if loaded:
            readers, stop, results = _start_readers(args, url)
        cpu_before, started = cpu_seconds(server.pid), time.monotonic()
        time.sleep(args.serve_seconds)
        server_cpu, window = cpu_seconds(server.pid) - cpu_before, time.monotonic() - started
        if loaded:
            stop.set()
            counts = results.get(timeout=60)
            readers.join(60)
    finally:
        server.terminate()
        server.wait(60)
    shutil.rmtree(root, ignore_errors=True)
    result = {"round": round_index, "kind": "serve_loaded" if loaded else "serve_idle", "window_s": round(window, 2),
              "server_cpu_s": round(server_cpu, 3), "server_cores": round(server_cpu / window, 4), **counts}
    if counts.get("status_requests"):
        result["server_cpu_ms_per_status_request"] = round(1000 * server_cpu / counts["status_requests"], 3)
    print(json.dumps(result), flush=True)
    return result


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)} if values else {}


def summarize(args: argparse.Namespace, trials: list[dict]) -> dict:
    """Per kind: the median runtime and daemon cores; per round: each kind's runtime over the
    round's plain one, summarized as median, min and max."""
    by_kind = {kind: [t for t in trials if t["kind"] == kind] for kind in KINDS}
    rounds = {t["round"]: {} for t in trials}
    for t in trials:
        rounds[t["round"]][t["kind"]] = t["train_runtime_s"]
    summary = {"readers": args.readers, "interval_s": args.interval, "client": args.client,
               "client_priority": args.client_priority, "steps": args.steps, "batch_size": args.batch_size,
               "max_length": args.max_length, "cpus": os.cpu_count()}
    for kind, ts in by_kind.items():
        if not ts:
            continue
        summary[f"{kind}_median_s"] = round(statistics.median(t["train_runtime_s"] for t in ts), 2)
        summary[f"daemon_cores_{kind}"] = round(statistics.median(t["daemon_cores"] for t in ts), 4)
        if kind != "plain":
            ratios = [r[kind] / r["plain"] for r in rounds.values() if kind in r and "plain" in r]
            summary[f"{kind}_over_plain_paired"] = _spread(ratios)
    if by_kind["loaded"] and by_kind["plain"]:
        extra = summary["daemon_cores_loaded"] - summary["daemon_cores_plain"]
        summary["server_share_of_cpus_percent"] = round(100 * extra / os.cpu_count(), 2)
    return {**summary, "trials": trials}


def summarize_serving(args: argparse.Namespace, trials: list[dict]) -> dict:
    """Medians of the server's cores idle and loaded, and of its CPU per status request."""
    def median(key: str, kind: str) -> float:
        return round(statistics.median(t[key] for t in trials if t["kind"] == kind), 4)
    return {"readers": args.readers, "interval_s": args.interval, "client": args.client,
            "client_priority": args.client_priority, "server_cores_idle": median("server_cores", "serve_idle"),
            "server_cores_loaded": median("server_cores", "serve_loaded"),
            "server_cpu_ms_per_status_request": median("server_cpu_ms_per_status_request", "serve_loaded"),
            "trials": trials}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/SmolLM2-135M-Instruct",
                        help="model directory to train (any local Hugging Face causal LM, e.g. random weights)")
    parser.add_argument("--data", default="benchmarks/data/chat_mixed.jsonl")
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=128,
                        help="raise it (and --steps) on a GPU so that a trial trains for a minute or more")
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between a reader's status polls")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="raw: asyncio streams speaking HTTP/1.1 (light); httpx: httpx.AsyncClient")
    parser.add_argument("--client-priority", choices=("idle", "nice", "normal"), default="idle",
                        help="the readers' process (never the daemon): idle is SCHED_IDLE, standing for "
                        "browsers on other machines; nice is nice 19; normal competes with training as an equal")
    parser.add_argument("--kinds", default="plain,loaded,decoy",
                        help=f"comma-separated trial kinds of a round, from {', '.join(KINDS)}")
    parser.add_argument("--serve-seconds", type=float,
                        help="no training: time `trainctl serve` idle and under the readers for this many "
                        "seconds per trial, for the server's CPU per request alone")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--append", action="store_true",
                        help="add this run's trials to those already in --out and summarize them all "
                        "(so that many rounds can run as several short commands)")
    args = parser.parse_args(argv)
    kinds = args.kinds.split(",")
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown --kinds {sorted(unknown)}; choose from {', '.join(KINDS)}")
    earlier = json.loads(args.out.read_text())["trials"] if args.append and args.out and args.out.exists() else []
    first = max((t["round"] for t in earlier), default=-1) + 1
    trials = list(earlier)
    for round_index in range(first, first + args.rounds):
        if args.serve_seconds:
            trials += [serve_trial(args, loaded, round_index) for loaded in (False, True)]
            continue
        turn = round_index % len(kinds)
        trials += [trial(args, kind, round_index) for kind in kinds[turn:] + kinds[:turn]]
    summary = summarize_serving(args, trials) if args.serve_seconds else summarize(args, trials)
    print(json.dumps({k: v for k, v in summary.items() if k != "trials"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
