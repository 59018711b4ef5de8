"""The torchrun command line, the exit code of a group, and refusing a launch before any file is claimed."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import core.child.torchrun as torchrun
from core.child.agent import AGENT_MODULE, TORCHRUN_ENV, first_signal_only, parent_death_signal
from core.child.protocol import EXIT_DISK_FULL, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TRAINED, WORKER_MODULE
from core.child.torchrun import GroupLaunch, group_exit_code, launch_problems
from core.state.events import EventLog
from core.state.layout import init_base_dir
from tests.conftest import chat_rows, write_jsonl
from trainer.config import parse_config

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))


def _config(distributed: dict, stop_timeout: float = 60.0):
    return parse_config(
        {"distributed": distributed, "daemon": {"stop_timeout_seconds": stop_timeout}}, "config.json"
    )


def test_one_process_runs_without_torchrun():
    assert GroupLaunch.from_config(_config({})) is None


def test_fsdp_runs_under_torchrun_also_on_one_process():
    # Without torchrun's environment accelerate would train unsharded: FSDP needs a process group.
    launch = GroupLaunch.from_config(_config({"nproc_per_node": 1, "strategy": "fsdp"}))
    assert launch is not None and launch.processes == 1
    assert "--nproc-per-node=1" in launch.torchrun_args()


def test_more_processes_than_visible_gpus_are_refused_naming_the_field(monkeypatch):
    monkeypatch.setattr("trainer.distributed.visible_gpus", lambda: 2)
    [problem] = launch_problems(_config({"nproc_per_node": 4}), daemon=True)
    assert problem.startswith("distributed.nproc_per_node is 4 but this machine has 2 visible GPU(s)")
    assert launch_problems(_config({"nproc_per_node": "auto"}), daemon=True) == []


def test_train_refuses_a_rendezvous_endpoint_that_does_not_answer_before_any_run(tmp_path, tiny_config):
    layout = init_base_dir(tmp_path / "base")
    distributed = {"nproc_per_node": 1, "nnodes": 2, "node_rank": 1, "rdzv_endpoint": "127.0.0.1:1"}
    layout.config_file.write_text(json.dumps({**tiny_config, "distributed": distributed}), encoding="utf-8")
    data = write_jsonl(tmp_path / "a.jsonl", chat_rows(4))

    done = subprocess.run([TRAINCTL, "train", str(data), "--base-dir", str(layout.root)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "TB_AUTO": "0"})

    assert done.returncode == 2, done.stderr[-3000:]
    assert "distributed.rdzv_endpoint 127.0.0.1:1 does not answer" in done.stderr
    assert "start node 0 first" in done.stderr
    assert not layout.runs.exists() or list(layout.runs.iterdir()) == []


def test_one_machine_runs_standalone_with_a_shutdown_grace_not_shorter_than_the_daemons():
    launch = GroupLaunch.from_config(_config({"nproc_per_node": 2}, stop_timeout=90.5))
    command = launch.command(WORKER_MODULE, ["--file", "a.jsonl"])
    assert command[:3] == [sys.executable, "-m", AGENT_MODULE]
    assert "--standalone" in command and "--nproc-per-node=2" in command and "--max-restarts=0" in command
    assert "--shutdown-timeout=91" in command
    assert command[-4:] == ["--module", WORKER_MODULE, "--file", "a.jsonl"]
    assert launch.processes == 2


def test_a_torchrun_without_shutdown_timeout_is_started_without_it(monkeypatch):
    # torch 2.11's torchrun has no --shutdown-timeout and exits 2 on it (seen on an H200 machine).
    old = argparse.ArgumentParser()
    old.add_argument("--nproc-per-node")
    monkeypatch.setattr(torchrun, "get_args_parser", lambda: old)
    torchrun.torchrun_has_shutdown_timeout.cache_clear()
    try:
        args = GroupLaunch(nproc_per_node=2, shutdown_timeout=90).torchrun_args()
    finally:
        torchrun.torchrun_has_shutdown_timeout.cache_clear()
    assert not any(arg.startswith("--shutdown-timeout") for arg in args)
    assert "--standalone" in args


def test_several_machines_meet_at_the_endpoint_with_this_machines_rank():
    config = _config({"nproc_per_node": 2, "nnodes": 3, "node_rank": 1, "rdzv_endpoint": "10.0.0.1:29400",
                      "rdzv_id": "job7"})
    launch = GroupLaunch.from_config(config)
    args = launch.torchrun_args()
    assert "--standalone" not in args and launch.processes == 6
    assert {"--nnodes=3", "--node-rank=1", "--rdzv-endpoint=10.0.0.1:29400", "--rdzv-id=job7"} <= set(args)


@pytest.mark.parametrize(
    ("code", "result", "expected"),
    [
        (0, {"outcome": "trained", "exit_code": EXIT_TRAINED}, EXIT_TRAINED),
        (1, {"outcome": "interrupted", "exit_code": EXIT_INTERRUPTED}, EXIT_INTERRUPTED),
        (1, {"outcome": "failed", "exit_code": EXIT_DISK_FULL}, EXIT_DISK_FULL),
        (1, None, EXIT_FAILED),
        (-signal.SIGKILL, {"outcome": "interrupted", "exit_code": EXIT_INTERRUPTED}, -signal.SIGKILL),
    ],
)
def test_rank_0s_recorded_outcome_outlives_torchruns_exit_1(code, result, expected):
    assert group_exit_code(code, result) == expected


def test_workers_die_outright_with_their_agent_and_a_plain_child_checkpoints(monkeypatch):
    monkeypatch.delenv(TORCHRUN_ENV, raising=False)
    assert parent_death_signal() is signal.SIGTERM
    monkeypatch.setenv(TORCHRUN_ENV, "none")
    assert parent_death_signal() is signal.SIGKILL


def test_the_daemon_trains_on_one_machine_only():
    config = _config({"nnodes": 2, "node_rank": 0, "rdzv_endpoint": "localhost:29400"})
    assert launch_problems(config) == []
    [problem] = launch_problems(config, daemon=True)
    assert "distributed.nnodes" in problem and "trainctl train" in problem


@pytest.mark.skipif(torch.cuda.is_available(), reason="FSDP is refused only without a GPU")
def test_fsdp_on_cpu_is_refused_at_daemon_start_before_any_file_is_claimed(tmp_path, tiny_config):
    layout = init_base_dir(tmp_path / "base")
    config = {**tiny_config, "distributed": {"nproc_per_node": 2, "strategy": "fsdp"}}
    layout.config_file.write_text(json.dumps(config), encoding="utf-8")
    write_jsonl(layout.inbox / "a.jsonl", chat_rows(4))

    done = subprocess.run([TRAINCTL, "daemon", "--once", "--base-dir", str(layout.root)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "TB_AUTO": "0"})

    assert done.returncode == 2, done.stderr[-3000:]
    assert "distributed.strategy" in done.stderr and "FSDP needs GPUs" in done.stderr
    assert (layout.inbox / "a.jsonl").exists() and list(layout.processing.iterdir()) == []
    [rejected] = [e for e in EventLog(layout.events_file).read() if e["type"] == "config_rejected"]
    assert "distributed.strategy" in rejected["problems"][0]



def test_the_agent_acts_on_the_first_stop_signal_only():
    # A daemon killed outright sends the agent its death signal once per dying thread.
    calls = []
    handle = first_signal_only(lambda signum, frame: calls.append(signum))
    for signum in (signal.SIGTERM, signal.SIGTERM, signal.SIGINT):
        handle(signum, None)
    assert calls == [signal.SIGTERM]
