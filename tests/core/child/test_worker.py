"""The training child's pieces that the daemon relies on: stop handling, status throttling, result.json."""

from __future__ import annotations

import json
import os
import signal

from transformers import TrainerControl, TrainerState, TrainingArguments

from core.child.progress import ProgressCallback, StopFlag
from core.child.protocol import EXIT_FAILED, PARENT_PID_ENV, RESULT_FILENAME
from core.child.worker import main, stop_with_parent
from core.state.events import EventLog
from core.state.status import DaemonState, StatusFile
from tests.conftest import chat_rows, write_jsonl


def _callback(tmp_path, stop: StopFlag, now: list[float]) -> ProgressCallback:
    return ProgressCallback(
        StatusFile(tmp_path / "status.json"), EventLog(tmp_path / "events.jsonl"), "a.jsonl", stop,
        clock=lambda: now[0],
    )


def _state(step: int, max_steps: int = 10) -> TrainerState:
    state = TrainerState()
    state.global_step, state.max_steps, state.epoch = step, max_steps, step / max_steps
    state.num_input_tokens_seen = 100 * step
    return state


def test_a_stop_request_saves_a_checkpoint_and_stops_at_the_next_step(tmp_path):
    stop, now = StopFlag(), [0.0]
    callback = _callback(tmp_path, stop, now)
    args = TrainingArguments(output_dir=str(tmp_path / "checkpoints"), report_to=[])
    control = TrainerControl()
    callback.on_train_begin(args, _state(0), control)

    callback.on_step_end(args, _state(1), control)
    assert not control.should_save and not control.should_training_stop
    stop.request(signal.SIGTERM)
    callback.on_step_end(args, _state(2), control)

    assert control.should_save and control.should_training_stop
    callback.on_save(args, _state(2), control)
    [event] = EventLog(tmp_path / "events.jsonl").read()
    assert (event["type"], event["step"]) == ("checkpoint_saved", 2)
    assert event["path"].endswith("checkpoints/checkpoint-2")


def test_status_is_written_at_most_once_a_second_and_on_every_log(tmp_path):
    now = [0.0]
    callback = _callback(tmp_path, StopFlag(), now)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
    status = StatusFile(tmp_path / "status.json")
    callback.on_train_begin(args, _state(0), TrainerControl())

    now[0] = 0.5
    callback.on_step_end(args, _state(1), TrainerControl())
    assert status.read().current_step == 0  # throttled
    now[0] = 2.0
    callback.on_step_end(args, _state(4), TrainerControl())
    written = status.read()
    assert (written.state, written.current_step, written.total_steps) == (DaemonState.TRAINING, 4, 10)
    assert written.eta_seconds == 3.0  # 0.5 s per step, 6 steps left
    assert written.tokens_per_second == 200.0  # 400 tokens in 2 s
    now[0] = 2.1
    callback.on_log(args, _state(5), TrainerControl(), logs={"loss": 1.5, "learning_rate": 0.01})
    assert (status.read().current_step, status.read().loss) == (5, 1.5)


def test_a_failing_run_exits_1_with_the_error_and_traceback_in_result_json(tmp_path, tiny_config):
    config = {**tiny_config, "hyperparams": {**tiny_config["hyperparams"], "max_length": 1024}}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    data = write_jsonl(tmp_path / "a.jsonl", chat_rows(4))
    handler = signal.getsignal(signal.SIGTERM)
    try:
        code = main(["--base-dir", str(tmp_path), "--file", str(data), "--output", str(tmp_path / "out")])
    finally:
        signal.signal(signal.SIGTERM, handler)

    result = json.loads((tmp_path / "out" / RESULT_FILENAME).read_text(encoding="utf-8"))
    assert code == EXIT_FAILED and result["outcome"] == "failed"
    assert "lower hyperparams.max_length in config.json" in result["error"]
    assert result["traceback"].startswith("Traceback")


def test_a_child_whose_daemon_is_already_gone_stops_before_training(monkeypatch):
    monkeypatch.setenv(PARENT_PID_ENV, str(os.getppid() + 1))  # not our parent: the daemon died
    stop = StopFlag()

    stop_with_parent(stop)

    assert stop.requested
