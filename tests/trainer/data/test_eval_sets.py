"""Held-out split sizes and golden sets: a bad or empty golden file is left out with its reason."""

from __future__ import annotations

from profiles import get_profile
from tests.conftest import chat_rows, write_jsonl
from trainer.config import TrainConfig
from trainer.data.eval_sets import GOLDEN, heldout_indices, load_golden_sets


def test_held_out_rows_are_seeded_capped_and_skipped_for_tiny_files():
    config = TrainConfig()  # split_ratio 0.1, min 1, max 256
    assert len(heldout_indices(40, config)) == 4
    assert heldout_indices(40, config) == heldout_indices(40, config)
    assert len(heldout_indices(10_000, config)) == 256
    assert heldout_indices(1, config) == []  # nothing would be left to train on
    assert heldout_indices(40, TrainConfig(eval={"split_ratio": 0.0})) == []


def test_golden_sets_are_read_whole_or_left_out_with_the_reason(tiny_tokenizer, tmp_path):
    folder = tmp_path / "eval"
    write_jsonl(folder / "good.jsonl", chat_rows(3))
    write_jsonl(folder / "bad.jsonl", [chat_rows(1)[0], "{oops"])
    (folder / "empty.jsonl").write_text("")
    write_jsonl(folder / "notes.txt", ["not a set"])
    sets, problems = load_golden_sets(folder, tiny_tokenizer, get_profile("default"), TrainConfig())
    assert [(s.name, s.kind, s.rows) for s in sets] == [("eval/good.jsonl", GOLDEN, 3)]
    reasons = {p.path: p.reason for p in problems}
    assert set(reasons) == {"eval/bad.jsonl", "eval/empty.jsonl"}
    assert "line 2" in reasons["eval/bad.jsonl"] and "no rows" in reasons["eval/empty.jsonl"]
    assert len(sets[0].sha256) == 64 and sets[0].tokens > 0
