"""Per-run folders: never overwritten, run.json tells what ran and how it ended, runs/latest follows."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from core.base.hashing import sha256_file
from core.runs.run import (
    RunStatus,
    claim_run_dir,
    data_file_record,
    git_sha,
    list_runs,
    read_run,
    reopen_run,
    start_run,
)
from trainer.config import parse_config


@pytest.fixture()
def config(tiny_config):
    return parse_config(tiny_config, Path("config.json"))


def _start(runs_root: Path, config, **kwargs):
    return start_run(runs_root, phase="sft", config=config, config_text='{"method": "lora"}', **kwargs)


def test_run_json_records_what_ran(tmp_path, config):
    data = tmp_path / "chat.jsonl"
    data.write_text('{"text": "hello"}\n', encoding="utf-8")
    with _start(tmp_path / "runs", config, data_files=[data_file_record(data, 2.0)], base_dir=tmp_path) as run:
        run.finish(RunStatus.COMPLETED, final_loss=1.5, best_eval_loss=1.7)

    record = json.loads((run.path / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "completed"
    assert record["started_at"] <= record["finished_at"]
    assert record["git_sha"] is None  # tmp_path is not a git repo
    assert record["data_files"] == [
        {"path": str(data), "bytes": data.stat().st_size, "sha256": sha256_file(data), "weight": 2.0}
    ]
    assert (record["method"], record["lora"], record["batch_size"]) == ("lora", {"r": 4, "alpha": 8}, 4)
    assert (record["learning_rate"], record["profile"], record["phase"]) == (5e-3, "default", "sft")
    assert record["config"] == {"method": "lora"}
    assert (record["final_loss"], record["best_eval_loss"]) == (1.5, 1.7)


def test_runs_in_the_same_second_get_suffixes_and_latest_follows(tmp_path, config):
    now = datetime(2026, 1, 2, 3, 4, 5)
    names = [claim_run_dir(tmp_path, now).name for _ in range(3)]
    assert names == ["2026-01-02_03-04-05", "2026-01-02_03-04-05-1", "2026-01-02_03-04-05-2"]

    first = _start(tmp_path, config)
    first.finish(RunStatus.COMPLETED)
    second = _start(tmp_path, config)
    second.finish(RunStatus.COMPLETED)
    assert first.path != second.path
    assert os.readlink(tmp_path / "latest") == second.id
    assert [r.id for r in list_runs(tmp_path)][-2:] == [first.id, second.id]


def test_run_log_holds_the_records_of_its_duration_only(tmp_path, config):
    log = logging.getLogger("trainctl.test")
    log.setLevel(logging.INFO)
    run = _start(tmp_path, config)
    log.info("inside the run")
    run.finish(RunStatus.COMPLETED)
    log.info("after the run")
    text = run.log_file.read_text(encoding="utf-8")
    assert "inside the run" in text and "after the run" not in text


def test_exception_marks_run_failed_and_ctrl_c_interrupted(tmp_path, config):
    with pytest.raises(ValueError):
        with _start(tmp_path, config) as failed:
            raise ValueError("loss became nan")
    with pytest.raises(KeyboardInterrupt):
        with _start(tmp_path, config) as stopped:
            raise KeyboardInterrupt
    assert read_run(failed.path).record["status"] == "failed"
    assert read_run(failed.path).record["error"] == "ValueError: loss became nan"
    assert read_run(stopped.path).status is RunStatus.INTERRUPTED


def test_reopened_run_is_running_again_and_records_the_resume(tmp_path, config):
    run = _start(tmp_path, config)
    run.finish(RunStatus.INTERRUPTED)
    reopen_run(read_run(run.path), from_checkpoint="checkpoints/checkpoint-5")
    record = read_run(run.path).record
    assert record["status"] == "running" and record["finished_at"] is None
    assert record["resumes"][0]["from_checkpoint"] == "checkpoints/checkpoint-5"
    run.detach_log()


def test_git_sha_of_a_repo(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True)
    assert git_sha(tmp_path) == head.stdout.strip()
