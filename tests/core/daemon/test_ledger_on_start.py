"""The daemon starts on a ledger a crash tore or an older version wrote, and still trains nothing twice."""

from __future__ import annotations

import json

import pytest

from core.base.hashing import sha256_file
from core.daemon.loop import Outcome, TrainingDaemon
from core.state.layout import init_base_dir
from core.state.ledger import Ledger
from tests.conftest import chat_rows, write_jsonl


@pytest.fixture()
def layout(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setenv("TB_AUTO", "0")
    layout = init_base_dir(tmp_path / "base")
    layout.config_file.write_text(json.dumps(tiny_config), encoding="utf-8")
    return layout


def test_a_torn_ledger_tail_loses_no_entry_and_a_trained_content_is_still_a_duplicate(layout, tmp_path):
    dropped = write_jsonl(tmp_path / "a.jsonl", chat_rows(4))
    digest = sha256_file(dropped)
    Ledger(layout.ledger_file).record(digest, file="a.jsonl", outcome="trained", snapshot="0001-x-a")
    with open(layout.ledger_file, "ab") as handle:
        handle.write(b'{"sha256": "' + b"e" * 30)  # a crash in the middle of the next append
    dropped.rename(layout.inbox / "a-again.jsonl")
    assert TrainingDaemon(layout.root).run_once() == Outcome.DUPLICATE
    entries = Ledger(layout.ledger_file).entries()
    assert list(entries) == [digest] and entries[digest]["outcome"] == "trained"


def test_an_older_ledger_json_is_migrated_when_the_daemon_starts(layout, tmp_path):
    dropped = write_jsonl(tmp_path / "a.jsonl", chat_rows(4))
    legacy = layout.ledger_file.with_suffix(".json")
    legacy.write_text(json.dumps({sha256_file(dropped): {"file": "a.jsonl", "outcome": "trained",
                                                          "snapshot": "0001-x-a", "recorded_at": "2025-01-01T00:00:00Z"}}))
    dropped.rename(layout.inbox / "a.jsonl")
    assert TrainingDaemon(layout.root).run_once() == Outcome.DUPLICATE
    assert not legacy.exists() and layout.ledger_file.exists()
