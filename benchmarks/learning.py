"""What the promotion gate and replay do to the embedded model, measured through the real CLI.

Two domains of real text nobody here wrote, both shipped offline:

* **A, Python reference**: the paragraphs of the Python language reference bundled with CPython
  (``pydoc_data.topics``, PSF licence);
* **B, licence text**: the paragraphs of the licences Debian ships in ``/usr/share/common-licenses``
  (GPL, LGPL, Apache, MPL, Artistic, GFDL, ...).

Each paragraph becomes one chat row: the user gives its first words, the assistant continues it.
The experiments (each on a fresh base dir, ``trainctl daemon --once``; ``trainctl eval --data``)::

    .venv/bin/python -m benchmarks.learning good      # a file of A: held-out loss before/after, promoted
    .venv/bin/python -m benchmarks.learning garbage   # then A's questions with shuffled answers: rejected
    .venv/bin/python -m benchmarks.learning forget --replay 0 0.1 0.25   # A, then B1, B2: A's loss
    .venv/bin/python -m benchmarks.learning cost      # seconds a row: measuring vs training, side by side
    .venv/bin/python -m benchmarks.learning file-cost --rows 1000   # the gate's share of a 1,000-row file's time
    .venv/bin/python -m benchmarks.learning dropout --lora-dropout 0 0.05 --seed 1 2   # A's losses per dropout

``forget`` trains file A once into ``--workdir`` (``--stage-a`` does only that) and copies that base
dir for each replay setting, so long runs can be split, one replay value per command::

    python -m benchmarks.learning forget --stage-a --rows 300 --max-steps 75 --workdir W
    python -m benchmarks.learning forget --replay 0 --max-regression 1 --rows 300 --max-steps 75 --workdir W --out R

``--max-regression 1`` promotes every file, so the eval tables of every file can be judged again at
any ``gate.max_regression`` (docs/learning.md).

Results go to ``benchmarks/results/learning-*.json`` and are summarized in docs/learning.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pydoc_data.topics
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from core.train import UltimateTrainer
from trainer.config import TrainConfig
from trainer.data.eval_sets import FILE, tokenize_set
from trainer.data.formats import read_examples
from trainer.set_losses import eval_collator, measure_loss

REPO = Path(__file__).resolve().parents[1]
TRAINCTL = str(Path(sys.executable).with_name("trainctl"))
LICENSES = Path("/usr/share/common-licenses")
RESULTS = REPO / "benchmarks" / "results"


def paragraphs(texts: list[str], min_words: int = 25) -> list[str]:
    """Prose paragraphs of at least ``min_words`` words, whitespace folded, cut to 90 words."""
    found = []
    for text in texts:
        for block in re.split(r"\n\s*\n", text):
            words = block.split()
            if len(words) >= min_words and not block.lstrip().startswith(("*", "=", "-")):
                found.append(" ".join(words[:90]))
    return found


def domain(name: str) -> list[str]:
    """Paragraphs of domain ``a`` (Python reference) or ``b`` (licences), in a seeded order."""
    if name == "a":
        texts = list(pydoc_data.topics.topics.values())
    else:
        texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(LICENSES.iterdir()) if p.is_file()]
    found = sorted(set(paragraphs(texts)))
    random.Random(0).shuffle(found)
    return found


def chat(paragraph: str, split: int = 12) -> dict:
    """A chat row: the user gives the paragraph's first ``split`` words, the assistant continues it."""
    words = paragraph.split()
    return {"messages": [{"role": "user", "content": "Continue this passage: " + " ".join(words[:split])},
                         {"role": "assistant", "content": " ".join(words[split:])}]}


