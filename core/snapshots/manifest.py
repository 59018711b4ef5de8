"""What goes into a snapshot's ``manifest.json``, and the checks a snapshot passes before promotion.

A snapshot is promoted (or rolled back to) only when ``verify_snapshot`` passes: it is a complete
model or adapter directory, its manifest parses with every required key, it holds no pickle files
(loading one can run arbitrary code), every file is the one its manifest lists (nothing changed,
added or removed since it was made), and its safetensors weights read back finite.

Files are hashed once, when the snapshot is made: the manifest's ``files`` records each file's
SHA-256 with its size, ``mtime_ns``, ``ctime_ns`` and inode. A check compares those with the file
system, and only a file whose record differs is read and hashed again (a copy or a restore from
backup hashes once, and its record is then refreshed; a different content is refused). So a
rollback to a 10 GB model costs a few ``stat`` calls, not 10 GB of reading. The limit: the quick
check trusts the file system's metadata; a change that keeps size, both times and inode (a raw
write to the disk, a clock set back) passes it, and ``deep=True`` (``--deep``) re-hashes every
file. A manifest without a ``files`` list (made before manifests listed their files) is refused:
nothing recorded says what its files should be.
``core.snapshots.store`` re-exports everything here; import from there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from core.base.atomic import atomic_write_json
from core.base.clock import utc_now_iso
from core.base.errors import UserError
from core.base.hashing import sha256_file
from trainer.config import TrainConfig, config_hash, config_to_dict
from trainer.model.model_dirs import check_model_dir

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
PIN_MARKER = "PINNED"  # written by `snapshots pin` after the snapshot is made, so not listed
MANIFEST_FORMAT = 2  # 2: ``files`` holds a record per file (digest, size, times, inode)
REQUIRED_MANIFEST_KEYS = ("format", "created_at", "source_file", "sha256", "steps", "config_hash")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
VERSIONED_PACKAGES = ("torch", "transformers", "peft", "datasets", "accelerate", "safetensors")

# Full models above this size are sampled (leading rows of every tensor) instead of read whole.
_FULL_SCAN_BYTES = 256 * 2**20
_SAMPLE_ELEMENTS = 4096


class SnapshotError(UserError):
    """A snapshot is missing, ambiguous, or fails verification; the message says which and why."""


def library_versions() -> dict[str, str | None]:
    """Installed versions of the training stack and Python, recorded in every manifest."""
    versions: dict[str, str | None] = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["python"] = platform.python_version()
    return versions


def build_manifest(
    *,
    source_file: str,
    sha256: str,
    rows: int,
    steps: int,
    first_loss: float | None,
    last_loss: float | None,
    eval_loss: float | None,
    config: TrainConfig,
    base_model: str,
    profile: str,
    parent_snapshot: str | None,
    evaluation: dict | None = None,
    mean_loss: float | None = None,
) -> dict:
    """The manifest of a snapshot trained on one file; ``SnapshotStore.create`` adds ``id``.

    Args:
        source_file: Name of the inbox file the snapshot was trained on.
        sha256: Content digest of that file (the ledger key).
        rows: Training examples used.
        steps: Optimizer steps run.
        first_loss: Training loss at the first logged step.
        last_loss: Training loss at the last logged step.
        eval_loss: Final held-out loss, or None without evaluation.
        config: The resolved config the run used; stored whole with its hash.
        base_model: The model training started from (hub id or path).
        profile: Name of the data profile.
        parent_snapshot: Id of the snapshot training started from, or None for the base model.
        evaluation: The promotion gate's verdict, failed rules and eval table (set, SHA-256, rows,
            tokens, loss before and after, verdict per set), from ``core.snapshots.gate``.
        mean_loss: Mean training loss over every step on the file.
    """
    return {
        "format": MANIFEST_FORMAT,
        "created_at": utc_now_iso(),
        "source_file": source_file,
        "sha256": sha256,
        "rows": rows,
        "steps": steps,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "mean_loss": mean_loss,
        "eval_loss": eval_loss,
        "base_model": base_model,
        "profile": profile,
        "parent_snapshot": parent_snapshot,
        "config_hash": config_hash(config),
        "config": config_to_dict(config),
        "versions": library_versions(),
        "evaluation": evaluation,
    }


def check_manifest(manifest: object, where: str) -> dict:
    """Return ``manifest`` if it is a dict with every required key; raise ``SnapshotError`` if not."""
    if not isinstance(manifest, dict):
        raise SnapshotError(f"{where} must hold a JSON object; build it with build_manifest()")
    missing = [key for key in REQUIRED_MANIFEST_KEYS if key not in manifest]
    if missing:
        raise SnapshotError(f"{where} lacks {', '.join(missing)}; build it with build_manifest()")
    return manifest


def read_manifest(snapshot: Path) -> dict:
    """The parsed and checked ``manifest.json`` of ``snapshot``.

    Raises:
        SnapshotError: the manifest is missing, unparsable or lacks required keys.
    """
    path = snapshot / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SnapshotError(f"{snapshot.name}: no {MANIFEST_NAME}; it is not a finished snapshot") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"{snapshot.name}: {MANIFEST_NAME} is not valid JSON ({exc})") from None
    return check_manifest(manifest, f"{snapshot.name}/{MANIFEST_NAME}")


def verify_snapshot(path: str | Path, *, deep: bool = False) -> None:
    """Check that the snapshot at ``path`` is safe and complete enough to promote.

    Args:
        path: The snapshot folder.
        deep: Re-hash every file, not only those whose size, times or inode changed.

    Raises:
        SnapshotError: with the first reason it fails; do not promote it.
    """
    path = Path(path)
    pickles = sorted(p.name for p in path.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise SnapshotError(
            f"{path.name}: holds pickle files ({', '.join(pickles)}), which can run code when "
            "loaded; save the model with safetensors only"
        )
    check = check_model_dir(path)
    if not check.ok:
        raise SnapshotError(f"{path.name}: not a complete model: {check.reason}")
    manifest = read_manifest(path)
    _check_weights(path, check.kind)
    refreshed = _check_files(path, manifest, deep)
    if refreshed is not None:
        _write_refreshed(path, {**manifest, "files": refreshed})


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of a snapshot folder but the manifest and the pin marker, by relative path."""
    return {name: sha256_file(file) for name, file in _snapshot_files(folder).items()}


