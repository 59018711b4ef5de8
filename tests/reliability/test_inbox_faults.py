"""The inbox under stress: a slow writer, files dropped while the daemon is down, hundreds at once,
and hostile entries (symlinks, hard links, FIFOs, folders, odd names) that must never be opened.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter

from core.base.hashing import sha256_file
from core.daemon.loop import Outcome, TrainingDaemon
from core.snapshots.store import SnapshotStore
from core.state.ledger import Ledger
from tests.conftest import chat_rows, write_jsonl
from tests.reliability.harness import events, filed, outcomes, start_daemon, update_config
from tests.reliability.soak import inbox_files

DAEMON_TIMEOUT = 300



def _lines(rows: list) -> list[bytes]:
    return [(json.dumps(row) + "\n").encode() for row in rows]


def test_a_file_written_slowly_is_claimed_only_after_it_stopped_changing_and_whole(layout):
    # Real time: 8 lines over ~5.6 s, claimed no sooner than stable_seconds after the last one.
    update_config(layout, daemon={"stable_seconds": 2.0})
    lines = _lines(inbox_files()["alpha.jsonl"])  # alpha's content: whole, it is a duplicate
    path = layout.inbox / "slow.jsonl"
    last_write = [0.0]

    def write_slowly() -> None:
        with open(path, "wb") as handle:
            for line in lines:
                handle.write(line)
                handle.flush()
                last_write[0] = time.monotonic()
                time.sleep(0.7)

    daemon = TrainingDaemon(layout.root)
    writer = threading.Thread(target=write_slowly)
    writer.start()
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        started = time.monotonic()
        outcome = daemon.run_once()
        seen.append(outcome)
        if outcome is not Outcome.WAITING and outcome is not Outcome.IDLE:
            break
        time.sleep(0.1)
    writer.join()

    assert outcome is Outcome.DUPLICATE, seen  # a partial claim would have other content
    assert started >= last_write[0] + 2.0 - 0.2
    assert set(seen[:-1]) <= {Outcome.WAITING, Outcome.IDLE} and seen.count(Outcome.WAITING) >= 5
    assert json.loads((layout.done / "slow.jsonl.report.json").read_text())["duplicate_of"] == "alpha.jsonl"


def test_hundreds_of_files_dropped_while_the_daemon_is_down_are_each_handled_exactly_once(layout, fork_server):
    # Training is what costs here, so most files are copies of trained content (duplicates) or
    # invalid; one carries new content and is trained (one step), with three copies after it.
    update_config(layout, hyperparams={"max_steps": 1})
    alpha, new = inbox_files()["alpha.jsonl"], chat_rows(4, seed=11)
    names = []
    for i in range(240):
        if i == 0:
            name, rows = "new.jsonl", new
        elif i < 4:
            name, rows = f"copy-of-new-{i}.jsonl", new
        elif i % 10 == 0:
            name, rows = f"invalid-{i:03d}.jsonl", ['{"messages": "not a list"}']
        else:
            name, rows = f"copy-{i:03d}.jsonl", alpha
        write_jsonl(layout.inbox / name, rows)
        os.utime(layout.inbox / name, (1000 + i, 1000 + i))
        names.append(name)

    daemon = start_daemon(layout, server=fork_server)
    assert daemon.wait(timeout=DAEMON_TIMEOUT) == 1  # --once: some files were filed untrained (invalid)

    assert list(layout.inbox.glob("*.jsonl")) == [] and list(layout.processing.iterdir()) == []
    finished = filed(layout)
    assert Counter(finished["done"] + finished["failed"]) == Counter(names + ["alpha.jsonl"])
    got = outcomes(layout)
    assert Counter(got[n] for n in names) == {"duplicate": 216, "invalid": 23, "trained": 1}
    assert got["new.jsonl"] == "trained"
    assert all(json.loads((layout.done / f"copy-of-new-{i}.jsonl.report.json").read_text())["duplicate_of"]
               == "new.jsonl" for i in (1, 2, 3))
    trained = [e for e in Ledger(layout.ledger_file).entries().values() if e["outcome"] == "trained"]
    assert sorted(e["file"] for e in trained) == ["alpha.jsonl", "new.jsonl"]
    assert [s.source_file for s in SnapshotStore(layout).list()] == ["alpha.jsonl", "new.jsonl"]


def test_hostile_entries_are_never_opened_and_reported_once(layout, fork_server, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = write_jsonl(outside / "secret.jsonl", chat_rows(4, seed=99))
    os.mkfifo(outside / "pipe")
    inbox = layout.inbox
    (inbox / "to-secret.jsonl").symlink_to(secret)                # a file outside the inbox
    (inbox / "to-pipe.jsonl").symlink_to(outside / "pipe")        # opening it would block
    (inbox / "to-folder.jsonl").symlink_to(outside)
    os.link(secret, inbox / "hardlink.jsonl")                     # a second name for the secret
    os.mkfifo(inbox / "fifo.jsonl")
    (inbox / "folder.jsonl").mkdir()
    write_jsonl(inbox / "folder.jsonl" / "inner.jsonl", chat_rows(2))
    write_jsonl(inbox / "..hidden.jsonl", chat_rows(2))
    write_jsonl(inbox / "line\nbreak.jsonl", chat_rows(2))
    write_jsonl(inbox / "upload.jsonl.part", chat_rows(2))
    write_jsonl(inbox / "a..b.jsonl", inbox_files()["alpha.jsonl"])  # odd but harmless: handled
    hostile = {"to-secret.jsonl", "to-pipe.jsonl", "to-folder.jsonl", "hardlink.jsonl", "fifo.jsonl",
               "folder.jsonl", "..hidden.jsonl", "line\nbreak.jsonl", "upload.jsonl.part"}

    for server in (None, fork_server):  # a restart reports them again, once per daemon run
        daemon = start_daemon(layout, server=server)
        try:
            assert daemon.wait(timeout=DAEMON_TIMEOUT) == 0  # a FIFO opened for reading would block
        finally:
            daemon.kill()

    assert {p.name for p in inbox.iterdir()} == hostile | {"high", "low"}
    assert outcomes(layout) == {"alpha.jsonl": "trained", "a..b.jsonl": "duplicate"}
    ignored = Counter(e["path"] for e in events(layout, "entry_ignored"))
    assert ignored == {name: 2 for name in hostile}
    reasons = {e["path"]: e["reason"] for e in events(layout, "entry_ignored")}
    assert "symbolic link" in reasons["to-secret.jsonl"] and "hard link" in reasons["hardlink.jsonl"]
    assert "FIFO" in reasons["fifo.jsonl"] and "folder" in reasons["folder.jsonl"]
    assert secret.read_bytes() == (outside / "secret.jsonl").read_bytes() and os.stat(secret).st_nlink == 2
    assert Ledger(layout.ledger_file).lookup(sha256_file(secret)) is None  # the secret was never trained
    assert [s.source_file for s in SnapshotStore(layout).list()] == ["alpha.jsonl"]

