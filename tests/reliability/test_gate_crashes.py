"""Kill -9 at the gate's crash points of a rejected file: current_model stays the old one, the file is
judged once and ends in queue/rejected exactly once (the kill loop covers a promoted file's points)."""

from __future__ import annotations

import json
import signal

from core.snapshots.store import SnapshotStore, file_digests
from tests.conftest import chat_rows, garbage_rows, write_jsonl
from tests.reliability.harness import daemon_config, events, invariant_problems, make_base_dir, start_daemon

KILLS = [
    "eval/*.json:1",     # measuring the current model after training, on the kept adapter (sets in rounds)
    "manifest.json:1",   # verdict decided, snapshot staged but not in place
    "ledger.jsonl:1",    # rejected snapshot in place, not in the ledger yet
    "*.report.json:1",   # in the ledger, not filed in queue/rejected yet
]


def test_a_rejected_file_survives_kills_at_every_gate_point_with_current_model_untouched(
    tiny_model_dir, fork_server, tmp_path
):
    # Rounds of 2 rows put the current model's measuring after training (the kill loop covers it
    # before training); decisive_z 100 measures every row, so the verdict is the whole sets'.
    config = daemon_config(tiny_model_dir, gate={"max_regression": 0.005, "round_rows": 2, "decisive_z": 100.0})
    layout = make_base_dir(tmp_path / "base", config)
    good = chat_rows(40, seed=1)
    write_jsonl(layout.eval_dir / "golden.jsonl", chat_rows(12, seed=3))
    write_jsonl(layout.inbox / "good.jsonl", good)
    assert start_daemon(layout, server=fork_server).wait(timeout=600) == 0
    store = SnapshotStore(layout)
    current = store.current()
    digests = file_digests(current.path)
    write_jsonl(layout.inbox / "garbage.jsonl", garbage_rows(good))
    names = ["good.jsonl", "garbage.jsonl"]

    for fault in KILLS:
        code = start_daemon(layout, fault=fault, server=fork_server).wait(timeout=600)
        assert code == -signal.SIGKILL, f"{fault} never fired (exit {code})"
        assert invariant_problems(layout, names) == [], fault
        assert store.current().id == current.id and file_digests(store.current().path) == digests, fault

    assert start_daemon(layout, server=fork_server).wait(timeout=600) == 1  # a file filed untrained
    assert invariant_problems(layout, names) == []
    assert store.current().id == current.id and file_digests(store.current().path) == digests
    filed = sorted(p.name for p in layout.rejected.iterdir() if not p.name.startswith("."))  # .tmp: a killed write
    assert filed == ["garbage.jsonl", "garbage.jsonl.report.json"]
    report = json.loads((layout.rejected / "garbage.jsonl.report.json").read_text())
    assert report["outcome"] == "rejected" and report["recovered"] is True
    snapshots = store.list()
    assert [s.verdict for s in snapshots] == ["promoted", "rejected"]  # judged once: one snapshot
    # Events are at least once (a kill between the event and the filing repeats it), never another verdict.
    assert {e["snapshot"] for e in events(layout, "promotion_rejected")} == {snapshots[1].id}
