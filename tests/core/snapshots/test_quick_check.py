"""Snapshot checks compare size, times and inode with the manifest; only a changed file is hashed again.

A rollback to a large model must not read it, a changed file must still be refused, and a manifest
without its ``files`` list is never trusted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import core.snapshots.manifest
from core.cli import main
from core.snapshots.store import (
    SnapshotError,
    SnapshotStore,
    build_manifest,
    verify_snapshot,
)
from core.state.layout import BaseDir, init_base_dir
from tests.tiny_models import write_sparse_safetensors
from trainer.config import TrainConfig

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))
BIG_BYTES = 1 << 30


@pytest.fixture()
def store(tmp_path) -> SnapshotStore:
    return SnapshotStore(init_base_dir(tmp_path / "base"))


def _add(store: SnapshotStore, model_dir: Path, stem: str) -> Path:
    manifest = build_manifest(
        source_file=f"{stem}.jsonl", sha256="0" * 64, rows=8, steps=2, first_loss=2.0, last_loss=1.0,
        eval_loss=None, config=TrainConfig(), base_model="tiny", profile="default", parent_snapshot=None,
    )
    return store.create(Path(shutil.copytree(model_dir, store.layout.root.parent / "runs" / stem)), manifest, stem).path


def _manifest(snapshot: Path) -> dict:
    return json.loads((snapshot / "manifest.json").read_text())


def _write_manifest(snapshot: Path, manifest: dict) -> None:
    (snapshot / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture()
def hashed(monkeypatch) -> list[str]:
    """Names of the files the snapshot checks read and hash, in order."""
    names: list[str] = []
    real = core.snapshots.manifest.sha256_file

    def counting(path, **kwargs):
        names.append(Path(path).name)
        return real(path, **kwargs)

    monkeypatch.setattr(core.snapshots.manifest, "sha256_file", counting)
    return names


def _rollback(base: BaseDir, ref: str, capsys, *flags: str) -> tuple[int, str]:
    """``trainctl rollback`` in this process (``core.cli.main``): its exit code and stderr."""
    code = main(["rollback", ref, *flags, "--base-dir", str(base.root)])
    return code, capsys.readouterr().err


def test_the_manifest_records_digest_size_times_and_inode_of_every_file(store, tiny_model_dir):
    snapshot = _add(store, tiny_model_dir, "a")
    files = _manifest(snapshot)["files"]
    assert set(files) == {p.name for p in snapshot.iterdir()} - {"manifest.json"}
    stat = os.stat(snapshot / "config.json")
    assert files["config.json"]["size"] == stat.st_size and files["config.json"]["inode"] == stat.st_ino
    assert set(files["config.json"]) == {"sha256", "size", "mtime_ns", "ctime_ns", "inode"}


def test_an_unchanged_snapshot_is_checked_without_reading_its_files(store, tiny_model_dir, hashed):
    snapshot = _add(store, tiny_model_dir, "a")
    hashed.clear()  # creating it hashes every file, once
    verify_snapshot(snapshot)
    assert hashed == []


def test_rollback_refuses_a_file_changed_to_the_same_size(store, tiny_model_dir):
    good, changed = _add(store, tiny_model_dir, "good"), _add(store, tiny_model_dir, "changed")
    store.promote(good.name)
    card = changed / "README.md"
    text = card.read_text()
    card.write_text(text.replace("a", "b", 1) if "a" in text else "x" + text[1:])
    assert card.stat().st_size == len(text.encode())

    done = subprocess.run([TRAINCTL, "rollback", changed.name, "--base-dir", str(store.layout.root)],
                          check=False, capture_output=True, text=True, timeout=300)

    assert done.returncode == 1 and "README.md changed since the snapshot was made" in done.stderr
    assert store.current().id == good.name


def test_an_in_place_rewrite_with_size_and_mtime_restored_is_refused(store, tiny_model_dir):
    snapshot = _add(store, tiny_model_dir, "a")
    card = snapshot / "README.md"
    before, text = card.stat(), card.read_text()
    with open(card, "r+b") as handle:  # same inode, same size
        handle.write(b"#" if text[0] != "#" else b" ")
    os.utime(card, ns=(before.st_atime_ns, before.st_mtime_ns))  # the change time cannot be set back
    assert (card.stat().st_size, card.stat().st_mtime_ns, card.stat().st_ino) == (
        before.st_size, before.st_mtime_ns, before.st_ino)
    with pytest.raises(SnapshotError, match="README.md changed"):
        verify_snapshot(snapshot)


def test_a_change_the_metadata_does_not_show_needs_deep(store, tiny_model_dir, capsys):
    """The documented limit: the quick check trusts size, times and inode; ``--deep`` reads the bytes."""
    good, target = _add(store, tiny_model_dir, "good"), _add(store, tiny_model_dir, "target")
    store.promote(good.name)
    (target / "README.md").write_text("different bytes\n")
    manifest = _manifest(target)  # as if the change had kept every recorded field (a raw disk write)
    stat = os.stat(target / "README.md")
    manifest["files"]["README.md"].update(size=stat.st_size, mtime_ns=stat.st_mtime_ns, ctime_ns=stat.st_ctime_ns)
    _write_manifest(target, manifest)

    code, err = _rollback(store.layout, target.name, capsys, "--deep")
    assert code == 1 and "README.md changed since the snapshot was made" in err
    assert store.current().id == good.name
    assert _rollback(store.layout, target.name, capsys)[0] == 0


def test_a_copy_with_the_same_bytes_is_hashed_once_and_its_manifest_refreshed(store, tiny_model_dir, hashed):
    original = _add(store, tiny_model_dir, "a")
    copy = Path(shutil.copytree(original, store.layout.snapshots / "0002-20250101-000000-copy"))
    hashed.clear()
    verify_snapshot(copy)  # new inodes: every file is read once, and the bytes match
    assert sorted(hashed) == sorted(_manifest(copy)["files"])
    assert _manifest(copy)["files"]["config.json"]["inode"] == os.stat(copy / "config.json").st_ino
    hashed.clear()
    verify_snapshot(copy)
    assert hashed == []


def test_a_manifest_without_its_files_list_is_refused(store, tiny_model_dir, capsys):
    good, old = _add(store, tiny_model_dir, "good"), _add(store, tiny_model_dir, "old")
    store.promote(good.name)
    manifest = _manifest(old)
    del manifest["files"]
    _write_manifest(old, manifest)

    code, err = _rollback(store.layout, old.name, capsys)

    assert code == 1 and "manifest.json has no list of files" in err
    assert "roll back to another snapshot, or train the file again" in err
    assert store.current().id == good.name


def test_a_list_of_digests_only_is_checked_by_hashing_and_upgraded(store, tiny_model_dir, hashed):
    snapshot = _add(store, tiny_model_dir, "a")
    manifest = _manifest(snapshot)
    manifest["files"] = {name: record["sha256"] for name, record in manifest["files"].items()}
    _write_manifest(snapshot, manifest)
    hashed.clear()
    verify_snapshot(snapshot)
    assert sorted(hashed) == sorted(manifest["files"])
    assert _manifest(snapshot)["files"]["config.json"]["size"] == os.stat(snapshot / "config.json").st_size
    manifest["files"]["config.json"] = "0" * 64
    _write_manifest(snapshot, manifest)
    with pytest.raises(SnapshotError, match="config.json changed"):
        verify_snapshot(snapshot)


def test_rollback_to_a_large_snapshot_reads_none_of_its_weights(store, tiny_model_dir, tmp_path, hashed, capsys):
    big_model = Path(shutil.copytree(tiny_model_dir, tmp_path / "big"))
    write_sparse_safetensors(big_model / "padding.safetensors", BIG_BYTES)
    big = _add(store, big_model, "big")  # hashed once, here
    small = _add(store, tiny_model_dir, "small")
    store.promote(small.name)
    hashed.clear()

    assert main(["rollback", big.name, "--base-dir", str(store.layout.root)]) == 0

    assert hashed == [] and store.current().id == big.name
    assert f"current_model -> {big.name}" in capsys.readouterr().out
    assert main(["rollback", small.name, "--deep", "--base-dir", str(store.layout.root)]) == 0
    assert sorted(hashed) == sorted(_manifest(small)["files"])
