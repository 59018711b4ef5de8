"""The error every export step raises; the message names what failed and what to do."""

from __future__ import annotations

from core.base.errors import UserError


class ExportError(UserError, ValueError):
    """An export cannot be written, or its output failed the read-back check."""
