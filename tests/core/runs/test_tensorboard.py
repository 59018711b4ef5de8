"""The TensorBoard server: falls back to a free port, and stays off when TB_AUTO=0."""

from __future__ import annotations

import socket
import urllib.request

from core.runs.tensorboard import start_tensorboard


def test_busy_port_falls_back_to_a_free_one(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        env = {"TB_PORT": str(taken)}
        with start_tensorboard(tmp_path / "runs", env) as server:
            assert server.port != taken
            assert server.url == f"http://127.0.0.1:{server.port}/"
            assert server.wait_ready(), (tmp_path / "runs" / ".tensorboard.log").read_text()
            with urllib.request.urlopen(server.url, timeout=10) as reply:
                assert reply.status == 200
    assert server.process.poll() is not None  # stopped on leaving the block


def test_tb_auto_0_starts_nothing(tmp_path):
    assert start_tensorboard(tmp_path / "runs", {"TB_AUTO": "0"}) is None
    assert not (tmp_path / "runs").exists()
