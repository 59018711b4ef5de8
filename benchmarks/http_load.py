"""Does a crowd of dashboard readers slow training? Train one file with and without 50 readers.

    .venv/bin/python -m benchmarks.http_load --model models/SmolLM2-135M-Instruct \\
        --data benchmarks/data/chat_mixed.jsonl --rows 200 --steps 80 --rounds 3 --out benchmarks/results/http_load.json

Each trial starts a real ``trainctl daemon`` (its HTTP server in the daemon process) on a fresh
base dir and drops the same file into its inbox. In a loaded trial, before the file is dropped,
``--readers`` clients each hold ``GET /api/events/stream`` open and poll ``GET /api/status`` every
``--interval`` seconds until the file is trained. The number compared is HF's ``train_runtime``
(the training loop alone, read from the run's TensorBoard events), so model loading and daemon
start-up do not blur it. Trials alternate (plain, loaded, plain, loaded, ...) so that a drift in
the machine's load hits both kinds alike.

The readers run in a separate process, at ``nice`` 19 unless ``--client-nice 0``: a dashboard's
browser is normally on another machine, and on a machine with few cores the benchmark's own 50
connections would otherwise compete with training for the cores the server is being judged on.
The server itself (the daemon process) is never reniced. What it costs is measured on its own:
the daemon's CPU seconds (``utime + stime`` of its ``/proc/<pid>/stat``, not its child's) from the
file's drop until it is trained, per second of that window, in plain and loaded trials.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from tensorboard.backend.event_processing.event_accumulator import (
    SCALARS,
    EventAccumulator,
)

from core.state.layout import init_base_dir
from core.state.status import StatusFile

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))
TICKS = os.sysconf("SC_CLK_TCK")


async def _reader(url: str, interval: float, stop, counts: dict, connected: list) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream("GET", url + "api/events/stream") as stream:
            connected.append(1)

            async def consume():
                try:
                    async for line in stream.aiter_lines():
                        if line.startswith("data: "):
                            counts["stream_messages"] += 1
                except httpx.HTTPError:
                    counts["errors"] += 0 if stop.is_set() else 1  # the daemon stops after the trial

            task = asyncio.create_task(consume())
            while not stop.is_set():
                try:
                    response = await client.get(url + "api/status")
                    counts["status_requests" if response.status_code == 200 else "errors"] += 1
                except httpx.HTTPError:
                    counts["errors"] += 0 if stop.is_set() else 1
                await asyncio.sleep(interval)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def run_readers(url: str, readers: int, interval: float, nice: int, ready, stop, results) -> None:
    """The readers' process: ``readers`` clients until ``stop``; sets ``ready`` once all are connected,
    then puts its counts and its own CPU seconds on ``results``."""
    os.nice(nice)
    counts = {"status_requests": 0, "stream_messages": 0, "errors": 0}
    connected: list = []

    async def main():
        async def signal_ready():
            while len(connected) < readers:
                await asyncio.sleep(0.05)
            ready.set()
        await asyncio.gather(signal_ready(), *(_reader(url, interval, stop, counts, connected) for _ in range(readers)))

    asyncio.run(main())
    results.put({**counts, "client_cpu_s": round(sum(os.times()[:2]), 2)})


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


def _start_readers(args: argparse.Namespace, url: str):
    spawn = multiprocessing.get_context("spawn")
    ready, stop, results = spawn.Event(), spawn.Event(), spawn.Queue()
    process = spawn.Process(target=run_readers, args=(url, args.readers, args.interval, args.client_nice,
                                                      ready, stop, results))
    process.start()
    if not ready.wait(120):
        raise TimeoutError(f"the {args.readers} readers did not connect in time")
    return process, stop, results


def trial(args: argparse.Namespace, loaded: bool) -> dict:
    root, layout = _base_dir(args)
    rows = Path(args.data).read_text().splitlines()[: args.rows]
    env = {**os.environ, "TB_AUTO": "0"}
    daemon = subprocess.Popen([TRAINCTL, "daemon", "--base-dir", str(root)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    readers, counts = None, {}
    try:
        url = _wait(lambda: (s := StatusFile(layout.status_file).read()) and s.http_url, 300)
        if loaded:
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
    finally:
        daemon.terminate()
        daemon.wait(120)
    runtime = _train_runtime(layout.runs)
    shutil.rmtree(root, ignore_errors=True)  # a trial's base dir holds a snapshot and the run: ~10 MB+
    result = {"loaded": loaded, "train_runtime_s": round(runtime, 2), "window_s": round(window, 2),
              "daemon_cpu_s": round(daemon_cpu, 2), "daemon_cores": round(daemon_cpu / window, 4),
              "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
              **counts}
    print(json.dumps(result), flush=True)
    return result


def summarize(args: argparse.Namespace, trials: list[dict]) -> dict:
    """Medians of plain and loaded trials, their ratio, and what the server cost in CPU."""
    def median(key: str, loaded: bool) -> float:
        return statistics.median(t[key] for t in trials if t["loaded"] is loaded)
    plain, loaded = median("train_runtime_s", False), median("train_runtime_s", True)
    extra_cores = median("daemon_cores", True) - median("daemon_cores", False)
    return {"readers": args.readers, "interval_s": args.interval, "client_nice": args.client_nice,
            "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
            "cpus": os.cpu_count(), "plain_median_s": plain, "loaded_median_s": loaded,
            "loaded_over_plain": round(loaded / plain, 3), "slowdown_percent": round(100 * (loaded - plain) / plain, 1),
            "daemon_cores_plain": round(median("daemon_cores", False), 4),
            "daemon_cores_loaded": round(median("daemon_cores", True), 4),
            "server_share_of_cpus_percent": round(100 * extra_cores / os.cpu_count(), 2),
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
    parser.add_argument("--client-nice", type=int, default=19,
                        help="niceness of the readers' process (never of the daemon): 19 stands for "
                        "browsers on other machines; 0 makes them compete with training as equals")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--append", action="store_true",
                        help="add this run's trials to those already in --out and summarize them all "
                        "(so that many rounds can run as several short commands)")
    args = parser.parse_args(argv)
    earlier = json.loads(args.out.read_text())["trials"] if args.append and args.out and args.out.exists() else []
    trials = earlier + [trial(args, loaded) for _ in range(args.rounds) for loaded in (False, True)]
    summary = summarize(args, trials)
    print(json.dumps({k: v for k, v in summary.items() if k != "trials"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
