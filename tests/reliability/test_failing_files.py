"""Files whose training fails: a crash every time (poison), a diverging loss, an absurd learning rate.

Each is a recorded outcome, never a crash loop: the file ends in queue/failed with the reason, the
daemon goes on with the rest of the inbox, and ``current_model`` keeps its bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.child.launcher import launch_training
from core.daemon.loop import Outcome, TrainingDaemon
from core.snapshots.store import SnapshotStore
from core.state.layout import BaseDir
from core.state.ledger import Ledger
from core.state.status import StatusFile
from tests.conftest import write_jsonl
from tests.reliability.harness import events, update_config
from tests.reliability.soak import inbox_files

POISON_CRASH = """
def collate(rows):
    raise RuntimeError("row 3 of poison.jsonl crashes the collator")
collate([])
"""



def _drop(layout: BaseDir, name: str, rows: list, mtime: int) -> None:
    path = write_jsonl(layout.inbox / name, rows)
    os.utime(path, (mtime, mtime))


def _snapshot_bytes(layout: BaseDir) -> dict[str, object]:
    """Every file of current_model's snapshot; of the manifest, all but the files' size, times and
    inode, which a check refreshes when the files were copied with the same bytes (as the fixture does)."""
    current = layout.current_model.resolve()
    files: dict[str, object] = {p.name: p.read_bytes() for p in sorted(current.iterdir())}
    manifest = json.loads(files.pop("manifest.json"))
    manifest["files"] = {name: record["sha256"] for name, record in manifest["files"].items()}
    return {**files, "manifest.json": manifest}


def test_a_file_that_crashes_training_every_time_is_quarantined_and_the_rest_of_the_inbox_is_served(
    layout, monkeypatch
):
    update_config(layout, daemon={"max_attempts": 3})
    _drop(layout, "poison.jsonl", inbox_files()["alpha.jsonl"][:4], mtime=100)
    _drop(layout, "bravo.jsonl", inbox_files()["bravo.jsonl"], mtime=200)

    def poison_crashes(base_dir, train_file, output_dir, *, log_file, **kwargs):
        if train_file.name != "poison.jsonl":
            return launch_training(base_dir, train_file, output_dir, log_file=log_file, **kwargs)
        with open(log_file, "ab") as log:
            return subprocess.Popen([sys.executable, "-c", POISON_CRASH], stdout=log, stderr=subprocess.STDOUT)

    monkeypatch.setattr("core.daemon.child_run.launch_training", poison_crashes)
    daemon = TrainingDaemon(layout.root)

    outcomes = [daemon.run_once() for _ in range(5)]

    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.FAILED, Outcome.TRAINED, Outcome.IDLE]
    report = json.loads((layout.failed / "poison.jsonl.report.json").read_text())
    assert report["outcome"] == "failed" and report["attempts"] == 3
    assert "RuntimeError: row 3 of poison.jsonl crashes the collator" in report["traceback"]
    assert [e["attempt"] for e in events(layout, "training_started") if e["file"] == "poison.jsonl"] == [1, 2, 3]
    assert Ledger(layout.ledger_file).lookup(report["sha256"])["outcome"] == "failed"
    assert SnapshotStore(layout).current().source_file == "bravo.jsonl"
    [failed] = events(layout, "file_failed")
    assert failed["file"] == "poison.jsonl"
    assert StatusFile(layout.status_file).read().last_error is None  # bravo trained after it: resolved
    # A restarted daemon does not take the quarantined file up again: no crash loop.
    assert TrainingDaemon(layout.root).run_once() is Outcome.IDLE
    started = [e["file"] for e in events(layout, "training_started")]
    assert started == ["alpha.jsonl"] + ["poison.jsonl"] * 3 + ["bravo.jsonl"]  # alpha: the fixture's


def test_a_diverging_loss_stops_training_fails_the_file_and_leaves_current_model_as_it_was(
    layout, trained, monkeypatch
):
    # The learning rate cannot make the tiny model diverge (the config caps it at 1.0, and LoRA on
    # a pre-norm Llama stays finite there); a base model whose weights overflow fp32 does: a
    # post-attention norm of 1e30 turns the activations into Inf, the loss and gradients into NaN.
    update_config(layout, daemon={"max_attempts": 1})
    weights_file = trained[1] / "model.safetensors"
    healthy = weights_file.read_bytes()
    before = _snapshot_bytes(layout)
    _drop(layout, "bravo.jsonl", inbox_files()["bravo.jsonl"], mtime=100)
    tensors = load_file(weights_file)
    tensors["model.layers.0.post_attention_layernorm.weight"] *= 1e30
    save_file(tensors, weights_file, metadata={"format": "pt"})
    try:
        outcome = TrainingDaemon(layout.root).run_once()
    finally:
        weights_file.write_bytes(healthy)

    assert outcome is Outcome.FAILED
    report = json.loads((layout.failed / "bravo.jsonl.report.json").read_text())
    assert "FloatingPointError" in report["error"] and "NaN or Inf at step 1" in report["error"]
    assert "NaN or Inf" in StatusFile(layout.status_file).read().last_error
    assert [e["file"] for e in events(layout, "file_failed")] == ["bravo.jsonl"]
    assert [s.source_file for s in SnapshotStore(layout).list()] == ["alpha.jsonl"]  # no NaN snapshot
    assert _snapshot_bytes(layout) == before


def test_an_absurd_learning_rate_is_refused_before_anything_trains(layout):
    update_config(layout, hyperparams={"learning_rate": 1e30})
    _drop(layout, "bravo.jsonl", inbox_files()["bravo.jsonl"], mtime=100)

    assert TrainingDaemon(layout.root).run_once() is Outcome.CONFIG_REJECTED

    [rejected] = events(layout, "config_rejected")
    assert any("hyperparams.learning_rate" in problem for problem in rejected["problems"])
    assert "hyperparams.learning_rate" in StatusFile(layout.status_file).read().last_error
    assert (layout.inbox / "bravo.jsonl").exists()
    assert [e["file"] for e in events(layout, "file_claimed")] == ["alpha.jsonl"]  # the fixture's


def test_the_nan_guard_checks_every_step():
    """Guard against a silent regression: NaN gradients must raise, finite ones must not."""
    from trainer.callbacks import NonFiniteGuard

    model = torch.nn.Linear(2, 1)
    model(torch.ones(1, 2)).sum().backward()
    state = type("State", (), {"global_step": 4})()
    NonFiniteGuard("x.jsonl").on_pre_optimizer_step(None, state, None, model=model)
    model.weight.grad[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="x.jsonl: the gradients are NaN or Inf at step 5"):
        NonFiniteGuard("x.jsonl").on_pre_optimizer_step(None, state, None, model=model)
