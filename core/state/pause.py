"""``status/paused``: while this file exists the daemon claims no new inbox file.

The file that is training when the pause is asked for finishes; files stay in the inbox until
``POST /api/resume`` (or deleting the file) lifts the pause. The file holds who paused and when.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.base.atomic import atomic_write_json
from core.base.clock import utc_now_iso


def pause(path: Path, reason: str) -> dict:
    """Create the pause flag at ``path`` (kept if present); returns what it holds."""
    if (current := pause_info(path)) is not None:
        return current
    info = {"paused_at": utc_now_iso(), "reason": reason}
    atomic_write_json(path, info)
    return info


def resume(path: Path) -> bool:
    """Remove the pause flag; True if there was one."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return False
    return True


def pause_info(path: Path) -> dict | None:
    """What the pause flag holds, ``{}`` when it is unreadable, None when claiming is not paused."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) else {}
