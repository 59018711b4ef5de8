"""The readers of benchmarks/http_load.py really read: against the daemon's HTTP server and against
the minimal decoy server, both clients get status responses and stream messages without errors;
and a round's kinds are compared to that round's plain trial."""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import threading

import pytest

from benchmarks.http_load import summarize
from benchmarks.http_readers import run_decoy, run_readers
from core.http.server import HttpServer
from core.state.layout import init_base_dir
from core.state.status import StatusFile
from trainer.config.http import HttpSettings


def _read_for(url: str, client: str, seconds: float, during=None) -> dict:
    """Five readers on ``url`` for ``seconds`` (``during`` runs once they are connected)."""
    ready, stop, results = threading.Event(), threading.Event(), queue.Queue()
    worker = threading.Thread(target=run_readers, args=(url, 5, 0.2, client, "normal", ready, stop, results))
    worker.start()
    try:
        assert ready.wait(30), "the readers did not connect"
        if during:
            during()
        stop.wait(seconds)
    finally:
        stop.set()
        worker.join(30)
    return results.get(timeout=5)


@pytest.mark.parametrize("client", ["raw", "httpx"])
def test_readers_poll_status_and_hold_the_event_stream_of_the_real_server(tmp_path, client):
    layout = init_base_dir(tmp_path / "base")
    server = HttpServer.open(layout, HttpSettings())
    server.start()
    try:
        counts = _read_for(server.url, client, 1.0)
    finally:
        server.stop()

    assert counts["errors"] == 0
    assert counts["status_requests"] >= 10  # 5 readers, every 0.2 s, for 1 s
    assert counts["stream_messages"] >= 5  # each stream's backlog ends with the status


def test_the_decoy_serves_the_status_file_and_streams_its_changes(tmp_path):
    layout = init_base_dir(tmp_path / "base")
    status = StatusFile(layout.status_file)
    status.update(current_file="a.jsonl")
    spawn = multiprocessing.get_context("spawn")
    ports = spawn.Queue()
    decoy = spawn.Process(target=run_decoy, args=(layout.status_file, ports), daemon=True)
    decoy.start()
    try:
        url = f"http://127.0.0.1:{ports.get(timeout=60)}/"
        counts = _read_for(url, "raw", 1.5, during=lambda: status.update(current_file="b.jsonl"))
    finally:
        decoy.kill()

    assert counts["errors"] == 0 and counts["status_requests"] >= 10
    assert counts["stream_messages"] == 5  # the one change, once on each reader's stream


def test_each_kind_is_compared_to_the_plain_trial_of_its_own_round():
    args = argparse.Namespace(readers=50, interval=1.0, client="raw", client_priority="idle", steps=40,
                              batch_size=1, max_length=128)
    runtimes = {0: {"plain": 20.0, "loaded": 21.0, "decoy": 22.0}, 1: {"plain": 30.0, "loaded": 30.0, "decoy": 33.0}}
    trials = [{"round": r, "kind": kind, "train_runtime_s": s, "daemon_cores": 0.01 if kind == "plain" else 0.03}
              for r, kinds in runtimes.items() for kind, s in kinds.items()]

    summary = summarize(args, trials)

    assert summary["loaded_over_plain_paired"] == {"median": 1.025, "min": 1.0, "max": 1.05, "n": 2}
    assert summary["decoy_over_plain_paired"] == {"median": 1.1, "min": 1.1, "max": 1.1, "n": 2}
    assert summary["plain_median_s"] == 25.0  # the unpaired median would call loaded 25.5/25 = +2%
    assert summary["server_share_of_cpus_percent"] == pytest.approx(100 * 0.02 / summary["cpus"], abs=0.01)
