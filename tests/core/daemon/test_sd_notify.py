"""systemd notifications: sent to $NOTIFY_SOCKET (path or abstract), silent without it."""

from __future__ import annotations

import os
import socket

from core.daemon.sd_notify import SystemdNotifier


def _listener(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_messages_reach_a_socket_path(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    with _listener(path) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        notifier = SystemdNotifier()
        notifier.ready("watching the inbox")
        notifier.watchdog()
        notifier.stopping()

        received = [sock.recv(4096).decode() for _ in range(3)]

    assert received == ["READY=1\nSTATUS=watching the inbox", "WATCHDOG=1", "STOPPING=1\nSTATUS=stopping"]


def test_an_abstract_socket_is_written_with_a_leading_at(monkeypatch):
    name = f"trainctl-test-{os.getpid()}"
    with _listener("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        SystemdNotifier().status("training a.jsonl")

        assert sock.recv(4096) == b"STATUS=training a.jsonl"


def test_without_notify_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier()

    notifier.ready("idle")  # must not raise

    assert not notifier.enabled
