"""The models home: one folder of prepared base models, shared by every base dir.

``trainctl prepare-model`` converts the embedded model into it once, and ``base_model`` names a
model in it by its folder name (``"SmolLM2-135M-Instruct"``, or ``"embedded:SmolLM2-135M-Instruct"``),
so a new base dir needs no copy of its own. The folder is, first found:

1. ``$TRAINCTL_HOME/models`` when ``TRAINCTL_HOME`` is set;
2. the installation's ``models/`` folder (the repo root of a source checkout) when it exists;
3. ``$XDG_DATA_HOME/trainctl/models``, by default ``~/.local/share/trainctl/models``.

Older configs that say ``"models/SmolLM2-135M-Instruct"`` (a path under the base dir) still work:
that path is used where the base dir holds it, else the model of that name in the models home.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "TRAINCTL_HOME"
EMBEDDED_PREFIX = "embedded:"
LEGACY_PREFIX = "models/"
INSTALL_ROOT = Path(__file__).resolve().parents[2]


def models_home() -> Path:
    """The folder of prepared models (see the module docstring for how it is chosen)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser().resolve() / "models"
    installed = INSTALL_ROOT / "models"
    if installed.is_dir():
        return installed
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data).expanduser() / "trainctl" / "models"


def home_model_name(base_model: str) -> str | None:
    """The models-home folder name ``base_model`` refers to, or None if it is not such a name.

    ``"embedded:NAME"`` always names one; a bare name without a slash (``"SmolLM2-135M-Instruct"``)
    and a legacy ``"models/NAME"`` path name one when no other reading applies (the caller checks
    the base dir and the hub first).
    """
    if base_model.startswith(EMBEDDED_PREFIX):
        return base_model.removeprefix(EMBEDDED_PREFIX)
    if base_model.startswith(LEGACY_PREFIX) and "/" not in base_model.removeprefix(LEGACY_PREFIX):
        return base_model.removeprefix(LEGACY_PREFIX)
    if "/" not in base_model and not base_model.startswith("."):
        return base_model
    return None
