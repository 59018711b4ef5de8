"""Per-row losses: kept for the precision and attention they were measured with, rows known by content."""

from __future__ import annotations

from core.memory.row_losses import RowLosses, cache_path, row_key


def test_rows_round_trip_and_are_known_by_their_tokens_and_labels(tmp_path):
    a, b = {"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [1, 2, 3], "labels": [-100, -100, 3]}
    assert row_key(a) != row_key(b) and row_key(a) == row_key({**a, "extra": 1})
    stored = RowLosses("bf16", "sdpa_packed")
    stored.add([row_key(a)], [(4.5, 2)])
    stored.save(tmp_path / "rows.json")

    loaded = RowLosses("bf16", "sdpa_packed").load(tmp_path / "rows.json")
    assert loaded.missing([row_key(a), row_key(b)]) == [1]
    assert loaded.get([row_key(a)]) == [(4.5, 2)]


def test_numbers_measured_otherwise_or_unreadable_are_not_used(tmp_path, caplog):
    stored = RowLosses("fp32", "sdpa")
    stored.add(["k"], [(1.0, 1)])
    stored.save(tmp_path / "rows.json")
    assert RowLosses("bf16", "sdpa").load(tmp_path / "rows.json").missing(["k"]) == [0]
    (tmp_path / "bad.json").write_text("{half", encoding="utf-8")
    assert RowLosses("fp32", "sdpa").load(tmp_path / "bad.json").rows == {}
    assert "bad.json cannot be read" in caplog.text
    assert RowLosses("fp32", "sdpa").load(tmp_path / "missing.json").rows == {}
    assert cache_path(tmp_path, "/s/1", "fp32", "sdpa") != cache_path(tmp_path, "/s/2", "fp32", "sdpa")
