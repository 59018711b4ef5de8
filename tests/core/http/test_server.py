"""The HTTP server for real: ports, the URL in the status, and the daemon training an uploaded file."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.base.errors import UserError
from core.http.server import HttpPortError, HttpServer, bind
from core.state.status import StatusFile
from tests.conftest import chat_rows
from trainer.config.http import DEFAULT_HTTP_PORT, HttpSettings

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))


def _taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def test_a_taken_default_port_falls_back_to_a_free_one_and_a_taken_set_port_is_an_error():
    try:
        holder = socket.socket()
        # As the server does: a connection of an earlier test in TIME_WAIT must not stop the holder.
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", DEFAULT_HTTP_PORT))
        holder.listen(1)
    except OSError:
        holder = None  # 8765 is already taken by something else: the fallback is tested all the same
    fallback = bind("127.0.0.1", None)
    assert fallback.getsockname()[1] != DEFAULT_HTTP_PORT
    fallback.close()
    if holder is not None:
        holder.close()

    taken = _taken_port()
    with pytest.raises(HttpPortError, match=r"set another http.port") as error:
        bind("127.0.0.1", taken.getsockname()[1])
    taken.close()
    assert isinstance(error.value, UserError)


def test_the_server_serves_over_http_and_its_url_is_in_the_status_only_while_it_runs(layout):
    server = HttpServer.open(layout, HttpSettings())
    server.start()
    try:
        assert StatusFile(layout.status_file).read().http_url == server.url
        deadline = time.monotonic() + 10
        while True:
            try:
                response = httpx.get(server.url + "api/status", timeout=5)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert response.status_code == 200 and response.json()["http_url"] == server.url
    finally:
        server.stop()
    assert StatusFile(layout.status_file).read().http_url is None
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "api/status", timeout=2)


def _wait(predicate, what: str, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := predicate()) :
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _metric(text: str, line_start: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start))


def test_a_file_uploaded_to_the_daemon_is_trained_promoted_and_counted(layout, auth):
    config = json.loads(layout.config_file.read_text())
    config["daemon"] = {"stable_seconds": 0.0, "rescan_seconds": 1.0}
    layout.config_file.write_text(json.dumps(config))
    daemon = subprocess.Popen([TRAINCTL, "daemon", "--base-dir", str(layout.root)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = _wait(lambda: (StatusFile(layout.status_file).read() or None) and
                    StatusFile(layout.status_file).read().http_url, "the daemon's http_url", 60)
        metrics = httpx.get(url + "metrics").text
        assert _metric(metrics, 'trainctl_files_total{outcome="trained"}') == 0.0
        assert _metric(metrics, "trainctl_daemon_up") == 1.0
        body = ("\n".join(json.dumps(r) for r in chat_rows(12)) + "\n").encode()

        response = httpx.post(url + "api/files", params={"name": "web.jsonl"}, content=body, headers=auth)

        assert response.status_code == 201, response.text
        done = _wait(lambda: (layout.done / "web.jsonl.report.json").exists(), "web.jsonl in queue/done")
        assert done
        report = json.loads((layout.done / "web.jsonl.report.json").read_text())
        assert report["outcome"] == "trained"
        snapshots = httpx.get(url + "api/snapshots").json()
        assert snapshots["current"] == report["snapshot"]
        metrics = httpx.get(url + "metrics").text
        assert _metric(metrics, 'trainctl_files_total{outcome="trained"}') == 1.0
        curve = httpx.get(url + "api/runs/latest").json()["loss_curve"]["train"]
        assert len(curve) >= 2 and all(loss > 0 for _, loss in curve)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, stderr[-2000:]
    assert f"dashboard and HTTP API on {url}" in stderr
    assert StatusFile(layout.status_file).read().http_url is None


def test_a_daemon_whose_set_port_is_taken_stops_at_start_with_what_to_do(layout):
    taken = _taken_port()
    config = json.loads(layout.config_file.read_text())
    config["http"] = {"port": taken.getsockname()[1]}
    layout.config_file.write_text(json.dumps(config))
    try:
        done = subprocess.run([TRAINCTL, "daemon", "--base-dir", str(layout.root), "--once"],
                              capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert done.returncode == 2
    assert "set another http.port" in done.stderr


def test_trainctl_serve_shows_a_base_dir_without_a_daemon_and_refuses_changes(layout, auth):
    free = _taken_port()
    port = free.getsockname()[1]
    free.close()
    server = subprocess.Popen([TRAINCTL, "serve", "--base-dir", str(layout.root), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        def status():
            try:
                return httpx.get(url + "api/status", timeout=5)
            except httpx.ConnectError:
                return None

        assert _wait(status, "trainctl serve", 90).json()["read_only"] is True
        assert httpx.post(url + "api/pause", headers=auth).status_code == 403
        assert not layout.pause_file.exists()
    finally:
        server.send_signal(signal.SIGINT)
        out, _ = server.communicate(timeout=30)
    assert f"read-only on {url}" in out
