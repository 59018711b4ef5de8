"""``core.snapshots.model_card``: the README of a snapshot names its base, lineage, losses and loading."""

from __future__ import annotations

import json

from core.snapshots.model_card import lineage, write_model_card


def _snapshot(snapshots, snapshot_id: str, source: str, parent: str | None) -> dict:
    manifest = {"id": snapshot_id, "source_file": source, "parent_snapshot": parent, "sha256": "ab" * 32,
                "rows": 8, "steps": 3, "first_loss": 2.5, "last_loss": 1.9, "mean_loss": 2.1, "eval_loss": None,
                "profile": "default", "created_at": "2026-01-01T00:00:00Z",
                "config": {"base_model": "SmolLM2-135M-Instruct", "method": "lora", "lora": {"r": 16, "alpha": 32}}}
    (snapshots / snapshot_id).mkdir(parents=True)
    (snapshots / snapshot_id / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_lineage_lists_the_files_oldest_first_and_says_where_pruned_history_ends(tmp_path):
    _snapshot(tmp_path, "0002-b", "b.jsonl", parent="0001-a")  # 0001-a was pruned
    third = _snapshot(tmp_path, "0003-c", "c.jsonl", parent="0002-b")

    assert lineage(third, tmp_path) == ["(earlier files of pruned snapshot 0001-a)", "b.jsonl", "c.jsonl"]


def test_the_card_of_an_adapter_names_its_base_losses_and_how_to_load_it(tmp_path):
    manifest = _snapshot(tmp_path, "0001-a", "a.jsonl", parent=None)
    folder = tmp_path / "0001-a"
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/models/SmolLM2"}))

    card = write_model_card(folder, manifest, tmp_path).read_text()

    assert card.startswith('---\nbase_model: "SmolLM2-135M-Instruct"\nlibrary_name: peft\n')
    assert "| trained on | `a.jsonl` |" in card
    assert "| training loss | mean 2.1000 (first step 2.5000, last step 1.9000) |" in card
    assert "`/models/SmolLM2`" in card and 'AutoModelForCausalLM.from_pretrained("PATH/TO/THIS/FOLDER")' in card
