"""Running the HTTP server: bind the port, serve with uvicorn in a thread, record the URL.

The daemon calls :meth:`HttpServer.start` when it has taken its lock and :meth:`HttpServer.stop`
when it stops; ``trainctl serve`` runs the same server read-only in the foreground. The socket is
bound here, before uvicorn starts, so a taken port is an error at start with what to do, and an
unset ``http.port`` can fall back to a free one.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading

import uvicorn

from core.base.errors import UserError
from core.http.access import HttpContext
from core.http.app import create_app
from core.state.http_token import ensure_http_token
from core.state.layout import BaseDir
from core.state.status import StatusFile
from trainer.config.http import DEFAULT_HTTP_PORT, HttpSettings

logger = logging.getLogger(__name__)

STOP_SECONDS = 5.0


class HttpPortError(UserError):
    """The configured ``http.port`` cannot be bound."""


def bind(host: str, port: int | None) -> socket.socket:
    """A listening socket on ``host``: ``port``, or 8765 (a free port if taken) when ``port`` is None.

    Raises:
        HttpPortError: an explicitly set ``port`` cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            sock.bind((host, DEFAULT_HTTP_PORT if port is None else port))
        except OSError as exc:
            if port is not None or exc.errno != errno.EADDRINUSE:
                raise
            logger.info("port %d on %s is taken; using a free port", DEFAULT_HTTP_PORT, host)
            sock.bind((host, 0))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise HttpPortError(
            f"cannot serve HTTP on {host}:{port or DEFAULT_HTTP_PORT} ({exc.strerror}); set another "
            "http.port (or remove it to take a free one), or http.enabled false, in config.json"
        ) from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class HttpServer:
    """uvicorn serving the app of ``ctx`` on a bound socket, in a thread.

    Args:
        ctx: What the handlers serve.
        sock: From :func:`bind`.
    """

    def __init__(self, ctx: HttpContext, sock: socket.socket) -> None:
        self.ctx = ctx
        self.sock = sock
        self.url = url_of(sock)
        config = uvicorn.Config(create_app(ctx), log_config=None, access_log=False, timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @classmethod
    def open(cls, layout: BaseDir, settings: HttpSettings, *, read_only: bool = False,
             wake: threading.Event | None = None) -> "HttpServer":
        """Bind per ``settings`` and build the server for ``layout`` (not started yet).

        Raises:
            HttpPortError: the configured port cannot be bound.
        """
        ctx = HttpContext(
            layout, ensure_http_token(layout.http_token_file), host=settings.host, read_only=read_only,
            max_upload_bytes=int(settings.max_upload_mb * 2**20), wake=wake,
        )
        return cls(ctx, bind(settings.host, settings.port))

    def start(self) -> None:
        """Serve in a daemon thread; the URL goes into the status and the log."""
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="trainctl-http", daemon=True)
        self._thread.start()
        StatusFile(self.ctx.layout.status_file).update(http_url=self.url)
        logger.info("dashboard and HTTP API on %s (API docs: %sdocs)", self.url, self.url)

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C or SIGTERM (``trainctl serve``)."""
        logger.info("serving %s read-only on %s", self.ctx.layout.root, self.url)
        self.server.run(sockets=[self.sock])

    def stop(self) -> None:
        """Stop serving (open event streams end) and remove the URL from the status."""
        self.ctx.stopping.set()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_SECONDS)
        self.sock.close()
        try:
            StatusFile(self.ctx.layout.status_file).update(http_url=None)
        except OSError as exc:  # e.g. a full disk: the daemon's own stop records that
            logger.error("cannot remove http_url from %s: %s", self.ctx.layout.status_file, exc)
        logger.info("HTTP server on %s stopped", self.url)


def start_daemon_server(layout: BaseDir, settings: HttpSettings | None, wake: threading.Event) -> HttpServer | None:
    """The daemon's server, started; None when ``http.enabled`` is false.

    Raises:
        HttpPortError: the configured port cannot be bound.
    """
    settings = settings or HttpSettings()
    if not settings.enabled:
        return None
    server = HttpServer.open(layout, settings, wake=wake)
    server.start()
    return server


def stop_daemon_server(server: HttpServer | None) -> None:
    """Stop the daemon's server, if one was started."""
    if server is not None:
        server.stop()
