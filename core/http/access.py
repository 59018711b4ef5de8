"""Who may do what over HTTP: the server's context and the bearer-token dependencies.

Every endpoint that changes something depends on :func:`require_token`; the read endpoints on
:func:`read_access`, which asks for the token too when the server is bound to a non-loopback
address. The event stream alone (:func:`stream_access`) also takes the token as ``?token=``:
a browser's ``EventSource`` cannot send an ``Authorization`` header. A server started by ``trainctl serve`` (no daemon) is read-only: its changing endpoints
answer 403 after the token check, before they touch anything.

The dependencies are ``async``: they only compare strings, and FastAPI runs a plain ``def``
dependency in its thread pool, a hand-off per dependency per request that costs more than the check.
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
from dataclasses import dataclass, field

from fastapi import Depends, HTTPException, Query, Request, status

from core.state.layout import BaseDir


@dataclass
class HttpContext:
    """What every handler needs: the base dir and how the server was started.

    Args:
        layout: The base dir served.
        token: The bearer token (``status/http_token``).
        host: The address bound; a non-loopback one makes reads need the token too.
        read_only: No daemon behind the server (``trainctl serve``): changes are refused.
        max_upload_bytes: Largest accepted upload.
        wake: Set after a change the daemon loop should act on at once (an upload, a resume).
        stopping: Set when the server shuts down; event streams end on it.
    """

    layout: BaseDir
    token: str
    host: str = "127.0.0.1"
    read_only: bool = False
    max_upload_bytes: int = 512 * 2**20
    wake: threading.Event | None = None
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def context(request: Request) -> HttpContext:
    """The server's :class:`HttpContext` (set by ``core.http.app.create_app``)."""
    return request.app.state.context


def _check_token(request: Request, ctx: HttpContext, query_token: str | None = None) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" and query_token is not None:
        scheme, given = "bearer", query_token
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), ctx.token.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong token: send 'Authorization: Bearer TOKEN' with the token that "
            "`trainctl http-token` prints",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def read_access(request: Request, ctx: HttpContext = Depends(context)) -> HttpContext:
    """Dependency of every read endpoint: open on loopback, token needed elsewhere."""
    if not ctx.loopback:
        _check_token(request, ctx)
    return ctx


async def stream_access(
    request: Request,
    token: str | None = Query(None, description="The bearer token, for an EventSource off loopback (it cannot send headers)"),
    ctx: HttpContext = Depends(context),
) -> HttpContext:
    """Dependency of the event stream: as :func:`read_access`, the token also accepted as ``?token=``."""
    if not ctx.loopback:
        _check_token(request, ctx, query_token=token)
    return ctx


async def require_token(request: Request, ctx: HttpContext = Depends(context)) -> HttpContext:
    """Dependency of every changing endpoint: the token, and a daemon behind the server.

    Raises:
        HTTPException: 401 without the right token; 403 on a read-only server.
    """
    _check_token(request, ctx)
    if ctx.read_only:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="this server is read-only (`trainctl serve`); start `trainctl daemon` to change things",
        )
    return ctx
