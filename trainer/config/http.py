"""The ``http`` section of config.json: the daemon's HTTP API, dashboard and ``/metrics``."""

from __future__ import annotations

from pydantic import Field

from trainer.config.schema_base import StrictModel

DEFAULT_HTTP_PORT = 8765


class HttpSettings(StrictModel):
    """The HTTP server the daemon starts beside its loop (see ``core/http/``)."""

    enabled: bool = True
    """Start the HTTP API, the dashboard at ``/`` and ``/metrics`` with the daemon."""

    host: str = "127.0.0.1"
    """Address to bind. Anything but a loopback address makes every endpoint (not only the ones
    that change something) ask for the bearer token printed by ``trainctl http-token``."""

    port: int | None = Field(None, ge=1, le=65535)
    """Port to bind. Unset: 8765, or a free port when 8765 is taken (for example by the daemon of
    another base dir); the URL is in ``trainctl status``. Set: exactly this port, and the daemon
    refuses to start when it is taken."""

    max_upload_mb: float = Field(512.0, gt=0.0)
    """Largest JSONL file ``POST /api/files`` accepts, in MiB; bigger uploads get 413."""
