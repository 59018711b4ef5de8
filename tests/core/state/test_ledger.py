"""The exactly-once ledger of trained file contents."""

from __future__ import annotations

import hashlib
import json

import pytest

from core.base.faults import FAULT_ENV
from core.base.hashing import sha256_file
from core.state.ledger import Ledger, LedgerError


def test_sha256_file_matches_hashlib_across_chunks(tmp_path):
    data = bytes(range(256)) * 9000  # > 2 MiB, so several chunks
    path = tmp_path / "big.jsonl"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_unknown_digest_is_none(tmp_path):
    assert Ledger(tmp_path / "ledger.jsonl").lookup("0" * 64) is None


def test_record_survives_a_new_instance(tmp_path):
    path = tmp_path / "status" / "ledger.jsonl"
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
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.record("c" * 64, file="x.jsonl", outcome="failed")
    ledger.record("c" * 64, file="x.jsonl", outcome="trained", snapshot="0002-y-x")
    assert Ledger(tmp_path / "ledger.jsonl").lookup("c" * 64)["outcome"] == "trained"


def test_a_record_appends_one_line_and_leaves_earlier_bytes_alone(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    for i in range(3):
        ledger.record(f"{i:064x}", file=f"f{i}.jsonl", outcome="trained")
    before, inode = path.read_bytes(), path.stat().st_ino
    ledger.record("d" * 64, file="d.jsonl", outcome="failed")
    after = path.read_bytes()
    assert after.startswith(before) and path.stat().st_ino == inode  # appended, not rewritten
    assert json.loads(after[len(before):]) == {"sha256": "d" * 64, **ledger.lookup("d" * 64)}


def test_a_ledger_sees_what_another_process_appends_and_a_replaced_file(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    ledger.record("a" * 64, file="one.jsonl", outcome="trained")
    Ledger(path).record("b" * 64, file="two.jsonl", outcome="failed")  # another writer
    assert ledger.lookup("b" * 64)["outcome"] == "failed"
    replacement = tmp_path / "other.jsonl"
    Ledger(replacement).record("c" * 64, file="three.jsonl", outcome="trained")
    replacement.replace(path)  # restored from a backup, say
    assert set(ledger.entries()) == {"c" * 64}


@pytest.mark.parametrize("torn", [b'{"sha256": "cccc', b"\0" * 40, b'{"sha256": "cc", "fi\n'])
def test_a_torn_last_line_loses_nothing_before_it_and_the_next_record_cuts_it(tmp_path, caplog, torn):
    path = tmp_path / "ledger.jsonl"
    Ledger(path).record("a" * 64, file="one.jsonl", outcome="trained")
    Ledger(path).record("b" * 64, file="two.jsonl", outcome="trained")
    with open(path, "ab") as handle:  # what a power cut in the middle of an append leaves
        handle.write(torn)
    reopened = Ledger(path)  # as the daemon starts: no error
    assert set(reopened.entries()) == {"a" * 64, "b" * 64}
    reopened.record("c" * 64, file="three.jsonl", outcome="trained")
    lines = path.read_text().splitlines()
    assert [json.loads(line)["sha256"] for line in lines] == ["a" * 64, "b" * 64, "c" * 64]
    assert "torn" in caplog.text
    assert set(Ledger(path).entries()) == {"a" * 64, "b" * 64, "c" * 64}


def test_an_unreadable_line_before_the_last_names_the_line(tmp_path):
    path = tmp_path / "ledger.jsonl"
    Ledger(path).record("a" * 64, file="one.jsonl", outcome="trained")
    with open(path, "a") as handle:
        handle.write("{broken\n" + json.dumps({"sha256": "b" * 64, "file": "two.jsonl"}) + "\n")
    with pytest.raises(LedgerError, match="line 2.*delete that line"):
        Ledger(path).lookup("a" * 64)


def test_an_older_ledger_json_is_migrated_once_and_removed(tmp_path):
    legacy = tmp_path / "ledger.json"
    old = {"a" * 64: {"file": "one.jsonl", "outcome": "trained", "snapshot": "0001-x", "recorded_at": "2025-01-01T00:00:00Z"},
           "b" * 64: {"file": "two.jsonl", "outcome": "failed", "recorded_at": "2025-01-02T00:00:00Z"}}
    legacy.write_text(json.dumps(old, indent=2) + "\n")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    assert ledger.entries() == old
    assert not legacy.exists()
    assert [json.loads(line)["sha256"] for line in (tmp_path / "ledger.jsonl").read_text().splitlines()] == list(old)
    ledger.record("c" * 64, file="three.jsonl", outcome="trained")
    assert set(Ledger(tmp_path / "ledger.jsonl").entries()) == {"a" * 64, "b" * 64, "c" * 64}


def test_a_corrupt_older_ledger_is_not_migrated_and_says_what_to_do(tmp_path):
    (tmp_path / "ledger.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(LedgerError, match="delete it"):
        Ledger(tmp_path / "ledger.jsonl").lookup("a" * 64)
    assert not (tmp_path / "ledger.jsonl").exists() and (tmp_path / "ledger.json").exists()


def test_an_entry_that_could_not_be_written_is_not_remembered_nor_left_half_written(tmp_path, monkeypatch):
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    ledger.record("a" * 64, file="one.jsonl", outcome="trained")
    before = path.read_bytes()
    monkeypatch.setenv(FAULT_ENV, "ledger.jsonl:1:enospc")
    with pytest.raises(OSError):
        ledger.record("b" * 64, file="two.jsonl", outcome="trained")
    assert path.read_bytes() == before
    assert ledger.lookup("b" * 64) is None and Ledger(path).lookup("a" * 64) is not None
