"""Snapshots: one immutable model per trained file, and the ``current_model`` link that picks one.

Each snapshot is ``snapshots/<seq:04d>-<YYYYmmdd-HHMMSS>-<file stem>/`` with a ``manifest.json``.
A snapshot is assembled under a hidden ``.incoming-*`` name and renamed into place only when
complete, so a half-written one is never listed. ``current_model`` is a relative symlink to
``snapshots/<id>``, swapped with ``os.replace``: a reader that resolves it once sees the old
snapshot or the new one, never a mix.

``previous`` is the snapshot that was current before the current one, from the promotion stack
kept by ``core.snapshots.history``; repeating ``rollback previous`` walks further back.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from core.base.atomic import atomic_write_json, atomic_write_text, fsync_dir, fsync_tree, remove_tree
from core.base.clock import utc_now_iso
from core.snapshots.history import PromotionStack
from core.snapshots.manifest import (
    MANIFEST_NAME,
    PIN_MARKER,
    SnapshotError,
    build_manifest,
    check_manifest,
    file_digests,
    file_records,
    read_manifest,
    verify_snapshot,
)
from core.snapshots.model_card import write_model_card
from core.state.layout import BaseDir

__all__ = [
    "SnapshotError",
    "SnapshotInfo",
    "SnapshotStore",
    "build_manifest",
    "file_digests",
    "format_snapshot_table",
    "read_manifest",
    "verify_snapshot",
]

logger = logging.getLogger(__name__)

PREVIOUS = "previous"
_ID_PATTERN = re.compile(r"^(\d{4,})-\d{8}-\d{6}-.+$")
_INCOMING = ".incoming-"
_DELETING = ".deleting-"
_PLACEHOLDERS = {".gitkeep"}


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot as listed. Numbers are None when the manifest does not record them."""

    id: str
    path: Path
    created_at: str | None
    source_file: str | None
    steps: int | None
    first_loss: float | None
    last_loss: float | None
    eval_loss: float | None
    parent: str | None
    is_current: bool
    pinned: bool
    evaluation: dict | None = None
    """The promotion gate's record (``verdict``, ``rule``, ``sets``); None for older snapshots."""
    mean_loss: float | None = None
    """Mean training loss over the file; None for older snapshots."""

    @property
    def verdict(self) -> str | None:
        """``promoted``, ``rejected`` or ``ungated`` (see ``core.snapshots.gate``); None if not recorded."""
        return (self.evaluation or {}).get("verdict")


