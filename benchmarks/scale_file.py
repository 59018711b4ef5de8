"""Cost as a file grows: validation and tokenization time and peak memory of 1,000 to 100,000 rows.

For each size it writes a seeded chat file (``benchmarks/make_chat_data.py`` rows, no download)
and measures, each in a fresh child process so that its peak resident memory is its own:

* ``trainctl validate FILE --json`` on a base dir made by ``trainctl init`` (the embedded model's
  tokenizer and the default config): wall seconds and peak RSS;
* building the training dataset (``trainer.data.dataset.build_train_data``) into an empty cache:
  seconds and peak RSS of the child, and the RSS it had before the build (imports + tokenizer);
* building it again from that cache (what a retry or resume does).

It prints one table with, between consecutive sizes, the growth exponent ``log(t2/t1) / log(n2/n1)``
(1.0 is linear, 0 is constant). ``run(workdir, sizes)`` returns the rows for ``benchmarks/scale.py``.

    .venv/bin/python benchmarks/scale_file.py --workdir /tmp/scale-file --sizes 1000 10000 100000

100,000 rows take a few minutes on 2 busy CPU cores. The commands run from the checkout this file
is in (``python -m core.cli``), so a copy of an older checkout measures that code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SEED = 0


def write_chat_file(path: Path, rows: int, seed: int = SEED) -> Path:
    """``rows`` seeded chat rows (system, user, assistant of random length), one JSON object a line."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from make_chat_data import make_row

    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(rows):
            handle.write(json.dumps(make_row(rng)) + "\n")
    return path


def _measured(command: list[str]) -> tuple[float, float, str]:
    """Run ``command`` from the checkout; its wall seconds, its own peak RSS in MiB, its stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = child.stdout.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if child.returncode not in (0, 1):  # validate exits 1 for an unusable file, still a measurement
        raise RuntimeError(f"{command} failed with exit code {child.returncode}")
    return seconds, usage.ru_maxrss / 1024, out


def _base_dir(workdir: Path) -> Path:
    base = workdir / "base"
    if not (base / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "core.cli", "init", str(base)], cwd=REPO, check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
    return base


def measure_size(workdir: Path, rows: int) -> dict[str, Any]:
    """One size: validate and build (cold and from the cache) a ``rows``-row chat file."""
    base = _base_dir(workdir)
    data = write_chat_file(workdir / f"chat_{rows}.jsonl", rows)
    seconds, rss, out = _measured(
        [sys.executable, "-m", "core.cli", "validate", str(data), "--base-dir", str(base), "--json"]
    )
    report = json.loads(out)
    cache = workdir / f"cache_{rows}"
    build = [sys.executable, str(Path(__file__).resolve()), "--build", str(data), "--base-dir", str(base),
             "--cache", str(cache)]
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    cold_seconds, cold_rss, cold_out = _measured(build)
    warm_seconds, warm_rss, warm_out = _measured(build)
    cold, warm = json.loads(cold_out), json.loads(warm_out)
    return {
        "rows": rows, "mb": round(data.stat().st_size / 1e6, 1), "verdict": report["verdict"],
        "validate_s": round(seconds, 2), "validate_rss_mb": round(rss),
        "build_s": round(cold["seconds"], 2), "build_rss_mb": round(cold_rss),
        "build_rss_before_mb": round(cold["rss_before_mb"]), "cache_hit": [cold["cache_hit"], warm["cache_hit"]],
        "rebuild_s": round(warm["seconds"], 2), "rebuild_rss_mb": round(warm_rss),
        "examples": cold["examples"],
    }


def run(workdir: str | Path, sizes: list[int]) -> list[dict[str, Any]]:
    """Measure every size in ``sizes`` (ascending) under ``workdir``; one dict per size."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in sorted(sizes):
        results.append(measure_size(workdir, rows))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # progress: the big sizes take minutes
    return results


def _growth(rows: list[dict[str, Any]], key: str) -> list[str]:
    out = ["-"]
    for small, large in zip(rows, rows[1:]):
        ratio = large[key] / small[key] if small[key] else float("nan")
        out.append(f"{math.log(ratio) / math.log(large['rows'] / small['rows']):.2f}")
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table, growth exponents next to each time and memory column."""
    keys = ["validate_s", "validate_rss_mb", "build_s", "build_rss_mb", "rebuild_s", "rebuild_rss_mb"]
    growth = {key: _growth(rows, key) for key in keys}
    header = "| rows | MB | " + " | ".join(f"{key} | growth" for key in keys) + " |"
    lines = [header, "|" + " --- |" * (2 + 2 * len(keys))]
    for i, row in enumerate(rows):
        cells = [str(row["rows"]), str(row["mb"])] + [f"{row[key]} | {growth[key][i]}" for key in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _build(data: Path, base: Path, cache: Path) -> None:
    """Child mode: build the training dataset of ``data`` with ``cache`` and print what it cost."""
    import resource

    from core.state.layout import BaseDir
    from profiles import get_profile
    from trainer.config.loader import load_config
    from trainer.data.dataset import build_train_data
    from trainer.model.loading import load_tokenizer

    config = load_config(base / "config.json")
    tokenizer = load_tokenizer(BaseDir(base).model_source(config), config.trust_remote_code)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    data_set = build_train_data(data, tokenizer, get_profile(config.profile), config, cache)
    print(json.dumps({"seconds": data_set.seconds, "cache_hit": data_set.cache_hit, "rss_before_mb": before,
                      "examples": len(data_set.dataset)}))


def main() -> None:
    """Measure the sizes given and print the table (or, with ``--build``, be one measured child)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/trainctl-scale-file"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--base-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        _build(args.build, args.base_dir, args.cache)
        return
    rows = run(args.workdir, args.sizes)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; code from {REPO}")
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
