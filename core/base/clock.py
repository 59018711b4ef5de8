"""Time stamps: one format everywhere a file records when something happened."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now_iso() -> str:
    """The current time as an ISO-8601 UTC string with milliseconds, e.g. ``2025-01-31T12:00:00.000Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
