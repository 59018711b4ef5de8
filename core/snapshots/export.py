"""Exporting a snapshot for serving: checked, then moved into place in one rename.

The export is built in a hidden folder beside ``--out`` and renamed to it only after its read-back
check passed, so ``--out`` is either absent, the previous export, or the new complete one; on any
error the hidden folder is removed and nothing is left behind. ``--force`` replaces an existing
``--out`` only if it is an earlier export (it holds ``trainctl-export.json``) or empty, so a typo
cannot delete an unrelated folder; an ``--out`` inside ``snapshots/`` is refused, as snapshots are
immutable.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig

from core.base.atomic import atomic_write_json, fsync_dir, fsync_tree, remove_tree
from core.base.clock import utc_now_iso
from core.base.errors import UserError
from core.snapshots.selection import select_model
from core.state.layout import BaseDir
from trainer.config import TrainConfig
from trainer.export.checks import CheckResult
from trainer.export.gguf_file import TENSOR_TYPES, check_architecture, check_gguf, write_gguf
from trainer.export.merged import TORCH_DTYPES, merge, native_dtype, save_merged
from trainer.inference.loading import load_trained

logger = logging.getLogger(__name__)

FORMATS = ("merged", "gguf")
QUANTS = ("q8_0",)
EXPORT_MARKER = "trainctl-export.json"


@dataclass
class ExportResult:
    """A finished export."""

    snapshot_id: str
    out: Path
    files: list[str]
    precision: str
    check: CheckResult
    seconds: float


def export_snapshot(layout: BaseDir, config: TrainConfig, ref: str, fmt: str, out: Path, *,
                    dtype: str | None = None, quant: str | None = None, force: bool = False) -> ExportResult:
    """Export the snapshot ``ref`` (``current``, an id, a prefix or ``previous``) to the folder ``out``.

    Args:
        layout: the base dir.
        config: its config (the base model of an adapter whose recorded base is gone).
        ref: which snapshot.
        fmt: ``merged`` (safetensors model) or ``gguf`` (one .gguf file).
        out: the folder to create.
        dtype: ``bf16``, ``f16`` or ``f32``; default: the base's for merged, f16 for gguf.
        quant: ``q8_0`` for gguf matrices (overrides ``dtype`` for them).
        force: replace an earlier export at ``out``.

    Raises:
        UserError: bad options or ``out``, an unknown snapshot or one that no longer verifies, an
            architecture GGUF export does not support, or an output that fails its check.
    """
    started = time.monotonic()
    out = Path(out).expanduser().absolute()
    _check_options(fmt, dtype, quant)
    _check_destination(layout, out, force)
    selected = select_model(layout, config, ref)
    if fmt == "gguf":  # before the weights load: an unsupported model fails at once
        check_architecture(AutoConfig.from_pretrained(selected.base or selected.path, trust_remote_code=False))
    loaded = load_trained(selected.path, selected.base)
    precision = quant or dtype or ("f16" if fmt == "gguf" else native_dtype(selected.base or selected.path))
    staging = out.with_name(f".{out.name}.export-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        model, reference = merge(loaded)
        if fmt == "merged":
            check = save_merged(model, loaded.tokenizer, reference, staging, precision)
        else:
            gguf_file = staging / f"model-{precision}.gguf"
            write_gguf(model, loaded.tokenizer, gguf_file, precision, selected.snapshot_id)
            check = check_gguf(gguf_file, model, loaded.tokenizer, reference, precision)
        files = sorted(p.name for p in staging.iterdir())
        for name in files:  # some writers create private files; a server running as another user reads them
            (staging / name).chmod(0o644)
        atomic_write_json(staging / EXPORT_MARKER, {
            "snapshot": selected.snapshot_id, "format": fmt, "precision": precision, "base_model": selected.base,
            "created_at": utc_now_iso(), "check": check.summary(), "files": files,
        })
        fsync_tree(staging)
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("exported %s as %s to %s: %s", selected.snapshot_id, fmt, out, check.summary())
    return ExportResult(selected.snapshot_id, out, files, precision, check, time.monotonic() - started)


def _check_options(fmt: str, dtype: str | None, quant: str | None) -> None:
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if dtype is not None and dtype not in TORCH_DTYPES:
        raise UserError(f"unknown --dtype {dtype!r}; choose one of: {', '.join(TORCH_DTYPES)}")
    if quant is not None and (fmt != "gguf" or quant not in QUANTS or quant not in TENSOR_TYPES):
        raise UserError(f"--quant {quant} is not available for --format {fmt}; GGUF export offers: {', '.join(QUANTS)}")


def _check_destination(layout: BaseDir, out: Path, force: bool) -> None:
    """Refuse an ``out`` inside snapshots/, an existing one without ``force``, or one that is not an export."""
    resolved = out.resolve()
    snapshots = layout.snapshots.resolve()
    if resolved == snapshots or resolved.is_relative_to(snapshots) or snapshots.is_relative_to(resolved):
        raise UserError(f"--out {out} is inside or above {snapshots}; snapshots are never written to, "
                        "pick a folder elsewhere (e.g. exports/NAME)")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: the folder {out.parent} does not exist; create it first")
    if not (out.exists() or out.is_symlink()):
        return
    if not force:
        raise UserError(f"--out {out} already exists; pass --force to replace it, or pick another folder")
    if not out.is_dir() or out.is_symlink() or not ((out / EXPORT_MARKER).exists() or not any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an earlier trainctl export; --force replaces only "
                        "those, remove it yourself or pick another folder")


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished export to ``out``; an earlier export there is renamed aside, then deleted."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.rename(out, old)
    os.rename(staging, out)
    fsync_dir(out.parent)
    if old.exists():
        remove_tree(old, out.with_name(f".{out.name}.deleting-{os.getpid()}"))
