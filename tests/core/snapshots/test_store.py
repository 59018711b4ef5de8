"""Snapshots: create, verify, promote, roll back, pin and prune; and their CLI commands."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.cli import main
from core.snapshots.store import SnapshotError, SnapshotStore, build_manifest, verify_snapshot
from core.state.events import EventLog
from core.state.layout import BaseDir, init_base_dir
from trainer.config import TrainConfig

ADAPTER_WEIGHTS = "adapter_model.safetensors"


@pytest.fixture(scope="session")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A saved LoRA adapter (peft) for the tiny model. Treat as read-only."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    peft_model.save_pretrained(out)
    return out


@pytest.fixture()
def base(tmp_path) -> BaseDir:
    base = init_base_dir(tmp_path / "base")
    base.current_model.mkdir()
    (base.current_model / ".gitkeep").touch()  # as in the repo checkout
    return base


@pytest.fixture()
def store(base) -> SnapshotStore:
    return SnapshotStore(base)


def _manifest(source: str, last_loss: float = 1.0, parent: str | None = None, mean_loss: float | None = None) -> dict:
    return build_manifest(
        source_file=source,
        sha256="0" * 64,
        rows=8,
        steps=2,
        first_loss=2.0,
        last_loss=last_loss,
        eval_loss=None,
        config=TrainConfig(),
        base_model="tiny",
        profile="default",
        parent_snapshot=parent,
        mean_loss=mean_loss,
    )


def _add(store: SnapshotStore, source_dir: Path, stem: str, tmp_path: Path, **manifest) -> str:
    model_dir = Path(shutil.copytree(source_dir, tmp_path / "runs" / stem))
    return store.create(model_dir, _manifest(f"{stem}.jsonl", **manifest), stem).id


def _current_target(base: BaseDir) -> str:
    return Path(os.path.realpath(base.current_model)).name


def test_create_moves_the_model_in_with_exactly_its_files_and_a_manifest(store, adapter_dir, tmp_path):
    model_dir = Path(shutil.copytree(adapter_dir, tmp_path / "runs" / "model"))
    info = store.create(model_dir, _manifest("my data.jsonl"), "my data")
    assert info.id.startswith("0001-") and info.id.endswith("-my-data")
    assert not model_dir.exists()
    expected = {p.name for p in adapter_dir.iterdir()} | {"manifest.json"}
    assert {p.name for p in info.path.iterdir()} == expected
    assert [p.name for p in store.layout.snapshots.iterdir()] == [info.id]  # no staging leftovers
    manifest = json.loads((info.path / "manifest.json").read_text())
    assert manifest["id"] == info.id and manifest["source_file"] == "my data.jsonl"
    assert set(manifest["versions"]) == {
        "torch", "transformers", "peft", "datasets", "accelerate", "safetensors", "python"
    }
    assert (info.source_file, info.steps, info.last_loss, info.is_current) == ("my data.jsonl", 2, 1.0, False)


def test_create_rejects_an_incomplete_manifest_and_moves_nothing(store, adapter_dir, tmp_path):
    model_dir = Path(shutil.copytree(adapter_dir, tmp_path / "model"))
    with pytest.raises(SnapshotError, match="sha256"):
        store.create(model_dir, {"source_file": "a.jsonl"}, "a")
    assert model_dir.is_dir() and store.list() == []


def test_promote_then_rollback_moves_current_model(store, base, adapter_dir, tiny_model_dir, tmp_path):
    first = _add(store, adapter_dir, "first", tmp_path)
    assert store.promote(first).is_current
    assert base.current_model.is_symlink() and _current_target(base) == first
    second = _add(store, tiny_model_dir, "second", tmp_path, parent=first)  # a full model
    store.promote(second)
    assert _current_target(base) == second and store.current().id == second
    assert [s.is_current for s in store.list()] == [False, True]
    assert store.rollback(first).id == first
    assert _current_target(base) == first
    loaded = load_file(base.current_model / ADAPTER_WEIGHTS)
    assert loaded.keys() == load_file(adapter_dir / ADAPTER_WEIGHTS).keys()


def test_previous_walks_back_through_promotions(store, adapter_dir, tmp_path):
    ids = [_add(store, adapter_dir, name, tmp_path) for name in ("a", "b", "c")]
    for snapshot_id in ids:
        store.promote(snapshot_id)
    assert store.resolve("previous").id == ids[1]
    assert store.rollback("previous").id == ids[1]
    assert store.rollback("previous").id == ids[0]
    with pytest.raises(SnapshotError, match="no previous snapshot"):
        store.rollback("previous")


def test_previous_skips_pruned_snapshots(store, adapter_dir, tmp_path):
    ids = [_add(store, adapter_dir, name, tmp_path) for name in ("a", "b", "c")]
    for snapshot_id in ids:
        store.promote(snapshot_id)
    assert store.prune(keep=0) == ids[:2]
    with pytest.raises(SnapshotError, match="no previous snapshot"):
        store.resolve("previous")


def test_unreadable_promotion_stack_does_not_block_promotion(store, base, adapter_dir, tmp_path):
    ids = [_add(store, adapter_dir, name, tmp_path) for name in ("a", "b")]
    store.promote(ids[0])
    base.promotions_file.write_text("{torn")
    store.promote(ids[1])
    assert _current_target(base) == ids[1]
    assert json.loads(base.promotions_file.read_text()) == {"stack": [ids[1]]}


def test_resolve_by_prefix(store, adapter_dir, tmp_path):
    ids = [_add(store, adapter_dir, name, tmp_path) for name in ("a", "b")]
    assert store.resolve("0002").id == ids[1]
    with pytest.raises(SnapshotError, match="matches 2 snapshots"):
        store.resolve("000")
    with pytest.raises(SnapshotError, match="trainctl snapshots list"):
        store.resolve("0009")


def test_promote_refuses_a_current_model_folder_with_files(store, base, adapter_dir, tmp_path):
    (base.current_model / "config.json").write_text("{}")
    snapshot_id = _add(store, adapter_dir, "a", tmp_path)
    with pytest.raises(SnapshotError, match="move it away"):
        store.promote(snapshot_id)
    assert (base.current_model / "config.json").is_file()


def _remove_manifest(path: Path) -> None:
    (path / "manifest.json").unlink()


def _garble_manifest(path: Path) -> None:
    (path / "manifest.json").write_text('{"id": "0001", "source_file": ')


def _empty_weights(path: Path) -> None:
    (path / ADAPTER_WEIGHTS).write_bytes(b"")


def _add_pickle(path: Path) -> None:
    torch.save({"step": 1}, path / "training_args.bin")


def _nan_weights(path: Path) -> None:
    tensors = load_file(path / ADAPTER_WEIGHTS)
    name = sorted(tensors)[0]
    tensors[name][0, 0] = float("nan")
    save_file(tensors, path / ADAPTER_WEIGHTS)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_remove_manifest, "no manifest.json"),
        (_garble_manifest, "not valid JSON"),
        (_empty_weights, "empty"),
        (_add_pickle, "pickle"),
        (_nan_weights, "NaN"),
    ],
)
def test_verify_refuses_and_rollback_keeps_current(store, base, adapter_dir, tmp_path, tamper, reason):
    good = _add(store, adapter_dir, "good", tmp_path)
    bad = _add(store, adapter_dir, "bad", tmp_path)
    store.promote(good)
    tamper(base.snapshots / bad)
    with pytest.raises(SnapshotError, match=reason):
        verify_snapshot(base.snapshots / bad)
    with pytest.raises(SnapshotError, match=reason):
        store.rollback(bad)
    assert _current_target(base) == good


def test_verify_accepts_a_full_model_and_an_adapter(store, adapter_dir, tiny_model_copy, tmp_path):
    for source in (adapter_dir, tiny_model_copy):
        verify_snapshot(store.layout.snapshots / _add(store, source, source.name, tmp_path))


def test_prune_keeps_newest_pinned_and_current(store, adapter_dir, tmp_path):
    ids = [_add(store, adapter_dir, f"f{i}", tmp_path) for i in range(6)]
    store.promote(ids[1])
    store.pin(ids[0])
    deleted = store.prune(keep=2)
    assert deleted == [ids[2], ids[3]]
    assert [s.id for s in store.list()] == [ids[0], ids[1], ids[4], ids[5]]
    store.unpin(ids[0])
    assert store.prune(keep=2) == [ids[0]]
    assert store.current().id == ids[1]


def test_prune_deletes_nothing_while_fewer_than_keep_exist(store, adapter_dir, tmp_path):
    ids = [_add(store, adapter_dir, f"f{i}", tmp_path) for i in range(3)]
    store.promote(ids[2])
    assert store.prune(keep=5) == []
    assert [s.id for s in store.list()] == ids


def test_readers_see_old_or_new_snapshot_during_swaps(store, base, adapter_dir, tmp_path):
    ids = {_add(store, adapter_dir, name, tmp_path) for name in ("a", "b")}
    first, second = sorted(ids)
    store.promote(first)
    stop, seen, failures = threading.Event(), set(), []

    def reader():
        while not stop.is_set():
            try:
                seen.add(json.loads((base.current_model / "manifest.json").read_text())["id"])
            except OSError as exc:
                failures.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(40):
        store.rollback(second if i % 2 == 0 else first)
    stop.set()
    thread.join()
    assert failures == []
    assert seen == ids


def test_cli_snapshots_list_pin_and_rollback(base, store, adapter_dir, tmp_path, capsys):
    first = _add(store, adapter_dir, "first", tmp_path, last_loss=0.25, mean_loss=0.5)
    second = _add(store, adapter_dir, "second", tmp_path)
    store.promote(first)
    store.promote(second)
    root = ["--base-dir", str(base.root)]
    assert main(["snapshots", "pin", first[:4], *root]) == 0
    capsys.readouterr()
    assert main(["snapshots", "list", *root]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[0] == first
    assert "MEAN LOSS" in rows[0] and "0.5000" in rows[1] and "0.2500" not in rows[1]  # the file's mean, not one step
    assert rows[1].rstrip().endswith("pinned")
    assert rows[2].startswith("*") and second in rows[2]
    assert main(["rollback", "previous", *root]) == 0
    assert _current_target(base) == first
    event = EventLog(base.events_file).read()[-1]
    assert (event["type"], event["from"], event["to"]) == ("rollback", second, first)


def test_cli_rollback_failure_exits_nonzero_with_reason(base, store, adapter_dir, tmp_path, capsys):
    only = _add(store, adapter_dir, "only", tmp_path)
    store.promote(only)
    assert main(["rollback", "previous", "--base-dir", str(base.root)]) == 1
    assert "no previous snapshot" in capsys.readouterr().err
    assert main(["rollback", "nope", "--base-dir", str(base.root)]) == 1
    assert EventLog(base.events_file).read() == []


def test_large_full_models_are_sampled_by_leading_rows(store, tiny_model_copy, tmp_path, monkeypatch):
    import core.snapshots.manifest

    monkeypatch.setattr(core.snapshots.manifest, "_FULL_SCAN_BYTES", 0)
    path = store.layout.snapshots / _add(store, tiny_model_copy, "full", tmp_path)
    verify_snapshot(path)
    tensors = load_file(path / "model.safetensors")
    tensors["model.embed_tokens.weight"][0, 3] = float("inf")
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SnapshotError, match="embed_tokens"):
        verify_snapshot(path)
