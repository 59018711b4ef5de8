"""``status/http_token``: the bearer token the HTTP API asks for before it changes anything.

Created by ``trainctl init`` (and by the daemon's HTTP server when a base dir from before it has
none), readable by its owner only (0600), printed by ``trainctl http-token``. Whoever can read the
base dir can read the token; whoever cannot, cannot drive the daemon over HTTP.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path

from core.base.atomic import fsync_dir

logger = logging.getLogger(__name__)


def ensure_http_token(path: Path) -> str:
    """The token in ``path``; a new random one is written (mode 0600) when the file is missing."""
    path = Path(path)
    if path.exists():
        return read_http_token(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # create-if-absent: a token written meanwhile by another process wins
            logger.info("wrote a new HTTP API token to %s", path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    fsync_dir(path.parent)
    return read_http_token(path)


def read_http_token(path: Path) -> str:
    """The token stored in ``path``.

    Raises:
        FileNotFoundError: there is none yet (``trainctl init`` or the daemon writes it).
        ValueError: the file is empty.
    """
    token = Path(path).read_text(encoding="ascii").strip()
    if not token:
        raise ValueError(f"{path} is empty; delete it and run `trainctl init` to write a new token")
    return token
