"""A kill while a checkpoint is being saved: the partial one is never resumed from, leftovers go."""

from __future__ import annotations

import json
import signal

from tests.conftest import write_jsonl
from tests.reliability.harness import daemon_config, load_weights, make_base_dir, max_difference, run_worker
from tests.reliability.soak import MAX_WEIGHT_DIFFERENCE, inbox_files
from trainer.checkpoints.markers import MARKER_NAME, checkpoint_problem, latest_checkpoint


def test_a_kill_while_saving_a_checkpoint_resumes_from_the_one_before_and_cleans_up(
    tiny_model_dir, reference, tmp_path
):
    layout = make_base_dir(tmp_path / "base", daemon_config(tiny_model_dir))
    data = write_jsonl(tmp_path / "alpha.jsonl", inbox_files()["alpha.jsonl"])
    work = tmp_path / "alpha.jsonl.work"
    checkpoints = work / "checkpoints"

    # HF has written every file of checkpoint-3; the process dies before the completion marker.
    killed = run_worker(layout, data, work, fault=f"{MARKER_NAME}:3")

    assert killed.returncode == -signal.SIGKILL
    assert "no readable trainctl_checkpoint.json" in checkpoint_problem(checkpoints / "checkpoint-3")
    assert list((checkpoints / "checkpoint-3").glob(f".{MARKER_NAME}.*.tmp"))  # the marker's temp file
    assert latest_checkpoint(checkpoints) == checkpoints / "checkpoint-2"
    # What a kill in the middle of pruning or of an older save would leave behind.
    (checkpoints / ".trash-checkpoint-1").mkdir()
    (checkpoints / "tmp-checkpoint-9").mkdir()

    resumed = run_worker(layout, data, work, resume=checkpoints / "checkpoint-2")

    assert resumed.returncode == 0
    result = json.loads((work / "result.json").read_text())
    assert result["outcome"] == "trained" and result["steps"] == 12
    assert result["resumed_from"].endswith("checkpoint-2")
    # The partial checkpoint-3 was removed and saved again, then pruned (keep_last=2; the resume
    # source is always kept); no temp folder or temp file is left.
    assert {p.name for p in checkpoints.iterdir()} == {"checkpoint-2", "checkpoint-11", "checkpoint-12"}
    assert not list(checkpoints.rglob("*.tmp"))
    difference = max_difference(load_weights(work / "model"), reference.weights["alpha.jsonl"])
    assert difference <= MAX_WEIGHT_DIFFERENCE
    # A crash now (model saved, not yet promoted) must not resume at max_steps: HF would train a
    # 13th step. The daemon resumes from checkpoint-11 and trains step 12 again.
    assert latest_checkpoint(checkpoints) == checkpoints / "checkpoint-12"
    assert latest_checkpoint(checkpoints, unfinished=True) == checkpoints / "checkpoint-11"
