"""Tell systemd how the daemon is doing (``Type=notify`` services), with a plain datagram socket.

systemd passes the socket in ``$NOTIFY_SOCKET``: a file path, or an abstract socket written with a
leading ``@``. Without the variable (run from a shell, under nohup, in tests) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends ``READY=1``, ``STATUS=...``, ``WATCHDOG=1`` and ``STOPPING=1`` to systemd.

    Args:
        address: The notify socket; defaults to ``$NOTIFY_SOCKET``. Empty or None disables sending.
    """

    def __init__(self, address: str | None = None) -> None:
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self.address is not None

    def notify(self, *fields: str) -> None:
        """Send ``fields`` (``KEY=value`` strings) as one message. Failures are logged, not raised:
        a lost notification must not stop training."""
        if self.address is None:
            return
        message = "\n".join(fields).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            logger.warning("could not notify systemd at %r: %s", self.address, exc)

    def ready(self, status: str) -> None:
        """The daemon finished starting up."""
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """A one-line status shown by ``systemctl status``."""
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        """Still alive; must be sent more often than ``WatchdogSec``."""
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        """The daemon began shutting down."""
        self.notify("STOPPING=1", "STATUS=stopping")
