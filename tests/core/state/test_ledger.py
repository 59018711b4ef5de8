"""The exactly-once ledger of trained file contents."""

from __future__ import annotations

import hashlib

import pytest

from core.base.hashing import sha256_file
from core.state.ledger import Ledger, LedgerError


def test_sha256_file_matches_hashlib_across_chunks(tmp_path):
    data = bytes(range(256)) * 9000  # > 2 MiB, so several chunks
    path = tmp_path / "big.jsonl"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_unknown_digest_is_none(tmp_path):
    assert Ledger(tmp_path / "ledger.json").lookup("0" * 64) is None


def test_record_survives_a_new_instance(tmp_path):
    path = tmp_path / "status" / "ledger.json"
    Ledger(path).record("a" * 64, file="one.jsonl", outcome="trained", snapshot="0001-x-one")
    Ledger(path).record("b" * 64, file="two.jsonl", outcome="failed", snapshot=None)
    reopened = Ledger(path)
    first = reopened.lookup("a" * 64)
    assert first["file"] == "one.jsonl"
    assert first["outcome"] == "trained"
    assert first["snapshot"] == "0001-x-one"
    assert first["recorded_at"].endswith("Z")
    assert reopened.lookup("b" * 64)["outcome"] == "failed"
    assert set(reopened.entries()) == {"a" * 64, "b" * 64}


def test_record_replaces_an_entry(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json")
    ledger.record("c" * 64, file="x.jsonl", outcome="failed")
    ledger.record("c" * 64, file="x.jsonl", outcome="trained", snapshot="0002-y-x")
    assert Ledger(tmp_path / "ledger.json").lookup("c" * 64)["outcome"] == "trained"


def test_corrupt_ledger_says_what_to_do(tmp_path):
    path = tmp_path / "ledger.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(LedgerError, match="delete it"):
        Ledger(path).lookup("a" * 64)


def test_a_lookup_parses_the_file_only_when_it_changed(tmp_path, monkeypatch):
    path = tmp_path / "ledger.json"
    ledger = Ledger(path)
    ledger.record("a" * 64, file="one.jsonl", outcome="trained")
    parses = []
    real = Ledger._parse
    monkeypatch.setattr(Ledger, "_parse", lambda self: parses.append(1) or real(self))
    for _ in range(3):
        assert ledger.lookup("a" * 64)["file"] == "one.jsonl"
    assert parses == []  # its own write is known; nothing to read again
    Ledger(path).record("b" * 64, file="two.jsonl", outcome="failed")  # another process writes
    parses.clear()
    assert ledger.lookup("b" * 64)["outcome"] == "failed" and len(parses) == 1
    assert ledger.lookup("a" * 64) is not None and len(parses) == 1


def test_an_entry_that_could_not_be_written_is_not_remembered(tmp_path, monkeypatch):
    import core.state.ledger

    ledger = Ledger(tmp_path / "ledger.json")
    ledger.record("a" * 64, file="one.jsonl", outcome="trained")

    def full_disk(path, obj):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(core.state.ledger, "atomic_write_json", full_disk)
    with pytest.raises(OSError):
        ledger.record("b" * 64, file="two.jsonl", outcome="trained")
    assert ledger.lookup("b" * 64) is None and ledger.lookup("a" * 64) is not None
