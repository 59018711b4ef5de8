"""``trainctl export``: merged and GGUF exports of a snapshot through the CLI, and every refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import pytest
import torch
from transformers import AutoModelForCausalLM

from core.cli import main
from core.snapshots.export import EXPORT_MARKER
from core.snapshots.store import SnapshotStore, build_manifest
from core.state.layout import BaseDir, init_base_dir
from tests.tiny_models import build_tiny_adapter_dir
from trainer.config import TrainConfig
from trainer.export.checks import prompt_ids
from trainer.inference.loading import load_trained


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return build_tiny_adapter_dir(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "adapter", seed=2)


@pytest.fixture()
def base(tmp_path, tiny_config, adapter) -> BaseDir:
    base = init_base_dir(tmp_path / "base")
    base.config_file.write_text(json.dumps(tiny_config))
    store = SnapshotStore(base)
    manifest = build_manifest(source_file="a.jsonl", sha256="0" * 64, rows=8, steps=2, first_loss=2.0,
                              last_loss=1.0, eval_loss=None, config=TrainConfig.model_validate(tiny_config),
                              base_model=tiny_config["base_model"], profile="default", parent_snapshot=None)
    snapshot = store.create(Path(shutil.copytree(adapter, tmp_path / "run")), manifest, "a")
    store.promote(snapshot.id)
    return base


def _export(base: BaseDir, *args: str) -> int:
    return main(["export", *args, "--base-dir", str(base.root)])


def _logits(model, tokenizer):
    with torch.inference_mode():
        return model(input_ids=prompt_ids(tokenizer)).logits


def test_export_merged_writes_a_plain_model_that_answers_as_the_snapshot(base, tmp_path, capsys):
    out = tmp_path / "merged"
    assert _export(base, "current", "--format", "merged", "--out", str(out), "--dtype", "f32") == 0

    snapshot = SnapshotStore(base).current()
    assert f"exported {snapshot.id} (merged, f32)" in capsys.readouterr().out
    trained = load_trained(snapshot.path, json.loads(base.config_file.read_text())["base_model"])
    merged = AutoModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(_logits(merged, trained.tokenizer), _logits(trained.model, trained.tokenizer),
                               atol=1e-4, rtol=1e-4)
    marker = json.loads((out / EXPORT_MARKER).read_text())
    assert marker["snapshot"] == snapshot.id and marker["format"] == "merged"
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())


def test_export_gguf_writes_one_file_that_reads_back(base, tmp_path, capsys):
    out = tmp_path / "gguf"
    assert _export(base, "current", "--format", "gguf", "--quant", "q8_0", "--out", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model-q8_0.gguf", EXPORT_MARKER]
    reader = gguf.GGUFReader(out / "model-q8_0.gguf")
    assert reader.fields["general.name"].contents() == SnapshotStore(base).current().id
    assert "check: logits within" in capsys.readouterr().out


def test_force_replaces_an_earlier_export_only(base, tmp_path, capsys):
    out = tmp_path / "gguf"
    assert _export(base, "current", "--format", "gguf", "--out", str(out)) == 0
    assert _export(base, "current", "--format", "gguf", "--out", str(out)) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert _export(base, "current", "--format", "gguf", "--dtype", "f32", "--out", str(out), "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == ["model-f32.gguf", EXPORT_MARKER]

    unrelated = tmp_path / "photos"
    unrelated.mkdir()
    (unrelated / "cat.jpg").write_bytes(b"meow")
    assert _export(base, "current", "--format", "gguf", "--out", str(unrelated), "--force") == 2
    assert "not an earlier trainctl export" in capsys.readouterr().err
    assert [p.name for p in unrelated.iterdir()] == ["cat.jpg"]


def _tamper(base: BaseDir) -> None:
    snapshot = SnapshotStore(base).current().path
    (snapshot / "adapter_config.json").write_text(
        (snapshot / "adapter_config.json").read_text().replace('"r": 4', '"r": 5'))


@pytest.mark.parametrize("args, message", [
    (["nosuch", "--format", "merged"], "no snapshot 'nosuch'"),
    (["current", "--format", "merged", "--out-in-snapshots"], "snapshots are never written to"),
    (["current", "--format", "merged", "--quant", "q8_0"], "--quant q8_0 is not available for --format merged"),
    (["current", "--format", "gguf", "--tampered"], "changed since the snapshot was made"),
])
def test_bad_exports_are_clear_errors_that_write_nothing(base, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    if "--out-in-snapshots" in args:
        args.remove("--out-in-snapshots")
        out = base.snapshots / "export"
    if "--tampered" in args:
        args.remove("--tampered")
        _tamper(base)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert _export(base, *args, "--out", str(out)) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not out.exists()


def test_a_full_model_snapshot_exports_merged_but_gguf_names_its_unknown_architecture(base, tmp_path, capsys):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tests.tiny_models import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    model_dir = tmp_path / "qwen"
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    config = TrainConfig.model_validate(json.loads(base.config_file.read_text()))
    manifest = build_manifest(source_file="q.jsonl", sha256="1" * 64, rows=8, steps=2, first_loss=2.0, last_loss=1.0,
                              eval_loss=None, config=config, base_model="qwen", profile="default", parent_snapshot=None)
    snapshot = SnapshotStore(base).create(model_dir, manifest, "qwen").id

    assert _export(base, snapshot, "--format", "gguf", "--out", str(tmp_path / "q-gguf")) == 2
    assert "does not support the Qwen2ForCausalLM architecture" in capsys.readouterr().err
    assert not (tmp_path / "q-gguf").exists() and not list(tmp_path.glob(".q-gguf*"))

    assert _export(base, snapshot, "--format", "merged", "--out", str(tmp_path / "q-merged")) == 0
    assert json.loads((tmp_path / "q-merged" / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