class SnapshotStore:
    """Create, promote, roll back, pin and prune the snapshots of one base dir."""

    def __init__(self, layout: BaseDir):
        self.layout = layout
        self.promotions = PromotionStack(layout.promotions_file)

    def create(self, model_dir: Path, manifest: dict, source_stem: str) -> SnapshotInfo:
        """Move a finished model (or adapter) directory in as a new snapshot.

        Args:
            model_dir: The saved model; it is moved, not copied, and must not be used afterwards.
            manifest: From ``build_manifest``; the snapshot ``id`` is added to it.
            source_stem: Stem of the trained file, used in the snapshot id.

        Raises:
            SnapshotError: the manifest lacks required keys (nothing is moved then).
        """
        check_manifest(manifest, "manifest")
        self.layout.snapshots.mkdir(parents=True, exist_ok=True)
        snapshot_id = self._next_id(source_stem)
        staging = self._stage(Path(model_dir), snapshot_id)
        write_model_card(staging, {**manifest, "id": snapshot_id}, self.layout.snapshots)
        files = file_records(staging)  # hashed once, here; checks compare size, times and inode
        atomic_write_json(staging / MANIFEST_NAME, {**manifest, "id": snapshot_id, "files": files})
        fsync_tree(staging)
        final = self.layout.snapshots / snapshot_id
        os.rename(staging, final)
        fsync_dir(self.layout.snapshots)
        logger.info("created snapshot %s from %s", snapshot_id, manifest.get("source_file"))
        return self._info(final, self._current_id())

    def promote(self, snapshot_id: str) -> SnapshotInfo:
        """Verify a snapshot and point ``current_model`` at it.

        Raises:
            SnapshotError: no such snapshot, it fails verification, or ``current_model`` is a
                real directory with files in it.
        """
        with self.promotions.lock():
            info = self._verified(snapshot_id)
            self._swap_link(info.id)
            self.promotions.push(info.id)
        logger.info("promoted snapshot %s to %s", info.id, self.layout.current_model)
        return self._info(info.path, info.id)

    def rollback(self, ref: str, *, deep: bool = False) -> SnapshotInfo:
        """Make an earlier snapshot current again (``ref``: id, unique id prefix or ``previous``).

        With ``deep`` every file is hashed again instead of only those whose metadata changed.

        Raises:
            SnapshotError: it cannot be resolved, is already current, or fails verification.
        """
        with self.promotions.lock():
            info = self.resolve(ref)
            if info.is_current:
                raise SnapshotError(f"{info.id} is already current; pick another snapshot")
            verify_snapshot(info.path, deep=deep)
            self._swap_link(info.id)
            self.promotions.pop_to(info.id)
        logger.info("rolled back %s to snapshot %s", self.layout.current_model, info.id)
        return self._info(info.path, info.id)

    def current(self) -> SnapshotInfo | None:
        """The snapshot ``current_model`` points at, or None (no link, or it points elsewhere)."""
        snapshot_id = self._current_id()
        if snapshot_id is None:
            return None
        return self._info(self.layout.snapshots / snapshot_id, snapshot_id)

    def list(self) -> list[SnapshotInfo]:
        """Every finished snapshot, oldest first."""
        current = self._current_id()
        return [self._info(path, current) for path in self._snapshot_dirs()]

    def resolve(self, ref: str) -> SnapshotInfo:
        """The snapshot named by an id, a unique id prefix (``0003``) or ``previous``.

        Raises:
            SnapshotError: nothing matches, the prefix is ambiguous, or there is no previous one.
        """
        if ref == PREVIOUS:
            return self._previous()
        dirs = self._snapshot_dirs()  # names only: one manifest is read, not every snapshot's
        exact = [p for p in dirs if p.name == ref]
        matches = exact or [p for p in dirs if p.name.startswith(ref)]
        if len(matches) == 1:
            return self._info(matches[0], self._current_id())
        if not matches:
            raise SnapshotError(f"no snapshot {ref!r}; see `trainctl snapshots list`")
        names = ", ".join(p.name for p in matches)
        raise SnapshotError(f"{ref!r} matches {len(matches)} snapshots ({names}); give more of the id")

    def pin(self, ref: str) -> SnapshotInfo:
        """Keep a snapshot through ``prune`` (a ``PINNED`` marker file in its folder)."""
        info = self.resolve(ref)
        atomic_write_text(info.path / PIN_MARKER, f"pinned at {utc_now_iso()}\n")
        return self._info(info.path, self._current_id())

    def unpin(self, ref: str) -> SnapshotInfo:
        """Let ``prune`` delete a snapshot again."""
        info = self.resolve(ref)
        (info.path / PIN_MARKER).unlink(missing_ok=True)
        fsync_dir(info.path)
        return self._info(info.path, self._current_id())

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` snapshots, the pinned ones and the current one.

        Also removes hidden ``.incoming-*``/``.deleting-*`` folders left by a crash. Call it from
        the daemon loop, not while a ``create`` runs.

        Returns:
            Ids of the deleted snapshots, oldest first.
        """
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}; set daemon.keep_snapshots in config.json")
        snapshots = self.list()
        newest = {s.id for s in snapshots[max(0, len(snapshots) - keep) :]}
        doomed = [s for s in snapshots if s.id not in newest and not s.pinned and not s.is_current]
        for snapshot in doomed:
            remove_tree(snapshot.path, self.layout.snapshots / f"{_DELETING}{snapshot.id}")
        for prefix in (_INCOMING, _DELETING):
            for leftover in self.layout.snapshots.glob(f"{prefix}*"):
                shutil.rmtree(leftover)
        if doomed:
            logger.info("pruned snapshots %s", ", ".join(s.id for s in doomed))
        return [s.id for s in doomed]

    # --- ids and listing ---------------------------------------------------------------------

    def _snapshot_dirs(self) -> list[Path]:
        if not self.layout.snapshots.is_dir():
            return []
        found = [p for p in self.layout.snapshots.iterdir() if _ID_PATTERN.match(p.name) and p.is_dir()]
        return sorted(found, key=lambda p: (int(_ID_PATTERN.match(p.name).group(1)), p.name))

    def _next_id(self, source_stem: str) -> str:
        dirs = self._snapshot_dirs()
        seq = int(_ID_PATTERN.match(dirs[-1].name).group(1)) + 1 if dirs else 1
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", source_stem).strip(".-")[:60] or "file"
        return f"{seq:04d}-{stamp}-{stem}"

    def _info(self, path: Path, current: str | None) -> SnapshotInfo:
        try:
            manifest = read_manifest(path)
        except SnapshotError:
            manifest = {}  # listed anyway, with unknown fields; verify_snapshot reports why
        return SnapshotInfo(
            id=path.name,
            path=path,
            created_at=manifest.get("created_at"),
            source_file=manifest.get("source_file"),
            steps=manifest.get("steps"),
            first_loss=manifest.get("first_loss"),
            last_loss=manifest.get("last_loss"),
            eval_loss=manifest.get("eval_loss"),
            parent=manifest.get("parent_snapshot"),
            is_current=path.name == current,
            pinned=(path / PIN_MARKER).exists(),
            evaluation=manifest.get("evaluation"),
            mean_loss=manifest.get("mean_loss"),
        )

    def _current_id(self) -> str | None:
        link = self.layout.current_model
        if not link.is_symlink():
            return None
        target = (link.parent / os.readlink(link)).resolve()
        if target.parent != self.layout.snapshots.resolve() or not target.is_dir():
            return None
        return target.name

    # --- creating and promoting --------------------------------------------------------------

    def _stage(self, model_dir: Path, snapshot_id: str) -> Path:
        """Move ``model_dir`` to a hidden name inside snapshots/ (same file system as the final name)."""
        if model_dir.parent.resolve() == self.layout.snapshots.resolve() and model_dir.name.startswith("."):
            return model_dir
        staging = self.layout.snapshots / f"{_INCOMING}{snapshot_id}"
        if staging.exists():
            shutil.rmtree(staging)  # left by a crash; the new model replaces it
        shutil.move(str(model_dir), str(staging))
        return staging

    def _verified(self, ref: str) -> SnapshotInfo:
        info = self.resolve(ref)
        verify_snapshot(info.path)
        return info

    def _swap_link(self, snapshot_id: str) -> None:
        link = self.layout.current_model
        self._remove_placeholder()
        temp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        temp.unlink(missing_ok=True)
        os.symlink(Path(self.layout.snapshots.name) / snapshot_id, temp)
        os.replace(temp, link)
        fsync_dir(link.parent)

    def _remove_placeholder(self) -> None:
        """Remove a real ``current_model/`` folder that is empty or holds only ``.gitkeep``."""
        folder = self.layout.current_model
        if folder.is_symlink() or not folder.is_dir():
            return
        names = {p.name for p in folder.iterdir()}
        if not names <= _PLACEHOLDERS:
            raise SnapshotError(
                f"{folder} is a folder with files ({', '.join(sorted(names))}); move it away, "
                "current_model must be a link to a snapshot"
            )
        for name in names:
            (folder / name).unlink()
        folder.rmdir()

    def _previous(self) -> SnapshotInfo:
        current = self._current_id()
        stack = self.promotions.ids()
        if stack and stack[-1] == current:
            stack.pop()
        existing = {p.name: p for p in self._snapshot_dirs()}
        for snapshot_id in reversed(stack):
            if snapshot_id in existing and snapshot_id != current:
                return self._info(existing[snapshot_id], current)
        raise SnapshotError("no previous snapshot: nothing was promoted before the current one")


def format_snapshot_table(snapshots: list[SnapshotInfo]) -> str:
    """``trainctl snapshots list`` output: one row per snapshot, ``*`` marking the current one."""
    if not snapshots:
        return "no snapshots yet; the daemon creates one after each trained file"
    header = ("", "ID", "CREATED (UTC)", "FILE", "MEAN LOSS", "EVAL LOSS", "GATE", "GATE LOSSES", "PINNED")
    rows = [header] + [
        (
            "*" if s.is_current else "",
            s.id,
            (s.created_at or "?")[:19].replace("T", " "),
            s.source_file or "?",
            "-" if s.mean_loss is None else f"{s.mean_loss:.4f}",
            "-" if s.eval_loss is None else f"{s.eval_loss:.4f}",
            s.verdict or "-",
            _gate_losses(s.evaluation),
            "pinned" if s.pinned else "",
        )
        for s in snapshots
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows)


def _gate_losses(evaluation: dict | None) -> str:
    """``set before->after`` for each set the gate judged, e.g. ``heldout 1.92->1.41``, with
    ``(on 128/512 rows)`` for a set measured in rounds (``core.child.gate_rounds``)."""
    sets = (evaluation or {}).get("sets") or []
    parts = [f"{row['set']} {row['loss_before']:.3f}->{row['loss_after']:.3f}{_rows_measured(row)}" for row in sets
             if row.get("loss_before") is not None and row.get("loss_after") is not None]
    return ", ".join(parts) or "-"


def _rows_measured(row: dict) -> str:
    measured = row.get("rows_measured")
    return f" (on {measured}/{row['rows']} rows)" if measured is not None and measured < row["rows"] else ""
