"""Does a crowd of dashboard readers slow training? Train one file with and without 50 readers.

    .venv/bin/python -m benchmarks.http_load --model models/SmolLM2-135M-Instruct \\
        --data benchmarks/data/chat_mixed.jsonl --rows 24 --steps 6 --rounds 2 --out benchmarks/results/http_load.json

Each trial starts a real ``trainctl daemon`` (its HTTP server in the daemon process) on a fresh
base dir and drops the same file into its inbox. In a loaded trial, as soon as the daemon serves,
``--readers`` clients each hold ``GET /api/events/stream`` open and poll ``GET /api/status`` every
``--interval`` seconds until the file is trained. The number compared is HF's ``train_runtime``
(the training loop alone, read from the run's TensorBoard events), so model loading and daemon
start-up do not blur it. Trials alternate (plain, loaded, plain, loaded, ...) so that a drift in
the machine's load hits both kinds alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from core.state.layout import init_base_dir
from core.state.status import StatusFile

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))


async def _reader(url: str, interval: float, stop: threading.Event, counts: dict) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream("GET", url + "api/events/stream") as stream:
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


def _run_readers(url: str, readers: int, interval: float, stop: threading.Event, counts: dict) -> None:
    async def main():
        await asyncio.gather(*(_reader(url, interval, stop, counts) for _ in range(readers)))
    asyncio.run(main())


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


def trial(args: argparse.Namespace, loaded: bool) -> dict:
    root = Path(tempfile.mkdtemp(prefix="http-load-"))
    layout = init_base_dir(root)
    config = json.loads(layout.config_file.read_text())
    config.update(base_model=str(Path(args.model).resolve()))
    config["hyperparams"].update(max_steps=args.steps, batch_size=args.batch_size, max_length=args.max_length)
    config["eval"].update(split_ratio=0.0)
    config["daemon"].update(stable_seconds=0.0, rescan_seconds=1.0)
    layout.config_file.write_text(json.dumps(config))
    rows = Path(args.data).read_text().splitlines()[: args.rows]
    env = {**os.environ, "TB_AUTO": "0"}
    daemon = subprocess.Popen([TRAINCTL, "daemon", "--base-dir", str(root)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop, counts = threading.Event(), {"status_requests": 0, "stream_messages": 0, "errors": 0}
    try:
        url = _wait(lambda: (s := StatusFile(layout.status_file).read()) and s.http_url, 300)
        readers = None
        if loaded:
            readers = threading.Thread(target=_run_readers, args=(url, args.readers, args.interval, stop, counts))
            readers.start()
            time.sleep(2)  # every reader connected before training starts
        (layout.inbox / "bench.jsonl").write_text("\n".join(rows) + "\n")
        _wait(lambda: (layout.done / "bench.jsonl").exists() or (layout.failed / "bench.jsonl").exists(), 1800)
        stop.set()
        if readers is not None:
            readers.join(60)
    finally:
        daemon.terminate()
        daemon.wait(120)
    runtime = _train_runtime(layout.runs)
    shutil.rmtree(root, ignore_errors=True)  # a trial's base dir holds a snapshot and the run: ~10 MB+
    result = {"loaded": loaded, "train_runtime_s": round(runtime, 2), "load_average": os.getloadavg()[0],
              **(counts if loaded else {})}
    print(json.dumps(result), flush=True)
    return result


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
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    trials = [trial(args, loaded) for _ in range(args.rounds) for loaded in (False, True)]
    plain = statistics.median(t["train_runtime_s"] for t in trials if not t["loaded"])
    loaded = statistics.median(t["train_runtime_s"] for t in trials if t["loaded"])
    summary = {"readers": args.readers, "steps": args.steps, "batch_size": args.batch_size,
               "max_length": args.max_length, "cpus": os.cpu_count(), "load_average_end": os.getloadavg()[0],
               "plain_median_s": plain, "loaded_median_s": loaded, "loaded_over_plain": round(loaded / plain, 3),
               "slowdown_percent": round(100 * (loaded - plain) / plain, 1), "trials": trials}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
