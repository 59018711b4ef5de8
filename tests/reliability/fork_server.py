"""Start daemons by forking a Python that has already imported them: a restart costs no imports.

The kill loop restarts the daemon about 20 times in CI and hundreds of times in a soak; importing
torch and transformers takes ~4 s of each restart on two cores. Here a server process imports
``core.daemon.service`` once, then forks one daemon per request. Each daemon is still a process of
its own, started from ``core.daemon.service.main`` with its own session, environment, signal
handlers, lock and training child (always a fresh ``python -m core.child.worker``); only the
imports are shared. The other tests start the daemon with ``python -m core.training_daemon``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def serve() -> None:
    """The server: one JSON request per stdin line, one JSON reply per stdout line."""
    import core.daemon.service  # noqa: F401  imported here once, so that forks start at once

    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "start":
            pid = os.fork()
            if pid == 0:
                _run_daemon(request)
            reply = {"pid": pid}
        else:  # "wait": the exit code, or None while it runs (with block=False)
            done, status = os.waitpid(request["pid"], 0 if request["block"] else os.WNOHANG)
            reply = {"code": os.waitstatus_to_exitcode(status) if done else None}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def _run_daemon(request: dict) -> None:
    """In the forked child: become a daemon process as ``python -m core.training_daemon`` would."""
    code = 1
    try:
        os.setsid()
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.environ.clear()
        os.environ.update(request["env"])
        from core.daemon.service import main

        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class ForkedDaemon:
    """A daemon started by :class:`ForkServer`, with the parts of ``subprocess.Popen`` the tests use."""

    def __init__(self, server: "ForkServer", pid: int) -> None:
        self.server = server
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.request(op="wait", pid=self.pid, block=False)["code"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"daemon {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """The server process, started once; ``start`` forks a daemon from it."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from tests.reliability.fork_server import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        )

    def request(self, **fields) -> dict:
        self.process.stdin.write(json.dumps(fields) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        if not reply:
            raise RuntimeError(f"the fork server exited with {self.process.wait()}")
        return json.loads(reply)

    def start(self, argv: list[str], env: dict[str, str], log: Path) -> ForkedDaemon:
        return ForkedDaemon(self, self.request(op="start", argv=argv, env=env, log=str(log))["pid"])

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