def file_records(folder: Path) -> dict[str, dict]:
    """What the manifest records of each file (see :func:`file_digests`): SHA-256, size, times, inode."""
    return {name: _record(file, sha256_file(file)) for name, file in _snapshot_files(folder).items()}


def _snapshot_files(folder: Path) -> dict[str, Path]:
    return {
        p.relative_to(folder).as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() not in (MANIFEST_NAME, PIN_MARKER)
    }


def _record(file: Path, digest: str) -> dict:
    info = os.stat(file)
    return {"sha256": digest, "size": info.st_size, "mtime_ns": info.st_mtime_ns,
            "ctime_ns": info.st_ctime_ns, "inode": info.st_ino}


def _unchanged(file: Path, listed: dict) -> bool:
    """True when ``file``'s size, times and inode are those recorded (its bytes are then not read)."""
    fresh = _record(file, listed.get("sha256"))
    return all(listed.get(key) == fresh[key] for key in ("size", "mtime_ns", "ctime_ns", "inode"))


def _check_files(path: Path, manifest: dict, deep: bool) -> dict[str, dict] | None:
    """Refuse a snapshot whose files differ from its manifest's list.

    Returns:
        The list with fresh records when a file's metadata changed but its SHA-256 did not (or the
        list held digests only), to be written back; None when nothing needs writing.
    """
    listed = manifest.get("files")
    if listed is None:
        raise SnapshotError(
            f"{path.name}: {MANIFEST_NAME} has no list of files (made by an older trainctl), so "
            "nothing says what its files should be; roll back to another snapshot, or train the "
            "file again to make a snapshot that can be checked"
        )
    if not isinstance(listed, dict):
        raise SnapshotError(f"{path.name}: the files in {MANIFEST_NAME} are not a name -> record object")
    present = _snapshot_files(path)
    problems = [f"{name} is missing" for name in sorted(set(listed) - set(present))]
    problems += [f"{name} is not listed in {MANIFEST_NAME}" for name in sorted(set(present) - set(listed))]
    refreshed, stale = {}, False
    for name in sorted(set(listed) & set(present)):
        entry = listed[name] if isinstance(listed[name], dict) else {"sha256": listed[name]}
        if not deep and _unchanged(present[name], entry):
            refreshed[name] = entry
            continue
        digest = sha256_file(present[name])
        if digest != entry.get("sha256"):
            problems.append(f"{name} changed since the snapshot was made")
        refreshed[name] = _record(present[name], digest)
        stale = stale or refreshed[name] != listed[name]
    if problems:
        raise SnapshotError(
            f"{path.name}: {'; '.join(problems)}; it was modified after it was made, roll back to "
            "another snapshot or train the file again"
        )
    return refreshed if stale else None


def _write_refreshed(path: Path, manifest: dict) -> None:
    """Record the files' new metadata (same bytes: a copy or a restore), so the next check is quick."""
    try:
        atomic_write_json(path / MANIFEST_NAME, manifest)
    except OSError as exc:  # a read-only base dir: the check passed, it is only slower next time
        logger.warning("%s: could not update %s with the files' new metadata: %s", path.name, MANIFEST_NAME, exc)
    else:
        logger.info("%s: files copied or restored with the same content; %s updated", path.name, MANIFEST_NAME)


def _check_weights(path: Path, kind: str | None) -> None:
    files = sorted(path.rglob("*.safetensors"))
    if not files:
        raise SnapshotError(f"{path.name}: no .safetensors weights; save with safe_serialization")
    read_all = kind == "adapter" or sum(f.stat().st_size for f in files) <= _FULL_SCAN_BYTES
    for file in files:
        try:
            _check_safetensors(file, read_all)
        except SafetensorError as exc:
            raise SnapshotError(f"{path.name}: {file.name} does not load: {exc}") from None


def _check_safetensors(file: Path, read_all: bool) -> None:
    import torch  # here, not at the top: `trainctl status` and `snapshots list` start without it

    with safe_open(file, framework="pt") as handle:
        for name in handle.keys():
            tensor = handle.get_tensor(name) if read_all else _leading_rows(handle, name)
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise SnapshotError(
                    f"{file.parent.name}: tensor {name!r} in {file.name} holds NaN or Inf; "
                    "training diverged, roll back and lower the learning rate"
                )


def _leading_rows(handle, name: str) -> torch.Tensor:
    """The first rows of a tensor, about ``_SAMPLE_ELEMENTS`` values, without reading the rest."""
    part = handle.get_slice(name)
    shape = part.get_shape()
    if len(shape) == 0:
        return handle.get_tensor(name)
    rows = max(1, _SAMPLE_ELEMENTS // max(1, math.prod(shape[1:])))
    return part[:rows]
