"""How long `trainctl chat current --prompt ...` takes, and where the time goes.

    .venv/bin/python -m benchmarks.chat_latency --base-dir B --repeats 3

B is a base dir with a trained snapshot (for example after `scripts/demo.sh`, B=demo). Two
measurements, each in fresh processes so that nothing is cached in memory by Python:

- ``cli``: the wall time of the real command, ``trainctl chat current --base-dir B --prompt P
  --max-new-tokens N``, run ``--repeats`` times (the file system cache is warm after the first);
- ``phases``: the same steps in one fresh Python process, timed one by one: importing what the
  command imports, picking and verifying the snapshot, loading the base weights, attaching the
  adapter, generating up to N tokens greedily (with the thread count `trainctl chat` picks).

``--threads 2`` forces two threads, as every version before the thread choice used on 2 cores.
Prints one JSON object per run and the median of each phase. A repeat is two fresh processes,
each about as long as one `trainctl chat` (6 s on 2 idle cores with the embedded
SmolLM2-135M; a repeat took about 2.5 minutes at load average 20).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))


def phases(base_dir: str, prompt: str, max_new_tokens: int, threads: int | None) -> dict:
    """The phases of one chat, timed in this (fresh) process."""
    marks = {"start": time.monotonic()}
    import torch

    from core.cli import chat as chat_cli  # noqa: F401  what `trainctl chat` imports
    from core.snapshots.selection import select_model
    from core.state.layout import BaseDir
    from profiles import get_profile
    from trainer.config import load_config
    from trainer.inference.chat import ChatSession, GenerationSettings
    from trainer.inference.loading import attach_adapter, generation_threads, load_base

    marks["imports"] = time.monotonic()
    threads = threads or min(torch.get_num_threads(), generation_threads())  # as `trainctl chat` chooses
    torch.set_num_threads(threads)
    layout = BaseDir.at(base_dir)
    config = load_config(layout.config_file)
    selected = select_model(layout, config, "current", allow_base=True)
    marks["select_and_verify"] = time.monotonic()
    loaded = load_base(selected.path, selected.base)
    marks["load_base"] = time.monotonic()
    loaded = attach_adapter(loaded)
    marks["attach_adapter"] = time.monotonic()
    session = ChatSession(loaded.model, loaded.tokenizer, get_profile(selected.profile))
    reply = session.reply(prompt, GenerationSettings(max_new_tokens=max_new_tokens), on_text=lambda piece: None)
    marks["generate"] = time.monotonic()
    names = list(marks)
    result = {name: round(marks[name] - marks[before], 3) for before, name in itertools.pairwise(names)}
    return {**result, "threads": threads, "load_average": os.getloadavg()[0], "reply": reply}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-dir", required=True)
    parser.add_argument("--prompt", default="What is the capital of France?")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="force this many threads (as `trainctl chat --threads`)")
    parser.add_argument("--phases-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phases_only:
        print(json.dumps(phases(args.base_dir, args.prompt, args.max_new_tokens, args.threads)))
        return 0
    forced = ["--threads", str(args.threads)] if args.threads else []
    common = ["--base-dir", args.base_dir, "--prompt", args.prompt, "--max-new-tokens", str(args.max_new_tokens), *forced]
    runs = []
    for _ in range(args.repeats):
        started = time.monotonic()
        subprocess.run([TRAINCTL, "chat", "current", *common], check=True, capture_output=True)
        cli = round(time.monotonic() - started, 3)
        own = subprocess.run([sys.executable, "-m", "benchmarks.chat_latency", "--phases-only", *common],
                             check=True, capture_output=True, text=True)
        runs.append({"cli": cli, **json.loads(own.stdout.strip().splitlines()[-1])})
        print(json.dumps(runs[-1]), flush=True)
    keys = [k for k, v in runs[0].items() if isinstance(v, float) and k != "load_average"]
    print(json.dumps({"median": {k: statistics.median(r[k] for r in runs) for k in keys}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