def write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def trainctl(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TB_AUTO": "0"}  # no TensorBoard server: it would only take CPU
    return subprocess.run([TRAINCTL, *args], capture_output=True, text=True, cwd=REPO, env=env)


def base_dir(root: Path, replay: float, max_steps: int) -> Path:
    trainctl("init", str(root))
    config = json.loads((root / "config.json").read_text())
    config["base_model"] = str(REPO / "models" / "SmolLM2-135M-Instruct")
    config["hyperparams"].update({"max_length": 256, "max_steps": max_steps})
    config["replay"]["ratio"] = replay
    (root / "config.json").write_text(json.dumps(config, indent=2))
    return root


def drop(root: Path, name: str, rows: list[dict]) -> dict:
    """Drop a file, run the daemon once, return its report, wall seconds and the gate's seconds."""
    write(root / "inbox" / name, rows)
    started = time.perf_counter()
    done = trainctl("daemon", "--once", "--base-dir", str(root))
    seconds = time.perf_counter() - started
    report = next((json.loads(p.read_text()) for folder in ("done", "rejected", "failed")
                   for p in [root / "queue" / folder / f"{name}.report.json"] if p.exists()), None)
    if report is None:
        raise RuntimeError(f"{name}: no report; daemon said: {done.stderr[-2000:]}")
    evaluation = report.get("evaluation") or {}
    return {"file": name, "outcome": report["outcome"], "rule": evaluation.get("rule"),
            "sets": evaluation.get("sets"), "replay": evaluation.get("replay"),
            "gate_seconds": evaluation.get("seconds"), "before_rows_measured": evaluation.get("before_rows_measured"),
            "daemon_seconds": round(seconds, 1),
            "snapshot": report.get("snapshot")}


def eval_losses(root: Path, *data: Path) -> list[float]:
    """current_model's loss on each file, one model load (``trainctl eval current --data ...``)."""
    out = trainctl("eval", "current", "--data", *map(str, data), "--json", "--base-dir", str(root))
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return [row["loss_after"] for row in json.loads(out.stdout)["sets"]]


def run_good_then_garbage(work: Path, rows: int, max_steps: int) -> dict:
    a = [chat(p) for p in domain("a")[:rows]]
    root = base_dir(work / "good", 0.1, max_steps)
    good = drop(root, "python-ref.jsonl", a)
    current = (root / "current_model").resolve()
    answers = [r["messages"][1]["content"] for r in a]
    random.Random(1).shuffle(answers)
    shuffled = [{"messages": [r["messages"][0], {"role": "assistant", "content": ans}]} for r, ans in zip(a, answers)]
    garbage = drop(root, "python-ref-shuffled.jsonl", shuffled)
    return {"good": good, "garbage": garbage, "current_unchanged": (root / "current_model").resolve() == current}


def after_a(work: Path, rows: int, max_steps: int) -> tuple[Path, dict, dict]:
    """The base dir after file A, trained once in ``work/after-a`` and reused by every replay setting
    (replay mixes nothing into the first file: the buffer is empty), with A's report and test losses."""
    a, b = domain("a"), domain("b")
    a_test, b_test = write(work / "a-test.jsonl", [chat(p) for p in a[-60:]]), write(work / "b-test.jsonl", [chat(p) for p in b[-60:]])
    saved = work / "after-a.json"
    if not saved.exists():
        root = base_dir(work / "after-a", 0.0, max_steps)
        step = drop(root, "a.jsonl", [chat(p) for p in a[:rows]])
        losses = {"after": "A", **dict(zip(("a_test", "b_test"), eval_losses(root, a_test, b_test)))}
        saved.write_text(json.dumps({"rows": rows, "max_steps": max_steps, "file": step, "losses": losses}))
    done = json.loads(saved.read_text())
    if (done["rows"], done["max_steps"]) != (rows, max_steps):
        raise SystemExit(f"{saved}: file A was trained with --rows {done['rows']} --max-steps {done['max_steps']}; "
                         "use the same options or another --workdir")
    return work / "after-a", done["file"], done["losses"]


def run_forgetting(work: Path, rows: int, max_steps: int, replay: float, max_regression: float | None = None) -> dict:
    a_root, a_step, a_losses = after_a(work, rows, max_steps)
    a_test, b_test = work / "a-test.jsonl", work / "b-test.jsonl"
    b = domain("b")[:-60]  # the last 60 paragraphs are b-test.jsonl: no file may hold them
    per_file = min(rows, len(b) // 2)  # B has 377 such paragraphs: two files of 188 when --rows > 188
    root = work / f"forget-{replay}"
    shutil.copytree(a_root, root, symlinks=True)
    config = json.loads((root / "config.json").read_text())
    config["replay"]["ratio"] = replay
    if max_regression is not None:
        config["gate"]["max_regression"] = max_regression
    (root / "config.json").write_text(json.dumps(config, indent=2))
    steps = [("A", a_step)]
    losses = [a_losses]
    for i in (1, 2):
        chunk = b[(i - 1) * per_file: i * per_file]
        steps.append((f"B{i}", drop(root, f"b{i}.jsonl", [chat(p) for p in chunk])))
        losses.append({"after": f"B{i}", **dict(zip(("a_test", "b_test"), eval_losses(root, a_test, b_test)))})
    return {"replay": replay, "max_regression": config["gate"]["max_regression"], "files": [s for _, s in steps],
            "losses": losses}


def run_dropout(work: Path, rows: int, max_steps: int, dropouts: list[float], seeds: list[int]) -> list[dict]:
    """File A trained from the embedded model once per ``lora.dropout`` and seed (within a seed the
    same adapter init, rows and order), with its gate's held-out loss, its training losses and
    the loss on 60 rows of A and of B that it does not hold."""
    a, b = domain("a"), domain("b")
    a_test = write(work / "a-test.jsonl", [chat(p) for p in a[-60:]])
    b_test = write(work / "b-test.jsonl", [chat(p) for p in b[-60:]])
    runs = []
    for seed in seeds:
        for dropout in dropouts:
            root = base_dir(work / f"dropout-{dropout:g}-seed-{seed}", 0.0, max_steps)
            config = json.loads((root / "config.json").read_text())
            config["lora"]["dropout"], config["hyperparams"]["seed"] = dropout, seed
            (root / "config.json").write_text(json.dumps(config, indent=2))
            step = drop(root, "a.jsonl", [chat(p) for p in a[:rows]])
            training = json.loads((root / "queue" / "done" / "a.jsonl.report.json").read_text())["training"]
            runs.append({"lora_dropout": dropout, "seed": seed, "file": step, "load_average": os.getloadavg(),
                         "training": {k: training[k] for k in ("steps", "first_loss", "last_loss", "mean_loss", "tokens")},
                         **dict(zip(("a_test", "b_test"), eval_losses(root, a_test, b_test)))})
    return runs


def run_cost(work: Path, rows: int, max_steps: int) -> dict:
    """Seconds a row of the gate's measuring against training, in one process on one loaded model,
    interleaved (measure, train, measure, train, measure) so that a change of machine load hits both.
    Each measuring pass runs twice, with the rows' shared prefix run once (as the gate does) and
    with every row whole, in alternating order."""
    a = [chat(p) for p in domain("a")]
    config = TrainConfig(base_model=str(REPO / "models" / "SmolLM2-135M-Instruct"),
                         hyperparams={"max_length": 256, "max_steps": max_steps}, eval={"split_ratio": 0})
    job = UltimateTrainer(config, write(work / "train.jsonl", a[:4 * max_steps]), base_dir=work,
                          model_source=config.base_model, output_dir=work / "checkpoints")
    job.setup()
    probe = read_examples(write(work / "probe.jsonl", a[-rows:]), job.profile).examples
    features = tokenize_set("probe", FILE, probe, job.tokenizer, job.profile, config).features
    collator = eval_collator(config, job.tokenizer, job.attention.value)
    for share in (True, False):  # warm up both ways (the first forward passes of a process are slower)
        measure_loss(job.trainer.model, features[:16], collator, job.precision.value, share_prefixes=share)
    measured, whole, trained = [], [], []
    for chunk in range(3):
        rows = features[chunk::3]
        for share in ((True, False) if chunk % 2 == 0 else (False, True)):  # alternate which goes first
            loss = measure_loss(job.trainer.model, rows, collator, job.precision.value, share_prefixes=share)
            (measured if share else whole).append(loss.seconds / len(rows))
        if chunk < 2:
            started = time.perf_counter()
            job.trainer.train()
            trained.append((time.perf_counter() - started) / (4 * max_steps))
    per_measure, per_whole, per_train = (sum(x) / len(x) for x in (measured, whole, trained))
    return {"measure_seconds_per_row": [round(x, 4) for x in measured],
            "measure_whole_rows_seconds_per_row": [round(x, 4) for x in whole],
            "train_seconds_per_row": [round(x, 4) for x in trained],
            "ratio": round(per_measure / per_train, 4), "ratio_whole_rows": round(per_whole / per_train, 4),
            "lora_dropout": config.lora.dropout, "load_average": os.getloadavg(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "precision": job.precision.value, "attention": job.attention.value}


def configure(root: Path, **sections: dict) -> None:
    """Update sections of ``root``'s config.json (``eval={"split_ratio": 0.5}``...)."""
    config = json.loads((root / "config.json").read_text())
    for name, values in sections.items():
        config[name].update(values)
    (root / "config.json").write_text(json.dumps(config, indent=2))


def run_file_cost(work: Path, rows: int, heldout: int, memory: int) -> dict:
    """The issue's case through ``trainctl daemon --once``: a file of ``rows`` rows with ``heldout``
    held out, after a first file whose held-out rows filled the memory set to ``memory`` rows;
    the same file with the gate and, in a copy of the base dir, without it.

    The first file is licence text (B) with ``memory`` rows held out and a few trained; the measured
    file is Python reference text (A), topped up with rows of the same paragraphs cut 20 words in.
    """
    a, b = domain("a"), domain("b")
    measured = ([chat(p) for p in a] + [chat(p, 20) for p in a])[:rows]
    seeded_dir = work / "seeded"
    report_file = seeded_dir / "queue" / "done" / "b-memory.jsonl.report.json"
    if report_file.exists():  # a rerun: the first file is trained once per --workdir
        seeded = {"file": "b-memory.jsonl", "outcome": json.loads(report_file.read_text())["outcome"], "reused": True}
    else:
        first = ([chat(p) for p in b] + [chat(p, 20) for p in b])[: memory + max(8, memory // 8)]
        base_dir(seeded_dir, replay=0.1, max_steps=None)
        configure(seeded_dir, eval={"split_ratio": memory / len(first), "max_examples": memory})  # ceil, capped
        seeded = drop(seeded_dir, "b-memory.jsonl", first)
    if seeded["outcome"] != "trained":
        raise RuntimeError(f"the first file was not promoted, so the memory set is empty: {seeded}")
    runs = {}
    for name, gate in (("gate", True), ("no_gate", False)):
        folder = work / name
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(seeded_dir, folder, symlinks=True)
        configure(folder, eval={"split_ratio": heldout / rows, "max_examples": heldout}, gate={"enabled": gate})
        runs[name] = {**drop(folder, "a-file.jsonl", measured), "load_average": os.getloadavg()}
    gate, plain = runs["gate"], runs["no_gate"]
    return {"memory_file": seeded, "runs": runs,
            "gate_share_of_file_without_gate": round(gate["gate_seconds"] / (gate["daemon_seconds"] - gate["gate_seconds"]), 4),
            "daemon_seconds_ratio": round(gate["daemon_seconds"] / plain["daemon_seconds"], 4),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learning", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["good", "garbage", "forget", "cost", "file-cost", "dropout"])
    parser.add_argument("--rows", type=int, default=160, help="rows per file (default 160)")
    parser.add_argument("--max-steps", type=int, default=40, help="hyperparams.max_steps per file (default 40)")
    parser.add_argument("--replay", type=float, nargs="+", default=[0.0, 0.1, 0.25])
    parser.add_argument("--workdir", type=Path, help="forget: file A is trained once here and reused")
    parser.add_argument("--max-regression", type=float, help="forget: gate.max_regression (default: the config's)")
    parser.add_argument("--stage-a", action="store_true", help="forget: train file A into --workdir and stop")
    parser.add_argument("--lora-dropout", type=float, nargs="+", default=[0.0, 0.05], help="dropout: lora.dropout values")
    parser.add_argument("--seed", type=int, nargs="+", default=[42], help="dropout: hyperparams.seed values")
    parser.add_argument("--heldout", type=int, default=256, help="file-cost: held-out rows of the file")
    parser.add_argument("--memory", type=int, default=512, help="file-cost: memory rows before the file")
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results/learning-*.json)")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="trainctl-learning-"))
    if args.experiment in ("good", "garbage"):
        result = run_good_then_garbage(work, args.rows, args.max_steps)
    elif args.experiment == "cost":
        result = run_cost(work, args.rows, args.max_steps)
    elif args.experiment == "file-cost":
        result = run_file_cost(work, args.rows, args.heldout, args.memory)
    elif args.experiment == "dropout":
        result = run_dropout(work, args.rows, args.max_steps, args.lora_dropout, args.seed)
    elif args.stage_a:
        result = after_a(work, args.rows, args.max_steps)[1:]
    else:
        result = [run_forgetting(work, args.rows, args.max_steps, r, args.max_regression) for r in args.replay]
    command = "python -m benchmarks.learning " + " ".join(argv if argv is not None else sys.argv[1:])
    suffix = "-".join(f"{r:g}" for r in args.replay) if args.experiment == "forget" else ""
    out = args.out or RESULTS / f"learning-{args.experiment}{'-replay-' + suffix if suffix else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": command, "result": result}, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
