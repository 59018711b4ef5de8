"""Checkpoints are complete-or-absent, pruned safely, and checked before a resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    Trainer,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from trainer.checkpoints.callback import CheckpointCallback
from trainer.checkpoints.markers import (
    CONFIG_COPY_NAME,
    MARKER_NAME,
    latest_checkpoint,
    prune_checkpoints,
    read_marker,
    write_completion_marker,
)
from trainer.checkpoints.resume import ResumeError, check_resume_compatible
from trainer.config import TrainConfig, parse_config


def _config(raw: dict) -> TrainConfig:
    return parse_config(raw, Path("config.json"))


def _token_rows(n: int, vocab: int, length: int = 16) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(3, vocab, (length,), generator=generator)
        rows.append({"input_ids": ids, "labels": ids.clone()})
    return rows


@pytest.fixture(scope="module")
def trained_run(tiny_model_dir, tmp_path_factory) -> tuple[Path, str, dict]:
    """Six steps of plain HF Trainer, a checkpoint every 2 steps, keep_last=2 (steps 4 and 6 kept)."""
    raw = {"base_model": str(tiny_model_dir), "checkpoint": {"save_steps": 2, "keep_last": 2}}
    config_text = json.dumps(raw, indent=2) + "\n"
    output_dir = tmp_path_factory.mktemp("ckpt") / "checkpoints"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=6,
        save_steps=2,
        save_total_limit=None,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    callback = CheckpointCallback(config_text, _config(raw))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_token_rows(12, model.config.vocab_size),
        callbacks=[callback],
    )
    trainer.train()
    return output_dir, config_text, raw


@pytest.fixture()
def run_copy(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run[0], tmp_path / "checkpoints"))


def test_callback_marks_checkpoints_complete_and_prunes(trained_run):
    output_dir, config_text, _ = trained_run
    assert sorted(p.name for p in output_dir.iterdir()) == ["checkpoint-4", "checkpoint-6"]
    checkpoint = output_dir / "checkpoint-6"
    assert (checkpoint / CONFIG_COPY_NAME).read_text(encoding="utf-8") == config_text
    marker = read_marker(checkpoint)
    on_disk = {p.name for p in checkpoint.iterdir()} - {MARKER_NAME}
    assert set(marker["files"]) == on_disk
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= on_disk
    assert marker["step"] == 6
    assert marker["model"]["hidden_size"] == 64
    assert latest_checkpoint(output_dir) == checkpoint


def test_checkpoint_missing_a_file_is_never_chosen(run_copy):
    (run_copy / "checkpoint-6" / "optimizer.pt").unlink()
    assert latest_checkpoint(run_copy) == run_copy / "checkpoint-4"


def test_checkpoint_with_corrupt_file_or_no_marker_is_never_chosen(run_copy):
    weights = run_copy / "checkpoint-6" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different content: only the checksum catches it
    weights.write_bytes(bytes(data))
    assert latest_checkpoint(run_copy) == run_copy / "checkpoint-4"
    (run_copy / "checkpoint-4" / MARKER_NAME).unlink()  # a save that never finished
    assert latest_checkpoint(run_copy) is None


def test_leftover_temp_folders_are_cleaned(run_copy):
    for name in ("tmp-checkpoint-8", ".trash-checkpoint-2"):
        (run_copy / name).mkdir()
        (run_copy / name / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(run_copy) == run_copy / "checkpoint-6"
    assert sorted(p.name for p in run_copy.iterdir()) == ["checkpoint-4", "checkpoint-6"]


def test_marker_of_a_checkpoint_about_to_be_overwritten_is_dropped_first(run_copy, trained_run):
    # A run resumed from checkpoint-4 saves checkpoint-6 again, in place: until that save completes,
    # the old marker must not vouch for the files being rewritten.
    _, config_text, raw = trained_run
    callback = CheckpointCallback(config_text, _config(raw))
    args = SimpleNamespace(output_dir=str(run_copy))
    callback.on_step_end(args, TrainerState(global_step=6), TrainerControl(should_save=True))
    assert not (run_copy / "checkpoint-6" / MARKER_NAME).exists()
    assert latest_checkpoint(run_copy) == run_copy / "checkpoint-4"


def _fake_checkpoint(root: Path, step: int, best: int | None, config: TrainConfig) -> Path:
    checkpoint = root / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"w" * step)
    state = {"global_step": step, "best_model_checkpoint": f"/elsewhere/checkpoint-{best}" if best else None}
    (checkpoint / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")
    write_completion_marker(checkpoint, config_text="{}", config=config, model_config={"hidden_size": 64})
    return checkpoint


def test_prune_keeps_newest_best_and_resume_source(tmp_path, tiny_config):
    config = _config(tiny_config)
    for step in (10, 20, 30, 40, 50, 60):
        _fake_checkpoint(tmp_path, step, best=20, config=config)
    (tmp_path / "checkpoint-70").mkdir()  # a save in progress: not complete, must not be touched

    deleted = prune_checkpoints(tmp_path, keep_last=2, protect=[tmp_path / "checkpoint-30"])

    assert sorted(p.name for p in deleted) == ["checkpoint-10", "checkpoint-40"]
    remaining = sorted(p.name for p in tmp_path.iterdir())
    assert remaining == ["checkpoint-20", "checkpoint-30", "checkpoint-50", "checkpoint-60", "checkpoint-70"]


def test_resume_refused_when_model_shape_differs(trained_run, tiny_model_dir):
    output_dir, _, raw = trained_run
    model_config = AutoConfig.from_pretrained(tiny_model_dir)
    model_config.hidden_size = 128
    with pytest.raises(ResumeError, match="hidden_size: checkpoint 64, now 128"):
        check_resume_compatible(output_dir / "checkpoint-6", _config(raw), model_config)


def test_resume_refused_when_lora_rank_differs(trained_run, tiny_model_dir):
    output_dir, _, raw = trained_run
    changed = {**raw, "lora": {"r": 4}}
    with pytest.raises(ResumeError, match=r"lora\.r: checkpoint 16, now 4"):
        check_resume_compatible(
            output_dir / "checkpoint-6", _config(changed), AutoConfig.from_pretrained(tiny_model_dir)
        )


def test_changed_hyperparameter_warns_naming_the_key(trained_run, tiny_model_dir):
    output_dir, _, raw = trained_run
    changed = {**raw, "hyperparams": {"learning_rate": 1e-5}, "model_display_name": "renamed"}
    warnings = check_resume_compatible(
        output_dir / "checkpoint-6", _config(changed), AutoConfig.from_pretrained(tiny_model_dir)
    )
    assert warnings == ["hyperparams.learning_rate: checkpoint 0.0002, now 1e-05"]


def test_unchanged_config_resumes_without_warnings(trained_run, tiny_model_dir):
    output_dir, _, raw = trained_run
    model_config = AutoConfig.from_pretrained(tiny_model_dir)
    assert check_resume_compatible(output_dir / "checkpoint-6", _config(raw), model_config) == []
