"""The memory set keeps every promoted file represented; the replay buffer is a bounded, seeded reservoir."""

from __future__ import annotations

from collections import Counter

from core.memory.buffers import MemorySet, ReplayBuffer, Row


def _rows(file: str, n: int) -> list[Row]:
    return [Row(file, file * 8, line, {"text": f"{file} row {line}"}) for line in range(1, n + 1)]


def test_memory_shares_its_rows_evenly_so_old_files_stay_represented(tmp_path):
    memory = MemorySet(tmp_path)
    assert memory.add("a", "a" * 8, _rows("a", 300), limit=512)
    assert memory.add("b", "b" * 8, _rows("b", 300), limit=512)
    assert memory.add("c", "c" * 8, _rows("c", 10), limit=512)
    counts = Counter(row.file for row in memory.rows(512))
    assert counts == {"a": 170, "b": 170, "c": 10}  # 512 // 3 each, c has only 10
    assert not memory.add("a", "a" * 8, _rows("a", 300), limit=512)  # a second add changes nothing
    assert Counter(row.file for row in MemorySet(tmp_path).rows(512)) == counts


def test_memory_rows_keep_their_provenance(tmp_path):
    memory = MemorySet(tmp_path)
    given = [Row("a.jsonl", "f" * 64, line, {"text": f"row {line}"}) for line in (3, 7, 9)]
    memory.add("a.jsonl", "f" * 64, given, limit=8)
    assert sorted(memory.rows(8), key=lambda row: row.line) == given


def test_the_replay_reservoir_is_bounded_fair_and_reproducible(tmp_path):
    buffer = ReplayBuffer(tmp_path / "one")
    for name in "abcd":
        assert buffer.add(name, name * 8, _rows(name, 500), max_rows=400, seed=1)
    assert not buffer.add("a", "a" * 8, _rows("a", 500), max_rows=400, seed=1)
    rows = buffer.rows()
    assert len(rows) == 400
    counts = Counter(row.file for row in rows)
    assert set(counts) == set("abcd") and min(counts.values()) > 50  # every file, about a quarter each
    again = ReplayBuffer(tmp_path / "two")
    for name in "abcd":
        again.add(name, name * 8, _rows(name, 500), max_rows=400, seed=1)
    assert again.rows() == rows
    assert buffer.draw(30, "x" * 8, seed=2) == again.draw(30, "x" * 8, seed=2)
    assert len(buffer.draw(10_000, "x" * 8, seed=2)) == 400
