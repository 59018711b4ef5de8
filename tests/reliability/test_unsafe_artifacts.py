"""Unsafe artifacts: pickles and tampered snapshots are refused, remote code stays off, optimizer state
loads with ``weights_only=True``, and nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.daemon.loop import Outcome, TrainingDaemon
from core.runs.tensorboard import start_tensorboard
from core.snapshots.store import SnapshotError, SnapshotStore, verify_snapshot
from core.state.layout import BaseDir
from core.train import UltimateTrainer
from tests.conftest import chat_rows, write_jsonl
from tests.reliability.harness import ADAPTER_WEIGHTS, events
from trainer.callbacks import build_run_callbacks
from trainer.config import parse_config
from trainer.model.loading import load_model, load_tokenizer

REPO = Path(__file__).resolve().parents[2]
TRAINCTL = str(Path(sys.executable).with_name("trainctl"))


def _copy_of_current(layout: BaseDir, seq: int) -> Path:
    """A second snapshot: a byte-for-byte copy of the current one under a new id."""
    current = SnapshotStore(layout).current().path
    return Path(shutil.copytree(current, layout.snapshots / f"{seq:04d}-20250101-000000-copy"))


def _pickle(snapshot: Path) -> None:
    torch.save({"x": torch.zeros(1)}, snapshot / "adapter_model.bin")


def _broken_manifest(snapshot: Path) -> None:
    (snapshot / "manifest.json").write_text('{"format": 1, "created_at": ')


def _manifest_without_digest(snapshot: Path) -> None:
    manifest = json.loads((snapshot / "manifest.json").read_text())
    del manifest["sha256"]
    (snapshot / "manifest.json").write_text(json.dumps(manifest))


def _changed_weights(snapshot: Path) -> None:
    tensors = {name: t + 0.5 for name, t in load_file(snapshot / ADAPTER_WEIGHTS).items()}
    save_file(tensors, snapshot / ADAPTER_WEIGHTS, metadata={"format": "pt"})


def _manifest_listing_other_weights(snapshot: Path) -> None:
    manifest = json.loads((snapshot / "manifest.json").read_text())
    manifest["files"][ADAPTER_WEIGHTS] = "0" * 64
    (snapshot / "manifest.json").write_text(json.dumps(manifest))


TAMPERINGS = {
    "pickle weights": (_pickle, "pickle files (adapter_model.bin)"),
    "manifest not JSON": (_broken_manifest, "manifest.json is not valid JSON"),
    "manifest without sha256": (_manifest_without_digest, "lacks sha256"),
    "weights changed": (_changed_weights, f"{ADAPTER_WEIGHTS} changed since the snapshot was made"),
    "manifest lists other weights": (_manifest_listing_other_weights, f"{ADAPTER_WEIGHTS} changed"),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_a_tampered_snapshot_fails_verification_and_rollback_leaves_current_model_alone(layout, tampering):
    change, reason = TAMPERINGS[tampering]
    store = SnapshotStore(layout)
    before = store.current()
    copy = _copy_of_current(layout, 2)
    verify_snapshot(copy)  # an untouched copy is fine
    change(copy)

    with pytest.raises(SnapshotError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        verify_snapshot(copy)
    with pytest.raises(SnapshotError):
        store.rollback(copy.name)
    assert store.current().id == before.id


def test_rollback_on_the_command_line_refuses_a_pickle_snapshot_with_the_reason(layout):
    copy = _copy_of_current(layout, 2)
    _pickle(copy)
    current = SnapshotStore(layout).current().id

    done = subprocess.run([TRAINCTL, "rollback", copy.name, "--base-dir", str(layout.root)],
                          capture_output=True, text=True, timeout=120)

    assert done.returncode != 0 and "pickle files (adapter_model.bin)" in done.stderr
    assert SnapshotStore(layout).current().id == current


def test_the_daemon_does_not_train_from_a_current_model_that_no_longer_verifies(layout):
    _pickle(SnapshotStore(layout).current().path)
    write_jsonl(layout.inbox / "bravo.jsonl", chat_rows(4, seed=5))

    assert TrainingDaemon(layout.root).run_once() is Outcome.BLOCKED

    assert (layout.inbox / "bravo.jsonl").exists()  # not the file's fault: it waits in the inbox
    status = json.loads(layout.status_file.read_text())
    assert "current_model" in status["last_error"] and "pickle files" in status["last_error"]
    assert [e["file"] for e in events(layout, "training_started")] == ["alpha.jsonl"]  # the fixture's
    assert [s.source_file for s in SnapshotStore(layout).list()] == ["alpha.jsonl"]


def _recording(monkeypatch, target, name: str, calls: list) -> None:
    original = getattr(target, name)

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, record)


def test_remote_code_is_off_unless_the_config_turns_it_on(layout, tiny_model_dir, monkeypatch):
    import transformers

    calls: list = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        _recording(monkeypatch, cls, "from_pretrained", calls)
    config = parse_config({"base_model": str(tiny_model_dir)}, layout.config_file)
    current = str(SnapshotStore(layout).current().path)

    load_model(current, config, layout.root, "sdpa")  # an adapter on its base: model + tokenizer
    load_model(str(tiny_model_dir), config, layout.root, "sdpa")
    load_tokenizer(current, config.trust_remote_code)

    assert len(calls) == 5
    assert all(kwargs.get("trust_remote_code") is False for _, kwargs in calls), calls
    calls.clear()
    load_tokenizer(current, parse_config({"trust_remote_code": True}, layout.config_file).trust_remote_code)
    assert calls[0][1]["trust_remote_code"] is True


def test_every_from_pretrained_call_in_the_code_passes_trust_remote_code_or_uses_a_local_file():
    """A new loading call must decide about remote code on purpose (the embedded model is read from a GGUF)."""
    unchecked = []
    for path in [*REPO.glob("core/**/*.py"), *REPO.glob("trainer/**/*.py"), *REPO.glob("profiles/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
                keywords = {k.arg for k in node.keywords}
                owner = ast.unparse(node.func.value)
                if "trust_remote_code" not in keywords and owner != "PeftModel" and path.name != "embedded.py":
                    unchecked.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert unchecked == []


def test_resuming_loads_optimizer_scheduler_and_rng_state_with_weights_only(tiny_model_dir, tmp_path, monkeypatch):
    raw = {
        "base_model": str(tiny_model_dir),
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "hyperparams": {"fp_precision": "fp32", "max_length": 128, "batch_size": 2, "max_steps": 2,
                        "use_gradient_checkpointing": False},
        "checkpoint": {"save_steps": 1, "log_steps": 1},
    }
    config = parse_config(raw, tmp_path / "config.json")
    data = write_jsonl(tmp_path / "data.jsonl", chat_rows(8))

    def job() -> UltimateTrainer:
        callbacks = build_run_callbacks(config, json.dumps(raw), label="t", tensorboard_dir=None)
        trainer = UltimateTrainer(config, data, base_dir=tmp_path, model_source=str(tiny_model_dir),
                                  output_dir=tmp_path / "checkpoints", callbacks=callbacks, device="cpu")
        trainer.setup()
        return trainer

    job().train()
    calls: list = []
    _recording(monkeypatch, torch, "load", calls)

    job().train(resume_from_checkpoint=str(tmp_path / "checkpoints" / "checkpoint-1"))

    loaded = {Path(str(args[0] if args else kwargs.get("f"))).name for args, kwargs in calls}
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth"} <= loaded
    assert all(kwargs.get("weights_only") is True for _, kwargs in calls), calls


def test_tensorboard_listens_on_127_0_0_1_unless_told_otherwise(tmp_path, monkeypatch):
    started = []
    def popen(command, **kwargs):
        started.append(command)
        return type("Process", (), {"pid": 0})()

    monkeypatch.setattr("core.runs.tensorboard.subprocess.Popen", popen)

    start_tensorboard(tmp_path, env={})
    start_tensorboard(tmp_path, env={"TB_HOST": "0.0.0.0"})

    assert started[0][started[0].index("--host") + 1] == "127.0.0.1"
    assert started[1][started[1].index("--host") + 1] == "0.0.0.0"


def test_no_other_module_opens_a_listening_socket():
    """TensorBoard (a child process) and the HTTP server of ``core/http`` are the only servers, and the
    HTTP server binds to the loopback address unless ``http.host`` says otherwise."""
    from trainer.config import TrainConfig

    servers = []
    for path in [*REPO.glob("core/**/*.py"), *REPO.glob("trainer/**/*.py"), *REPO.glob("profiles/*.py")]:
        if path.relative_to(REPO).parts[:2] == ("core", "http") or path.name == "http.py":
            continue
        text = path.read_text()
        for needle in ("HTTPServer", ".listen(", "0.0.0.0", "serve_forever", "uvicorn", "flask"):
            if needle in text:
                servers.append(f"{path.name}: {needle}")
    assert servers == []
    assert TrainConfig().http.host == "127.0.0.1"
