"""The standby child's wire and its keeper: the lock is never free while a file is handed over, a
standby that dies is replaced (then backed off), and the config or a changed environment turn it off."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from core.base.locking import lock_for_child, lock_holder
from core.child import standby as standby_module
from core.child.launcher import launch_standby
from core.child.protocol import READY, receive_file, send_file
from core.child.standby import MAX_BACKOFF_SECONDS, Standby
from core.child.warmup import warm_up
from tests.reliability.harness import alive, make_base_dir, wait_until
from trainer.config import TrainConfig


def _config(**daemon) -> TrainConfig:
    return TrainConfig.model_validate({"daemon": daemon}) if daemon else TrainConfig()


def test_a_handed_file_carries_its_arguments_lock_and_log_and_the_lock_is_never_free(tmp_path):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    lock_path, log_path = tmp_path / "child.lock", tmp_path / "train.log"
    lock = lock_for_child(lock_path)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    send_file(ours, ["--file", "a.jsonl", "--output", "a.jsonl.work"], lock, log)
    os.close(lock)  # the daemon's copy goes (core.base.locking.hand_over); the one in flight holds it
    os.close(log)
    assert lock_holder(lock_path) is not None

    args, lock_fd, log_fd = receive_file(theirs)

    assert args == ["--file", "a.jsonl", "--output", "a.jsonl.work"]
    os.write(log_fd, b"from the child\n")
    assert log_path.read_text() == "from the child\n"
    assert lock_holder(lock_path) is not None
    os.close(lock_fd)
    os.close(log_fd)
    assert lock_holder(lock_path) is None


def test_the_end_of_the_socket_tells_a_standby_that_its_daemon_is_gone():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.close()
    assert receive_file(theirs) is None


def test_the_warm_up_trains_a_step_without_touching_the_random_generators_or_the_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    assert warm_up() == "a tiny Llama on cpu"
    assert torch.equal(torch.get_rng_state(), before)
    assert list(tmp_path.iterdir()) == []


def _files(root: Path) -> dict[str, float]:
    return {str(path): path.stat().st_mtime for path in root.rglob("*")}


def test_the_warm_up_takes_the_configured_models_shapes_and_falls_back_without_one(tmp_path, tiny_tokenizer,
                                                                                   tiny_config):
    model_dir = tmp_path / "qwen"
    Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tiny_tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    )).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    layout = make_base_dir(tmp_path / "base", {**tiny_config, "base_model": str(model_dir)})
    files = _files(tmp_path)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    what = warm_up(layout.root)
    assert what == f"one qwen2 layer (hidden 48, vocabulary {len(tiny_tokenizer)}, fp32, sdpa_packed, lora) on cpu"
    assert torch.equal(torch.get_rng_state(), before)
    assert _files(tmp_path) == files
    shutil.rmtree(model_dir)  # a base model not there yet (a hub id not downloaded): the code paths still warm
    assert warm_up(layout.root) == "a tiny Llama on cpu"


def test_a_real_standby_warms_up_says_so_and_exits_when_the_daemon_closes_its_socket(tmp_path):
    process, sock = launch_standby(tmp_path)
    try:
        sock.settimeout(300)
        assert sock.recv(16) == READY
        sock.close()
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class FakeLaunch:
    """Stands in for ``launch_standby``: an idle process and a socket whose other end the test holds."""

    def __init__(self) -> None:
        self.started: list[tuple[subprocess.Popen, socket.socket]] = []

    def __call__(self, base_dir):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
        self.started.append((process, theirs))
        return process, ours

    def kill(self, index: int) -> None:
        process = self.started[index][0]
        process.kill()
        process.wait()  # reaped here, as a crash reaped by nobody would still show as exited


@pytest.fixture()
def launches(monkeypatch):
    fake = FakeLaunch()
    monkeypatch.setattr(standby_module, "launch_standby", fake)
    yield fake
    for process, theirs in fake.started:
        if process.poll() is None:
            process.kill()
            process.wait()
        theirs.close()


def test_nothing_is_started_ahead_until_the_loop_starts_it_nor_when_the_config_says_no(tmp_path, launches):
    keeper = Standby(tmp_path)
    keeper.keep_ready(_config())
    assert keeper.take(_config()) is None  # a daemon driven through run_once() alone starts cold
    keeper.start()
    assert keeper.take(_config(warm_child=False)) is None
    torchrun = TrainConfig.model_validate({"distributed": {"nproc_per_node": 2}})
    assert keeper.take(torchrun) is None
    assert launches.started == []


def test_a_standby_that_dies_is_replaced_at_once_then_after_a_back_off(tmp_path, launches):
    now = [0.0]
    keeper = Standby(tmp_path, clock=lambda: now[0])
    keeper.start()
    keeper.keep_ready(_config())
    keeper.keep_ready(_config())
    assert len(launches.started) == 1

    launches.kill(0)
    keeper.keep_ready(_config())
    assert len(launches.started) == 2  # the first death: replaced at once
    launches.kill(1)
    keeper.keep_ready(_config())
    assert len(launches.started) == 2  # the second in a row: 10 s later
    now[0] = 10.0
    keeper.keep_ready(_config())
    assert len(launches.started) == 3

    launches.started[2][1].send(READY)  # a standby that got warm ends the back-off
    keeper.keep_ready(_config())
    launches.kill(2)
    keeper.keep_ready(_config())
    assert len(launches.started) == 4
    assert MAX_BACKOFF_SECONDS >= 10.0


def test_take_hands_out_the_warm_one_and_replaces_one_from_another_environment(tmp_path, launches, monkeypatch):
    keeper = Standby(tmp_path)
    keeper.start()
    keeper.keep_ready(_config())
    launches.started[0][1].send(READY)
    child = keeper.take(_config())
    assert child.pid == launches.started[0][0].pid and child.ready()
    assert keeper.child is None  # one file per standby: the next one is a new process

    keeper.keep_ready(_config())
    monkeypatch.setenv("TRAINCTL_FAULT", "manifest.json:1")  # what a child reads at start-up
    child = keeper.take(_config())
    assert child.pid == launches.started[2][0].pid
    assert launches.started[1][0].poll() is not None  # the stale one was killed and reaped


def test_switching_warm_child_off_or_closing_ends_the_standby(tmp_path, launches):
    keeper = Standby(tmp_path)
    keeper.start()
    keeper.keep_ready(_config())
    keeper.keep_ready(_config(warm_child=False))
    assert launches.started[0][0].poll() is not None and keeper.child is None
    keeper.keep_ready(_config())
    keeper.close()
    assert launches.started[1][0].poll() is not None
    assert keeper.take(_config()) is None


def test_a_standby_that_died_before_taking_its_file_gives_the_lock_back_for_a_cold_start(tmp_path, launches):
    keeper = Standby(tmp_path)
    keeper.start()
    keeper.keep_ready(_config())
    child = keeper.take(_config())
    launches.started[0][1].close()  # gone between take() and hand()
    lock = lock_for_child(tmp_path / "child.lock")
    try:
        assert child.hand(["--file", "a.jsonl"], lock, tmp_path / "train.log") is None
        assert not alive(child.pid) and lock_holder(tmp_path / "child.lock") is not None
    finally:
        os.close(lock)
    wait_until(lambda: lock_holder(tmp_path / "child.lock") is None, 5, "the lock to be free")
