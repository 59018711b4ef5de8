"""Which model a command that *uses* a snapshot (chat, export) loads, checked before it loads.

``current`` is the snapshot ``current_model`` points at; any other name is an id, a unique id
prefix or ``previous`` (see ``SnapshotStore.resolve``). The snapshot must still verify: a file
changed or added since it was made is refused, as it is for promotion and rollback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.snapshots.store import SnapshotError, SnapshotStore, read_manifest, verify_snapshot
from core.state.layout import BaseDir
from trainer.config import TrainConfig
from trainer.model.source import adapter_base_model, resolve_base_model
from trainer.model.model_dirs import check_model_dir

CURRENT = "current"


@dataclass(frozen=True)
class SelectedModel:
    """A model to load, and what to say about it.

    Attributes:
        label: what was loaded, for the user (``snapshot 0003-...`` or ``base model ...``).
        path: the snapshot folder (or the base model directory).
        snapshot_id: the snapshot id; None for the base model.
        profile: name of the profile the model was trained with.
        base: the base model an adapter snapshot applies to; None for a full model.
    """

    label: str
    path: Path
    snapshot_id: str | None
    profile: str
    base: str | None


def select_snapshot(store: SnapshotStore, ref: str) -> Path:
    """The folder of the snapshot ``ref`` names (``current`` included), verified.

    Raises:
        SnapshotError: nothing is current, ``ref`` matches no snapshot or several, or it no longer
            verifies.
    """
    info = store.current() if ref == CURRENT else store.resolve(ref)
    if info is None:
        raise SnapshotError("no current model yet: train a file first, or name a snapshot (`trainctl snapshots list`)")
    try:
        verify_snapshot(info.path)
    except SnapshotError as exc:
        raise SnapshotError(f"{exc}; pick another snapshot (`trainctl snapshots list`)") from None
    return info.path


def select_model(layout: BaseDir, config: TrainConfig, ref: str, allow_base: bool = False) -> SelectedModel:
    """The model ``ref`` names; with ``allow_base``, ``current`` falls back to ``base_model``.

    Raises:
        SnapshotError: as :func:`select_snapshot`.
        ModelSourceError: the base model is needed and missing.
    """
    store = SnapshotStore(layout)
    if ref == CURRENT and store.current() is None and allow_base:
        base = resolve_base_model(layout.root, config)
        return SelectedModel(f"base model {base} (nothing trained yet)", Path(base), None, config.profile, None)
    path = select_snapshot(store, ref)
    profile = read_manifest(path).get("profile") or config.profile
    base = adapter_base_model(path, config, layout.root) if check_model_dir(path).kind == "adapter" else None
    return SelectedModel(f"snapshot {path.name}", path, path.name, profile, base)
